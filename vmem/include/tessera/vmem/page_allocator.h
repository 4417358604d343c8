// PageAllocator: hands out and takes back single pages of a Region, thread-safe, and for a
// file-backed region its state survives close and reopen.
//
// Layout inside the region (page size P, groups of G = P pages, so one state byte per page fills
// exactly the group's state page):
//   page 0                 header: magic, format version, page size, high-water mark
//   page 1 + g * G         state page of group g: byte i describes page 1 + g * G + i (byte 0,
//                          the state page itself, stays kNever)
//   the G - 1 pages after  data pages handed out by Allocate()
// A state byte is kNever (0, as a fresh page reads), kFresh (carved for a free list, never handed
// out), kAllocated or kFreed. The state bytes are the persistent truth; the free lists are an
// in-memory index rebuilt from them by Open(), so nothing but the state bytes and the high-water
// mark needs to be kept consistent on disk.
//
// Invariants:
//  - Every page below the high-water mark is the header, a state page, or a data page whose state
//    is not kNever; pages at or above it are never handed out.
//  - A page is on at most one free list, and it is on one exactly when its state is kFresh or
//    kFreed. Allocate() moves it to kAllocated, Free() moves kAllocated to kFreed with one
//    compare-and-swap, so a double free is detected even when two threads race to free one page.
//
// Thread safety: Allocate, Free, IsAllocated, CheckAllocated and allocated_pages may be called from
// any number of threads. The fast path takes no lock and, for Allocate, no atomic
// read-modify-write: each thread keeps a small cache of free pages (up to kThreadCachePages) for
// the allocator it used last. Behind the caches are kShards lock-free stacks (tagged heads against
// ABA) that a thread refills from and spills into, its own shard first, stealing from the others
// when empty. Only carving new pages from the high-water mark (once per kCarvePages allocations,
// with region growth) takes a mutex, and so does switching a thread's cache to another allocator. A
// page on a shard stack holds its link in its first 8 bytes; Allocate zeroes them, so a never-used
// page reads as all zeros. Pages cached by a thread that no longer allocates stay out of reach of
// other threads until it exits or uses another allocator: at most kThreadCachePages per thread,
// and reopening finds them free again because the state bytes say so.
// The Region must outlive the allocator, and nobody else may Truncate it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "tessera/common/status.h"
#include "tessera/vmem/region.h"

namespace tessera::vmem {

namespace internal {
struct ThreadCache;
}  // namespace internal

inline constexpr uint64_t kAllocatorMagic = 0x314d454d56535254;  // "TRSVMEM1" little-endian
inline constexpr uint32_t kAllocatorVersion = 1;

class PageAllocator {
 public:
  static constexpr int kShards = 16;
  static constexpr uint64_t kCarvePages = 64;    // pages taken from the high-water mark at a time
  static constexpr int kThreadCachePages = 128;  // free pages a thread keeps for itself

  // Formats an empty region (or one whose header page is all zeros, as a crash right after
  // creation leaves it) and otherwise loads it: checks the header, rebuilds the free lists.
  // Errors: Corruption (not an allocator region, or a state byte out of range), InvalidArgument
  // refined with TESSERA_BAD_PAGE_SIZE (header page size differs from the region's), and Grow's
  // errors while formatting. A read-only region opens for IsAllocated/CheckAllocated only.
  static Result<std::unique_ptr<PageAllocator>> Open(Region* region);

  ~PageAllocator();
  PageAllocator(const PageAllocator&) = delete;
  PageAllocator& operator=(const PageAllocator&) = delete;

  // A page number p, with region()->Page(p) its address. Errors: NoSpace when the region cannot
  // grow (disk full, reservation exhausted); InvalidArgument + TESSERA_READ_ONLY on a read-only
  // region.
  Result<uint64_t> Allocate();

  // Returns `page` to the allocator. Errors (InvalidArgument, refined): TESSERA_PAGE_NOT_ALLOCATED
  // if it was never handed out (including the header and state pages and any number past the
  // high-water mark), TESSERA_PAGE_ALREADY_FREE if it was and is free now, TESSERA_READ_ONLY.
  Status Free(uint64_t page);

  // Ok when `page` is allocated now, else the error Free() would give for it.
  Status CheckAllocated(uint64_t page) const;
  bool IsAllocated(uint64_t page) const { return CheckAllocated(page).ok(); }

  // Pages allocated now, counted from the state bytes: O(high_water() / 8). Exact when no
  // Allocate/Free runs concurrently.
  uint64_t allocated_pages() const;
  // Pages ever carved from the region (header and state pages included).
  uint64_t high_water() const;

  Region* region() const { return region_; }

 private:
  friend struct internal::ThreadCache;

  // One free list on its own cache line, so threads on different shards share no line.
  struct alignas(64) Shard {
    std::atomic<uint64_t> head{0};  // tag << kTagShift | page, page 0 = empty
  };

  explicit PageAllocator(Region* region);

  Status Format();
  Status Load();
  uint8_t* StateByte(uint64_t page) const;
  bool IsStatePage(uint64_t page) const;
  uint64_t Pop(Shard& shard);
  void PushChain(Shard& shard, uint64_t first, uint64_t last);
  // Links `n` pages into a chain and pushes it onto shard `shard` with one compare-and-swap.
  void PushPages(const uint64_t* pages, int n, int shard);
  internal::ThreadCache& BindCache();
  Result<uint64_t> AllocateSlow();
  void FreeSlow(uint64_t page);
  Result<uint64_t> Carve(internal::ThreadCache& cache);

  Region* region_;
  const uint64_t id_;    // never reused, so a thread cache can tell a destroyed allocator apart
  uint64_t group_mask_;  // G - 1: groups of G pages start at page 1, G a power of two
  std::mutex carve_mu_;  // serialises carving and region growth; never held on the fast path
  Shard shards_[kShards];
};

}  // namespace tessera::vmem
