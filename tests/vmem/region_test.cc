#include "tessera/vmem/region.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "space.h"
#include "subprocess.h"
#include "tessera/common/errors.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define TESSERA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TESSERA_ASAN 1
#endif
#endif

// A store that must fault: the child is killed by SIGSEGV, or, under AddressSanitizer (which
// catches the signal to report it and exits 1), dies with ASan's SEGV report.
#ifdef TESSERA_ASAN
#define EXPECT_STORE_FAULTS(stmt) EXPECT_DEATH(stmt, "SEGV")
#else
#define EXPECT_STORE_FAULTS(stmt) EXPECT_EXIT(stmt, ::testing::KilledBySignal(SIGSEGV), "")
#endif

namespace tessera::vmem {
namespace {

using tessera::testing::TempDir;
using testing::RunInChild;

uint64_t FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return ~uint64_t{0};
  return static_cast<uint64_t>(st.st_size);
}

void FillPage(Region& r, uint64_t p, uint8_t byte) { std::memset(r.Page(p), byte, r.page_size()); }

bool PageIs(const Region& r, uint64_t p, uint8_t byte) {
  const uint8_t* a = r.Page(p);
  for (uint32_t i = 0; i < r.page_size(); ++i) {
    if (a[i] != byte) return false;
  }
  return true;
}

std::unique_ptr<Region> MustOpen(const std::string& path, RegionOptions o = {}) {
  auto r = Region::Open(path, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

// A file-backed region of `pages` pages, each filled with `byte` (null on failure).
std::unique_ptr<Region> MustOpenFilled(const std::string& path, uint64_t pages, uint8_t byte) {
  auto r = MustOpen(path);
  if (r == nullptr || !r->Grow(pages).ok()) return nullptr;
  for (uint64_t p = 0; p < pages; ++p) FillPage(*r, p, byte);
  return r;
}

TEST(RegionTest, RejectsPageSizesThatAreNotPowersOfTwoInRange) {
  TempDir dir;
  for (uint32_t ps : {0u, 1000u, 2048u, 4097u, 12288u, 131072u}) {
    RegionOptions o;
    o.page_size = ps;
    auto f = Region::Open(dir.File("r"), o);
    ASSERT_FALSE(f.ok()) << ps;
    EXPECT_TRUE(f.status().IsInvalidArgument());
    EXPECT_EQ(ToCError(f.status()), TESSERA_BAD_PAGE_SIZE) << ps;
    auto a = Region::OpenAnonymous(o);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(ToCError(a.status()), TESSERA_BAD_PAGE_SIZE) << ps;
  }
  for (uint32_t ps : {4096u, 8192u, 16384u, 32768u, 65536u}) {
    RegionOptions o;
    o.page_size = ps;
    auto a = Region::OpenAnonymous(o);
    ASSERT_TRUE(a.ok()) << ps;
    EXPECT_EQ((*a)->page_size(), ps);
    EXPECT_EQ(uint32_t{1} << (*a)->page_shift(), ps);
    EXPECT_EQ(reinterpret_cast<uintptr_t>((*a)->base()) % ps, 0u) << "base aligned to a page";
  }
}

// Grows one page at a time and then in large steps; every earlier pointer stays valid and keeps
// its contents, and new pages read as zeros.
void CheckGrowthKeepsAddresses(Region& r) {
  ASSERT_EQ(r.page_count(), 0u);
  ASSERT_TRUE(r.Grow(1).ok());
  uint8_t* base = r.base();
  uint8_t* page0 = r.Page(0);
  std::memcpy(page0, "first page", 11);
  std::vector<uint64_t> sizes = {2, 3, 17, 64, 65, 300, 1000, 4096};
  uint64_t written = 1;
  for (uint64_t n : sizes) {
    ASSERT_TRUE(r.Grow(n).ok()) << n;
    ASSERT_EQ(r.page_count(), n);
    ASSERT_EQ(r.base(), base);
    ASSERT_EQ(r.Page(0), page0);
    ASSERT_EQ(std::memcmp(page0, "first page", 11), 0);
    for (uint64_t p = written; p < n; ++p) {
      ASSERT_TRUE(PageIs(r, p, 0)) << "new page " << p << " is not zero";
      std::memcpy(r.Page(p), &p, sizeof p);
    }
    written = n;
  }
  for (uint64_t p = 1; p < written; ++p) {
    uint64_t v;
    std::memcpy(&v, r.Page(p), sizeof v);
    ASSERT_EQ(v, p);
  }
  ASSERT_TRUE(r.Grow(10).ok()) << "growing to fewer pages is a no-op";
  EXPECT_EQ(r.page_count(), written);
  EXPECT_EQ(r.Stats().grows, sizes.size() + 1);
}

TEST(RegionTest, GrowthKeepsAddressesStableFileBacked) {
  TempDir dir;
  auto r = MustOpen(dir.File("r"));
  ASSERT_NE(r, nullptr);
  EXPECT_FALSE(r->anonymous());
  CheckGrowthKeepsAddresses(*r);
  EXPECT_EQ(FileSize(dir.File("r")), r->page_count() * r->page_size());
}

TEST(RegionTest, GrowthKeepsAddressesStableAnonymous) {
  auto r = Region::OpenAnonymous({});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((*r)->anonymous());
  CheckGrowthKeepsAddresses(**r);
}

TEST(RegionTest, GrowPastTheReservationIsNoSpaceAndChangesNothing) {
  TempDir dir;
  RegionOptions o;
  o.reserve_bytes = 16 * 4096 + 100;  // rounds down to 16 pages
  auto r = MustOpen(dir.File("r"), o);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->capacity_pages(), 16u);
  ASSERT_TRUE(r->Grow(16).ok());
  Status st = r->Grow(17);
  EXPECT_TRUE(st.IsNoSpace()) << st.ToString();
  EXPECT_EQ(r->page_count(), 16u);
  EXPECT_EQ(FileSize(dir.File("r")), 16u * 4096);
}

TEST(RegionTest, ConcurrentReadersSeeOnlyMappedPagesWhileGrowing) {
  auto r = Region::OpenAnonymous({});
  ASSERT_TRUE(r.ok());
  Region& region = **r;
  constexpr uint64_t kPages = 3000;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> bad{0};
  std::vector<std::thread> readers;
  readers.reserve(2);
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      while (!done.load()) {
        uint64_t n = region.page_count();
        if (n == 0) continue;
        // Any page below page_count() is mapped; its tag is either written or still zero.
        uint64_t v = std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(region.Page(n - 1)))
                         .load(std::memory_order_acquire);
        if (v != 0 && v != n) bad.fetch_add(1);
      }
    });
  }
  for (uint64_t n = 1; n <= kPages; ++n) {
    ASSERT_TRUE(region.Grow(n).ok());
    std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(region.Page(n - 1)))
        .store(n, std::memory_order_release);
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0u);
}

