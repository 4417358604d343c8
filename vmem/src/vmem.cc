// The C ABI over Region + PageAllocator. Every entry point catches everything: a C caller sees
// only the negative codes of errors.h.
#include "tessera/vmem/vmem.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <new>

#include "tessera/vmem/page_allocator.h"
#include "tessera/vmem/region.h"

struct tessera_vmem {
  std::unique_ptr<tessera::vmem::Region> region;
  std::unique_ptr<tessera::vmem::PageAllocator> allocator;  // destroyed before the region
};

namespace {

using tessera::Status;

// Runs `body` (returning a C code) and turns any exception into TESSERA_INTERNAL (or
// TESSERA_NO_SPACE for an allocation failure), so nothing unwinds into C.
template <typename F>
int Guard(F&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return TESSERA_NO_SPACE;
  } catch (...) {
    return TESSERA_INTERNAL;
  }
}

// The check shared by read and write: the page is allocated and [offset, offset + len) lies in it.
int CheckAccess(tessera_vmem* vm, uint64_t page, uint32_t offset, const void* buf, uint32_t len) {
  if (vm == nullptr || (buf == nullptr && len > 0)) return TESSERA_NULL_HANDLE;
  Status st = vm->allocator->CheckAllocated(page);
  if (!st.ok()) return tessera::ToCError(st);
  if (uint64_t{offset} + len > vm->region->page_size()) return TESSERA_OUT_OF_BOUNDS;
  return TESSERA_OK;
}

// True when `path` starts with a page-allocator header recording a page size other than
// `page_size`. Region::Open cannot tell that case from any file of the wrong length; the C caller
// deserves the specific code.
bool HeaderHasOtherPageSize(const char* path, uint32_t page_size) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  uint8_t head[16];
  bool other = false;
  if (pread(fd, head, sizeof head, 0) == static_cast<ssize_t>(sizeof head)) {
    uint64_t magic;
    uint32_t recorded;
    std::memcpy(&magic, head, sizeof magic);
    std::memcpy(&recorded, head + 12, sizeof recorded);
    other = magic == tessera::vmem::kAllocatorMagic && recorded != page_size;
  }
  ::close(fd);
  return other;
}

}  // namespace

extern "C" {

int tessera_vmem_open(const char* path, uint32_t page_size, tessera_vmem** out) {
  if (out == nullptr) return TESSERA_NULL_HANDLE;
  *out = nullptr;
  return Guard([&] {
    tessera::vmem::RegionOptions options;
    options.page_size = page_size;
    auto region = path == nullptr ? tessera::vmem::Region::OpenAnonymous(options)
                                  : tessera::vmem::Region::Open(path, options);
    if (!region.ok()) {
      if (path != nullptr && region.status().IsInvalidArgument() &&
          HeaderHasOtherPageSize(path, page_size)) {
        return TESSERA_BAD_PAGE_SIZE;
      }
      return tessera::ToCError(region.status());
    }
    auto allocator = tessera::vmem::PageAllocator::Open(region->get());
    if (!allocator.ok()) return tessera::ToCError(allocator.status());
    auto vm = std::make_unique<tessera_vmem>();
    vm->region = std::move(*region);
    vm->allocator = std::move(*allocator);
    *out = vm.release();
    return TESSERA_OK;
  });
}

void tessera_vmem_close(tessera_vmem* vm) {
  // Destruction only unmaps and closes; nothing in it throws.
  delete vm;
}

int tessera_vmem_allocate_page(tessera_vmem* vm, uint64_t* page_out) {
  if (vm == nullptr || page_out == nullptr) return TESSERA_NULL_HANDLE;
  return Guard([&] {
    auto page = vm->allocator->Allocate();
    if (!page.ok()) return tessera::ToCError(page.status());
    *page_out = *page;
    return TESSERA_OK;
  });
}

int tessera_vmem_free_page(tessera_vmem* vm, uint64_t page) {
  if (vm == nullptr) return TESSERA_NULL_HANDLE;
  return Guard([&] { return tessera::ToCError(vm->allocator->Free(page)); });
}

int tessera_vmem_write(tessera_vmem* vm, uint64_t page, uint32_t offset, const void* src,
                       uint32_t len) {
  return Guard([&] {
    int rc = CheckAccess(vm, page, offset, src, len);
    if (rc != TESSERA_OK) return rc;
    if (len > 0) std::memcpy(vm->region->Page(page) + offset, src, len);
    return TESSERA_OK;
  });
}

int tessera_vmem_read(tessera_vmem* vm, uint64_t page, uint32_t offset, void* dst, uint32_t len) {
  return Guard([&] {
    int rc = CheckAccess(vm, page, offset, dst, len);
    if (rc != TESSERA_OK) return rc;
    if (len > 0) std::memcpy(dst, vm->region->Page(page) + offset, len);
    return TESSERA_OK;
  });
}

int tessera_vmem_flush(tessera_vmem* vm) {
  if (vm == nullptr) return TESSERA_NULL_HANDLE;
  return Guard([&] { return tessera::ToCError(vm->region->Flush()); });
}

uint64_t tessera_vmem_page_count(tessera_vmem* vm) {
  if (vm == nullptr) return 0;
  return vm->allocator->allocated_pages();
}

}  // extern "C"
