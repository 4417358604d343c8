#include "tessera/vmem/page_allocator.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <string>
#include <unordered_map>

#include "tessera/common/errors.h"

namespace tessera::vmem {
namespace {

enum State : uint8_t { kNever = 0, kFresh = 1, kAllocated = 2, kFreed = 3 };

// The header page's first bytes. Native (little-endian on every supported machine) layout.
struct Header {
  uint64_t magic;
  uint32_t version;
  uint32_t page_size;
  uint64_t group_pages;  // pages per group, its state page included (= page size)
  uint64_t high_water;   // pages carved so far; read and written through std::atomic_ref
};

// A free-list head packs a page number and a tag that every push and pop increments, so a head
// that was popped and pushed back between a reader's load and its compare-and-swap no longer
// compares equal (the ABA problem). 40 bits of page number cover 2^40 pages, more than any
// reservation of a 47-bit address space; the 24-bit tag would have to wrap exactly while one
// thread is stalled between two instructions.
constexpr int kTagShift = 40;
constexpr uint64_t kPageMask = (uint64_t{1} << kTagShift) - 1;
constexpr uint64_t kTagOne = uint64_t{1} << kTagShift;

// Growth adds at least this many pages beyond what a carve needs, and at most kGrowMaxBytes, so
// the region grows geometrically while small and in bounded steps when large.
constexpr uint64_t kGrowMinPages = 256;
constexpr uint64_t kGrowMaxBytes = uint64_t{1} << 30;

Header* HeaderOf(Region* r) { return reinterpret_cast<Header*>(r->Page(0)); }

std::atomic_ref<uint64_t> HighWater(Region* r) {
  return std::atomic_ref<uint64_t>(HeaderOf(r)->high_water);
}

// The link word of a free page: its first 8 bytes.
std::atomic_ref<uint64_t> Link(Region* r, uint64_t page) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(r->Page(page)));
}

Status NotAllocated(uint64_t page, const char* why) {
  return Status::InvalidArgument("page " + std::to_string(page) + " was never allocated (" + why +
                                 ")")
      .WithCCode(TESSERA_PAGE_NOT_ALLOCATED);
}

Status ReadOnly(const char* op) {
  return Status::InvalidArgument(std::string(op) + " on a read-only region")
      .WithCCode(TESSERA_READ_ONLY);
}

// Live allocators by id. A thread cache gives its pages back only to an allocator still listed
// here, and the lock keeps that allocator alive while it does. Heap-allocated and never destroyed,
// so threads exiting during process shutdown can still use them.
std::mutex& RegistryMutex() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::unordered_map<uint64_t, PageAllocator*>& Registry() {
  static auto* live = new std::unordered_map<uint64_t, PageAllocator*>;
  return *live;
}
std::atomic<uint64_t> next_allocator_id{1};
std::atomic<unsigned> next_thread_shard{0};

}  // namespace

namespace internal {

// A thread's private stack of free pages, bound to one allocator at a time.
struct ThreadCache {
  uint64_t owner_id = 0;  // the allocator these pages belong to; 0 = unbound
  int n = 0;
  int shard = 0;  // this thread's home shard in every allocator
  uint64_t pages[PageAllocator::kThreadCachePages];

  // Returns the pages to their allocator, if it still exists, and unbinds.
  void Release() {
    if (owner_id != 0 && n > 0) {
      std::lock_guard lock(RegistryMutex());
      auto it = Registry().find(owner_id);
      if (it != Registry().end()) it->second->PushPages(pages, n, shard);
    }
    owner_id = 0;
    n = 0;
  }
};

}  // namespace internal

namespace {

// The fast path reads this pointer only: initial-exec TLS is one %fs-relative load, where the
// default model for a shared library calls __tls_get_addr. Eight bytes fit the static TLS surplus
// glibc keeps for libraries loaded later with dlopen (as Python's ctypes does).
__attribute__((tls_model("initial-exec"))) thread_local internal::ThreadCache* tls_cache = nullptr;

// Owns the cache and hands its pages back when the thread exits. Touched only on a thread's
// first use of any allocator.
struct CacheHolder {
  internal::ThreadCache cache;
  CacheHolder() {
    cache.shard = static_cast<int>(next_thread_shard.fetch_add(1, std::memory_order_relaxed) %
                                   PageAllocator::kShards);
  }
  ~CacheHolder() {
    cache.Release();
    tls_cache = nullptr;
  }
};
thread_local CacheHolder tls_holder;

}  // namespace

PageAllocator::PageAllocator(Region* region)
    : region_(region),
      id_(next_allocator_id.fetch_add(1, std::memory_order_relaxed)),
      group_mask_(uint64_t{region->page_size()} - 1) {
  std::lock_guard lock(RegistryMutex());
  Registry()[id_] = this;
}

