// The engine checked against std::map on seeded random operation sequences. Prints its seed;
// replay with TESSERA_SEED=<seed>.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>
#include <string>

#include "seed.h"
#include "subprocess.h"
#include "tessera/engine/db.h"

namespace tessera::engine {
namespace {

using Model = std::map<std::string, std::map<std::string, std::string>>;  // tree -> kv

std::string RandKey(std::mt19937_64& rng) {
  // A narrow key space so updates and deletes hit existing keys often; varied lengths.
  uint64_t k = rng() % 4000;
  std::string key = "k" + std::to_string(k);
  if (k % 7 == 0) key += std::string(rng() % 300, 'p');
  return key;
}

std::string RandValue(std::mt19937_64& rng) {
  switch (rng() % 10) {
    case 0:
      return std::string(2000 + rng() % 20000, static_cast<char>('A' + rng() % 26));  // overflow
    case 1:
      return {};
    default:
      return std::string(rng() % 120, static_cast<char>('a' + rng() % 26));
  }
}

void CheckTree(const ReadTxn& txn, const std::string& tree,
               const std::map<std::string, std::string>& want, std::mt19937_64& rng) {
  auto c = txn.NewCursor(tree);
  ASSERT_TRUE(c.ok()) << tree << ": " << c.status().ToString();
  auto it = want.begin();
  for (Status s = (*c)->First(); (*c)->Valid(); s = (*c)->Next(), ++it) {
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_NE(it, want.end()) << "extra key " << (*c)->key();
    ASSERT_EQ((*c)->key(), it->first);
    ASSERT_EQ((*c)->value(), it->second) << "key " << it->first;
  }
  ASSERT_EQ(it, want.end()) << "missing key " << it->first;
  auto rit = want.rbegin();
  for (Status s = (*c)->Last(); (*c)->Valid(); s = (*c)->Prev(), ++rit) {
    ASSERT_NE(rit, want.rend());
    ASSERT_EQ((*c)->key(), rit->first);
  }
  ASSERT_EQ(rit, want.rend());
  for (int i = 0; i < 50; ++i) {
    std::string k = RandKey(rng);
    auto lb = want.lower_bound(k);
    ASSERT_TRUE((*c)->Seek(k).ok());
    if (lb == want.end()) {
      ASSERT_FALSE((*c)->Valid()) << "seek " << k;
    } else {
      ASSERT_TRUE((*c)->Valid()) << "seek " << k;
      ASSERT_EQ((*c)->key(), lb->first);
    }
    auto g = txn.Get(tree, k);
    auto f = want.find(k);
    if (f == want.end()) {
      ASSERT_TRUE(g.status().IsNotFound()) << k;
    } else {
      ASSERT_TRUE(g.ok()) << g.status().ToString();
      ASSERT_EQ(*g, f->second);
    }
  }
}

TEST(EngineModelTest, RandomOperationsMatchStdMap) {
  uint64_t seed = testing::TestSeed("model test");
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  std::string path = dir.File("db");
  Options opts;
  opts.sync = false;
  auto db = std::move(Db::Open(path, opts)).value();
  Model committed;
  const std::string trees[] = {"", "alpha", "beta", "gamma"};
  std::unique_ptr<ReadTxn> old_snap;
  Model old_model;

  for (int round = 0; round < 60; ++round) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " round " + std::to_string(round));
    Model work = committed;
    auto w = std::move(db->BeginWrite()).value();
    int ops = 1 + static_cast<int>(rng() % 400);
    for (int i = 0; i < ops; ++i) {
      const std::string& tree = trees[rng() % 4];
      std::string k = RandKey(rng);
      if (rng() % 3 == 0) {
        Status s = w->Delete(tree, k);
        bool had = work.count(tree) && work[tree].count(k);
        if (had) {
          ASSERT_TRUE(s.ok()) << s.ToString();
          work[tree].erase(k);
        } else {
          ASSERT_TRUE(s.IsNotFound()) << s.ToString();
        }
      } else {
        std::string v = RandValue(rng);
        ASSERT_TRUE(w->Put(tree, k, v).ok());
        work[tree][k] = v;
      }
    }
    // Read-your-writes inside the transaction.
    for (const auto& t : trees) {
      if (work.count(t)) CheckTree(*w, t, work[t], rng);
    }
    if (rng() % 5 == 0) {
      w->Abort();
    } else {
      ASSERT_TRUE(w->Commit(WriteOptions{rng() % 2 == 0}).ok());
      committed = work;
    }
    w.reset();
    if (old_snap) {
      for (const auto& [t, kv] : old_model) CheckTree(*old_snap, t, kv, rng);
    }
    if (rng() % 6 == 0) {
      old_snap = std::move(db->BeginRead()).value();
      old_model = committed;
    }
    if (rng() % 15 == 0) {
      old_snap.reset();
      db.reset();
      db = std::move(Db::Open(path, opts)).value();
    }
    if (round % 10 == 9) {
      auto rep = db->Verify();
      ASSERT_TRUE(rep.ok) << rep.ToString();
    }
  }
  old_snap.reset();
  auto r = std::move(db->BeginRead()).value();
  for (const auto& [t, kv] : committed) CheckTree(*r, t, kv, rng);
  auto rep = db->Verify();
  ASSERT_TRUE(rep.ok) << rep.ToString();
}

