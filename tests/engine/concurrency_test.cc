// Lock-free reads against a live writer: Db::Get from several threads while one thread commits
// small batches (some with values large enough for overflow runs, so pages are freed and reused
// all the time). Every value read must be whole, and never older than the last version whose
// Write had returned before the Get began, nor older than one the same thread saw before.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "subprocess.h"
#include "tessera/engine/db.h"

namespace tessera::engine {
namespace {

constexpr int kKeys = 3000;

// Varied lengths around multiples of 8, with shared prefixes.
std::string StressKey(int i) {
  return "key/" + std::to_string(i % 97) + "/" +
         std::string(i % 23, static_cast<char>('a' + i % 5)) + std::to_string(i);
}

// "<i>|<version>|" and filler derived from both; every 11th version is 5-25 KB (overflow).
std::string StressValue(int i, uint64_t ver) {
  std::string v = std::to_string(i) + "|" + std::to_string(ver) + "|";
  const size_t len = ver % 11 == 0 ? 5000 + (ver * 131 + i) % 20000 : (ver * 7 + i) % 200;
  for (size_t j = 0; j < len; ++j) v += static_cast<char>('A' + (i * 31 + ver * 17 + j) % 53);
  return v;
}

// The version of a whole value for key i, or -1.
int64_t VersionOf(int i, const std::string& got) {
  const size_t a = got.find('|');
  if (a == std::string::npos || got.compare(0, a, std::to_string(i)) != 0) return -1;
  const size_t b = got.find('|', a + 1);
  if (b == std::string::npos) return -1;
  const uint64_t ver = std::strtoull(got.substr(a + 1, b - a - 1).c_str(), nullptr, 10);
  return got == StressValue(i, ver) ? static_cast<int64_t>(ver) : -1;
}

void GetsWhileWriting(Options o, int readers) {
  testing::TempDir dir;
  auto db = std::move(Db::Open(dir.File("db"), o)).value();
  WriteBatch first;
  for (int i = 0; i < kKeys; ++i) first.Put(StressKey(i), StressValue(i, 0));
  ASSERT_TRUE(db->Write(first).ok());

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> gets{0}, failures{0};
  std::vector<std::atomic<uint64_t>> latest(kKeys);
  auto fail = [&](const std::string& what) {
    if (failures++ < 5) ADD_FAILURE() << what;
  };
  std::thread writer([&] {
    std::mt19937_64 rng(1);
    uint64_t ver = 1;
    for (uint64_t n = 1; !stop; ++n) {
      WriteBatch b;
      std::vector<std::pair<int, uint64_t>> done;
      for (int j = 1 + static_cast<int>(rng() % 4); j > 0; --j) {
        const int i = static_cast<int>(rng() % kKeys);
        b.Put(StressKey(i), StressValue(i, ver));
        done.emplace_back(i, ver++);
      }
      if (Status s = db->Write(b); !s.ok()) return fail("write: " + s.ToString());
      for (auto [i, v] : done) latest[i].store(v, std::memory_order_release);
      if (n % 200 == 0) (void)db->Sync();  // flushes too, beside the readers
    }
  });
  std::vector<std::thread> ts;
  ts.reserve(readers);
  for (int r = 0; r < readers; ++r) {
    ts.emplace_back([&, r] {
      std::mt19937_64 rng(100 + r);
      std::vector<uint64_t> seen(kKeys, 0);
      std::string got;
      while (!stop) {
        const int i = static_cast<int>(rng() % kKeys);
        const uint64_t floor = latest[i].load(std::memory_order_acquire);
        Status s = db->Get(StressKey(i), &got);
        ++gets;
        if (s.IsBusy()) continue;  // every reader slot taken (max_readers below the threads)
        if (!s.ok()) {
          fail("key " + std::to_string(i) + ": " + s.ToString());
          continue;
        }
        const int64_t v = VersionOf(i, got);
        if (v < 0) {
          fail("key " + std::to_string(i) + " read a damaged value: " + got.substr(0, 40));
        } else if (static_cast<uint64_t>(v) < std::max(seen[i], floor)) {
          fail("key " + std::to_string(i) + " went back to version " + std::to_string(v) +
               " after " + std::to_string(std::max(seen[i], floor)));
        } else {
          seen[i] = static_cast<uint64_t>(v);
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  writer.join();
  for (auto& t : ts) t.join();
  const auto stats = db->GetStats().value();
  std::printf("%llu gets beside %llu commits\n", static_cast<unsigned long long>(gets.load()),
              static_cast<unsigned long long>(stats.commits));
  EXPECT_EQ(failures.load(), 0u);
  EXPECT_GT(stats.commits, 100u);
  auto rep = db->Verify();
  EXPECT_TRUE(rep.ok) << rep.ToString();
}

TEST(EngineConcurrencyTest, GetsBesideAWriterSeeWholeAndNeverOlderValues) {
  Options o;
  o.sync = false;
  GetsWhileWriting(o, 6);
}

TEST(EngineConcurrencyTest, GetsBesideAWriterWithFewerReaderSlotsThanThreads) {
  Options o;
  o.sync = false;
  o.max_readers = 3;
  GetsWhileWriting(o, 6);
}

}  // namespace
}  // namespace tessera::engine
