// PageSet (the engine's bitmap of reusable pages) against std::set on seeded random operations.
// Prints its seed; replay with TESSERA_SEED=<seed>.
#include "page_set.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>
#include <vector>

#include "seed.h"

namespace tessera::engine {
namespace {

std::vector<uint64_t> Members(const PageSet& s) {
  std::vector<uint64_t> out;
  s.for_each([&out](uint64_t p) { out.push_back(p); });
  return out;
}

// The lowest run of n consecutive members among the first max_members, as the engine wants it:
// the smallest member p of that prefix with p+1 .. p+n-1 in the prefix too.
bool ModelRun(const std::set<uint64_t>& m, uint64_t n, uint64_t max_members, uint64_t* first) {
  std::set<uint64_t> prefix;
  for (auto it = m.begin(); it != m.end() && prefix.size() < max_members; ++it) prefix.insert(*it);
  for (uint64_t p : prefix) {
    uint64_t k = 1;
    while (k < n && prefix.count(p + k) == 1) ++k;
    if (k == n) {
      *first = p;
      return true;
    }
  }
  return false;
}

TEST(PageSetTest, MatchesAnOrderedSet) {
  const uint64_t seed = testing::TestSeed("page set test");
  std::mt19937_64 rng(seed);
  PageSet s;
  std::set<uint64_t> m;
  for (int op = 0; op < 200000; ++op) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " op " + std::to_string(op));
    // Pages cluster low, as a file's do, with an occasional far one (a grown file).
    const uint64_t range = rng() % 100 == 0 ? 1 << 20 : 3000;
    switch (rng() % 8) {
      case 0:
      case 1:
      case 2: {
        uint64_t p = 2 + rng() % range;
        if (m.insert(p).second) s.insert(p);
        break;
      }
      case 3:
      case 4:
        if (!m.empty()) {
          ASSERT_EQ(s.take_lowest(), *m.begin());
          m.erase(m.begin());
        }
        break;
      case 5: {
        const uint64_t n = 2 + rng() % 5, max_members = 1 + rng() % 300;
        uint64_t want = 0, got = 0;
        const bool found = ModelRun(m, n, max_members, &want);
        ASSERT_EQ(s.take_run(n, max_members, &got), found);
        if (found) {
          ASSERT_EQ(got, want);
          for (uint64_t k = 0; k < n; ++k) m.erase(want + k);
        }
        break;
      }
      case 6: {
        const uint64_t p = 2 + rng() % range;
        ASSERT_EQ(s.contains(p), m.count(p) == 1);
        break;
      }
      default:
        if (rng() % 50 == 0) {
          ASSERT_EQ(Members(s), std::vector<uint64_t>(m.begin(), m.end()));
        }
    }
    ASSERT_EQ(s.size(), m.size());
    ASSERT_EQ(s.empty(), m.empty());
  }
  EXPECT_EQ(Members(s), std::vector<uint64_t>(m.begin(), m.end()));
}

TEST(PageSetTest, APageFreedTwiceIsAnInvariantFailure) {
  PageSet s;
  s.insert(7);
  EXPECT_DEATH(s.insert(7), "page 7 is already in the free set");
}

}  // namespace
}  // namespace tessera::engine
