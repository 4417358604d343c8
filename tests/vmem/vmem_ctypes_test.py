#!/usr/bin/env python3
"""Loads libtessera_vmem.so with ctypes (standard library only) and exercises every function of
the C ABI in vmem.h, including each error it documents. Usage: vmem_ctypes_test.py <path to .so>"""
import ctypes
import os
import resource
import signal
import sys
import tempfile
import unittest

LIB_PATH = None

OK = 0
IO_ERROR = -3
INVALID_ARGUMENT = -4
NO_SPACE = -5
BUSY = -7
NULL_HANDLE = -9
BAD_PAGE_SIZE = -10
PAGE_NOT_ALLOCATED = -11
PAGE_ALREADY_FREE = -12
OUT_OF_BOUNDS = -13
CORRUPTION = -2

PAGE = 4096


def load():
    lib = ctypes.CDLL(LIB_PATH)
    vm_p = ctypes.c_void_p
    lib.tessera_vmem_open.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.POINTER(vm_p)]
    lib.tessera_vmem_open.restype = ctypes.c_int
    lib.tessera_vmem_close.argtypes = [vm_p]
    lib.tessera_vmem_close.restype = None
    lib.tessera_vmem_allocate_page.argtypes = [vm_p, ctypes.POINTER(ctypes.c_uint64)]
    lib.tessera_vmem_allocate_page.restype = ctypes.c_int
    lib.tessera_vmem_free_page.argtypes = [vm_p, ctypes.c_uint64]
    lib.tessera_vmem_free_page.restype = ctypes.c_int
    lib.tessera_vmem_write.argtypes = [vm_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p,
                                       ctypes.c_uint32]
    lib.tessera_vmem_write.restype = ctypes.c_int
    lib.tessera_vmem_read.argtypes = [vm_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p,
                                      ctypes.c_uint32]
    lib.tessera_vmem_read.restype = ctypes.c_int
    lib.tessera_vmem_flush.argtypes = [vm_p]
    lib.tessera_vmem_flush.restype = ctypes.c_int
    lib.tessera_vmem_page_count.argtypes = [vm_p]
    lib.tessera_vmem_page_count.restype = ctypes.c_uint64
    lib.tessera_strerror.argtypes = [ctypes.c_int]
    lib.tessera_strerror.restype = ctypes.c_char_p
    return lib


class VmemTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lib = load()

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.handles = []

    def tearDown(self):
        for h in self.handles:
            self.lib.tessera_vmem_close(h)
        self.dir.cleanup()

    # -- helpers --
    def path(self, name):
        return os.path.join(self.dir.name, name).encode()

    def open(self, path=None, page_size=PAGE, expect=OK):
        vm = ctypes.c_void_p(1234)  # must be overwritten with NULL on error
        rc = self.lib.tessera_vmem_open(path, page_size, ctypes.byref(vm))
        self.assertEqual(rc, expect, self.lib.tessera_strerror(rc))
        if rc == OK:
            self.assertTrue(vm.value)
            self.handles.append(vm)
        else:
            self.assertIsNone(vm.value, "out is NULL after a failed open")
        return vm

    def close(self, vm):
        self.handles.remove(vm)
        self.lib.tessera_vmem_close(vm)

    def allocate(self, vm):
        page = ctypes.c_uint64(0)
        rc = self.lib.tessera_vmem_allocate_page(vm, ctypes.byref(page))
        self.assertEqual(rc, OK, self.lib.tessera_strerror(rc))
        return page.value

    def write(self, vm, page, offset, data):
        buf = ctypes.create_string_buffer(data, len(data))
        return self.lib.tessera_vmem_write(vm, page, offset, buf, len(data))

    def read(self, vm, page, offset, n):
        buf = ctypes.create_string_buffer(n)
        rc = self.lib.tessera_vmem_read(vm, page, offset, buf, n)
        return rc, buf.raw

    # -- tests --
    def test_open_rejects_bad_page_sizes(self):
        for ps in (0, 1, 1000, 2048, 3000, 4097, 12288, 131072, 0xFFFFFFFF):
            self.open(None, ps, expect=BAD_PAGE_SIZE)
            self.open(self.path("bad%d" % ps), ps, expect=BAD_PAGE_SIZE)
        for ps in (4096, 8192, 65536):
            vm = self.open(None, ps)
            p = self.allocate(vm)
            self.assertEqual(self.write(vm, p, ps - 1, b"z"), OK)
            self.assertEqual(self.write(vm, p, ps, b"z"), OUT_OF_BOUNDS)

    def test_open_null_out_and_bad_files(self):
        self.assertEqual(self.lib.tessera_vmem_open(None, PAGE, None), NULL_HANDLE)
        self.assertEqual(self.lib.tessera_vmem_open(self.path("x"), PAGE, None), NULL_HANDLE)
        self.open(b"", PAGE, expect=INVALID_ARGUMENT)
        self.open(self.dir.name.encode(), PAGE, expect=IO_ERROR)  # a directory
        with open(self.path("odd"), "wb") as f:
            f.write(b"x" * 5000)
        self.open(self.path("odd"), PAGE, expect=INVALID_ARGUMENT)
        with open(self.path("foreign"), "wb") as f:
            f.write(b"x" * 8192)
        self.open(self.path("foreign"), PAGE, expect=CORRUPTION)

    def test_null_handle_everywhere(self):
        page = ctypes.c_uint64(0)
        buf = ctypes.create_string_buffer(16)
        self.assertEqual(self.lib.tessera_vmem_allocate_page(None, ctypes.byref(page)), NULL_HANDLE)
        self.assertEqual(self.lib.tessera_vmem_free_page(None, 2), NULL_HANDLE)
        self.assertEqual(self.lib.tessera_vmem_write(None, 2, 0, buf, 16), NULL_HANDLE)
        self.assertEqual(self.lib.tessera_vmem_read(None, 2, 0, buf, 16), NULL_HANDLE)
        self.assertEqual(self.lib.tessera_vmem_flush(None), NULL_HANDLE)
        self.assertEqual(self.lib.tessera_vmem_page_count(None), 0)
        self.lib.tessera_vmem_close(None)  # a no-op, must not crash
        vm = self.open()
        self.assertEqual(self.lib.tessera_vmem_allocate_page(vm, None), NULL_HANDLE)
        p = self.allocate(vm)
        self.assertEqual(self.lib.tessera_vmem_write(vm, p, 0, None, 1), NULL_HANDLE)
        self.assertEqual(self.lib.tessera_vmem_read(vm, p, 0, None, 1), NULL_HANDLE)
        self.assertEqual(self.lib.tessera_vmem_write(vm, p, 0, None, 0), OK)
        self.assertEqual(self.lib.tessera_vmem_read(vm, p, 0, None, 0), OK)

    def test_allocate_write_read_free(self):
        vm = self.open()
        self.assertEqual(self.lib.tessera_vmem_page_count(vm), 0)
        pages = [self.allocate(vm) for _ in range(100)]
        self.assertEqual(len(set(pages)), 100)
        self.assertEqual(self.lib.tessera_vmem_page_count(vm), 100)
        rc, data = self.read(vm, pages[0], 0, PAGE)
        self.assertEqual(rc, OK)
        self.assertEqual(data, b"\0" * PAGE, "a fresh page reads as zeros")
        for i, p in enumerate(pages):
            self.assertEqual(self.write(vm, p, 100, b"page-%d" % i), OK)
        for i, p in enumerate(pages):
            rc, data = self.read(vm, p, 100, len(b"page-%d" % i))
            self.assertEqual((rc, data), (OK, b"page-%d" % i))
        self.assertEqual(self.write(vm, pages[1], PAGE - 3, b"end"), OK)
        self.assertEqual(self.read(vm, pages[1], PAGE - 3, 3), (OK, b"end"))
        self.assertEqual(self.write(vm, pages[1], PAGE, b""), OK, "empty write at the end is fine")
        self.assertEqual(self.lib.tessera_vmem_free_page(vm, pages[5]), OK)
        self.assertEqual(self.lib.tessera_vmem_page_count(vm), 99)
        self.assertEqual(self.lib.tessera_vmem_flush(vm), OK, "flush of anonymous memory")

    def test_bounds_errors(self):
        vm = self.open()
        p = self.allocate(vm)
        buf = ctypes.create_string_buffer(PAGE + 1)
        cases = [(PAGE, 1), (PAGE - 10, 11), (0, PAGE + 1), (1, PAGE),
                 (0xFFFFFFFF, 1), (1, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF)]
        for off, n in cases:
            # buf is big enough for the valid cases; the call must refuse before touching it.
            self.assertEqual(self.lib.tessera_vmem_write(vm, p, off, buf, n), OUT_OF_BOUNDS,
                             (off, n))
            self.assertEqual(self.lib.tessera_vmem_read(vm, p, off, buf, n), OUT_OF_BOUNDS,
                             (off, n))
        self.assertEqual(self.lib.tessera_vmem_read(vm, p, 0, buf, PAGE), OK)

    def test_unallocated_and_freed_pages(self):
        vm = self.open()
        p = self.allocate(vm)
        q = self.allocate(vm)
        for bad in (0, 1, 1 << 40, 0xFFFFFFFFFFFFFFFF, q + 1):
            self.assertEqual(self.write(vm, bad, 0, b"x"), PAGE_NOT_ALLOCATED, bad)
            self.assertEqual(self.read(vm, bad, 0, 1)[0], PAGE_NOT_ALLOCATED, bad)
            self.assertEqual(self.lib.tessera_vmem_free_page(vm, bad), PAGE_NOT_ALLOCATED, bad)
        self.assertEqual(self.lib.tessera_vmem_free_page(vm, p), OK)
        self.assertEqual(self.lib.tessera_vmem_free_page(vm, p), PAGE_ALREADY_FREE, "double free")
        self.assertEqual(self.write(vm, p, 0, b"x"), PAGE_ALREADY_FREE)
        self.assertEqual(self.read(vm, p, 0, 1)[0], PAGE_ALREADY_FREE)
        self.assertEqual(self.write(vm, q, 0, b"still fine"), OK)
        self.assertEqual(self.lib.tessera_vmem_page_count(vm), 1)

    def test_persists_across_reopen(self):
        path = self.path("data")
        vm = self.open(path)
        pages = [self.allocate(vm) for _ in range(70)]
        for p in pages:
            self.assertEqual(self.write(vm, p, 8, p.to_bytes(8, "little") * 4), OK)
        self.assertEqual(self.lib.tessera_vmem_free_page(vm, pages[3]), OK)
        self.assertEqual(self.lib.tessera_vmem_flush(vm), OK)
        self.close(vm)
        vm = self.open(path)
        self.assertEqual(self.lib.tessera_vmem_page_count(vm), 69)
        for p in pages:
            if p == pages[3]:
                self.assertEqual(self.read(vm, p, 8, 8)[0], PAGE_ALREADY_FREE)
                continue
            self.assertEqual(self.read(vm, p, 8, 32), (OK, p.to_bytes(8, "little") * 4))
        # The first 70 allocations carved pages 2..128 (page 0 is the header, page 1 a state
        # page): 57 never-used pages plus the freed one are free, and all 58 are handed out
        # before anything new is carved.
        live = set(pages) - {pages[3]}
        again = [self.allocate(vm) for _ in range(58)]
        self.assertIn(pages[3], again, "the freed page is reused")
        self.assertFalse(live & set(again), "a live page was handed out again")
        self.assertEqual(len(set(again)), 58)
        self.assertLessEqual(max(again), 128, "no new pages carved while free ones remain")
        self.close(vm)
        self.open(path, 8192, expect=BAD_PAGE_SIZE)

    def test_second_writer_is_busy(self):
        path = self.path("locked")
        vm = self.open(path)
        self.open(path, expect=BUSY)
        self.close(vm)
        self.open(path)

    def test_disk_full_returns_no_space_and_keeps_data(self):
        path = self.path("full")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
                lib = load()
                vm = ctypes.c_void_p()
                assert lib.tessera_vmem_open(path, PAGE, ctypes.byref(vm)) == OK
                page = ctypes.c_uint64()
                got = []
                while True:
                    rc = lib.tessera_vmem_allocate_page(vm, ctypes.byref(page))
                    if rc != OK:
                        break
                    got.append(page.value)
                    data = page.value.to_bytes(8, "little")
                    assert lib.tessera_vmem_write(vm, page.value, 16, data, 8) == OK
                assert rc == NO_SPACE, rc
                assert 100 < len(got) < 256, len(got)
                buf = ctypes.create_string_buffer(8)
                for p in got:
                    assert lib.tessera_vmem_read(vm, p, 16, buf, 8) == OK
                    assert buf.raw == p.to_bytes(8, "little")
                assert lib.tessera_vmem_flush(vm) == OK
                lib.tessera_vmem_close(vm)
                code = 0
            except BaseException as e:  # report anything, never return into unittest
                sys.stderr.write("child: %r\n" % (e,))
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertTrue(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status)
        vm = self.open(path)
        self.assertGreater(self.lib.tessera_vmem_page_count(vm), 100)

    def test_strerror_describes_every_code(self):
        codes = [OK, CORRUPTION, IO_ERROR, INVALID_ARGUMENT, NO_SPACE, BUSY, NULL_HANDLE,
                 BAD_PAGE_SIZE, PAGE_NOT_ALLOCATED, PAGE_ALREADY_FREE, OUT_OF_BOUNDS, -19]
        unknown = self.lib.tessera_strerror(-100000)
        self.assertEqual(unknown, b"unknown error code")
        texts = [self.lib.tessera_strerror(c) for c in codes]
        for c, t in zip(codes, texts):
            self.assertTrue(t and t != unknown, c)
        self.assertEqual(len(set(texts)), len(texts), "each code has its own text")
        self.assertIn(b"already free", self.lib.tessera_strerror(PAGE_ALREADY_FREE))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: vmem_ctypes_test.py <path to libtessera_vmem.so>")
    LIB_PATH = sys.argv.pop(1)
    unittest.main(verbosity=2)
