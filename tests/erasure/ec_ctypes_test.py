#!/usr/bin/env python3
"""The erasure C API (ec.h) from a non-C++ caller: Python ctypes, standard library only.

Usage: ec_ctypes_test.py /path/to/libtessera_erasure.so
Exercises every function of ec.h and each of its error codes, and checks Reed-Solomon parity
against a pure-Python GF(2^8) computation of the Backblaze matrix. Randomised inputs print their
seed; TESSERA_SEED=<n> replays it.
"""
import ctypes
import os
import random
import sys
import unittest

LIB_PATH = None
LIB = None

# Codes from tessera/common/errors.h.
OK = 0
INVALID_ARGUMENT = -4
NULL_HANDLE = -9
TOO_MANY_ERASURES = -18
BAD_SCHEME = -21
BAD_SHARD_COUNT = -22
BAD_LENGTH = -23
BAD_SHARD_INDEX = -24
DUPLICATE_ERASURE = -25

SEED = int(os.environ.get("TESSERA_SEED", random.SystemRandom().randrange(1 << 32)))
print(f"ec_ctypes_test seed: {SEED} (replay with TESSERA_SEED={SEED})", flush=True)


def load(path):
    lib = ctypes.CDLL(path)
    u8p = ctypes.POINTER(ctypes.c_uint8)
    lib.tessera_ec_create.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_void_p)]
    lib.tessera_ec_create.restype = ctypes.c_int
    lib.tessera_ec_destroy.argtypes = [ctypes.c_void_p]
    lib.tessera_ec_destroy.restype = None
    lib.tessera_ec_encode.argtypes = [ctypes.c_void_p, ctypes.POINTER(u8p), ctypes.POINTER(u8p),
                                      ctypes.c_size_t]
    lib.tessera_ec_encode.restype = ctypes.c_int
    lib.tessera_ec_decode.argtypes = [ctypes.c_void_p, ctypes.POINTER(u8p),
                                      ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_size_t]
    lib.tessera_ec_decode.restype = ctypes.c_int
    lib.tessera_ec_verify.argtypes = [ctypes.c_void_p, ctypes.POINTER(u8p), ctypes.c_size_t]
    lib.tessera_ec_verify.restype = ctypes.c_int
    lib.tessera_strerror.argtypes = [ctypes.c_int]
    lib.tessera_strerror.restype = ctypes.c_char_p
    return lib


# ---- pure-Python reference: GF(2^8) with polynomial 0x11D, Backblaze's matrix