PageAllocator::~PageAllocator() {
  {
    std::lock_guard lock(RegistryMutex());
    Registry().erase(id_);
  }
  // Other threads' caches notice the missing id when they next unbind; this one can reset now.
  if (tls_cache != nullptr && tls_cache->owner_id == id_) {
    tls_cache->owner_id = 0;
    tls_cache->n = 0;
  }
}

Result<std::unique_ptr<PageAllocator>> PageAllocator::Open(Region* region) {
  if (region == nullptr) return Status::InvalidArgument("PageAllocator::Open: null region");
  std::unique_ptr<PageAllocator> a(new PageAllocator(region));
  bool blank = region->page_count() == 0;
  if (!blank) {
    // A header page of zeros is a region created but never flushed after formatting.
    const uint8_t* h = region->Page(0);
    blank = std::all_of(h, h + sizeof(Header), [](uint8_t b) { return b == 0; });
  }
  if (blank) {
    if (region->read_only()) {
      return Status::Corruption("read-only region " + region->path() +
                                " holds no page allocator (empty or unformatted)");
    }
    TESSERA_RETURN_IF_ERROR(a->Format());
  } else {
    TESSERA_RETURN_IF_ERROR(a->Load());
  }
  return a;
}

Status PageAllocator::Format() {
  TESSERA_RETURN_IF_ERROR(region_->Grow(std::max<uint64_t>(region_->page_count(), 1)));
  Header* h = HeaderOf(region_);
  h->version = kAllocatorVersion;
  h->page_size = region_->page_size();
  h->group_pages = region_->page_size();
  HighWater(region_).store(1, std::memory_order_relaxed);
  h->magic = kAllocatorMagic;  // last, so a half-written header reads as blank or corrupt
  if (!region_->anonymous()) {
    PageRange header{0, 1};
    TESSERA_RETURN_IF_ERROR(region_->Flush(std::span<const PageRange>(&header, 1)));
  }
  return Status::Ok();
}

Status PageAllocator::Load() {
  const Header* h = HeaderOf(region_);
  const std::string& path = region_->path();
  if (h->magic != kAllocatorMagic) {
    return Status::Corruption(path + " is not a page-allocator region (bad magic)");
  }
  if (h->version != kAllocatorVersion) {
    return Status::Corruption(path + " has allocator format version " + std::to_string(h->version) +
                              ", this build reads " + std::to_string(kAllocatorVersion));
  }
  if (h->page_size != region_->page_size() || h->group_pages != region_->page_size()) {
    return Status::InvalidArgument(path + " was created with page size " +
                                   std::to_string(h->page_size) + ", opened with " +
                                   std::to_string(region_->page_size()))
        .WithCCode(TESSERA_BAD_PAGE_SIZE);
  }
  uint64_t hw = HighWater(region_).load(std::memory_order_relaxed);
  if (hw < 1 || hw > region_->page_count()) {
    return Status::Corruption(path + ": high-water mark " + std::to_string(hw) +
                              " outside the file's " + std::to_string(region_->page_count()) +
                              " pages");
  }
  // Rebuild the free lists from the state bytes, spreading free pages over the shards so that
  // threads start with local work. Single-threaded: nothing else can see the allocator yet.
  uint64_t tail[kShards] = {};
  int next_shard = 0;
  for (uint64_t p = 2; p < hw; ++p) {
    if (IsStatePage(p)) continue;
    uint8_t s = *StateByte(p);
    if (s == kAllocated) continue;
    if (s == kNever) continue;  // carved while the region was open but never recorded
    if (s != kFresh && s != kFreed) {
      return Status::Corruption(path + ": page " + std::to_string(p) + " has state byte " +
                                std::to_string(s));
    }
    if (region_->read_only()) continue;  // no free lists: nothing can be allocated
    Shard& sh = shards_[next_shard];
    // Appending keeps each list in ascending page order, which later allocations then follow.
    Link(region_, p).store(0, std::memory_order_relaxed);
    if (tail[next_shard] == 0) {
      sh.head.store(p, std::memory_order_relaxed);
    } else {
      Link(region_, tail[next_shard]).store(p, std::memory_order_relaxed);
    }
    tail[next_shard] = p;
    next_shard = (next_shard + 1) % kShards;
  }
  return Status::Ok();
}

// Groups are a power of two pages long, so both lookups are a mask, no division.
bool PageAllocator::IsStatePage(uint64_t page) const {
  return page >= 1 && ((page - 1) & group_mask_) == 0;
}

uint8_t* PageAllocator::StateByte(uint64_t page) const {
  return region_->Page(1 + ((page - 1) & ~group_mask_)) + ((page - 1) & group_mask_);
}

