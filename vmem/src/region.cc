#include "tessera/vmem/region.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <random>
#include <vector>

#include "space.h"
#include "tessera/common/errors.h"

namespace tessera::vmem {
namespace {

// Flush(ranges) issues one msync per merged range, and each msync is a separate device cache
// flush on most filesystems. Past this many disjoint ranges one fdatasync of the whole file is
// cheaper, and it makes at least the requested pages durable, which is all Flush promises.
constexpr size_t kMaxRangesBeforeFullSync = 16;

// mincore is asked about this many system pages at a time, so Stats() needs a bounded buffer
// whatever the size of the region.
constexpr uint64_t kMincoreChunkPages = uint64_t{1} << 16;

Status ValidateOptions(const RegionOptions& o) {
  if (!std::has_single_bit(o.page_size) || o.page_size < kMinPageSize ||
      o.page_size > kMaxPageSize) {
    return Status::InvalidArgument("page size " + std::to_string(o.page_size) +
                                   " is not a power of two between 4096 and 65536")
        .WithCCode(TESSERA_BAD_PAGE_SIZE);
  }
  if (static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) > o.page_size) {
    return Status::InvalidArgument("page size " + std::to_string(o.page_size) +
                                   " is smaller than the system page size")
        .WithCCode(TESSERA_BAD_PAGE_SIZE);
  }
  if (o.reserve_bytes < o.page_size) {
    return Status::InvalidArgument("reserve_bytes " + std::to_string(o.reserve_bytes) +
                                   " is smaller than one page");
  }
  return Status::Ok();
}

// Reserves `bytes` of address space aligned to `align`, inaccessible and without swap or commit
// accounting: it costs page-table space only for what is later mapped into it.
Result<uint8_t*> Reserve(uint64_t bytes, uint64_t align) {
  uint64_t total = bytes + align;
  void* p = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    return ErrnoStatus(errno, "reserving " + std::to_string(bytes) + " bytes of address space");
  }
  auto* start = static_cast<uint8_t*>(p);
  uint64_t head = (align - reinterpret_cast<uintptr_t>(start) % align) % align;
  uint8_t* aligned = start + head;
  // Trim the slack on both sides so exactly `bytes` stay reserved.
  if (head > 0) munmap(start, head);
  if (align - head > 0) munmap(aligned + bytes, align - head);
  return aligned;
}