TEST(RegionTest, DataPersistsAcrossReopen) {
  TempDir dir;
  const std::string path = dir.File("r");
  {
    auto r = MustOpen(path);
    ASSERT_NE(r, nullptr);
    ASSERT_TRUE(r->Grow(8).ok());
    for (uint64_t p = 0; p < 8; ++p) FillPage(*r, p, static_cast<uint8_t>(0x10 + p));
    ASSERT_TRUE(r->Flush().ok());
    FillPage(*r, 7, 0x77);  // not flushed: the shared mapping still puts it in the file
  }
  auto r = MustOpen(path);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->page_count(), 8u);
  for (uint64_t p = 0; p < 7; ++p) EXPECT_TRUE(PageIs(*r, p, static_cast<uint8_t>(0x10 + p))) << p;
  EXPECT_TRUE(PageIs(*r, 7, 0x77));
  r.reset();
  RegionOptions ro;
  ro.read_only = true;
  auto rr = MustOpen(path, ro);
  ASSERT_NE(rr, nullptr);
  EXPECT_TRUE(rr->read_only());
  EXPECT_TRUE(PageIs(*rr, 3, 0x13));
}

TEST(RegionTest, OpenChecksTheFile) {
  TempDir dir;
  RegionOptions no_create;
  no_create.create = false;
  auto missing = Region::Open(dir.File("missing"), no_create);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.status().IsNotFound()) << missing.status().ToString();

  {
    std::ofstream f(dir.File("odd"));
    f << std::string(5000, 'x');
  }
  auto odd = Region::Open(dir.File("odd"), {});
  ASSERT_FALSE(odd.ok());
  EXPECT_TRUE(odd.status().IsInvalidArgument());
  EXPECT_NE(odd.status().message().find("5000"), std::string::npos) << odd.status().message();

  RegionOptions small;
  small.reserve_bytes = 4096;
  {
    std::ofstream f(dir.File("big"));
    f << std::string(8192, 'x');
  }
  auto big = Region::Open(dir.File("big"), small);
  ASSERT_FALSE(big.ok());
  EXPECT_TRUE(big.status().IsInvalidArgument());

  RegionOptions tiny;
  tiny.reserve_bytes = 100;
  EXPECT_TRUE(Region::OpenAnonymous(tiny).status().IsInvalidArgument());
  EXPECT_TRUE(Region::Open("", {}).status().IsInvalidArgument());
  RegionOptions ro;
  ro.read_only = true;
  EXPECT_TRUE(Region::OpenAnonymous(ro).status().IsInvalidArgument());
}

