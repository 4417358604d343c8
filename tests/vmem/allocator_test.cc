#include "tessera/vmem/page_allocator.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "subprocess.h"
#include "tessera/common/errors.h"
#include "test_util.h"

namespace tessera::vmem {
namespace {

using tessera::testing::TempDir;
using testing::RunInChild;

struct Opened {
  std::unique_ptr<Region> region;
  std::unique_ptr<PageAllocator> alloc;
};

Opened OpenFile(const std::string& path, RegionOptions o = {}) {
  Opened out;
  auto r = Region::Open(path, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return out;
  out.region = std::move(*r);
  auto a = PageAllocator::Open(out.region.get());
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  if (a.ok()) out.alloc = std::move(*a);
  return out;
}

Opened OpenAnon() {
  Opened out;
  out.region = std::move(Region::OpenAnonymous({}).value());
  out.alloc = std::move(PageAllocator::Open(out.region.get()).value());
  return out;
}

uint64_t Tag(const Region& r, uint64_t page) {
  uint64_t v;
  std::memcpy(&v, r.Page(page) + 8, sizeof v);
  return v;
}

void SetTag(Region& r, uint64_t page, uint64_t v) { std::memcpy(r.Page(page) + 8, &v, sizeof v); }

TEST(PageAllocatorTest, AllocatesDistinctZeroedPagesAndReusesFreedOnes) {
  Opened o = OpenAnon();
  PageAllocator& a = *o.alloc;
  std::set<uint64_t> pages;
  for (int i = 0; i < 200; ++i) {  // crosses several carves of 64
    auto p = a.Allocate();
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ASSERT_GE(*p, 2u) << "page 0 is the header, page 1 a state page";
    ASSERT_LT(*p, o.region->page_count());
    ASSERT_TRUE(pages.insert(*p).second) << "page " << *p << " handed out twice";
    const uint8_t* bytes = o.region->Page(*p);
    ASSERT_TRUE(std::all_of(bytes, bytes + 4096, [](uint8_t b) { return b == 0; }));
    std::memset(o.region->Page(*p), 0xff, 4096);
    EXPECT_TRUE(a.IsAllocated(*p));
  }
  EXPECT_EQ(a.allocated_pages(), 200u);
  uint64_t victim = *std::next(pages.begin(), 17);
  ASSERT_TRUE(a.Free(victim).ok());
  EXPECT_EQ(a.allocated_pages(), 199u);
  EXPECT_FALSE(a.IsAllocated(victim));
  auto again = a.Allocate();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, victim) << "this thread's free list returns its last freed page first";
  uint64_t link;
  std::memcpy(&link, o.region->Page(victim), sizeof link);
  EXPECT_EQ(link, 0u) << "the free-list link is cleared on allocation";
  EXPECT_EQ(o.region->Page(victim)[8], 0xff) << "the rest keeps what its last user wrote";
}

TEST(PageAllocatorTest, DoubleFreeAndUnallocatedPagesAreRefused) {
  Opened o = OpenAnon();
  PageAllocator& a = *o.alloc;
  uint64_t p = a.Allocate().value();
  ASSERT_TRUE(a.Free(p).ok());
  Status st = a.Free(p);
  EXPECT_TRUE(st.IsInvalidArgument());
  EXPECT_EQ(ToCError(st), TESSERA_PAGE_ALREADY_FREE) << st.ToString();
  EXPECT_EQ(ToCError(a.CheckAllocated(p)), TESSERA_PAGE_ALREADY_FREE);
  // The header, a state page, a carved page not yet handed out, and numbers far past the end.
  uint64_t carved_not_handed = p + 1;
  for (uint64_t q : {uint64_t{0}, uint64_t{1}, carved_not_handed, a.high_water(), uint64_t{1} << 40,
                     ~uint64_t{0}}) {
    SCOPED_TRACE(q);
    EXPECT_EQ(ToCError(a.Free(q)), TESSERA_PAGE_NOT_ALLOCATED);
    EXPECT_EQ(ToCError(a.CheckAllocated(q)), TESSERA_PAGE_NOT_ALLOCATED);
  }
  EXPECT_EQ(a.allocated_pages(), 0u);
}

TEST(PageAllocatorTest, SkipsStatePagesAcrossGroups) {
  Opened o = OpenAnon();
  PageAllocator& a = *o.alloc;
  // With 4 KiB pages a group is 4096 pages, the first of them its state page: page 4097 is the
  // second group's state page.
  constexpr uint64_t kSecondStatePage = 1 + 4096;
  std::vector<bool> seen(10000);
  for (int i = 0; i < 5000; ++i) {
    uint64_t p = a.Allocate().value();
    ASSERT_NE(p, kSecondStatePage);
    ASSERT_LT(p, seen.size());
    ASSERT_FALSE(seen[p]);
    seen[p] = true;
  }
  EXPECT_EQ(ToCError(a.Free(kSecondStatePage)), TESSERA_PAGE_NOT_ALLOCATED);
  EXPECT_TRUE(a.Free(kSecondStatePage + 1).ok()) << "first data page of the second group";
}

TEST(PageAllocatorTest, StateSurvivesCloseAndReopen) {
  TempDir dir;
  const std::string path = dir.File("pages");
  std::set<uint64_t> allocated, freed;
  {
    Opened o = OpenFile(path);
    ASSERT_NE(o.alloc, nullptr);
    for (int i = 0; i < 300; ++i) {
      uint64_t p = o.alloc->Allocate().value();
      SetTag(*o.region, p, p * 31 + 7);
      allocated.insert(p);
    }
    int i = 0;
    for (auto it = allocated.begin(); it != allocated.end(); ++i) {
      if (i % 3 == 0) {
        ASSERT_TRUE(o.alloc->Free(*it).ok());
        freed.insert(*it);
        it = allocated.erase(it);
      } else {
        ++it;
      }
    }
    ASSERT_TRUE(o.region->Flush().ok());
  }
  Opened o = OpenFile(path);
  ASSERT_NE(o.alloc, nullptr);
  PageAllocator& a = *o.alloc;
  EXPECT_EQ(a.allocated_pages(), allocated.size());
  for (uint64_t p : allocated) {
    ASSERT_TRUE(a.IsAllocated(p)) << p;
    ASSERT_EQ(Tag(*o.region, p), p * 31 + 7) << p;
  }
  for (uint64_t p : freed) EXPECT_EQ(ToCError(a.CheckAllocated(p)), TESSERA_PAGE_ALREADY_FREE);
  // New allocations never collide with live pages, and freed pages come back.
  std::set<uint64_t> fresh;
  for (size_t i = 0; i < freed.size() + 50; ++i) {
    uint64_t p = a.Allocate().value();
    ASSERT_EQ(allocated.count(p), 0u) << "live page " << p << " handed out again";
    ASSERT_TRUE(fresh.insert(p).second);
  }
  for (uint64_t p : freed) EXPECT_EQ(fresh.count(p), 1u) << "freed page " << p << " not reused";
  ASSERT_TRUE(a.Free(*allocated.begin()).ok());
  EXPECT_EQ(ToCError(a.Free(*allocated.begin())), TESSERA_PAGE_ALREADY_FREE);
}

TEST(PageAllocatorTest, ReadOnlyRegionAllowsChecksOnly) {
  TempDir dir;
  const std::string path = dir.File("pages");
  uint64_t p;
  {
    Opened o = OpenFile(path);
    ASSERT_NE(o.alloc, nullptr);
    p = o.alloc->Allocate().value();
  }
  RegionOptions ro;
  ro.read_only = true;
  Opened o = OpenFile(path, ro);
  ASSERT_NE(o.alloc, nullptr);
  EXPECT_TRUE(o.alloc->IsAllocated(p));
  EXPECT_EQ(o.alloc->allocated_pages(), 1u);
  EXPECT_EQ(ToCError(o.alloc->Allocate().status()), TESSERA_READ_ONLY);
  EXPECT_EQ(ToCError(o.alloc->Free(p)), TESSERA_READ_ONLY);
}

TEST(PageAllocatorTest, RefusesForeignFilesAndOtherPageSizes) {
  TempDir dir;
  {
    std::ofstream f(dir.File("foreign"));
    f << std::string(8192, 'x');
  }
  auto r = Region::Open(dir.File("foreign"), {});
  ASSERT_TRUE(r.ok());
  auto a = PageAllocator::Open(r->get());
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(a.status().IsCorruption()) << a.status().ToString();

  const std::string path = dir.File("pages");
  {
    Opened o = OpenFile(path);
    ASSERT_NE(o.alloc, nullptr);
    ASSERT_TRUE(o.alloc->Allocate().ok());
    // An even page count, so the file is also a whole number of 8 KiB pages.
    ASSERT_TRUE(o.region->Grow((o.region->page_count() + 1) / 2 * 2).ok());
  }
  RegionOptions big;
  big.page_size = 8192;
  auto r8 = Region::Open(path, big);
  ASSERT_TRUE(r8.ok()) << r8.status().ToString();
  auto a8 = PageAllocator::Open(r8->get());
  ASSERT_FALSE(a8.ok());
  EXPECT_EQ(ToCError(a8.status()), TESSERA_BAD_PAGE_SIZE) << a8.status().ToString();
}

TEST(PageAllocatorTest, DiskFullIsAnErrorAndKeepsEarlierPages) {
  TempDir dir;
  const std::string path = dir.File("pages");
  int rc = RunInChild([&] {
    signal(SIGXFSZ, SIG_IGN);
    rlimit lim{2 * 1024 * 1024, 2 * 1024 * 1024};  // 512 pages of 4 KiB
    CHILD_CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, 10);
    auto r = Region::Open(path, {});
    CHILD_CHECK(r.ok(), 11);
    auto a = PageAllocator::Open(r->get());
    CHILD_CHECK(a.ok(), 12);
    std::vector<uint64_t> pages;
    Status st;
    for (int i = 0; i < 10000; ++i) {
      auto p = (*a)->Allocate();
      if (!p.ok()) {
        st = p.status();
        break;
      }
      SetTag(**r, *p, *p ^ 0xabcdef);
      pages.push_back(*p);
    }
    CHILD_CHECK(st.IsNoSpace(), 13);
    CHILD_CHECK(pages.size() > 100 && pages.size() < 512, 14);
    for (uint64_t p : pages) CHILD_CHECK(Tag(**r, p) == (p ^ 0xabcdef), 15);
    // Still usable: a freed page is handed out again, and the error repeats when it runs out.
    CHILD_CHECK((*a)->Free(pages[5]).ok(), 16);
    auto again = (*a)->Allocate();
    CHILD_CHECK(again.ok() && *again == pages[5], 17);
    CHILD_CHECK((*a)->Allocate().status().IsNoSpace(), 18);
    CHILD_CHECK((*r)->Flush().ok(), 19);
    std::printf("allocated %zu pages before the disk was full\n", pages.size());
    return 0;
  });
  ASSERT_EQ(rc, 0);
  Opened o = OpenFile(path);
  ASSERT_NE(o.alloc, nullptr);
  EXPECT_GT(o.alloc->allocated_pages(), 100u);
}

// Threads allocate and free at random, each stamping the pages it owns; a page handed to two
// owners at once would show the other's stamp.
TEST(PageAllocatorTest, MultithreadedAllocateFreeStress) {
  const uint64_t seed = testing::TestSeed();
  TempDir dir;
  Opened o = OpenFile(dir.File("pages"));
  ASSERT_NE(o.alloc, nullptr);
  PageAllocator& a = *o.alloc;
  Region& r = *o.region;
  constexpr int kThreads = 4;
  constexpr int kOps = 40000;
  std::atomic<uint64_t> errors{0};
  std::vector<std::vector<uint64_t>> owned(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed + t);
      auto& mine = owned[t];
      for (int i = 0; i < kOps; ++i) {
        bool alloc = mine.empty() || (rng() % 100) < (mine.size() < 300 ? 55u : 45u);
        if (alloc) {
          auto p = a.Allocate();
          if (!p.ok()) {
            errors.fetch_add(1);
            continue;
          }
          SetTag(r, *p, (uint64_t(t) << 56) | *p);
          mine.push_back(*p);
        } else {
          size_t k = rng() % mine.size();
          uint64_t p = mine[k];
          mine[k] = mine.back();
          mine.pop_back();
          if (Tag(r, p) != ((uint64_t(t) << 56) | p)) errors.fetch_add(1);
          if (!a.IsAllocated(p)) errors.fetch_add(1);
          if (!a.Free(p).ok()) errors.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0u);
  std::set<uint64_t> all;
  size_t total = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (uint64_t p : owned[t]) {
      EXPECT_TRUE(a.IsAllocated(p));
      EXPECT_EQ(Tag(r, p), (uint64_t(t) << 56) | p);
      all.insert(p);
    }
    total += owned[t].size();
  }
  EXPECT_EQ(all.size(), total) << "a page is owned by two threads";
  EXPECT_EQ(a.allocated_pages(), total);
}

// Two threads race to free the same pages: exactly one free of each page succeeds.
TEST(PageAllocatorTest, RacingFreesOfOnePageSucceedOnce) {
  Opened o = OpenAnon();
  PageAllocator& a = *o.alloc;
  constexpr int kPages = 2000;
  std::vector<uint64_t> pages(kPages);
  for (auto& p : pages) p = a.Allocate().value();
  std::atomic<int> ok{0}, already{0}, other{0};
  auto worker = [&] {
    for (uint64_t p : pages) {
      Status st = a.Free(p);
      if (st.ok()) {
        ok.fetch_add(1);
      } else if (ToCError(st) == TESSERA_PAGE_ALREADY_FREE) {
        already.fetch_add(1);
      } else {
        other.fetch_add(1);
      }
    }
  };
  std::thread t1(worker), t2(worker);
  t1.join();
  t2.join();
  EXPECT_EQ(ok.load(), kPages);
  EXPECT_EQ(already.load(), kPages);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(a.allocated_pages(), 0u);
}

// A thread's page cache serves one allocator at a time; switching hands the cached pages back.
TEST(PageAllocatorTest, OneThreadAlternatingBetweenAllocatorsKeepsTheirPagesApart) {
  Opened a = OpenAnon();
  Opened b = OpenAnon();
  std::vector<uint64_t> pa(10), pb(10);
  for (auto& p : pa) p = a.alloc->Allocate().value();
  uint64_t hw = a.alloc->high_water();
  for (uint64_t p : pa) ASSERT_TRUE(a.alloc->Free(p).ok());  // cached by this thread for `a`
  for (auto& p : pb) p = b.alloc->Allocate().value();        // the cache switches to `b`
  std::set<uint64_t> again;
  for (int i = 0; i < 10; ++i) {
    uint64_t p = a.alloc->Allocate().value();
    EXPECT_TRUE(a.alloc->IsAllocated(p));
    again.insert(p);
  }
  EXPECT_EQ(again, std::set<uint64_t>(pa.begin(), pa.end())) << "a's freed pages came back to a";
  EXPECT_EQ(a.alloc->high_water(), hw) << "nothing new carved for them";
  for (uint64_t p : pb) EXPECT_TRUE(b.alloc->IsAllocated(p));
  EXPECT_EQ(a.alloc->allocated_pages(), 10u);
  EXPECT_EQ(b.alloc->allocated_pages(), 10u);
}

TEST(PageAllocatorTest, PagesCachedByAnExitedThreadAreReused) {
  Opened o = OpenAnon();
  PageAllocator& a = *o.alloc;
  std::thread t([&] {
    std::vector<uint64_t> pages(100);
    for (auto& p : pages) p = a.Allocate().value();
    for (uint64_t p : pages) EXPECT_TRUE(a.Free(p).ok());
  });
  t.join();
  uint64_t hw = a.high_water();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(a.Allocate().ok());
  EXPECT_EQ(a.high_water(), hw) << "the exited thread's cached pages were handed back";
  EXPECT_EQ(a.allocated_pages(), 100u);
}

TEST(PageAllocatorTest, ThreadCacheOutlivingItsAllocatorIsDropped) {
  auto a = std::make_unique<Opened>(OpenAnon());
  Opened b = OpenAnon();
  std::atomic<int> step{0};
  std::thread t([&] {
    uint64_t p = a->alloc->Allocate().value();
    EXPECT_TRUE(a->alloc->Free(p).ok());  // now cached for `a` in this thread
    step = 1;
    while (step.load() != 2) std::this_thread::yield();
    // `a` is gone: switching to `b` must drop the stale cache, not touch freed memory.
    uint64_t q = b.alloc->Allocate().value();
    EXPECT_TRUE(b.alloc->IsAllocated(q));
  });
  while (step.load() != 1) std::this_thread::yield();
  a.reset();
  step = 2;
  t.join();
  EXPECT_EQ(b.alloc->allocated_pages(), 1u);
}

}  // namespace
}  // namespace tessera::vmem