uint64_t PageAllocator::Pop(Shard& shard) {
  uint64_t head = shard.head.load(std::memory_order_acquire);
  while (true) {
    uint64_t page = head & kPageMask;
    if (page == 0) return 0;
    // If `page` was popped meanwhile this reads whatever its new owner wrote, but then the tag
    // moved and the compare-and-swap below fails. Pages are never unmapped under the allocator,
    // so the read itself is always safe.
    uint64_t next = Link(region_, page).load(std::memory_order_relaxed) & kPageMask;
    uint64_t desired = ((head & ~kPageMask) + kTagOne) | next;
    if (shard.head.compare_exchange_weak(head, desired, std::memory_order_acquire,
                                         std::memory_order_acquire)) {
      return page;
    }
  }
}

void PageAllocator::PushChain(Shard& shard, uint64_t first, uint64_t last) {
  uint64_t head = shard.head.load(std::memory_order_relaxed);
  while (true) {
    Link(region_, last).store(head & kPageMask, std::memory_order_relaxed);
    uint64_t desired = ((head & ~kPageMask) + kTagOne) | first;
    if (shard.head.compare_exchange_weak(head, desired, std::memory_order_release,
                                         std::memory_order_relaxed)) {
      return;
    }
  }
}

void PageAllocator::PushPages(const uint64_t* pages, int n, int shard) {
  if (n <= 0) return;
  for (int i = 0; i + 1 < n; ++i)
    Link(region_, pages[i]).store(pages[i + 1], std::memory_order_relaxed);
  PushChain(shards_[shard], pages[0], pages[n - 1]);
}

internal::ThreadCache& PageAllocator::BindCache() {
  if (tls_cache == nullptr) tls_cache = &tls_holder.cache;
  internal::ThreadCache& c = *tls_cache;
  if (c.owner_id != id_) {
    c.Release();
    c.owner_id = id_;
  }
  return c;
}

Result<uint64_t> PageAllocator::Carve(internal::ThreadCache& cache) {
  std::lock_guard lock(carve_mu_);
  uint64_t hw = HighWater(region_).load(std::memory_order_relaxed);
  uint64_t first = hw;
  if (IsStatePage(first)) ++first;  // a new group starts with its (all-kNever) state page
  // A carve ends at the next multiple of kCarvePages within the group, so it never crosses a
  // state page and each carve's state bytes fill one cache line (the first carve of a group is
  // one page short: byte 0 belongs to the state page itself). Threads carving side by side thus
  // do not share the lines their state bytes live on.
  static_assert(kCarvePages <= kMinPageSize && kMinPageSize % kCarvePages == 0);
  uint64_t end = first + kCarvePages - (((first - 1) & group_mask_) % kCarvePages);
  uint64_t have = region_->page_count();
  if (end > have) {
    uint64_t step = std::clamp<uint64_t>(
        have, kGrowMinPages, std::max<uint64_t>(kGrowMaxBytes / region_->page_size(), kCarvePages));
    uint64_t target = std::min(end + step, region_->capacity_pages());
    Status st = region_->Grow(std::max(target, end));
    // Near a full disk the generous step may not fit where the pages needed now still do.
    if (st.IsNoSpace() && target > end) st = region_->Grow(end);
    TESSERA_RETURN_IF_ERROR(st);
  }
  for (uint64_t p = first; p < end; ++p) {
    std::atomic_ref<uint8_t>(*StateByte(p)).store(kFresh, std::memory_order_relaxed);
  }
  // Published after the state bytes, so a page below the mark never reads as kNever.
  HighWater(region_).store(end, std::memory_order_release);
  // The caller's cache is empty (that is why it carves), and kCarvePages <= kThreadCachePages:
  // the new pages go straight into it, untouched, highest first so they are used in order.
  static_assert(kCarvePages <= kThreadCachePages);
  for (uint64_t p = end - 1; p > first; --p) cache.pages[cache.n++] = p;
  return first;
}

Result<uint64_t> PageAllocator::AllocateSlow() {
  if (region_->read_only()) return ReadOnly("Allocate");
  internal::ThreadCache& c = BindCache();
  if (c.n == 0) {
    // Refill half the cache from the shared stacks, own shard first.
    for (int i = 0; i < kShards && c.n < kThreadCachePages / 2; ++i) {
      Shard& shard = shards_[(c.shard + i) % kShards];
      while (c.n < kThreadCachePages / 2) {
        uint64_t p = Pop(shard);
        if (p == 0) break;
        c.pages[c.n++] = p;
      }
    }
  }
  if (c.n > 0) return c.pages[--c.n];
  return Carve(c);
}