TEST(RegionTest, SecondWriterInTheSameProcessIsBusy) {
  TempDir dir;
  const std::string path = dir.File("r");
  auto first = MustOpen(path);
  ASSERT_NE(first, nullptr);
  auto second = Region::Open(path, {});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(second.status().IsBusy()) << second.status().ToString();
  EXPECT_EQ(ToCError(second.status()), TESSERA_BUSY);
  RegionOptions ro;
  ro.read_only = true;
  EXPECT_TRUE(Region::Open(path, ro).ok()) << "readers take no lock";
  first.reset();
  EXPECT_TRUE(Region::Open(path, {}).ok()) << "the lock goes with the first writer";
}

TEST(RegionTest, SecondWriterInAnotherProcessIsBusy) {
  TempDir dir;
  const std::string path = dir.File("r");
  auto first = MustOpen(path);
  ASSERT_NE(first, nullptr);
  int rc = RunInChild([&] {
    auto r = Region::Open(path, {});
    CHILD_CHECK(!r.ok(), 1);
    CHILD_CHECK(r.status().IsBusy(), 2);
    return 0;
  });
  EXPECT_EQ(rc, 0);
  first.reset();
  rc = RunInChild([&] { return Region::Open(path, {}).ok() ? 0 : 3; });
  EXPECT_EQ(rc, 0);
}

TEST(RegionTest, ReadOnlyRegionRefusesChanges) {
  TempDir dir;
  const std::string path = dir.File("r");
  {
    auto w = MustOpen(path);
    ASSERT_NE(w, nullptr);
    ASSERT_TRUE(w->Grow(4).ok());
    FillPage(*w, 2, 0xab);
  }
  RegionOptions ro;
  ro.read_only = true;
  auto r = MustOpen(path, ro);
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(PageIs(*r, 2, 0xab));
  for (const Status& st : {r->Grow(8), r->Truncate(1), r->Flush(), r->Protect({0, 1}, true)}) {
    EXPECT_TRUE(st.IsInvalidArgument()) << st.ToString();
    EXPECT_EQ(ToCError(st), TESSERA_READ_ONLY);
  }
  EXPECT_EQ(r->page_count(), 4u);
  EXPECT_TRUE(r->Advise({0, 4}, Advice::kWillNeed).ok());
  EXPECT_STORE_FAULTS({ r->Page(1)[0] = 1; });
}

