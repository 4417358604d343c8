"""The engine's C API from Python through ctypes (standard library only).

Usage: engine_ctypes_test.py /path/to/libtessera_engine.so
"""
import ctypes
import os
import sys
import tempfile

lib = ctypes.CDLL(sys.argv[1])
P = ctypes.c_void_p
c_size = ctypes.c_size_t
lib.tessera_db_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(P)]
lib.tessera_db_close.argtypes = [P]
lib.tessera_txn_begin.argtypes = [P, ctypes.c_int, ctypes.POINTER(P)]
lib.tessera_txn_commit.argtypes = [P]
lib.tessera_txn_abort.argtypes = [P]
lib.tessera_get.argtypes = [P, ctypes.c_char_p, c_size, ctypes.POINTER(P), ctypes.POINTER(c_size)]
lib.tessera_put.argtypes = [P, ctypes.c_char_p, c_size, ctypes.c_char_p, c_size]
lib.tessera_del.argtypes = [P, ctypes.c_char_p, c_size]
lib.tessera_cursor_open.argtypes = [P, ctypes.POINTER(P)]
cur_args = [ctypes.POINTER(P), ctypes.POINTER(c_size), ctypes.POINTER(P), ctypes.POINTER(c_size)]
lib.tessera_cursor_seek.argtypes = [P, ctypes.c_char_p, c_size] + cur_args
lib.tessera_cursor_first.argtypes = [P] + cur_args
lib.tessera_cursor_next.argtypes = [P] + cur_args
lib.tessera_cursor_close.argtypes = [P]
lib.tessera_strerror.restype = ctypes.c_char_p
lib.tessera_strerror.argtypes = [ctypes.c_int]

OK, NOTFOUND, NULL_HANDLE, BUSY, READ_ONLY, KEY_TOO_LARGE, BAD_OPTIONS = 0, -1, -9, -7, -14, -15, -17
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def eq(got, want, what):
    check(got == want, f"{what}: got {got!r}, want {want!r}")


def get(txn, key):
    v, vl = P(), c_size()
    rc = lib.tessera_get(txn, key, len(key), ctypes.byref(v), ctypes.byref(vl))
    return rc, (ctypes.string_at(v, vl.value) if rc == OK else None)


def cursor_out():
    k, kl, v, vl = P(), c_size(), P(), c_size()
    return (k, kl, v, vl), [ctypes.byref(x) for x in (k, kl, v, vl)]


with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "db").encode()
    db = P()
    eq(lib.tessera_db_open(None, None, ctypes.byref(db)), NULL_HANDLE, "open NULL path")
    eq(lib.tessera_db_open(path, b"nonsense", ctypes.byref(db)), BAD_OPTIONS, "bad options")
    eq(lib.tessera_db_open(path, b"sync=1", ctypes.byref(db)), OK, "open")
    other = P()
    eq(lib.tessera_db_open(path, None, ctypes.byref(other)), BUSY, "second writer")

    w = P()
    eq(lib.tessera_txn_begin(db, 0, ctypes.byref(w)), OK, "begin write")
    for i in range(1000):
        k = b"key%04d" % i
        eq(lib.tessera_put(w, k, len(k), b"v" * (i % 50), i % 50), OK, "put")
    eq(lib.tessera_put(w, b"", 0, b"x", 1), KEY_TOO_LARGE, "empty key")
    eq(lib.tessera_del(w, b"key0001", 7), OK, "del")
    eq(lib.tessera_del(w, b"nokey", 5), NOTFOUND, "del missing")
    eq(lib.tessera_txn_commit(w), OK, "commit")

    r = P()
    eq(lib.tessera_txn_begin(db, 1, ctypes.byref(r)), OK, "begin read")
    eq(get(r, b"key0007"), (OK, b"v" * 7), "get")
    eq(get(r, b"key0001"), (NOTFOUND, None), "get deleted")
    eq(lib.tessera_put(r, b"a", 1, b"b", 1), READ_ONLY, "put in read txn")
    c = P()
    eq(lib.tessera_cursor_open(r, ctypes.byref(c)), OK, "cursor open")
    (k, kl, v, vl), refs = cursor_out()
    n = 0
    rc = lib.tessera_cursor_first(c, *refs)
    while rc == OK:
        n += 1
        rc = lib.tessera_cursor_next(c, *refs)
    eq(rc, NOTFOUND, "cursor end")
    eq(n, 999, "cursor count")
    eq(lib.tessera_cursor_seek(c, b"key0500", 7, *refs), OK, "seek")
    eq(ctypes.string_at(k, kl.value), b"key0500", "seek key")
    eq(lib.tessera_cursor_seek(c, b"zzz", 3, *refs), NOTFOUND, "seek past end")
    lib.tessera_cursor_close(c)
    eq(lib.tessera_txn_commit(r), OK, "end read")
    eq(lib.tessera_txn_commit(None), NULL_HANDLE, "commit NULL")
    lib.tessera_db_close(db)

    eq(lib.tessera_db_open(path, b"read_only=1", ctypes.byref(db)), OK, "reopen read-only")
    eq(lib.tessera_txn_begin(db, 0, ctypes.byref(w)), READ_ONLY, "write on read-only db")
    eq(lib.tessera_txn_begin(db, 1, ctypes.byref(r)), OK, "read after reopen")
    eq(get(r, b"key0999"), (OK, b"v" * 49), "persisted")
    lib.tessera_txn_abort(r)
    lib.tessera_db_close(db)

check(b"read-only" in lib.tessera_strerror(READ_ONLY), "strerror")
print(f"engine ctypes test: {'FAILED' if failures else 'ok'} ({failures} failures)")
sys.exit(1 if failures else 0)
