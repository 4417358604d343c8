/* tessera_vmem: the C ABI of Tessera's virtual memory regions (libtessera_vmem.so).
 *
 * A handle is a page allocator over a region: a file (or anonymous memory) mapped into one large
 * address reservation that grows in place. Pages are numbered; the caller allocates a page, reads
 * and writes bytes inside it, and frees it. Every call checks its arguments: NULL handles and
 * pointers, pages never allocated or already freed, and offset + length past the end of the page
 * each return their own negative code (tessera/common/errors.h), and no C++ exception ever crosses
 * this interface. Functions returning int return TESSERA_OK (0) on success.
 *
 * Durability: writes go straight into a shared mapping of the file, so they survive closing and
 * reopening the handle (and a crash of the process); tessera_vmem_flush makes them survive a power
 * loss too. Closing does not flush. Disk space is reserved before a page is first handed out, so a
 * full disk is an error from tessera_vmem_allocate_page, never a crash at a later write.
 *
 * Thread safety: one handle may be used from many threads at once, except that
 * tessera_vmem_close must not overlap any other call on the same handle. Reads and writes of the
 * same page from different threads need the caller's own synchronisation, as plain memory would.
 * One file can be open by one handle for writing at a time (TESSERA_BUSY for a second one, in
 * this process or another). */
#ifndef TESSERA_VMEM_VMEM_H_
#define TESSERA_VMEM_VMEM_H_

#include <stdint.h>

#include "tessera/common/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque handle. */
typedef struct tessera_vmem tessera_vmem;

/* Opens `path`, creating it if it does not exist, or an anonymous memory-only region when `path`
 * is NULL. `page_size` is fixed when the file is created and must be given the same on reopen.
 * On success *out is a new handle; on error *out is set to NULL (when `out` is not NULL).
 * Errors:
 *   TESSERA_NULL_HANDLE       `out` is NULL
 *   TESSERA_BAD_PAGE_SIZE     `page_size` is not a power of two in [4096, 65536], or differs from
 *                             the page size the file was created with
 *   TESSERA_BUSY              another handle (in this or another process) has the file open
 *   TESSERA_CORRUPTION        the file exists but is not a tessera_vmem file
 *   TESSERA_INVALID_ARGUMENT  the file's size is not a whole number of pages, or path is ""
 *   TESSERA_NO_SPACE          the disk is full
 *   TESSERA_IO_ERROR          the operating system refused (e.g. permission denied) */
int tessera_vmem_open(const char* path, uint32_t page_size, tessera_vmem** out);

/* Unmaps and closes the handle; pointers and page numbers taken from it become meaningless.
 * Does not flush. `vm` may be NULL (no-op). */
void tessera_vmem_close(tessera_vmem* vm);

/* Allocates a page and stores its number in *page_out. A page never used before reads as zeros;
 * a reused page holds what its previous user left, except its first 8 bytes, which are zero.
 * Errors:
 *   TESSERA_NULL_HANDLE  `vm` or `page_out` is NULL
 *   TESSERA_NO_SPACE     the disk is full, or the region's address reservation is exhausted */
int tessera_vmem_allocate_page(tessera_vmem* vm, uint64_t* page_out);

/* Frees a page so a later allocation may return it.
 * Errors:
 *   TESSERA_NULL_HANDLE         `vm` is NULL
 *   TESSERA_PAGE_NOT_ALLOCATED  `page` was never returned by tessera_vmem_allocate_page
 *   TESSERA_PAGE_ALREADY_FREE   `page` was allocated once and is free now (double free) */
int tessera_vmem_free_page(tessera_vmem* vm, uint64_t page);

/* Copies `len` bytes from `src` into `page` at `offset`. `src` may be NULL when `len` is 0.
 * Errors:
 *   TESSERA_NULL_HANDLE         `vm` is NULL, or `src` is NULL with `len` > 0
 *   TESSERA_PAGE_NOT_ALLOCATED  `page` is not allocated and never was
 *   TESSERA_PAGE_ALREADY_FREE   `page` was freed
 *   TESSERA_OUT_OF_BOUNDS       `offset` + `len` is greater than the page size */
int tessera_vmem_write(tessera_vmem* vm, uint64_t page, uint32_t offset, const void* src,
                       uint32_t len);

/* Copies `len` bytes at `offset` of `page` into `dst`. `dst` may be NULL when `len` is 0.
 * Errors: as tessera_vmem_write, with `dst` in place of `src`. */
int tessera_vmem_read(tessera_vmem* vm, uint64_t page, uint32_t offset, void* dst, uint32_t len);

/* Makes every write and allocation so far durable (fdatasync of the file). Anonymous: no-op.
 * After a failed flush the handle refuses further flushes (TESSERA_FATAL) until reopened: the
 * kernel may have dropped the unwritten pages, so a later success would prove nothing.
 * Errors:
 *   TESSERA_NULL_HANDLE  `vm` is NULL
 *   TESSERA_FATAL        this or an earlier flush failed (the OS reported an I/O error) */
int tessera_vmem_flush(tessera_vmem* vm);

/* The number of pages allocated now (allocated and not freed); 0 when `vm` is NULL. */
uint64_t tessera_vmem_page_count(tessera_vmem* vm);

/* tessera_strerror(int code), declared in tessera/common/errors.h and exported by this library,
 * describes every code above. */

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_VMEM_VMEM_H_ */