// kWillWrite faults pages in ahead of their first store (the engine does it at the file's end):
// stores to them then take no page fault (counted by the kernel for this thread), while stores
// to pages not advised do; the pages stay zero, and what is stored in them reaches the file.
TEST(RegionTest, WillWriteSparesTheStoresTheirPageFaults) {
  void* probe = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(probe, MAP_FAILED);
  const bool supported = madvise(probe, 4096, MADV_POPULATE_WRITE) == 0;
  munmap(probe, 4096);
  if (!supported) GTEST_SKIP() << "this kernel has no MADV_POPULATE_WRITE (Linux 5.14)";
  const auto faults = [] {
    rusage u{};
    getrusage(RUSAGE_THREAD, &u);
    return u.ru_minflt + u.ru_majflt;
  };
  TempDir dir;
  const std::string path = dir.File("r");
  {
    auto w = MustOpen(path);
    ASSERT_NE(w, nullptr);
    ASSERT_TRUE(w->Grow(64).ok());
    ASSERT_TRUE(w->Advise({8, 48}, Advice::kWillWrite).ok());
    for (uint64_t p = 8; p < 56; ++p) ASSERT_TRUE(PageIs(*w, p, 0)) << "page " << p;
    long before = faults();
    for (uint64_t p = 8; p < 56; ++p) w->Page(p)[100] = static_cast<uint8_t>(p);
    EXPECT_EQ(faults() - before, 0) << "stores to advised pages faulted";
    before = faults();
    for (uint64_t p = 56; p < 64; ++p) w->Page(p)[100] = static_cast<uint8_t>(p);
    EXPECT_GE(faults() - before, 8) << "stores to pages not advised should fault: the count is "
                                       "not telling";
    EXPECT_EQ(ToCError(w->Advise({60, 8}, Advice::kWillWrite)), TESSERA_OUT_OF_BOUNDS);
    ASSERT_TRUE(w->Flush().ok());
  }
  RegionOptions ro;
  ro.read_only = true;
  auto r = MustOpen(path, ro);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->page_count(), 64u);
  for (uint64_t p = 8; p < 64; ++p) {
    ASSERT_EQ(r->Page(p)[100], static_cast<uint8_t>(p)) << "page " << p;
    ASSERT_EQ(r->Page(p)[99], 0) << "page " << p;
  }
  EXPECT_TRUE(r->Advise({0, 64}, Advice::kWillWrite).ok()) << "a no-op when read-only";
  EXPECT_STORE_FAULTS({ r->Page(10)[0] = 1; });
}

TEST(RegionTest, ProtectMakesStrayStoresFault) {
  auto r = Region::OpenAnonymous({});
  ASSERT_TRUE(r.ok());
  Region& region = **r;
  ASSERT_TRUE(region.Grow(4).ok());
  ASSERT_TRUE(region.Protect({1, 2}, false).ok());
  EXPECT_EQ(region.Page(1)[0], 0) << "protected pages stay readable";
  region.Page(0)[0] = 1;  // outside the protected range
  region.Page(3)[0] = 1;
  EXPECT_STORE_FAULTS({ region.Page(2)[0] = 1; });
  ASSERT_TRUE(region.Protect({1, 2}, true).ok());
  region.Page(2)[0] = 7;
  EXPECT_EQ(region.Page(2)[0], 7);
}

TEST(RegionTest, EveryRangeCheckReportsOutOfBounds) {
  TempDir dir;
  auto r = MustOpen(dir.File("r"));
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->Grow(8).ok());
  const PageRange bad[] = {{0, 9}, {8, 1}, {9, 0}, {7, 2}, {~uint64_t{0}, 2}, {2, ~uint64_t{0}}};
  for (PageRange range : bad) {
    SCOPED_TRACE(std::to_string(range.first) + "+" + std::to_string(range.count));
    Status st = r->Flush(std::span<const PageRange>(&range, 1));
    EXPECT_EQ(ToCError(st), TESSERA_OUT_OF_BOUNDS) << st.ToString();
    EXPECT_EQ(ToCError(r->Advise(range, Advice::kRandom)), TESSERA_OUT_OF_BOUNDS);
    EXPECT_EQ(ToCError(r->Protect(range, false)), TESSERA_OUT_OF_BOUNDS);
  }
  const PageRange good[] = {{0, 8}, {8, 0}, {3, 5}};
  for (PageRange range : good) {
    EXPECT_TRUE(r->Flush(std::span<const PageRange>(&range, 1)).ok());
    EXPECT_TRUE(r->Advise(range, Advice::kSequential).ok());
    EXPECT_TRUE(r->Protect(range, true).ok());
  }
  auto anon = Region::OpenAnonymous({});
  ASSERT_TRUE(anon.ok());
  ASSERT_TRUE((*anon)->Grow(2).ok());
  PageRange past{1, 2};
  EXPECT_EQ(ToCError((*anon)->Flush(std::span<const PageRange>(&past, 1))), TESSERA_OUT_OF_BOUNDS);
}

