#include "tessera/vmem/page_allocator.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

#include "tessera/common/errors.h"

namespace tessera::vmem {
namespace {

enum State : uint8_t { kNever = 0, kFresh = 1, kAllocated = 2, kFreed = 3 };

// The header page's first bytes. Native (little-endian on every supported machine) layout.
struct Header {
  uint64_t magic;
  uint32_t version;
  uint32_t page_size;
  uint64_t group_pages;  // data pages per state page (= page size)
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

int ThreadShard() {
  static std::atomic<unsigned> next_index{0};
  thread_local unsigned index = next_index.fetch_add(1, std::memory_order_relaxed);
  return static_cast<int>(index % PageAllocator::kShards);
}

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

}  // namespace

PageAllocator::PageAllocator(Region* region)
    : region_(region), group_span_(uint64_t{region->page_size()} + 1) {}

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
  int64_t allocated = 0;
  uint64_t tail[kShards] = {};
  int next_shard = 0;
  for (uint64_t p = 2; p < hw; ++p) {
    if (IsStatePage(p)) continue;
    uint8_t s = *StateByte(p);
    if (s == kAllocated) {
      ++allocated;
      continue;
    }
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
  shards_[0].allocations.store(allocated, std::memory_order_relaxed);
  return Status::Ok();
}

bool PageAllocator::IsStatePage(uint64_t page) const {
  return page >= 1 && (page - 1) % group_span_ == 0;
}

uint8_t* PageAllocator::StateByte(uint64_t page) const {
  uint64_t g = (page - 1) / group_span_;
  uint64_t idx = (page - 1) % group_span_ - 1;
  return region_->Page(1 + g * group_span_) + idx;
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

Result<uint64_t> PageAllocator::Carve(Shard& shard) {
  std::lock_guard lock(carve_mu_);
  // Another thread may have carved (and pushed onto this shard) while this one waited.
  if (uint64_t p = Pop(shard); p != 0) return p;
  uint64_t hw = HighWater(region_).load(std::memory_order_relaxed);
  uint64_t first = hw;
  if (IsStatePage(first)) ++first;  // a new group starts with its (all-kNever) state page
  // Groups hold a multiple of kCarvePages data pages, so a carve never crosses a state page.
  uint64_t end = first + kCarvePages;
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
  // Chain first+1 .. end-1 for the shard; `first` goes to the caller.
  for (uint64_t p = first + 1; p + 1 < end; ++p) {
    Link(region_, p).store(p + 1, std::memory_order_relaxed);
  }
  // Published after the state bytes, so a page below the mark never reads as kNever.
  HighWater(region_).store(end, std::memory_order_release);
  if (first + 1 < end) PushChain(shard, first + 1, end - 1);
  return first;
}

Result<uint64_t> PageAllocator::Allocate() {
  if (region_->read_only()) return ReadOnly("Allocate");
  int home = ThreadShard();
  uint64_t page = Pop(shards_[home]);
  for (int i = 1; page == 0 && i < kShards; ++i) page = Pop(shards_[(home + i) % kShards]);
  if (page == 0) {
    TESSERA_ASSIGN_OR_RETURN(page, Carve(shards_[home]));
  }
  uint8_t old =
      std::atomic_ref<uint8_t>(*StateByte(page)).exchange(kAllocated, std::memory_order_acq_rel);
  TESSERA_ASSERT(old == kFresh || old == kFreed, "page ", page, " on a free list had state ",
                 int{old});
  Link(region_, page).store(0, std::memory_order_relaxed);
  shards_[home].allocations.fetch_add(1, std::memory_order_relaxed);
  return page;
}

Status PageAllocator::Free(uint64_t page) {
  if (region_->read_only()) return ReadOnly("Free");
  if (page == 0) return NotAllocated(page, "the allocator's header page");
  if (page >= HighWater(region_).load(std::memory_order_acquire)) {
    return NotAllocated(page, "past the high-water mark");
  }
  if (IsStatePage(page)) return NotAllocated(page, "an allocator state page");
  uint8_t expected = kAllocated;
  if (!std::atomic_ref<uint8_t>(*StateByte(page))
           .compare_exchange_strong(expected, kFreed, std::memory_order_acq_rel)) {
    if (expected == kFreed) {
      return Status::InvalidArgument("page " + std::to_string(page) + " is already free")
          .WithCCode(TESSERA_PAGE_ALREADY_FREE);
    }
    return NotAllocated(page, "not handed out yet");
  }
  int home = ThreadShard();
  PushChain(shards_[home], page, page);
  shards_[home].allocations.fetch_sub(1, std::memory_order_relaxed);
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
  int64_t sum = 0;
  for (const auto& s : shards_) sum += s.allocations.load(std::memory_order_relaxed);
  return sum < 0 ? 0 : static_cast<uint64_t>(sum);
}

uint64_t PageAllocator::high_water() const {
  return HighWater(region_).load(std::memory_order_acquire);
}

}  // namespace tessera::vmem