def gf_mul(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
        b >>= 1
    return r


def gf_inv(a):
    return next(b for b in range(1, 256) if gf_mul(a, b) == 1)


def invert(m):
    n = len(m)
    a = [row[:] for row in m]
    inv = [[int(i == j) for j in range(n)] for i in range(n)]
    for c in range(n):
        p = next(r for r in range(c, n) if a[r][c])
        a[c], a[p] = a[p], a[c]
        inv[c], inv[p] = inv[p], inv[c]
        f = gf_inv(a[c][c])
        a[c] = [gf_mul(x, f) for x in a[c]]
        inv[c] = [gf_mul(x, f) for x in inv[c]]
        for r in range(n):
            if r != c and a[r][c]:
                g = a[r][c]
                a[r] = [x ^ gf_mul(g, y) for x, y in zip(a[r], a[c])]
                inv[r] = [x ^ gf_mul(g, y) for x, y in zip(inv[r], inv[c])]
    return inv


def backblaze_parity_rows(k, m):
    def power(r, c):
        x = 1
        for _ in range(c):
            x = gf_mul(x, r)
        return x
    v = [[power(r, c) for c in range(k)] for r in range(k + m)]
    top_inv = invert(v[:k])
    rows = []
    for r in range(k, k + m):
        rows.append([0] * k)
        for c in range(k):
            s = 0
            for j in range(k):
                s ^= gf_mul(v[r][j], top_inv[j][c])
            rows[-1][c] = s
    return rows


# ---- helpers

class Codec:
    def __init__(self, scheme, k, m):
        self.k, self.m, self.n = k, m, k + m
        self.handle = ctypes.c_void_p()
        rc = LIB.tessera_ec_create(scheme.encode(), k, m, ctypes.byref(self.handle))
        if rc != OK:
            raise AssertionError(f"create {scheme} {k}+{m}: {rc}")

    def close(self):
        LIB.tessera_ec_destroy(self.handle)
        self.handle = None


def buffers(count, length, rng=None):
    bufs = [(ctypes.c_uint8 * length)() for _ in range(count)]
    if rng is not None:
        for b in bufs:
            ctypes.memmove(b, bytes(rng.getrandbits(8) for _ in range(length)), length)
    return bufs


def ptr_array(bufs):
    u8p = ctypes.POINTER(ctypes.c_uint8)
    arr = (u8p * len(bufs))()
    for i, b in enumerate(bufs):
        arr[i] = ctypes.cast(b, u8p)
    return arr


def int_array(values):
    return (ctypes.c_int * max(1, len(values)))(*values)


class CApiTest(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(SEED)

    def test_create_and_destroy_every_scheme(self):
        for scheme, k, m in [("xor", 1, 1), ("xor", 10, 1), ("rs", 4, 2), ("rs", 1, 254),
                             ("rs", 254, 1), ("rs-cauchy", 6, 3)]:
            c = Codec(scheme, k, m)
            self.assertTrue(c.handle.value)
            c.close()
        LIB.tessera_ec_destroy(None)  # documented as ignored

    def test_create_errors(self):
        out = ctypes.c_void_p(12345)
        self.assertEqual(LIB.tessera_ec_create(b"lrc", 4, 2, ctypes.byref(out)), BAD_SCHEME)
        self.assertIsNone(out.value, "out is cleared on failure")
        for k, m in [(0, 2), (4, 0), (-3, 2), (200, 56), (255, 1)]:
            self.assertEqual(LIB.tessera_ec_create(b"rs", k, m, ctypes.byref(out)),
                             BAD_SHARD_COUNT, (k, m))
        self.assertEqual(LIB.tessera_ec_create(b"xor", 4, 2, ctypes.byref(out)), BAD_SHARD_COUNT)
        self.assertEqual(LIB.tessera_ec_create(None, 4, 2, ctypes.byref(out)), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_create(b"rs", 4, 2, None), NULL_HANDLE)

    def test_rs_parity_matches_backblaze_definition(self):
        for k, m, length in [(4, 2, 1000), (6, 3, 63), (10, 4, 15), (17, 3, 1)]:
            c = Codec("rs", k, m)
            data = buffers(k, length, self.rng)
            parity = buffers(m, length)
            self.assertEqual(LIB.tessera_ec_encode(c.handle, ptr_array(data), ptr_array(parity),
                                                   length), OK)
            rows = backblaze_parity_rows(k, m)
            for j in range(m):
                want = bytearray(length)
                for i in range(k):
                    coef = rows[j][i]
                    for b in range(length):
                        want[b] ^= gf_mul(coef, data[i][b])
                self.assertEqual(bytes(parity[j]), bytes(want), f"{k}+{m} parity {j}")
            c.close()

    def test_xor_parity_and_every_single_erasure(self):
        c = Codec("xor", 3, 1)
        length = 4099
        shards = buffers(4, length, self.rng)
        ptrs = ptr_array(shards)
        self.assertEqual(LIB.tessera_ec_encode(c.handle, ptrs, ptr_array(shards[3:]), length), OK)
        self.assertEqual(bytes(shards[3]),
                         bytes(a ^ b ^ d for a, b, d in zip(shards[0], shards[1], shards[2])))
        self.assertEqual(LIB.tessera_ec_verify(c.handle, ptrs, length), 1)
        for lost in range(4):
            want = bytes(shards[lost])
            ctypes.memset(shards[lost], 0, length)
            self.assertEqual(LIB.tessera_ec_decode(c.handle, ptrs, int_array([lost]), 1, length),
                             OK)
            self.assertEqual(bytes(shards[lost]), want)
        c.close()

    def test_decode_and_verify_round_trip(self):
        for scheme in ("rs", "rs-cauchy"):
            k, m, length = 5, 3, 777
            c = Codec(scheme, k, m)
            shards = buffers(k + m, length, self.rng)
            ptrs = ptr_array(shards)
            self.assertEqual(
                LIB.tessera_ec_encode(c.handle, ptrs, ptr_array(shards[k:]), length), OK)
            self.assertEqual(LIB.tessera_ec_verify(c.handle, ptrs, length), 1)
            original = [bytes(s) for s in shards]
            for _ in range(10):
                lost = self.rng.sample(range(k + m), self.rng.randint(1, m))
                for i in lost:
                    ctypes.memset(shards[i], 0xFF, length)
                self.assertEqual(LIB.tessera_ec_verify(c.handle, ptrs, length), 0)
                rc = LIB.tessera_ec_decode(c.handle, ptrs, int_array(lost), len(lost), length)
                self.assertEqual(rc, OK, f"{scheme} lost {lost}")
                self.assertEqual([bytes(s) for s in shards], original, f"{scheme} lost {lost}")
            self.assertEqual(LIB.tessera_ec_decode(c.handle, ptrs, None, 0, length), OK)
            c.close()

    def test_encode_decode_verify_errors(self):
        c = Codec("rs", 4, 2)
        shards = buffers(6, 64)
        ptrs = ptr_array(shards)
        par = ptr_array(shards[4:])
        h = c.handle
        self.assertEqual(LIB.tessera_ec_encode(None, ptrs, par, 64), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_encode(h, None, par, 64), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_encode(h, ptrs, None, 64), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_encode(h, ptrs, par, 0), BAD_LENGTH)
        holed = ptr_array(shards)
        holed[2] = None
        self.assertEqual(LIB.tessera_ec_encode(h, holed, par, 64), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_verify(h, holed, 64), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_decode(h, holed, int_array([0]), 1, 64), NULL_HANDLE)

        self.assertEqual(LIB.tessera_ec_verify(None, ptrs, 64), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_verify(h, None, 64), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_verify(h, ptrs, 0), BAD_LENGTH)

        def dec(erased, n=None, length=64):
            n = len(erased) if n is None else n
            return LIB.tessera_ec_decode(h, ptrs, int_array(erased), n, length)
        self.assertEqual(LIB.tessera_ec_decode(None, ptrs, int_array([0]), 1, 64), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_decode(h, None, int_array([0]), 1, 64), NULL_HANDLE)
        self.assertEqual(LIB.tessera_ec_decode(h, ptrs, None, 1, 64), NULL_HANDLE)
        self.assertEqual(dec([0], length=0), BAD_LENGTH)
        self.assertEqual(dec([0], n=-1), INVALID_ARGUMENT)
        self.assertEqual(dec([6]), BAD_SHARD_INDEX)
        self.assertEqual(dec([-1]), BAD_SHARD_INDEX)
        self.assertEqual(dec([3, 3]), DUPLICATE_ERASURE)
        self.assertEqual(dec([0, 1, 2]), TOO_MANY_ERASURES)
        c.close()

    def test_strerror_describes_every_code(self):
        seen = set()
        for code in (OK, INVALID_ARGUMENT, NULL_HANDLE, TOO_MANY_ERASURES, BAD_SCHEME,
                     BAD_SHARD_COUNT, BAD_LENGTH, BAD_SHARD_INDEX, DUPLICATE_ERASURE):
            text = LIB.tessera_strerror(code).decode()
            self.assertNotEqual(text, "unknown error code", code)
            seen.add(text)
        self.assertEqual(len(seen), 9, "each code has its own sentence")
        self.assertIn("erasure-code scheme", LIB.tessera_strerror(BAD_SCHEME).decode())
        self.assertEqual(LIB.tessera_strerror(-9999).decode(), "unknown error code")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: ec_ctypes_test.py /path/to/libtessera_erasure.so")
    LIB_PATH = sys.argv.pop(1)
    LIB = load(LIB_PATH)
    unittest.main(verbosity=2)