TEST(RegionTest, FlushCountsCallsAndBytes) {
  TempDir dir;
  auto r = MustOpenFilled(dir.File("r"), 64, 1);
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->Flush().ok());
  RegionStats s = r->Stats();
  EXPECT_EQ(s.flushes, 1u);
  EXPECT_EQ(s.bytes_flushed, 64u * 4096);
  // Overlapping and adjacent ranges merge: pages 0-5 and 10-11 are 8 pages.
  std::vector<PageRange> ranges = {{0, 3}, {2, 2}, {4, 2}, {10, 2}, {11, 1}, {20, 0}};
  ASSERT_TRUE(r->Flush(ranges).ok());
  s = r->Stats();
  EXPECT_EQ(s.flushes, 2u);
  EXPECT_EQ(s.bytes_flushed, (64u + 8) * 4096);
  // Many disjoint ranges take the whole-file path; the count is still what was asked for.
  std::vector<PageRange> many;
  for (uint64_t p = 0; p < 64; p += 2) many.push_back({p, 1});
  ASSERT_TRUE(r->Flush(many).ok());
  EXPECT_EQ(r->Stats().bytes_flushed, (64u + 8 + 32) * 4096);
  EXPECT_TRUE(r->Flush(std::span<const PageRange>()).ok());
  EXPECT_EQ(r->Stats().flushes, 3u) << "an empty range list flushes nothing";
  auto anon = Region::OpenAnonymous({});
  ASSERT_TRUE(anon.ok());
  EXPECT_TRUE((*anon)->Flush().ok());
}

TEST(RegionTest, WritebackIsNotAFlushAndLeavesThePagesAsTheyAre) {
  TempDir dir;
  auto r = MustOpenFilled(dir.File("r"), 32, 7);
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->Writeback().ok());
  EXPECT_EQ(r->Stats().flushes, 0u) << "a writeback promises nothing, so it is not counted";
  for (uint64_t p = 0; p < 32; ++p) FillPage(*r, p, 9);  // pages written back stay writable
  ASSERT_TRUE(r->Flush().ok());
  r.reset();
  auto again = MustOpen(dir.File("r"));
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->Page(31)[0], 9);
  EXPECT_EQ(again->Page(31)[again->page_size() - 1], 9);
  auto anon = Region::OpenAnonymous({});
  ASSERT_TRUE(anon.ok());
  EXPECT_TRUE((*anon)->Writeback().ok());
}

TEST(RegionTest, StatsCountResidentPages) {
  auto r = Region::OpenAnonymous({});
  ASSERT_TRUE(r.ok());
  Region& region = **r;
  ASSERT_TRUE(region.Grow(64).ok());
  EXPECT_EQ(region.Stats().resident_pages, 0u) << "anonymous pages are not resident until touched";
  for (uint64_t p = 0; p < 64; p += 4) region.Page(p)[100] = 1;
  RegionStats s = region.Stats();
  EXPECT_EQ(s.page_count, 64u);
  EXPECT_EQ(s.bytes_mapped, 64u * 4096);
  EXPECT_EQ(s.resident_pages, 16u);
  ASSERT_TRUE(region.Advise({0, 64}, Advice::kDontNeed).ok());
  EXPECT_EQ(region.Stats().resident_pages, 0u);
  EXPECT_EQ(region.Page(4)[100], 0) << "an anonymous page dropped with kDontNeed reads as zeros";

  RegionOptions big;
  big.page_size = 16384;
  auto r16 = Region::OpenAnonymous(big);
  ASSERT_TRUE(r16.ok());
  ASSERT_TRUE((*r16)->Grow(8).ok());
  (*r16)->Page(5)[16383] = 1;  // the last system page of region page 5
  EXPECT_EQ((*r16)->Stats().resident_pages, 1u);
}

TEST(RegionTest, TruncateDropsPagesAndShrinksTheFile) {
  TempDir dir;
  const std::string path = dir.File("r");
  auto r = MustOpen(path);
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->Grow(10).ok());
  uint8_t* base = r->base();
  for (uint64_t p = 0; p < 10; ++p) FillPage(*r, p, 0x5a);
  ASSERT_TRUE(r->Truncate(4).ok());
  EXPECT_EQ(r->page_count(), 4u);
  EXPECT_EQ(FileSize(path), 4u * 4096);
  EXPECT_TRUE(r->Truncate(6).ok()) << "truncating to more pages is a no-op";
  EXPECT_EQ(r->page_count(), 4u);
  EXPECT_STORE_FAULTS({ r->Page(5)[0] = 1; });
  ASSERT_TRUE(r->Grow(10).ok());
  EXPECT_EQ(r->base(), base);
  EXPECT_TRUE(PageIs(*r, 3, 0x5a));
  EXPECT_TRUE(PageIs(*r, 4, 0)) << "regrown pages read as zeros";
  EXPECT_TRUE(PageIs(*r, 9, 0));
}