Result<uint64_t> PageAllocator::Allocate() {
  internal::ThreadCache* c = tls_cache;
  uint64_t page;
  if (c != nullptr && c->owner_id == id_ && c->n > 0) {
    page = c->pages[--c->n];
  } else {
    TESSERA_ASSIGN_OR_RETURN(page, AllocateSlow());
  }
  // Whoever holds a free page owns its state byte: Free() changes only kAllocated bytes, so a
  // plain load and store suffice here, no read-modify-write.
  std::atomic_ref<uint8_t> state(*StateByte(page));
  uint8_t old = state.load(std::memory_order_relaxed);
  TESSERA_ASSERT(old == kFresh || old == kFreed, "page ", page, " on a free list had state ",
                 int{old});
  Link(region_, page).store(0, std::memory_order_relaxed);
  state.store(kAllocated, std::memory_order_release);
  return page;
}

void PageAllocator::FreeSlow(uint64_t page) {
  internal::ThreadCache& c = BindCache();
  if (c.n == kThreadCachePages) {
    // Spill the older half to this thread's shard, where other threads can take it.
    constexpr int kHalf = kThreadCachePages / 2;
    PushPages(c.pages, kHalf, c.shard);
    std::memmove(c.pages, c.pages + kHalf, sizeof(uint64_t) * (kThreadCachePages - kHalf));
    c.n -= kHalf;
  }
  c.pages[c.n++] = page;
}

Status PageAllocator::Free(uint64_t page) {
  if (region_->read_only()) return ReadOnly("Free");
  if (page == 0) return NotAllocated(page, "the allocator's header page");
  if (page >= HighWater(region_).load(std::memory_order_acquire)) {
    return NotAllocated(page, "past the high-water mark");
  }
  if (IsStatePage(page)) return NotAllocated(page, "an allocator state page");
  // The one read-modify-write of a free: two threads freeing one page cannot both succeed.
  uint8_t expected = kAllocated;
  if (!std::atomic_ref<uint8_t>(*StateByte(page))
           .compare_exchange_strong(expected, kFreed, std::memory_order_acq_rel)) {
    if (expected == kFreed) {
      return Status::InvalidArgument("page " + std::to_string(page) + " is already free")
          .WithCCode(TESSERA_PAGE_ALREADY_FREE);
    }
    return NotAllocated(page, "not handed out yet");
  }
  internal::ThreadCache* c = tls_cache;
  if (c != nullptr && c->owner_id == id_ && c->n < kThreadCachePages) {
    c->pages[c->n++] = page;
  } else {
    FreeSlow(page);
  }
  return Status::Ok();
}

Status PageAllocator::CheckAllocated(uint64_t page) const {
  if (page == 0) return NotAllocated(page, "the allocator's header page");
  if (page >= HighWater(region_).load(std::memory_order_acquire)) {
    return NotAllocated(page, "past the high-water mark");
  }
  if (IsStatePage(page)) return NotAllocated(page, "an allocator state page");
  uint8_t s = std::atomic_ref<uint8_t>(*StateByte(page)).load(std::memory_order_acquire);
  if (s == kAllocated) return Status::Ok();
  if (s == kFreed) {
    return Status::InvalidArgument("page " + std::to_string(page) + " is free")
        .WithCCode(TESSERA_PAGE_ALREADY_FREE);
  }
  return NotAllocated(page, "not handed out yet");
}

uint64_t PageAllocator::allocated_pages() const {
  // Counted from the state bytes rather than kept in a counter, which would cost every Allocate
  // and Free one more atomic read-modify-write. Eight state bytes are read at a time: a byte is
  // kAllocated (binary 10) when its bit 1 is set and its bit 0 clear.
  constexpr uint64_t kLow = 0x0101010101010101;
  static_assert(kAllocated == 2);
  const uint64_t hw = high_water();
  uint64_t count = 0;
  for (uint64_t state_page = 1; state_page < hw; state_page += group_mask_ + 1) {
    // Bytes of the group's pages below hw; byte 0 is the state page's own and always kNever.
    uint64_t n = std::min(group_mask_ + 1, hw - state_page);
    uint8_t* bytes = region_->Page(state_page);
    auto* words = reinterpret_cast<uint64_t*>(bytes);
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w = std::atomic_ref<uint64_t>(words[i / 8]).load(std::memory_order_relaxed);
      count += static_cast<uint64_t>(std::popcount((w >> 1) & ~w & kLow));
    }
    for (; i < n; ++i) {
      count += std::atomic_ref<uint8_t>(bytes[i]).load(std::memory_order_relaxed) == kAllocated;
    }
  }
  return count;
}

uint64_t PageAllocator::high_water() const {
  return HighWater(region_).load(std::memory_order_acquire);
}

}  // namespace tessera::vmem