// Keys of bytes at the ends of the range (0x00, 0xff, 0x7f/0x80) that share prefixes of 0 to 13
// bytes and differ in tails of any length, so the comparison meets every split of a key into
// eight-byte words and a shorter tail, and branch pages hold cut-short separators.
TEST(EngineModelTest, KeysDifferingAnywhereSortAndLookUpLikeStdMap) {
  uint64_t seed = testing::TestSeed("key order test");
  std::mt19937_64 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const char alphabet[] = {'\x00', '\x01', 'a', 'b', '\x7f', '\x80', '\xfe', '\xff'};
  const std::string prefixes[] = {"", "pref0", "prefix-8", "prefix-13-by!", "prefix-8\xff"};
  auto rand_key = [&] {
    std::string k = prefixes[rng() % 5];
    for (size_t n = rng() % 13; n > 0; --n) k += alphabet[rng() % 8];
    return k.empty() ? std::string(1, alphabet[rng() % 8]) : k;
  };
  testing::TempDir dir;
  Options opts;
  opts.sync = false;
  auto db = std::move(Db::Open(dir.File("db"), opts)).value();
  std::map<std::string, std::string> want;
  for (int batch = 0; batch < 30; ++batch) {
    auto w = std::move(db->BeginWrite()).value();
    for (int i = 0; i < 1000; ++i) {
      std::string k = rand_key(), v = std::to_string(rng() % 1000000);
      ASSERT_TRUE(w->Put(k, v).ok());
      ASSERT_TRUE(w->Put("named", k, v).ok());
      want[k] = v;
    }
    ASSERT_TRUE(w->Commit().ok());
  }
  ASSERT_GE(db->GetStats().value().trees.at(0).depth, 3u)
      << "too few keys to give the tree branch levels";
  auto r = std::move(db->BeginRead()).value();
  auto c = std::move(r->NewCursor()).value();
  auto it = want.begin();
  for (Status s = c->First(); c->Valid(); s = c->Next(), ++it) {
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_NE(it, want.end());
    ASSERT_EQ(c->key(), it->first);
  }
  ASSERT_EQ(it, want.end());
  std::string got;
  for (const auto& [k, v] : want) {
    ASSERT_TRUE(db->Get(k, &got).ok()) << ::testing::PrintToString(k);
    ASSERT_EQ(got, v);
    ASSERT_TRUE(db->Get("named", k, &got).ok()) << ::testing::PrintToString(k);
    ASSERT_EQ(got, v);
  }
  for (int i = 0; i < 20000; ++i) {
    std::string k = rand_key();
    auto lb = want.lower_bound(k);
    ASSERT_TRUE(c->Seek(k).ok());
    if (lb == want.end()) {
      ASSERT_FALSE(c->Valid()) << ::testing::PrintToString(k);
    } else {
      ASSERT_TRUE(c->Valid()) << ::testing::PrintToString(k);
      ASSERT_EQ(c->key(), lb->first) << ::testing::PrintToString(k);
    }
    Status g = db->Get(k, &got);
    ASSERT_EQ(g.ok(), want.count(k) == 1) << ::testing::PrintToString(k) << ": " << g.ToString();
    if (!g.ok()) {
      ASSERT_TRUE(g.IsNotFound()) << g.ToString();
    }
  }
}

}  // namespace
}  // namespace tessera::engine
