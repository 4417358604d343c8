// Region: a file (or anonymous memory) mapped into one large, fixed virtual reservation.
//
// Invariants:
//  - The reservation (RegionOptions::reserve_bytes, default 64 GiB of address space) is made once
//    with PROT_NONE + MAP_NORESERVE; base() never changes for the life of the Region.
//  - Page p lives at base() + p * page_size() for every p < page_count(). Growing maps the new
//    part in place (MAP_FIXED inside the reservation), so a pointer into an existing page stays
//    valid until the Region is destroyed or Truncate() drops that page.
//  - A file-backed region's file size is always page_count() * page_size(). Disk space for new
//    pages is reserved with fallocate before they are mapped: a full disk is an error returned by
//    Grow(), never a SIGBUS at a later store.
//  - A writable file-backed Region holds an exclusive flock on its file: a second writer (another
//    process or another Region in this one) gets Busy. Read-only regions take no lock.
//  - Under RegionOptions::simulate_power_cut the file is mapped MAP_PRIVATE: stores reach the file
//    only through Flush(), so SimulatePowerCut() can drop everything not flushed (test mode).
//
// Thread safety: Page(), base(), page_size() and page_count() are safe from any thread at any time
// (page_count() is an atomic load; a page below it is mapped). Grow(), Truncate(), Flush(),
// Advise(), Protect() and Stats() are internally serialised and may be called from any thread;
// the caller must not touch pages at or beyond the new size while Truncate() runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "tessera/common/status.h"

namespace tessera::vmem {

inline constexpr uint32_t kMinPageSize = 4096;
inline constexpr uint32_t kMaxPageSize = 65536;
inline constexpr uint32_t kDefaultPageSize = 4096;
inline constexpr uint64_t kDefaultReserveBytes = uint64_t{64} << 30;

struct RegionOptions {
  uint32_t page_size = kDefaultPageSize;          // power of two in [kMinPageSize, kMaxPageSize]
  uint64_t reserve_bytes = kDefaultReserveBytes;  // address space reserved; caps the region size
  bool read_only = false;                         // map PROT_READ, no lock, Grow/Flush refused
  bool create = true;                             // create the file if it does not exist
  bool simulate_power_cut = false;                // test mode, see SimulatePowerCut()
};

// kWillWrite faults the pages in for writing now (MADV_POPULATE_WRITE), so later stores take no
// page fault each (until a flush write-protects them again); a no-op on a read-only region, and
// Ok without effect where madvise says EINVAL (kernels before 5.14, pages Protect made read-only).
enum class Advice { kNormal, kSequential, kRandom, kWillNeed, kDontNeed, kWillWrite };

struct PageRange {
  uint64_t first = 0;
  uint64_t count = 0;
};

struct RegionStats {
  uint64_t page_count = 0;      // pages mapped
  uint64_t bytes_mapped = 0;    // page_count * page_size
  uint64_t resident_pages = 0;  // pages in memory now (mincore)
  uint64_t flushes = 0;         // Flush calls that reached the disk
  uint64_t bytes_flushed = 0;   // bytes covered by those flushes
  uint64_t grows = 0;           // successful Grow calls that added pages
};

class Region {
 public:
  // Opens (or creates) `path`. An existing file must be a whole number of pages long, else
  // InvalidArgument naming the file and its size. Errors: InvalidArgument (bad page size, refined
  // with TESSERA_BAD_PAGE_SIZE), Busy (another writer holds the lock), NotFound (no file and
  // !create), IoError / NoSpace from the OS.
  static Result<std::unique_ptr<Region>> Open(const std::string& path,
                                              const RegionOptions& options);
  // Memory-only region; starts with zero pages.
  static Result<std::unique_ptr<Region>> OpenAnonymous(const RegionOptions& options);

  // Unmaps and closes. Does not flush: durability is what Flush() made durable.
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  uint8_t* base() const { return base_; }
  uint32_t page_size() const { return page_size_; }
  uint32_t page_shift() const { return page_shift_; }
  uint64_t page_count() const { return page_count_.load(std::memory_order_acquire); }
  uint64_t capacity_pages() const { return capacity_pages_; }
  bool read_only() const { return options_.read_only; }
  bool anonymous() const { return fd_ < 0; }
  const std::string& path() const { return path_; }

  // Address of page p. Pure arithmetic: the caller guarantees p < page_count().
  uint8_t* Page(uint64_t p) const { return base_ + (p << page_shift_); }

  // Ensures at least `pages` pages exist (no-op if already). New pages read as zeros. NoSpace if
  // the disk is full or `pages` exceeds capacity_pages(); nothing changes on error.
  Status Grow(uint64_t pages);
  // Drops pages >= `pages` and shrinks the file. Pointers into dropped pages become invalid.
  Status Truncate(uint64_t pages);

  // Makes the given pages durable (msync + fdatasync semantics). Flush() covers every page and the
  // file size. Anonymous regions: no-op that succeeds.
  Status Flush();
  Status Flush(std::span<const PageRange> ranges);
  // Writes back the file's dirty pages and waits for them without holding the region's lock
  // (Grow and Flush are not held up meanwhile), so that a Flush soon after has little left to
  // write. It promises no durability of its own. A failure is sticky like a failed Flush: the
  // kernel reports a writeback error only once, so every later Flush must fail too. No-op for
  // anonymous regions and with simulate_power_cut (there the Flush writes the pages).
  Status Writeback();

  Status Advise(PageRange range, Advice advice);
  // Changes protection of mapped pages: writable=false makes a stray store fault at once.
  Status Protect(PageRange range, bool writable);

  RegionStats Stats() const;

  // Test mode only (RegionOptions::simulate_power_cut): behaves like a power cut at this instant.
  // Each page changed since its last Flush is written back to the file with probability
  // `keep_fraction` (chosen by `seed`; 0 = every unflushed change is lost), then the mapping is
  // dropped. The Region must not be used afterwards except to destroy it. Returns InvalidArgument
  // when the region was not opened in that mode.
  Status SimulatePowerCut(uint64_t seed = 0, double keep_fraction = 0.0);

 private:
  Region() = default;

  RegionOptions options_;
  std::string path_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  uint64_t reserve_bytes_ = 0;
  uint64_t capacity_pages_ = 0;
  uint32_t page_size_ = 0;
  uint32_t page_shift_ = 0;
  std::atomic<uint64_t> page_count_{0};
  mutable std::mutex mu_;  // serialises Grow/Truncate/Flush/Advise/Protect and the counters
  RegionStats counters_;
  bool cut_ = false;  // SimulatePowerCut ran
  // The first failed flush, kept: after a failed fsync the kernel may have dropped the dirty pages,
  // so a later "successful" flush would prove nothing. Every later Flush/Grow/Truncate returns it.
  Status flush_error_;

  Status CheckWritable(const char* op) const;
  Status CheckRange(PageRange range, const char* op) const;
  Status MapPages(uint64_t first, uint64_t count);
  void Unreserve(uint64_t first, uint64_t count);
  Status FlushLocked(std::span<const PageRange> ranges, bool whole_file);
};

}  // namespace tessera::vmem
