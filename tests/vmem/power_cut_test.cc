// The simulated power cut: pages changed since their last Flush go back to their flushed content.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "subprocess.h"
#include "tessera/common/errors.h"
#include "tessera/vmem/region.h"
#include "test_util.h"

namespace tessera::vmem {
namespace {

using tessera::testing::TempDir;

RegionOptions PowerCutOptions() {
  RegionOptions o;
  o.simulate_power_cut = true;
  return o;
}

void FillPage(Region& r, uint64_t p, uint8_t byte) { std::memset(r.Page(p), byte, r.page_size()); }

// The byte a page is filled with, or -1 when the page is not uniform.
int PageByte(const Region& r, uint64_t p) {
  const uint8_t* a = r.Page(p);
  for (uint32_t i = 1; i < r.page_size(); ++i) {
    if (a[i] != a[0]) return -1;
  }
  return a[0];
}

std::unique_ptr<Region> Reopen(const std::string& path) {
  auto r = Region::Open(path, {});
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

TEST(PowerCutTest, LosesExactlyTheUnflushedPages) {
  TempDir dir;
  const std::string path = dir.File("r");
  {
    auto r = Region::Open(path, PowerCutOptions());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    Region& region = **r;
    ASSERT_TRUE(region.Grow(16).ok());
    for (uint64_t p = 0; p < 16; ++p) FillPage(region, p, 0xa0);
    ASSERT_TRUE(region.Flush().ok());
    for (uint64_t p = 0; p < 8; ++p) FillPage(region, p, 0xb0);
    std::vector<PageRange> flushed = {{0, 2}, {3, 1}, {2, 1}};
    ASSERT_TRUE(region.Flush(flushed).ok());  // pages 0-3 now durable as 0xb0
    FillPage(region, 2, 0xc0);                // changed again after its flush
    ASSERT_TRUE(region.Grow(20).ok());        // grown, written, never flushed
    for (uint64_t p = 16; p < 20; ++p) FillPage(region, p, 0xd0);
    // Reading through the private mapping still shows every store before the cut.
    EXPECT_EQ(PageByte(region, 2), 0xc0);
    EXPECT_EQ(PageByte(region, 6), 0xb0);
    ASSERT_TRUE(region.SimulatePowerCut(/*seed=*/1, /*keep_fraction=*/0.0).ok());
    EXPECT_EQ(region.page_count(), 0u);
    // The lock went with the "crash": the file can be reopened while this object still exists.
    auto again = Reopen(path);
    ASSERT_NE(again, nullptr);
    ASSERT_EQ(again->page_count(), 20u) << "space reserved by Grow is part of the file";
    for (uint64_t p = 0; p < 4; ++p) EXPECT_EQ(PageByte(*again, p), 0xb0) << p;
    for (uint64_t p = 4; p < 16; ++p) EXPECT_EQ(PageByte(*again, p), 0xa0) << p;
    for (uint64_t p = 16; p < 20; ++p) EXPECT_EQ(PageByte(*again, p), 0x00) << p;
  }
}

TEST(PowerCutTest, KeepFractionOneKeepsEveryChange) {
  TempDir dir;
  const std::string path = dir.File("r");
  auto r = Region::Open(path, PowerCutOptions());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Grow(8).ok());
  for (uint64_t p = 0; p < 8; ++p) FillPage(**r, p, static_cast<uint8_t>(p + 1));
  ASSERT_TRUE((*r)->SimulatePowerCut(7, 1.0).ok());
  r->reset();
  auto again = Reopen(path);
  ASSERT_NE(again, nullptr);
  for (uint64_t p = 0; p < 8; ++p) EXPECT_EQ(PageByte(*again, p), static_cast<int>(p + 1));
}

// Changes 256 pages, cuts with keep_fraction 0.5, and returns which pages survived.
std::vector<bool> CutHalf(const std::string& path, uint64_t seed) {
  constexpr uint64_t kPages = 256;
  std::vector<bool> kept(kPages);
  auto r = Region::Open(path, PowerCutOptions());
  EXPECT_TRUE(r.ok());
  if (!r.ok()) return kept;
  EXPECT_TRUE((*r)->Grow(kPages).ok());
  EXPECT_TRUE((*r)->Flush().ok());
  for (uint64_t p = 0; p < kPages; ++p) FillPage(**r, p, 0x11);
  EXPECT_TRUE((*r)->SimulatePowerCut(seed, 0.5).ok());
  r->reset();
  auto again = Reopen(path);
  if (again == nullptr) return kept;
  for (uint64_t p = 0; p < kPages; ++p) {
    int b = PageByte(*again, p);
    EXPECT_TRUE(b == 0x11 || b == 0) << "page " << p << " is torn: " << b;
    kept[p] = b == 0x11;
  }
  return kept;
}

TEST(PowerCutTest, KeepFractionAndSeedDecideWhichPagesSurvive) {
  const uint64_t seed = testing::TestSeed();
  TempDir dir;
  std::vector<bool> a = CutHalf(dir.File("a"), seed);
  std::vector<bool> b = CutHalf(dir.File("b"), seed);
  std::vector<bool> c = CutHalf(dir.File("c"), seed + 1);
  EXPECT_EQ(a, b) << "the same seed and the same changes give the same outcome";
  EXPECT_NE(a, c) << "another seed picks other pages (equal with probability 2^-256)";
  auto survivors = std::count(a.begin(), a.end(), true);
  // Binomial(256, 0.5): outside [64, 192] with probability below 1e-15.
  EXPECT_GE(survivors, 64);
  EXPECT_LE(survivors, 192);
}

TEST(PowerCutTest, ModeAndArgumentsAreChecked) {
  TempDir dir;
  auto normal = Region::Open(dir.File("n"), {});
  ASSERT_TRUE(normal.ok());
  EXPECT_TRUE((*normal)->SimulatePowerCut().IsInvalidArgument());
  EXPECT_TRUE(Region::OpenAnonymous(PowerCutOptions()).status().IsInvalidArgument());

  auto r = Region::Open(dir.File("p"), PowerCutOptions());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Grow(2).ok());
  EXPECT_TRUE((*r)->SimulatePowerCut(0, 1.5).IsInvalidArgument());
  EXPECT_TRUE((*r)->SimulatePowerCut(0, -0.1).IsInvalidArgument());
  ASSERT_TRUE((*r)->SimulatePowerCut().ok());
  EXPECT_TRUE((*r)->SimulatePowerCut().IsInvalidArgument());
  EXPECT_TRUE((*r)->Grow(4).IsInvalidArgument());
  EXPECT_TRUE((*r)->Flush().IsInvalidArgument());
  EXPECT_TRUE((*r)->Truncate(1).IsInvalidArgument());
  EXPECT_TRUE((*r)->Advise({0, 0}, Advice::kNormal).IsInvalidArgument());
  EXPECT_EQ((*r)->Stats().page_count, 0u);
}

TEST(PowerCutTest, WritebackMakesNothingDurable) {
  TempDir dir;
  const std::string path = dir.File("r");
  {
    auto r = Region::Open(path, PowerCutOptions());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    Region& region = **r;
    ASSERT_TRUE(region.Grow(8).ok());
    for (uint64_t p = 0; p < 8; ++p) FillPage(region, p, 0xa0);
    ASSERT_TRUE(region.Flush().ok());
    for (uint64_t p = 0; p < 8; ++p) FillPage(region, p, 0xb0);
    ASSERT_TRUE(region.Writeback().ok());
    ASSERT_TRUE(region.SimulatePowerCut(/*seed=*/3, /*keep_fraction=*/0.0).ok());
  }
  auto r = Reopen(path);
  ASSERT_NE(r, nullptr);
  for (uint64_t p = 0; p < 8; ++p) EXPECT_EQ(PageByte(*r, p), 0xa0) << "page " << p;
}

TEST(PowerCutTest, DontNeedDoesNotDiscardUnflushedStores) {
  TempDir dir;
  auto r = Region::Open(dir.File("r"), PowerCutOptions());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Grow(4).ok());
  FillPage(**r, 1, 0x42);
  ASSERT_TRUE((*r)->Advise({0, 4}, Advice::kDontNeed).ok());
  EXPECT_EQ(PageByte(**r, 1), 0x42);
}

}  // namespace
}  // namespace tessera::vmem