Status PwriteAll(int fd, const uint8_t* src, uint64_t len, uint64_t off, const std::string& what) {
  while (len > 0) {
    ssize_t w = pwrite(fd, src, len, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "pwrite " + what);
    }
    src += w;
    len -= static_cast<uint64_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

Status PreadAll(int fd, uint8_t* dst, uint64_t len, uint64_t off, const std::string& what) {
  while (len > 0) {
    ssize_t r = pread(fd, dst, len, static_cast<off_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "pread " + what);
    }
    if (r == 0) return Status::IoError("pread " + what + ": unexpected end of file");
    dst += r;
    len -= static_cast<uint64_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Region>> Region::Open(const std::string& path,
                                             const RegionOptions& options) {
  TESSERA_RETURN_IF_ERROR(ValidateOptions(options));
  if (path.empty()) return Status::InvalidArgument("empty region path");

  std::unique_ptr<Region> r(new Region());
  r->options_ = options;
  r->path_ = path;
  r->page_size_ = options.page_size;
  r->page_shift_ = static_cast<uint32_t>(std::countr_zero(options.page_size));
  r->capacity_pages_ = options.reserve_bytes >> r->page_shift_;
  r->reserve_bytes_ = r->capacity_pages_ << r->page_shift_;

  int flags = O_CLOEXEC | (options.read_only ? O_RDONLY : O_RDWR);
  if (options.create && !options.read_only) flags |= O_CREAT;
  int fd;
  do {
    fd = ::open(path.c_str(), flags, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  r->fd_ = fd;

  if (!options.read_only) {
    // flock locks belong to the open file description, so a second open() of the same file in
    // this process conflicts exactly like one in another process.
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        return Status::Busy(path + " is already open for writing (by this or another process)")
            .WithCCode(TESSERA_BUSY);
      }
      return ErrnoStatus(errno, "flock " + path);
    }
  }

  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat " + path);
  auto size = static_cast<uint64_t>(st.st_size);
  if (size % r->page_size_ != 0) {
    return Status::InvalidArgument(path + " is " + std::to_string(size) +
                                   " bytes, not a whole number of " +
                                   std::to_string(r->page_size_) + "-byte pages");
  }
  uint64_t pages = size >> r->page_shift_;
  if (pages > r->capacity_pages_) {
    return Status::InvalidArgument(path + " has " + std::to_string(pages) +
                                   " pages, more than the reservation of " +
                                   std::to_string(r->capacity_pages_) + " pages");
  }

  TESSERA_ASSIGN_OR_RETURN(r->base_, Reserve(r->reserve_bytes_, r->page_size_));
  if (pages > 0) TESSERA_RETURN_IF_ERROR(r->MapPages(0, pages));
  r->page_count_.store(pages, std::memory_order_release);
  return r;
}

Result<std::unique_ptr<Region>> Region::OpenAnonymous(const RegionOptions& options) {
  TESSERA_RETURN_IF_ERROR(ValidateOptions(options));
  if (options.read_only) {
    return Status::InvalidArgument("an anonymous region cannot be read-only: it starts empty");
  }
  if (options.simulate_power_cut) {
    return Status::InvalidArgument(
        "simulate_power_cut needs a file: an anonymous region has no "
        "flushed state to fall back to");
  }
  std::unique_ptr<Region> r(new Region());
  r->options_ = options;
  r->page_size_ = options.page_size;
  r->page_shift_ = static_cast<uint32_t>(std::countr_zero(options.page_size));
  r->capacity_pages_ = options.reserve_bytes >> r->page_shift_;
  r->reserve_bytes_ = r->capacity_pages_ << r->page_shift_;
  TESSERA_ASSIGN_OR_RETURN(r->base_, Reserve(r->reserve_bytes_, r->page_size_));
  return r;
}

Region::~Region() {
  if (base_ != nullptr && !cut_) munmap(base_, reserve_bytes_);
  if (fd_ >= 0) ::close(fd_);  // also releases the flock
}

// Maps pages [first, first + count) over the reservation. The file (if any) already covers them.
Status Region::MapPages(uint64_t first, uint64_t count) {
  uint8_t* addr = Page(first);
  uint64_t len = count << page_shift_;
  void* p;
  if (fd_ < 0) {
    // Without MAP_NORESERVE, so the kernel's commit accounting can refuse the memory here rather
    // than the OOM killer ending the process at a later store.
    p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  } else {
    int prot = options_.read_only ? PROT_READ : PROT_READ | PROT_WRITE;
    // The power-cut mode maps privately so stores stay out of the file until Flush writes them.
    int share = options_.simulate_power_cut ? MAP_PRIVATE : MAP_SHARED;
    p = mmap(addr, len, prot, share | MAP_FIXED, fd_, static_cast<off_t>(first << page_shift_));
  }
  if (p == MAP_FAILED) {
    int err = errno;
    // A failed MAP_FIXED may already have removed the reservation underneath; put it back so the
    // range stays ours and no other mapping can land inside it.
    Unreserve(first, count);
    return ErrnoStatus(err,
                       "mapping pages of " + (fd_ < 0 ? std::string("anonymous region") : path_));
  }
  TESSERA_ASSERT(p == addr, "MAP_FIXED mapped at another address");
  return Status::Ok();
}

// Returns pages [first, first + count) to the inaccessible reservation, releasing their memory.
void Region::Unreserve(uint64_t first, uint64_t count) {
  void* p = mmap(Page(first), count << page_shift_, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  TESSERA_ASSERT(p != MAP_FAILED, "cannot restore the address reservation: ", std::strerror(errno));
}

Status Region::CheckWritable(const char* op) const {
  if (cut_) {
    return Status::InvalidArgument(std::string(op) + " after SimulatePowerCut");
  }
  if (options_.read_only) {
    return Status::InvalidArgument(std::string(op) + " on read-only region " + path_)
        .WithCCode(TESSERA_READ_ONLY);
  }
  if (!flush_error_.ok()) {
    return Status(flush_error_)
        .WithCCode(TESSERA_FATAL)
        .WithContext(std::string(op) + " refused after an earlier flush failure");
  }
  return Status::Ok();
}

Status Region::CheckRange(PageRange range, const char* op) const {
  uint64_t count = page_count();
  if (range.first > count || range.count > count - range.first) {
    return Status::InvalidArgument(std::string(op) + ": pages [" + std::to_string(range.first) +
                                   ", +" + std::to_string(range.count) + ") run past the " +
                                   std::to_string(count) + " mapped pages")
        .WithCCode(TESSERA_OUT_OF_BOUNDS);
  }
  return Status::Ok();
}

Status Region::Grow(uint64_t pages) {
  std::lock_guard lock(mu_);
  TESSERA_RETURN_IF_ERROR(CheckWritable("Grow"));
  uint64_t old = page_count_.load(std::memory_order_relaxed);
  if (pages <= old) return Status::Ok();
  if (pages > capacity_pages_) {
    return Status::NoSpace("cannot grow to " + std::to_string(pages) +
                           " pages: the reservation holds " + std::to_string(capacity_pages_));
  }
  if (fd_ >= 0) {
    TESSERA_RETURN_IF_ERROR(
        internal::ReserveSpace(fd_, old << page_shift_, pages << page_shift_, path_));
  }
  Status st = MapPages(old, pages - old);
  if (!st.ok()) {
    if (fd_ >= 0) (void)!ftruncate(fd_, static_cast<off_t>(old << page_shift_));
    return st;
  }
  page_count_.store(pages, std::memory_order_release);
  ++counters_.grows;
  return Status::Ok();
}

Status Region::Truncate(uint64_t pages) {
  std::lock_guard lock(mu_);
  TESSERA_RETURN_IF_ERROR(CheckWritable("Truncate"));
  uint64_t old = page_count_.load(std::memory_order_relaxed);
  if (pages >= old) return Status::Ok();
  // The file shrinks first: if that fails nothing has changed. Between the two steps the dropped
  // pages are still mapped but past the end of the file; the caller does not touch them.
  if (fd_ >= 0 && ftruncate(fd_, static_cast<off_t>(pages << page_shift_)) != 0) {
    return ErrnoStatus(errno, "ftruncate " + path_);
  }
  page_count_.store(pages, std::memory_order_release);
  Unreserve(pages, old - pages);
  return Status::Ok();
}

Status Region::Flush() {
  std::lock_guard lock(mu_);
  PageRange all{0, page_count_.load(std::memory_order_relaxed)};
  return FlushLocked(std::span<const PageRange>(&all, 1), /*whole_file=*/true);
}

Status Region::Flush(std::span<const PageRange> ranges) {
  std::lock_guard lock(mu_);
  return FlushLocked(ranges, /*whole_file=*/false);
}

Status Region::Writeback() {
  if (fd_ < 0 || options_.simulate_power_cut) return Status::Ok();
  {
    std::lock_guard lock(mu_);
    TESSERA_RETURN_IF_ERROR(CheckWritable("Writeback"));
  }
  if (fdatasync(fd_) != 0) {
    Status st = ErrnoStatus(errno, "fdatasync " + path_);
    std::lock_guard lock(mu_);
    if (flush_error_.ok()) flush_error_ = st;
    return Status(st).WithCCode(TESSERA_FATAL);
  }
  return Status::Ok();
}

Status Region::FlushLocked(std::span<const PageRange> ranges, bool whole_file) {
  if (fd_ < 0) {
    for (const auto& r : ranges) TESSERA_RETURN_IF_ERROR(CheckRange(r, "Flush"));
    return Status::Ok();  // nothing to make durable
  }
  TESSERA_RETURN_IF_ERROR(CheckWritable("Flush"));
  for (const auto& r : ranges) TESSERA_RETURN_IF_ERROR(CheckRange(r, "Flush"));

  // Sort and merge so overlapping or adjacent ranges cost one call.
  std::vector<PageRange> merged;
  merged.reserve(ranges.size());
  for (const auto& r : ranges) {
    if (r.count > 0) merged.push_back(r);
  }
  std::sort(merged.begin(), merged.end(),
            [](const PageRange& a, const PageRange& b) { return a.first < b.first; });
  size_t out = 0;
  for (size_t i = 0; i < merged.size(); ++i) {
    if (out > 0 && merged[i].first <= merged[out - 1].first + merged[out - 1].count) {
      uint64_t end = std::max(merged[out - 1].first + merged[out - 1].count,
                              merged[i].first + merged[i].count);
      merged[out - 1].count = end - merged[out - 1].first;
    } else {
      merged[out++] = merged[i];
    }
  }
  merged.resize(out);
  uint64_t bytes = 0;
  for (const auto& r : merged) bytes += r.count << page_shift_;
  if (merged.empty() && !whole_file) return Status::Ok();

  Status st;
  if (options_.simulate_power_cut) {
    // The private mapping holds the stores; writing them to the file is what "flushed" means in
    // this mode, and what SimulatePowerCut later compares against.
    for (const auto& r : merged) {
      st = PwriteAll(fd_, Page(r.first), r.count << page_shift_, r.first << page_shift_, path_);
      if (!st.ok()) break;
    }
    if (st.ok() && fdatasync(fd_) != 0) st = ErrnoStatus(errno, "fdatasync " + path_);
  } else if (whole_file || merged.size() > kMaxRangesBeforeFullSync) {
    // On Linux fdatasync also writes back pages dirtied through a MAP_SHARED mapping, and it
    // covers the file size, so it serves both the whole-file flush and long range lists.
    if (fdatasync(fd_) != 0) st = ErrnoStatus(errno, "fdatasync " + path_);
  } else {
    for (const auto& r : merged) {
      if (msync(Page(r.first), r.count << page_shift_, MS_SYNC) != 0) {
        st = ErrnoStatus(errno, "msync " + path_);
        break;
      }
    }
  }
  if (!st.ok()) {
    flush_error_ = st;
    return Status(st).WithCCode(TESSERA_FATAL);
  }
  ++counters_.flushes;
  counters_.bytes_flushed += bytes;
  return Status::Ok();
}

Status Region::Advise(PageRange range, Advice advice) {
  std::lock_guard lock(mu_);
  if (cut_) return Status::InvalidArgument("Advise after SimulatePowerCut");
  TESSERA_RETURN_IF_ERROR(CheckRange(range, "Advise"));
  if (range.count == 0) return Status::Ok();
  int hint = MADV_NORMAL;
  switch (advice) {
    case Advice::kNormal:
      hint = MADV_NORMAL;
      break;
    case Advice::kSequential:
      hint = MADV_SEQUENTIAL;
      break;
    case Advice::kRandom:
      hint = MADV_RANDOM;
      break;
    case Advice::kWillNeed:
      hint = MADV_WILLNEED;
      break;
    case Advice::kDontNeed:
      // On a private mapping MADV_DONTNEED throws away stores that a shared mapping would keep
      // in the page cache; in the power-cut mode that would lose unflushed data outside a power
      // cut, so the hint is dropped there.
      if (options_.simulate_power_cut) return Status::Ok();
      hint = MADV_DONTNEED;
      break;
    case Advice::kWillWrite:
      if (options_.read_only) return Status::Ok();
      hint = MADV_POPULATE_WRITE;
      break;
  }
  if (madvise(Page(range.first), range.count << page_shift_, hint) != 0) {
    // EINVAL: before Linux 5.14, or pages made read-only (Protect); a hint either way.
    if (advice == Advice::kWillWrite && errno == EINVAL) return Status::Ok();
    return ErrnoStatus(errno, "madvise");
  }
  return Status::Ok();
}

Status Region::Protect(PageRange range, bool writable) {
  std::lock_guard lock(mu_);
  if (cut_) return Status::InvalidArgument("Protect after SimulatePowerCut");
  if (writable && options_.read_only) {
    return Status::InvalidArgument("cannot make pages of read-only region " + path_ + " writable")
        .WithCCode(TESSERA_READ_ONLY);
  }
  TESSERA_RETURN_IF_ERROR(CheckRange(range, "Protect"));
  if (range.count == 0) return Status::Ok();
  int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  if (mprotect(Page(range.first), range.count << page_shift_, prot) != 0) {
    return ErrnoStatus(errno, "mprotect");
  }
  return Status::Ok();
}

RegionStats Region::Stats() const {
  std::lock_guard lock(mu_);
  RegionStats s = counters_;
  s.page_count = cut_ ? 0 : page_count_.load(std::memory_order_relaxed);
  s.bytes_mapped = s.page_count << page_shift_;
  s.resident_pages = 0;
  if (s.page_count == 0) return s;
  // mincore reports system pages; a region page counts as resident if any of its system pages is.
  const uint64_t sys_page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t per_page = page_size_ / sys_page;
  const uint64_t total_sys = s.bytes_mapped / sys_page;
  std::vector<unsigned char> vec(std::min(total_sys, kMincoreChunkPages));
  for (uint64_t done = 0; done < total_sys;) {
    // Chunks hold whole region pages, so no region page straddles two calls.
    uint64_t n = std::min<uint64_t>(vec.size() / per_page * per_page, total_sys - done);
    if (mincore(base_ + done * sys_page, n * sys_page, vec.data()) != 0) break;
    for (uint64_t i = 0; i < n; i += per_page) {
      bool any = false;
      for (uint64_t j = 0; j < per_page; ++j) any = any || (vec[i + j] & 1) != 0;
      s.resident_pages += any ? 1 : 0;
    }
    done += n;
  }
  return s;
}

Status Region::SimulatePowerCut(uint64_t seed, double keep_fraction) {
  std::lock_guard lock(mu_);
  if (!options_.simulate_power_cut) {
    return Status::InvalidArgument("SimulatePowerCut needs RegionOptions::simulate_power_cut");
  }
  if (cut_) return Status::InvalidArgument("SimulatePowerCut ran already");
  if (!(keep_fraction >= 0.0 && keep_fraction <= 1.0)) {
    return Status::InvalidArgument("keep_fraction must be in [0, 1]");
  }
  // Pages are the unit of loss: a real device may tear a page, the engine's checksums catch that,
  // and this mode models the coarser case of whole pages reaching the disk or not.
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::vector<uint8_t> disk(page_size_);
  uint64_t count = page_count_.load(std::memory_order_relaxed);
  Status st;
  for (uint64_t p = 0; p < count && st.ok(); ++p) {
    st = PreadAll(fd_, disk.data(), page_size_, p << page_shift_, path_);
    if (!st.ok()) break;
    if (std::memcmp(disk.data(), Page(p), page_size_) == 0) continue;
    // Drawn only for changed pages, in page order: the same seed and the same changes give the
    // same outcome.
    if (coin(rng) < keep_fraction) {
      st = PwriteAll(fd_, Page(p), page_size_, p << page_shift_, path_);
    }
  }
  munmap(base_, reserve_bytes_);
  cut_ = true;
  page_count_.store(0, std::memory_order_release);
  // The lock goes with the "crashed" process, so a test can reopen the file at once. The
  // descriptor stays open until destruction so anonymous() keeps its answer.
  if (!options_.read_only) flock(fd_, LOCK_UN);
  return st;
}

}  // namespace tessera::vmem