// Disk full: the file may grow to 12 pages (RLIMIT_FSIZE) and the region tries to grow past it.
// Runs in a child because the limit is per process.
TEST(RegionTest, DiskFullIsAnErrorFromGrowAndKeepsEarlierData) {
  TempDir dir;
  const std::string path = dir.File("r");
  {
    auto r = MustOpen(path);
    ASSERT_NE(r, nullptr);
    ASSERT_TRUE(r->Grow(4).ok());
    for (uint64_t p = 0; p < 4; ++p) FillPage(*r, p, static_cast<uint8_t>(0xc0 + p));
    ASSERT_TRUE(r->Flush().ok());
  }
  int rc = RunInChild([&] {
    signal(SIGXFSZ, SIG_IGN);  // report EFBIG instead of killing the process
    rlimit lim{12 * 4096, 12 * 4096};
    CHILD_CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, 10);
    auto r = Region::Open(path, {});
    CHILD_CHECK(r.ok(), 11);
    Region& region = **r;
    CHILD_CHECK(region.Grow(8).ok(), 12);
    Status st = region.Grow(100);
    CHILD_CHECK(st.IsNoSpace(), 13);
    CHILD_CHECK(ToCError(st) == TESSERA_NO_SPACE, 14);
    CHILD_CHECK(region.page_count() == 8, 15);
    CHILD_CHECK(FileSize(path) == 8 * 4096, 16);
    for (uint64_t p = 0; p < 4; ++p) CHILD_CHECK(PageIs(region, p, 0xc0 + p), 17);
    // The region is still usable: stores into mapped pages and growth within the limit work.
    FillPage(region, 7, 0xee);
    CHILD_CHECK(region.Grow(12).ok(), 18);
    CHILD_CHECK(region.Grow(13).IsNoSpace(), 19);
    CHILD_CHECK(region.Flush().ok(), 20);
    // The zero-writing fallback (for filesystems without fallocate) reports the same.
    st = internal::ReserveSpace(open(path.c_str(), O_RDWR), 12 * 4096, 20 * 4096, path,
                                internal::SpaceMethod::kWriteZeros);
    CHILD_CHECK(st.IsNoSpace(), 21);
    CHILD_CHECK(FileSize(path) == 12 * 4096, 22);
    return 0;
  });
  ASSERT_EQ(rc, 0);
  auto r = MustOpen(path);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->page_count(), 12u);
  for (uint64_t p = 0; p < 4; ++p) EXPECT_TRUE(PageIs(*r, p, static_cast<uint8_t>(0xc0 + p)));
  EXPECT_TRUE(PageIs(*r, 7, 0xee));
}

TEST(RegionTest, ZeroWritingFallbackAllocatesTheBlocks) {
  TempDir dir;
  const std::string path = dir.File("f");
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "abc", 3, 0), 3);
  ASSERT_TRUE(internal::ReserveSpace(fd, 4096, 3 * 1024 * 1024 + 4096, path,
                                     internal::SpaceMethod::kWriteZeros)
                  .ok());
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 3u * 1024 * 1024 + 4096);
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 3u * 1024 * 1024) << "no holes left";
  char buf[3];
  ASSERT_EQ(pread(fd, buf, 3, 0), 3);
  EXPECT_EQ(std::memcmp(buf, "abc", 3), 0) << "existing bytes untouched";
  std::vector<char> tail(4096, 1);
  ASSERT_EQ(pread(fd, tail.data(), tail.size(), 3 * 1024 * 1024), 4096);
  EXPECT_EQ(std::count(tail.begin(), tail.end(), 0), 4096);
  EXPECT_TRUE(internal::ReserveSpace(fd, 8192, 4096, path).ok()) << "shrinking is a no-op";
  close(fd);
}

}  // namespace
}  // namespace tessera::vmem
