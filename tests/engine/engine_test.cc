// Engine behaviour: basic operations, persistence, errors, corruption handling, group commit.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "db_impl.h"
#include "format.h"
#include "seed.h"
#include "subprocess.h"
#include "tessera/common/errors.h"
#include "tessera/engine/db.h"

namespace tessera::engine {
namespace {

using testing::TempDir;

std::string Key(int i) {
  char b[32];
  std::snprintf(b, sizeof b, "key%08d", i);
  return b;
}

std::unique_ptr<Db> MustOpen(const std::string& path, Options o = {}) {
  auto db = Db::Open(path, o);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return db.ok() ? std::move(db).value() : nullptr;
}

Options NosyncOptions() {
  Options o;
  o.sync = false;
  return o;
}

// Simulated power cuts, with the commit log on or off.
Options PowerCutOptions(bool commit_log) {
  Options o;
  o.simulate_power_cut = true;
  o.commit_log = commit_log;
  return o;
}

TEST(EngineTest, PutGetDeleteAndReopen) {
  TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    EXPECT_TRUE(db->Put("alpha", "1").ok());
    EXPECT_TRUE(db->Put("beta", "2").ok());
    std::string v;
    ASSERT_TRUE(db->Get("alpha", &v).ok());
    EXPECT_EQ(v, "1");
    EXPECT_TRUE(db->Put("alpha", "one").ok());
    ASSERT_TRUE(db->Get("alpha", &v).ok());
    EXPECT_EQ(v, "one");
    EXPECT_TRUE(db->Delete("beta").ok());
    EXPECT_TRUE(db->Get("beta", &v).IsNotFound());
    EXPECT_TRUE(db->Delete("beta").IsNotFound());
  }
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  std::string v;
  ASSERT_TRUE(db->Get("alpha", &v).ok());
  EXPECT_EQ(v, "one");
  EXPECT_TRUE(db->Get("beta", &v).IsNotFound());
  EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
}

TEST(EngineTest, ManyKeysSplitAndMergeAndVerify) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"));
  ASSERT_TRUE(db);
  const int n = 20000;
  {
    auto w = db->BeginWrite();
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < n; ++i) ASSERT_TRUE((*w)->Put(Key(i), std::string(50, 'a' + i % 26)).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  auto rep = db->Verify();
  ASSERT_TRUE(rep.ok) << rep.ToString();
  EXPECT_EQ(rep.entries, static_cast<uint64_t>(n));
  auto st = db->GetStats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->trees[0].entries, static_cast<uint64_t>(n));
  EXPECT_GE(st->trees[0].depth, 2u);
  // Sequential inserts fill leaves nearly completely.
  uint64_t bytes = n * (50 + 11 + 7 + 2);
  EXPECT_LT(st->trees[0].leaf_pages * 4096, bytes * 100 / 85) << "leaves under 85% full";
  {
    auto w = db->BeginWrite();
    for (int i = 0; i < n; i += 2) ASSERT_TRUE((*w)->Delete(Key(i)).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  rep = db->Verify();
  ASSERT_TRUE(rep.ok) << rep.ToString();
  EXPECT_EQ(rep.entries, static_cast<uint64_t>(n / 2));
  {
    auto w = db->BeginWrite();
    for (int i = 1; i < n; i += 2) ASSERT_TRUE((*w)->Delete(Key(i)).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  rep = db->Verify();
  ASSERT_TRUE(rep.ok) << rep.ToString();
  st = db->GetStats();
  EXPECT_EQ(st->trees[0].entries, 0u);
  EXPECT_EQ(st->trees[0].leaf_pages, 0u);
}

TEST(EngineTest, FreedPagesAreReused) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"));
  ASSERT_TRUE(db);
  std::string val(100, 'v');
  for (int round = 0; round < 30; ++round) {
    WriteBatch b;
    for (int i = 0; i < 2000; ++i) b.Put(Key(i), val + std::to_string(round));
    ASSERT_TRUE(db->Write(b).ok());
  }
  auto st = db->GetStats();
  ASSERT_TRUE(st.ok());
  uint64_t used = st->trees[0].leaf_pages + st->trees[0].branch_pages;
  // 30 rewrites of the whole tree: without reuse the file would hold ~30x the live pages.
  EXPECT_LT(st->last_page, used * 4 + 64) << "last_page " << st->last_page << " used " << used;
  EXPECT_TRUE(db->Verify().ok);
}

// nosync commits keep old pages from reuse until a flush, but pages written since the last flush
// (the tree's and the freelist log's own) are reused at once: a small database of many single-put
// nosync commits stays small and never needs a flush to make room.
TEST(EngineTest, NosyncSinglePutsReuseTheirOwnPagesWithoutFlushing) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"), NosyncOptions());
  ASSERT_TRUE(db);
  std::string val(100, 'v');
  for (int i = 0; i < 20000; ++i) {
    WriteBatch b;
    b.Put("t" + std::to_string(i % 7), Key(i % 500), val + std::to_string(i));
    ASSERT_TRUE(db->Write(b, WriteOptions{false}).ok()) << "commit " << i;
  }
  auto st = db->GetStats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->commits, 20000u);
  EXPECT_EQ(st->flushes, 0u) << "a reclaim flush ran: young pages were held back as if durable";
  EXPECT_LT(st->last_page, 1000u) << "the file grew with the commits, not with the data";
  EXPECT_TRUE(db->Verify().ok);
  for (int k = 0; k < 500; k += 97) {
    std::string v;
    // The last write of key k went to tree (i % 7) for the largest i < 20000 with i % 500 == k.
    int last = 19500 + k;
    ASSERT_TRUE(db->Get("t" + std::to_string(last % 7), Key(k), &v).ok()) << k;
    EXPECT_EQ(v, val + std::to_string(last));
  }
}

// A snapshot held for a long time (protection pins one for minutes) keeps the pages it reaches,
// not every page freed after it: pages written after the snapshot are reused meanwhile, and the
// snapshot still reads exactly what it saw.
// 2000 keys of 100-byte values ending in "old", in one nosync commit.
void FillOld(Db* db, const std::string& val) {
  WriteBatch fill;
  for (int i = 0; i < 2000; ++i) fill.Put(Key(i), val + "old");
  ASSERT_TRUE(db->Write(fill, WriteOptions{false}).ok());
}

TEST(EngineTest, LongHeldSnapshotHoldsOnlyItsOwnPages) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"), NosyncOptions());
  ASSERT_TRUE(db);
  std::string val(100, 'v');
  FillOld(db.get(), val);
  auto snap = db->BeginRead();
  ASSERT_TRUE(snap.ok());
  auto before = db->GetStats();
  ASSERT_TRUE(before.ok());
  // Short readers come and go meanwhile, each across a few commits: what they reach waits for
  // them, and only for them (not until the long snapshot goes).
  std::unique_ptr<ReadTxn> short_reader;
  for (int i = 0; i < 20000; ++i) {
    if (i % 10 == 0) {
      auto r = db->BeginRead();
      ASSERT_TRUE(r.ok());
      short_reader = std::move(r).value();
    }
    WriteBatch b;
    b.Put(Key(i % 2000), val + std::to_string(i));
    ASSERT_TRUE(db->Write(b, WriteOptions{false}).ok()) << "commit " << i;
    if (i % 10 == 2) {
      auto v = short_reader->Get(Key((i - 3 + 2000) % 2000));
      ASSERT_TRUE(v.ok());
      short_reader.reset();
    }
  }
  auto after = db->GetStats();
  ASSERT_TRUE(after.ok());
  // The snapshot reaches the ~60 pages of the filled tree; the 20000 commits rewrite 2-3 pages
  // each. Holding all of them would need tens of thousands of pages.
  EXPECT_LT(after->last_page, before->last_page + 2000)
      << "before " << before->last_page << " after " << after->last_page;
  for (int i = 0; i < 2000; i += 7) {
    auto v = (*snap)->Get(Key(i));
    ASSERT_TRUE(v.ok()) << i;
    EXPECT_EQ(*v, val + "old") << i;
  }
  EXPECT_TRUE(db->VerifySnapshot(**snap).ok);
  EXPECT_TRUE(db->Verify().ok);
  std::string v;
  ASSERT_TRUE(db->Get(Key(1999), &v).ok());
  EXPECT_EQ(v, val + "19999");
}

TEST(EngineTest, LargeValuesUseOverflowPages) {
  TempDir dir;
  std::string path = dir.File("db");
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + 7);
  {
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    ASSERT_TRUE(db->Put("big", big).ok());
    ASSERT_TRUE(db->Put("small", "x").ok());
    std::string mid(5000, 'm');
    ASSERT_TRUE(db->Put("mid", mid).ok());
    auto st = db->GetStats();
    EXPECT_GT(st->trees[0].overflow_pages, (3u << 20) / 4096);
  }
  auto db = MustOpen(path);
  std::string v;
  ASSERT_TRUE(db->Get("big", &v).ok());
  EXPECT_TRUE(v == big);
  ASSERT_TRUE(db->Get("mid", &v).ok());
  EXPECT_EQ(v, std::string(5000, 'm'));
  ASSERT_TRUE(db->Delete("big").ok());
  EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
  auto st = db->GetStats();
  EXPECT_EQ(st->trees[0].overflow_pages, 2u);  // "mid" only
}

TEST(EngineTest, NamedTreesAreIndependent) {
  TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    auto w = db->BeginWrite();
    ASSERT_TRUE((*w)->Put("users", "k", "u").ok());
    ASSERT_TRUE((*w)->Put("orders", "k", "o").ok());
    ASSERT_TRUE((*w)->Put("k", "main").ok());
    EXPECT_EQ(*(*w)->Get("users", "k"), "u");  // read-your-writes
    ASSERT_TRUE((*w)->CreateTree("empty").ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  auto db = MustOpen(path);
  auto r = db->BeginRead();
  EXPECT_EQ(*(*r)->Get("users", "k"), "u");
  EXPECT_EQ(*(*r)->Get("orders", "k"), "o");
  EXPECT_EQ(*(*r)->Get("k"), "main");
  EXPECT_TRUE((*r)->Get("nope", "k").status().IsNotFound());
  auto names = (*r)->ListTrees();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"empty", "orders", "users"}));
  r->reset();
  auto w = db->BeginWrite();
  ASSERT_TRUE((*w)->DropTree("users").ok());
  ASSERT_TRUE((*w)->Commit().ok());
  r = db->BeginRead();
  EXPECT_TRUE((*r)->Get("users", "k").status().IsNotFound());
  EXPECT_EQ(*(*r)->ListTrees(), (std::vector<std::string>{"empty", "orders"}));
  EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
}

TEST(EngineTest, SnapshotsDoNotSeeLaterWrites) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"));
  ASSERT_TRUE(db->Put("a", "1").ok());
  auto snap = db->BeginRead();
  ASSERT_TRUE(snap.ok());
  WriteBatch b;
  for (int i = 0; i < 3000; ++i) b.Put(Key(i), std::string(200, 'y'));
  b.Put("a", "2");
  ASSERT_TRUE(db->Write(b).ok());
  EXPECT_EQ(*(*snap)->Get("a"), "1");
  EXPECT_TRUE((*snap)->Get(Key(5)).status().IsNotFound());
  auto now = db->BeginRead();
  EXPECT_EQ(*(*now)->Get("a"), "2");
}

TEST(EngineTest, BeginReadAtOpensTheSameSnapshotWhichOutlivesTheFirst) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"), NosyncOptions());
  ASSERT_TRUE(db);
  std::string val(100, 'v');
  FillOld(db.get(), val);
  auto first = db->BeginRead();
  ASSERT_TRUE(first.ok());
  WriteBatch b;
  b.Put(Key(7), "newer");
  ASSERT_TRUE(db->Write(b, WriteOptions{false}).ok());
  auto second = db->BeginReadAt(**first);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ((*second)->txnid(), (*first)->txnid());
  first->reset();  // the second handle alone keeps the snapshot's pages from reuse
  for (int i = 0; i < 3000; ++i) {
    WriteBatch w;
    w.Put(Key(i % 2000), val + std::to_string(i));
    ASSERT_TRUE(db->Write(w, WriteOptions{false}).ok()) << "commit " << i;
  }
  for (int i = 0; i < 2000; i += 7) {
    auto v = (*second)->Get(Key(i));
    ASSERT_TRUE(v.ok()) << i;
    EXPECT_EQ(*v, val + "old") << i;
  }
  EXPECT_TRUE(db->VerifySnapshot(**second).ok);
  // A write transaction has no fixed snapshot; another Db's snapshot is not this one's.
  {
    auto w = db->BeginWrite();
    ASSERT_TRUE(w.ok());
    EXPECT_TRUE(db->BeginReadAt(**w).status().IsInvalidArgument());
  }
  auto other = MustOpen(dir.File("other"), NosyncOptions());
  ASSERT_TRUE(other);
  auto foreign = other->BeginRead();
  ASSERT_TRUE(foreign.ok());
  EXPECT_TRUE(db->BeginReadAt(**foreign).status().IsInvalidArgument());
}

TEST(EngineTest, AbortDiscardsChanges) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"));
  ASSERT_TRUE(db->Put("keep", "1").ok());
  {
    auto w = db->BeginWrite();
    for (int i = 0; i < 1000; ++i) ASSERT_TRUE((*w)->Put(Key(i), "zzz").ok());
    ASSERT_TRUE((*w)->Delete("keep").ok());
    (*w)->Abort();
    EXPECT_EQ((*w)->Put("x", "y").c_code(), TESSERA_TXN_FINISHED);
  }
  std::string v;
  EXPECT_TRUE(db->Get("keep", &v).ok());
  EXPECT_TRUE(db->Get(Key(1), &v).IsNotFound());
  EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
}

TEST(EngineTest, BadInputGetsClearErrors) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"));
  Status s = db->Put(std::string(kMaxKeySize + 1, 'k'), "v");
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_EQ(ToCError(s), TESSERA_KEY_TOO_LARGE);
  EXPECT_NE(s.message().find("1025"), std::string::npos) << s.message();
  EXPECT_EQ(ToCError(db->Put("", "v")), TESSERA_KEY_TOO_LARGE);
  EXPECT_TRUE(db->Put(std::string(kMaxKeySize, 'k'), "max key is fine").ok());
  Options bad;
  bad.page_size = 5000;
  EXPECT_EQ(ToCError(Db::Open(dir.File("other"), bad).status()), TESSERA_BAD_PAGE_SIZE);
  Options nocreate;
  nocreate.create_if_missing = false;
  EXPECT_TRUE(Db::Open(dir.File("missing"), nocreate).status().IsNotFound());
  EXPECT_TRUE(db->Verify().ok);
}

TEST(EngineTest, SecondWriterIsRefusedReadOnlyAllowed) {
  TempDir dir;
  std::string path = dir.File("db");
  auto db = MustOpen(path);
  ASSERT_TRUE(db->Put("k", "v").ok());
  auto second = Db::Open(path);
  EXPECT_TRUE(second.status().IsBusy()) << second.status().ToString();
  Options ro;
  ro.read_only = true;
  auto reader = Db::Open(path, ro);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  std::string v;
  EXPECT_TRUE((*reader)->Get("k", &v).ok());
  EXPECT_EQ(ToCError((*reader)->Put("a", "b")), TESSERA_READ_ONLY);
}

TEST(EngineTest, NotADatabaseIsCorruption) {
  TempDir dir;
  std::string path = dir.File("junk");
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0644);
  std::string junk(16384, 'j');
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  ::close(fd);
  auto db = Db::Open(path);
  EXPECT_TRUE(db.status().IsCorruption()) << db.status().ToString();
  EXPECT_NE(db.status().message().find("not a Tessera database"), std::string::npos);
}

// A clean close trims the file to the pages in use, so the last leaf sits at the very end of the
// mapping: reading it (and checking its layout) must stay inside the page.
TEST(EngineTest, CleanCloseTrimsFileAndReopenReadsEveryPage) {
  TempDir dir;
  std::string path = dir.File("db");
  uint64_t last_page;
  {
    auto db = MustOpen(path);
    WriteBatch b;
    for (int i = 0; i < 1000; ++i) b.Put(Key(i), std::string(i % 50, 'v'));
    ASSERT_TRUE(db->Write(b).ok());
    last_page = db->GetStats()->last_page;
  }
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), last_page * 4096);
  Options ro;
  ro.read_only = true;
  auto db = MustOpen(path, ro);
  for (int i = 0; i < 1000; ++i) {
    std::string v;
    ASSERT_TRUE(db->Get(Key(i), &v).ok()) << i;
    EXPECT_EQ(v, std::string(i % 50, 'v'));
  }
  EXPECT_TRUE(db->Verify().ok);
}

// Nosync, and no shrink at close: the test calls Shrink itself.
Options NoShrinkOptions() {
  Options o = NosyncOptions();
  o.shrink_on_close = false;
  return o;
}

uint64_t FileBytes(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return static_cast<uint64_t>(st.st_size);
}

format::Meta ReadMeta(const std::string& path, int slot) {
  format::Meta m{};
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_EQ(::pread(fd, &m, sizeof m, slot * 4096), static_cast<ssize_t>(sizeof m));
  ::close(fd);
  return m;
}

using Model = std::map<std::string, std::map<std::string, std::string>>;  // tree -> key -> value

void ExpectEquals(Db& db, const Model& model) {
  auto r = std::move(db.BeginRead()).value();
  for (const auto& [tree, kv] : model) {
    SCOPED_TRACE("tree '" + tree + "'");
    auto cur = std::move(r->NewCursor(tree)).value();
    auto it = kv.begin();
    for (Status s = cur->First(); cur->Valid(); s = cur->Next(), ++it) {
      ASSERT_TRUE(s.ok()) << s.ToString();
      ASSERT_NE(it, kv.end()) << "extra key " << cur->key();
      ASSERT_EQ(cur->key(), it->first);
      ASSERT_TRUE(cur->value() == it->second) << "value of " << it->first;
    }
    EXPECT_EQ(it, kv.end()) << "missing key " << it->first;
  }
}

// Opens the file again and expects it to hold exactly `model` and to verify clean.
void ExpectReopenedHolds(const std::string& path, const Options& o, const Model& model) {
  auto db = MustOpen(path, o);
  ASSERT_NO_FATAL_FAILURE(ExpectEquals(*db, model));
  auto rep = db->Verify();
  EXPECT_TRUE(rep.ok) << rep.ToString();
}

// A write transaction computes a leaf's checksum once it moves on to another leaf (the page is
// still in the cache then), and Finalize takes it from the page's header. A leaf changed again
// later in the same transaction, split, merged, freed and reused, or given an overflow value
// must still carry the checksum of what it finally holds: reopened (every page's checksum is
// checked on first read) and verified, the file holds exactly the model. Seeded (printed;
// TESSERA_SEED replays).
TEST(EngineTest, LeavesChangedAgainLaterInATransactionGetTheirFinalChecksums) {
  const uint64_t seed = testing::TestSeed("leaf checksum test");
  std::mt19937_64 rng(seed);
  TempDir dir;
  std::string path = dir.File("db");
  Model model;
  {
    auto db = MustOpen(path, NosyncOptions());
    for (int txn = 0; txn < 8; ++txn) {
      auto w = std::move(db->BeginWrite()).value();
      // Few keys per leaf's range, in random order: consecutive writes mostly change different
      // leaves, and each leaf is changed several times in the transaction.
      for (int op = 0; op < 5000; ++op) {
        const std::string tree = rng() % 4 == 0 ? "big" : "";
        const std::string key = Key(static_cast<int>(rng() % 20000));
        if (rng() % 10 < 6) {
          std::string v(tree == "big" && rng() % 16 == 0 ? 5000 + rng() % 4000 : 20 + rng() % 200,
                        static_cast<char>('a' + rng() % 26));
          ASSERT_TRUE(w->Put(tree, key, v).ok());
          model[tree][key] = v;
        } else {
          Status st = w->Delete(tree, key);
          ASSERT_TRUE(st.ok() || st.IsNotFound()) << st.ToString();
          model[tree].erase(key);
        }
      }
      ASSERT_TRUE(w->Commit(WriteOptions{txn % 3 == 0}).ok());
      auto rep = db->Verify();
      ASSERT_TRUE(rep.ok) << "after txn " << txn << ": " << rep.ToString();
    }
  }
  ASSERT_NO_FATAL_FAILURE(ExpectReopenedHolds(path, NosyncOptions(), model));
}

// A leaf sealed in a transaction that aborts leaves its mark behind; the next transaction gets
// the same txnid and, allocating in the same order, copies the same leaf to the same page with
// other contents. The allocation clears the mark, so Finalize checksums what the page now holds.
TEST(EngineTest, ALeafSealedInAnAbortedTransactionIsChecksummedAgainWhenItsPageComesBack) {
  TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = MustOpen(path, NosyncOptions());
    WriteBatch b;
    for (int i = 0; i < 2000; ++i) b.Put(Key(i), "v" + std::to_string(i));
    ASSERT_TRUE(db->Write(b).ok());
    {
      auto w = std::move(db->BeginWrite()).value();
      ASSERT_TRUE(w->Put(Key(10), "first").ok());
      ASSERT_TRUE(w->Put(Key(1990), "moves on: seals Key(10)'s leaf").ok());
      w->Abort();
    }
    auto w = std::move(db->BeginWrite()).value();
    ASSERT_TRUE(w->Put(Key(10), "second, and longer").ok());
    ASSERT_TRUE(w->Commit().ok());
    auto rep = db->Verify();
    ASSERT_TRUE(rep.ok) << rep.ToString();
  }
  auto db = MustOpen(path, NosyncOptions());
  std::string v;
  ASSERT_TRUE(db->Get(Key(10), &v).ok());
  EXPECT_EQ(v, "second, and longer");
  auto rep = db->Verify();
  EXPECT_TRUE(rep.ok) << rep.ToString();
}

// Fills three trees (one with overflow values) so their pages interleave, makes the fill
// durable, then deletes most of it: the pages left in use lie all over the file, and the free
// ones cannot be reused before a flush, so the file grew while deleting.
void FillThenDeleteMost(Db* db, Model* model) {
  std::string val(100, 'v');
  for (int round = 0; round < 8; ++round) {
    WriteBatch b;
    for (int i = round; i < 16000; i += 8) {
      const std::string tree = i % 3 == 0 ? "" : i % 3 == 1 ? "one" : "two";
      std::string v = val + std::to_string(i);
      // Values of 2 to 5 pages, a fifth of which stay (i % 10 == 0 survives the deletes).
      if (tree == "two" && i % 10 == 2) v.assign(5000 + i % 11000, static_cast<char>('a' + i % 26));
      b.Put(tree, Key(i), v);
      (*model)[tree][Key(i)] = v;
    }
    ASSERT_TRUE(db->Write(b, WriteOptions{false}).ok());
  }
  ASSERT_TRUE(db->Sync().ok());
  for (int round = 0; round < 8; ++round) {
    WriteBatch b;
    for (int i = round; i < 16000; i += 8) {
      if (i % 10 == 0) continue;  // a tenth stays
      const std::string tree = i % 3 == 0 ? "" : i % 3 == 1 ? "one" : "two";
      b.Delete(tree, Key(i));
      (*model)[tree].erase(Key(i));
    }
    ASSERT_TRUE(db->Write(b, WriteOptions{false}).ok());
  }
}

// Shrink moves the pages in use at the end of the file down and cuts the file; every tree, the
// overflow values and both meta slots agree with the smaller file, before and after a reopen.
TEST(EngineTest, ShrinkMovesPagesDownAndCutsTheFile) {
  TempDir dir;
  std::string path = dir.File("db");
  Model model;
  uint64_t before, after;
  {
    auto db = MustOpen(path, NoShrinkOptions());
    ASSERT_NO_FATAL_FAILURE(FillThenDeleteMost(db.get(), &model));
    before = db->GetStats()->last_page;
    // Bounded: only the last 256 pages move (a close uses such a bound), and those are gone.
    Status s = db->Shrink(256 * 4096);
    ASSERT_TRUE(s.ok()) << s.ToString();
    const uint64_t bounded = db->GetStats()->last_page;
    EXPECT_LE(bounded, before - 256);
    ASSERT_NO_FATAL_FAILURE(ExpectEquals(*db, model));
    s = db->Shrink();
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto st = db->GetStats();
    after = st->last_page;
    EXPECT_LT(after, before / 3) << "before " << before << " after " << after;
    EXPECT_GT(bounded, after) << "the bounded Shrink did the whole work";
    EXPECT_EQ(FileBytes(path), after * 4096);
    auto rep = db->Verify();
    ASSERT_TRUE(rep.ok) << rep.ToString();
    ASSERT_NO_FATAL_FAILURE(ExpectEquals(*db, model));
    // It keeps working: writes grow the file again from the new end.
    WriteBatch b;
    b.Put("two", Key(1), std::string(20000, 'z'));
    ASSERT_TRUE(db->Write(b).ok());
    model["two"][Key(1)] = std::string(20000, 'z');
  }
  for (int slot : {0, 1}) {
    format::Meta m = ReadMeta(path, slot);
    EXPECT_LE(m.last_page * 4096, FileBytes(path)) << "meta slot " << slot;
  }
  ASSERT_NO_FATAL_FAILURE(ExpectReopenedHolds(path, Options{}, model));
}

// Free space in holes too small for the large values at the end of the file: those stay where
// they are, the rest moves, and the file never grows (nor does a second Shrink change anything).
TEST(EngineTest, ShrinkNeverGrowsTheFileWhenLargeValuesFindNoRoom) {
  TempDir dir;
  std::string path = dir.File("db");
  auto db = MustOpen(path, NoShrinkOptions());
  Model model;
  WriteBatch b;
  for (int i = 0; i < 3000; ++i) {  // two pages each
    b.Put(Key(i), std::string(5000, 'a'));
    if (i % 2 == 1) model[""][Key(i)] = std::string(5000, 'a');
  }
  for (int i = 3000; i < 3400; ++i) {  // three pages each, at the end of the file
    b.Put(Key(i), std::string(9000, 'b'));
    model[""][Key(i)] = std::string(9000, 'b');
  }
  ASSERT_TRUE(db->Write(b).ok());
  WriteBatch del;
  for (int i = 0; i < 3000; i += 2) del.Delete(Key(i));  // two-page holes
  ASSERT_TRUE(db->Write(del).ok());
  ASSERT_TRUE(db->Sync().ok());
  const uint64_t before = FileBytes(path);
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    Status s = db->Shrink();
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_LE(FileBytes(path), before);
    EXPECT_EQ(FileBytes(path), db->GetStats()->last_page * 4096);
    auto rep = db->Verify();
    ASSERT_TRUE(rep.ok) << rep.ToString();
    ASSERT_NO_FATAL_FAILURE(ExpectEquals(*db, model));
  }
}

// A reader open across Shrink keeps its snapshot: the pages it holds are neither moved nor
// reused. Once it is gone a second Shrink gives back what the first could not.
TEST(EngineTest, ShrinkLeavesALiveReadersPagesAlone) {
  TempDir dir;
  std::string path = dir.File("db");
  auto db = MustOpen(path, NoShrinkOptions());
  Model model;
  ASSERT_NO_FATAL_FAILURE(FillThenDeleteMost(db.get(), &model));
  auto old_reader = std::move(db->BeginRead()).value();
  ASSERT_TRUE(db->Write(
                    [&] {
                      WriteBatch b;
                      for (int i = 0; i < 16000; i += 10) {
                        const std::string tree = i % 3 == 0 ? "" : i % 3 == 1 ? "one" : "two";
                        b.Delete(tree, Key(i));
                      }
                      return b;
                    }(),
                    WriteOptions{false})
                  .ok());
  ASSERT_TRUE(db->Shrink().ok());
  const uint64_t with_reader = db->GetStats()->last_page;
  for (const auto& [tree, kv] : model) {
    for (const auto& [k, v] : kv) {
      auto got = old_reader->Get(tree, k);
      ASSERT_TRUE(got.ok()) << tree << "/" << k << ": " << got.status().ToString();
      ASSERT_TRUE(*got == v) << tree << "/" << k;
    }
  }
  old_reader.reset();
  ASSERT_TRUE(db->Shrink().ok());
  const uint64_t without = db->GetStats()->last_page;
  EXPECT_LT(without, with_reader);
  EXPECT_EQ(FileBytes(path), without * 4096);
  auto rep = db->Verify();
  EXPECT_TRUE(rep.ok) << rep.ToString();
}

// A clean close shrinks a file that is mostly free (Options::shrink_on_close), and keeps it as it
// is when told not to.
TEST(EngineTest, CleanCloseShrinksAMostlyFreeFile) {
  for (bool shrink : {true, false}) {
    SCOPED_TRACE(shrink ? "shrink_on_close" : "no shrink_on_close");
    TempDir dir;
    std::string path = dir.File("db");
    Model model;
    uint64_t last_page;
    Options o = NosyncOptions();
    o.shrink_on_close = shrink;
    {
      auto db = MustOpen(path, o);
      ASSERT_NO_FATAL_FAILURE(FillThenDeleteMost(db.get(), &model));
      // The test's data must be past the size below which a close does not bother.
      ASSERT_GE(db->GetStats()->free_pages * 4096, uint64_t{8} << 20);
      last_page = db->GetStats()->last_page;
    }
    if (shrink) {
      EXPECT_LT(FileBytes(path), last_page * 4096 / 3);
    } else {
      EXPECT_EQ(FileBytes(path), last_page * 4096);
    }
    ASSERT_NO_FATAL_FAILURE(ExpectReopenedHolds(path, o, model));
  }
}

// A creation killed before its first meta was written leaves a file of zeros; it opens as new.
TEST(EngineTest, InterruptedCreationStartsAfresh) {
  TempDir dir;
  std::string path = dir.File("db");
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0644);
  std::string zeros(8192, '\0');
  ASSERT_EQ(::write(fd, zeros.data(), zeros.size()), 8192);
  ::close(fd);
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  EXPECT_TRUE(db->Put("k", "v").ok());
}

void FlipByte(const std::string& path, uint64_t offset) {
  int fd = ::open(path.c_str(), O_RDWR);
  uint8_t b;
  ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
  b ^= 0x40;
  ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

TEST(EngineTest, FlippedBitInDataPageIsCorruptionNamingThePage) {
  TempDir dir;
  std::string path = dir.File("db");
  uint64_t first_commit_end;
  {
    auto db = MustOpen(path);
    WriteBatch b;
    for (int i = 0; i < 100; ++i) b.Put(Key(i), "value");
    ASSERT_TRUE(db->Write(b).ok());
    first_commit_end = db->GetStats()->last_page;
    // A later commit that leaves the main tree alone, so its pages are older than the newest
    // meta's durable point (bit rot, not a torn commit).
    WriteBatch other;
    other.Put("side", "k", "v");
    ASSERT_TRUE(db->Write(other).ok());
  }
  for (uint64_t p = 2; p < first_commit_end; ++p) FlipByte(path, p * 4096 + 2048);
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  std::string v;
  Status s = db->Get(Key(3), &v);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("page "), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.message();
  auto rep = db->Verify();
  EXPECT_FALSE(rep.ok);
  EXPECT_NE(rep.ToString().find("checksum mismatch"), std::string::npos) << rep.ToString();
}

uint32_t FileFormatVersion(const std::string& path, int slot) {
  int fd = ::open(path.c_str(), O_RDONLY);
  uint32_t v = 0;
  EXPECT_EQ(::pread(fd, &v, sizeof v, slot * 4096 + 8), 4);  // Meta.version follows the magic
  ::close(fd);
  return v;
}

// Version 2 leaves the gap between a page's slots and its cells out of the checksum (a commit
// neither copies nor checksums it); version 1 covers the whole page. Both open, and a file keeps
// its version across later commits.
TEST(EngineTest, FormatVersionsDifferOnlyInWhatTheChecksumCovers) {
  TempDir dir;
  for (uint32_t version : {1u, 2u, 3u}) {
    SCOPED_TRACE("format_version " + std::to_string(version));
    std::string path = dir.File("db" + std::to_string(version));
    Options o;
    o.format_version = version;
    {
      auto db = MustOpen(path, o);
      for (int i = 0; i < 10; ++i) ASSERT_TRUE(db->Put(Key(i), "v").ok());
    }
    {
      auto db = MustOpen(path);  // default options: the file's own version stays
      ASSERT_TRUE(db->Put(Key(10), "v").ok());
      ASSERT_TRUE(db->Backup(path + "-backup").ok());  // and a backup has it too
    }
    EXPECT_EQ(FileFormatVersion(path, 0), version);
    EXPECT_EQ(FileFormatVersion(path, 1), version);
    EXPECT_EQ(FileFormatVersion(path + "-backup", 0), version);
    EXPECT_TRUE(MustOpen(path + "-backup")->Verify().ok);
    // The only leaf (11 short cells at the end of the page) has nothing at byte 1024.
    int fd = ::open(path.c_str(), O_RDONLY);
    struct stat st;
    ASSERT_EQ(::fstat(fd, &st), 0);
    std::vector<uint64_t> leaves;
    for (uint64_t p = 2; p < static_cast<uint64_t>(st.st_size) / 4096; ++p) {
      uint8_t hdr[32];
      ASSERT_EQ(::pread(fd, hdr, sizeof hdr, static_cast<off_t>(p * 4096)), 32);
      uint32_t upper;
      std::memcpy(&upper, hdr + 24, 4);
      if (hdr[4] == 2 && hdr[6] == 11) {  // a leaf with the 11 keys
        ASSERT_GT(upper, 1024u);
        leaves.push_back(p);
      }
    }
    ::close(fd);
    ASSERT_FALSE(leaves.empty());
    for (uint64_t p : leaves) FlipByte(path, p * 4096 + 1024);
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    std::string v;
    Status s = db->Get(Key(3), &v);
    if (version == 1) {
      EXPECT_TRUE(s.IsCorruption()) << s.ToString();
      EXPECT_FALSE(db->Verify().ok);
    } else {
      EXPECT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(v, "v");
      auto rep = db->Verify();
      EXPECT_TRUE(rep.ok) << rep.ToString();
    }
  }
  Options bad;
  bad.format_version = 4;
  auto db = Db::Open(dir.File("db4"), bad);
  ASSERT_FALSE(db.ok());
  EXPECT_TRUE(db.status().IsInvalidArgument()) << db.status().ToString();
  EXPECT_NE(db.status().message().find("format_version 4"), std::string::npos);
}

// Db::Delete does not read the value it deletes: a damaged large value can still be deleted (it
// read the whole value first, and failed with Corruption), and on a read-only Db a delete is
// refused as such, key present or not (a missing key gave NotFound).
TEST(EngineTest, DeleteDoesNotReadTheValue) {
  TempDir dir;
  const std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    ASSERT_TRUE(db->Put("big", std::string(100000, 'Z')).ok());
    ASSERT_TRUE(db->Put("small", "s").ok());
  }
  // A byte in the middle of the large value's pages.
  const std::string bytes = testing::ReadFile(path);
  const size_t at = bytes.find(std::string(4096, 'Z'));
  ASSERT_NE(at, std::string::npos);
  FlipByte(path, at + 2048);
  {
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    std::string v;
    ASSERT_TRUE(db->Get("big", &v).IsCorruption());
    Status deleted = db->Delete("big");
    EXPECT_TRUE(deleted.ok()) << deleted.ToString();
    EXPECT_TRUE(db->Get("big", &v).IsNotFound());
    EXPECT_TRUE(db->Delete("big").IsNotFound());
    EXPECT_TRUE(db->Get("small", &v).ok());
  }
  Options ro;
  ro.read_only = true;
  auto db = MustOpen(path, ro);
  ASSERT_TRUE(db);
  for (const char* key : {"small", "missing"}) {
    Status s = db->Delete(key);
    EXPECT_EQ(s.c_code(), TESSERA_READ_ONLY) << key << ": " << s.ToString();
  }
}

// Options out of range are InvalidArgument from Open, not an exception (a huge max_readers threw
// std::bad_alloc out of it), and no file is made for them.
TEST(EngineTest, MaxReadersOutOfRangeIsRefused) {
  TempDir dir;
  for (size_t n : {size_t{0}, size_t{4097}, size_t{1} << 40, SIZE_MAX}) {
    Options o;
    o.max_readers = n;
    auto db = Db::Open(dir.File("db"), o);
    ASSERT_FALSE(db.ok()) << n;
    EXPECT_TRUE(db.status().IsInvalidArgument()) << db.status().ToString();
    EXPECT_FALSE(std::filesystem::exists(dir.File("db"))) << n;
  }
  Options o;
  o.max_readers = 4096;
  EXPECT_TRUE(MustOpen(dir.File("db"), o));
}

// Version 3 stores a large value without a page header: 4096 bytes take one page, not two. Files
// of older versions keep their headers, and both kinds read back after a reopen with default
// options.
TEST(EngineTest, AFourKiBValueTakesOnePageAndOlderFilesKeepTheirFormat) {
  TempDir dir;
  const std::string long_key(1020, 'k');  // too long to sit inline with even an empty value
  for (uint32_t version : {2u, 3u}) {
    SCOPED_TRACE("format_version " + std::to_string(version));
    const std::string path = dir.File("db" + std::to_string(version));
    auto value = [](int i, size_t n) {
      std::string v(n, '\0');
      for (size_t j = 0; j < n; ++j) v[j] = static_cast<char>(i * 7 + j * 13);
      return v;
    };
    const uint64_t per_4k = version == 3 ? 1 : 2;
    {
      Options o;
      o.format_version = version;
      auto db = MustOpen(path, o);
      WriteBatch b;
      for (int i = 0; i < 8; ++i) b.Put(Key(i), value(i, 4096));
      b.Put("mid", value(100, 5000));
      b.Put(long_key, "");
      ASSERT_TRUE(db->Write(b).ok());
      EXPECT_EQ(db->GetStats()->trees[0].overflow_pages, 8 * per_4k + 2 + 1);
    }
    auto db = MustOpen(path);
    std::string v;
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(db->Get(Key(i), &v).ok());
      EXPECT_TRUE(v == value(i, 4096)) << i;
    }
    ASSERT_TRUE(db->Get("mid", &v).ok());
    EXPECT_TRUE(v == value(100, 5000));
    ASSERT_TRUE(db->Get(long_key, &v).ok());
    EXPECT_EQ(v, "");
    ASSERT_TRUE(db->Put(Key(8), value(8, 4096)).ok());  // the file's own format again
    ASSERT_TRUE(db->Delete(Key(0)).ok());
    EXPECT_EQ(db->GetStats()->trees[0].overflow_pages, 8 * per_4k + 2 + 1);
    auto rep = db->Verify();
    EXPECT_TRUE(rep.ok) << rep.ToString();
    db.reset();
    EXPECT_EQ(FileFormatVersion(path, 0), version);
  }
}

// Pages of the file holding a value of `byte` repeated: a version 3 run starts with the value.
std::vector<uint64_t> PagesStartingWith(const std::string& path, char byte) {
  std::vector<uint64_t> out;
  int fd = ::open(path.c_str(), O_RDONLY);
  struct stat st;
  EXPECT_EQ(::fstat(fd, &st), 0);
  for (uint64_t p = 2; p < static_cast<uint64_t>(st.st_size) / 4096; ++p) {
    char head[64];
    EXPECT_EQ(::pread(fd, head, sizeof head, static_cast<off_t>(p * 4096)), 64);
    if (std::string_view(head, sizeof head) == std::string(sizeof head, byte)) out.push_back(p);
  }
  ::close(fd);
  return out;
}

// A headerless run is checked against the checksum its leaf records: a flipped bit is
// Corruption naming the run, and leaves every other value readable.
TEST(EngineTest, FlippedBitInALargeValueIsCorruptionNamingItsRun) {
  TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    WriteBatch b;
    b.Put("big", std::string(10000, 'Z'));
    b.Put("other", std::string(6000, 'Y'));
    b.Put("small", "s");
    ASSERT_TRUE(db->Write(b).ok());
  }
  auto runs = PagesStartingWith(path, 'Z');
  ASSERT_EQ(runs.size(), 3u);  // 10000 bytes: three pages, each starting with the value's bytes
  FlipByte(path, runs[1] * 4096 + 17);
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  std::string v;
  Status s = db->Get("big", &v);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("overflow run at page " + std::to_string(runs[0])), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("checksum mismatch"), std::string::npos) << s.message();
  ASSERT_TRUE(db->Get("other", &v).ok());
  EXPECT_EQ(v, std::string(6000, 'Y'));
  ASSERT_TRUE(db->Get("small", &v).ok());
  auto rep = db->Verify();
  EXPECT_FALSE(rep.ok);
  EXPECT_NE(rep.ToString().find("checksum mismatch"), std::string::npos) << rep.ToString();
  // Replacing the damaged value frees the run without reading it.
  ASSERT_TRUE(db->Put("big", "fixed").ok());
  rep = db->Verify();
  EXPECT_TRUE(rep.ok) << rep.ToString();
}

// A run the last commit wrote that did not reach the disk intact makes that commit torn: the
// database opens at the one before (the run has no header, so only its leaf's checksum tells).
TEST(EngineTest, TornLargeValueFallsBackToThePreviousCommit) {
  TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = MustOpen(path, PowerCutOptions(false));
    ASSERT_TRUE(db->Put("old", "1").ok());  // sync
    WriteBatch b;
    b.Put("big", std::string(8192, 'Q'));
    ASSERT_TRUE(db->Write(b, WriteOptions{false}).ok());
    ASSERT_TRUE(db->SimulatePowerCut(1, 1.0).ok());  // every write kept, the run damaged below
  }
  auto runs = PagesStartingWith(path, 'Q');
  ASSERT_EQ(runs.size(), 2u);
  FlipByte(path, runs[1] * 4096 + 4000);
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  std::string v;
  EXPECT_TRUE(db->Get("old", &v).ok());
  EXPECT_TRUE(db->Get("big", &v).IsNotFound());
  auto st = db->GetStats();
  EXPECT_NE(st->recovery_note.find("overflow run at page " + std::to_string(runs[0])),
            std::string::npos)
      << st->recovery_note;
  EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
}

// Rewrites cell `idx` of the main tree's root leaf (a tree of depth 1) through `edit`, then
// makes the leaf's checksum and the newest meta match (durable_txn = txnid: open walks nothing),
// as a crafted file would.
template <typename F>
void CraftRootCell(const std::string& path, unsigned idx, F edit) {
  int fd = ::open(path.c_str(), O_RDWR);
  format::Meta m[2];
  ASSERT_EQ(::pread(fd, &m[0], sizeof m[0], 0), static_cast<ssize_t>(sizeof m[0]));
  ASSERT_EQ(::pread(fd, &m[1], sizeof m[1], 4096), static_cast<ssize_t>(sizeof m[1]));
  format::Meta& cur = m[0].txnid > m[1].txnid ? m[0] : m[1];
  const int slot = &cur == &m[0] ? 0 : 1;
  ASSERT_EQ(cur.main.depth, 1u);
  std::vector<uint8_t> page(4096);
  const off_t at = static_cast<off_t>(cur.main.root * 4096);
  ASSERT_EQ(::pread(fd, page.data(), 4096, at), 4096);
  format::PageView v{page.data()};
  format::LeafCell c{v.cell(idx)};
  edit(cur, const_cast<uint8_t*>(c.val()));
  uint32_t crc = Crc32c(page.data() + 4, v.lower() - 4);
  crc = Crc32c(page.data() + v.upper(), 4096 - v.upper(), crc);
  v.set_crc(crc);
  ASSERT_EQ(::pwrite(fd, page.data(), 4096, at), 4096);
  cur.main.root_crc = crc;
  cur.durable_txn = cur.txnid;
  cur.crc = 0;
  cur.crc = Crc32c(reinterpret_cast<const uint8_t*>(&cur), sizeof cur);
  ASSERT_EQ(::pwrite(fd, &cur, sizeof cur, slot * 4096), static_cast<ssize_t>(sizeof cur));
  ::close(fd);
}

// A read-only Db pins its snapshot in the file's reader table (`<path>-readers`), so its writer
// reuses none of its pages while it is open: it reads the values it opened with, however many
// flushes pass. Where the table cannot be made (here a directory stands in its place), the
// writer may reuse them, and reading a reused run is Corruption, never another value's bytes.
TEST(EngineTest, ReadOnlyDbBesideAWriterKeepsItsSnapshotOrReportsReusedPages) {
  for (bool registered : {true, false}) {
    for (uint32_t version : {2u, 3u}) {
      SCOPED_TRACE(std::string(registered ? "registered" : "no reader table") +
                   ", format_version " + std::to_string(version));
      TempDir dir;
      std::string path = dir.File("db");
      if (!registered) {
        ASSERT_EQ(::mkdir((path + "-readers").c_str(), 0755), 0);
      }
      Options o;
      o.format_version = version;
      o.commit_log = false;
      auto rw = MustOpen(path, o);
      ASSERT_TRUE(rw->Put("big", std::string(3000, 'A')).ok());
      WriteBatch f;
      for (int i = 0; i < 200; ++i) f.Put("f", Key(i), std::string(100, 'f'));
      ASSERT_TRUE(rw->Write(f).ok());
      ASSERT_TRUE(rw->Put("zz", "x").ok());
      ASSERT_TRUE(rw->Sync().ok());
      Options ro;
      ro.read_only = true;
      auto inspector = MustOpen(path, ro);
      ASSERT_TRUE(inspector);
      EXPECT_EQ(inspector->GetStats()->recovery_note.find("not registered") == std::string::npos,
                registered)
          << inspector->GetStats()->recovery_note;
      std::string v;
      ASSERT_TRUE(inspector->Get("big", &v).ok());
      ASSERT_EQ(v, std::string(3000, 'A'));
      {
        auto w = rw->BeginWrite();
        ASSERT_TRUE((*w)->DropTree("f").ok());
        ASSERT_TRUE((*w)->Commit().ok());
      }
      ASSERT_TRUE(rw->Sync().ok());
      ASSERT_TRUE(rw->Delete("big").ok());
      ASSERT_TRUE(rw->Sync().ok());
      // Takes the freed run's pages, unless a reader's pin keeps them.
      ASSERT_TRUE(rw->Put(Key(0), std::string(3000, 'B')).ok());
      ASSERT_TRUE(rw->Sync().ok());
      Status s = inspector->Get("big", &v);  // its snapshot still names the old run
      if (registered) {
        ASSERT_TRUE(s.ok()) << s.ToString();
        EXPECT_EQ(v, std::string(3000, 'A'));
      } else {
        EXPECT_TRUE(s.IsCorruption()) << s.ToString() << ", value starts with " << v.substr(0, 8);
      }
    }
  }
}

// Overwrites every key of a database, `rounds` times, each round a sync commit.
void OverwriteAll(Db* db, int keys, int rounds, char fill) {
  for (int r = 0; r < rounds; ++r) {
    WriteBatch b;
    for (int i = 0; i < keys; ++i) b.Put(Key(i), std::string(100, static_cast<char>(fill + r)));
    ASSERT_TRUE(db->Write(b, WriteOptions{true}).ok());
  }
}

// Over many flushes, in one process: every key keeps the value the read-only Db opened
// with, through new read transactions and cursors too; once it closes, the writer reuses the
// pages it held back.
TEST(EngineTest, ReadOnlyDbSeesItsSnapshotThroughManyFlushesAndThenLetsPagesGo) {
  TempDir dir;
  std::string path = dir.File("db");
  constexpr int kKeys = 2000;
  auto rw = MustOpen(path);
  ASSERT_NO_FATAL_FAILURE(OverwriteAll(rw.get(), kKeys, 1, 'a'));
  Options ro;
  ro.read_only = true;
  auto inspector = MustOpen(path, ro);
  ASSERT_TRUE(inspector);
  const uint64_t before = rw->GetStats()->last_page;
  ASSERT_NO_FATAL_FAILURE(OverwriteAll(rw.get(), kKeys, 6, 'b'));
  const uint64_t held = rw->GetStats()->last_page;
  for (int pass = 0; pass < 2; ++pass) {  // a second read transaction sees the same
    auto r = std::move(inspector->BeginRead()).value();
    auto c = std::move(r->NewCursor()).value();
    int n = 0;
    for (Status s = c->First(); c->Valid(); s = c->Next(), ++n) {
      ASSERT_TRUE(s.ok()) << s.ToString();
      ASSERT_EQ(c->key(), Key(n));
      ASSERT_EQ(c->value(), std::string(100, 'a')) << "key " << Key(n);
    }
    EXPECT_EQ(n, kKeys);
  }
  inspector.reset();
  ASSERT_NO_FATAL_FAILURE(OverwriteAll(rw.get(), kKeys, 6, 'h'));
  const uint64_t after = rw->GetStats()->last_page;
  // Six rounds grew the file while the pin held pages; six more, without it, mostly reuse.
  EXPECT_GT(held - before, 4 * (after - held)) << before << " -> " << held << " -> " << after;
  auto rep = rw->Verify();
  EXPECT_TRUE(rep.ok) << rep.ToString();
}

// The reader table's slots (shared_readers.h): (owner, pinned txnid) pairs, zero when free.
std::vector<std::pair<uint64_t, uint64_t>> ReaderSlots(const std::string& db_path) {
  std::vector<std::pair<uint64_t, uint64_t>> slots(128);
  int fd = ::open((db_path + "-readers").c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::pread(fd, slots.data(), slots.size() * 16, 0), 128 * 16);
  ::close(fd);
  return slots;
}

// Read-only Dbs opened one after another while a writer commits without pause: each must read
// one whole snapshot (every commit rewrites every key with its generation, so a snapshot's keys
// all carry the same one), never an error. Opens used to pin the newest meta and then choose a
// newer one read a moment later, whose pages the writer could reuse (an audit: 43 failures in
// 1201 opens over 15 s).
TEST(EngineTest, ReadOnlyOpensBesideABusyWriterEachSeeOneWholeSnapshot) {
  TempDir dir;
  std::string path = dir.File("db");
  constexpr int kKeys = 300;
  Options o;
  o.commit_log = false;
  auto rw = MustOpen(path, o);
  auto write_gen = [&](int gen, bool sync) {
    WriteBatch b;
    std::string v = "g" + std::to_string(gen);
    v.resize(100, '.');
    for (int i = 0; i < kKeys; ++i) b.Put(Key(i), v);
    return rw->Write(b, WriteOptions{sync});
  };
  ASSERT_TRUE(write_gen(0, true).ok());
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int gen = 1; !stop.load(); ++gen) {
      if (!write_gen(gen, false).ok()) return;  // young pages come back at once
    }
  });
  int opens = 0, bad = 0;
  std::string first_bad;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  Options ro;
  ro.read_only = true;
  while (std::chrono::steady_clock::now() < end) {
    auto db = Db::Open(path, ro);
    ++opens;
    std::string why;
    if (!db.ok()) {
      why = db.status().ToString();
    } else {
      auto r = std::move((*db)->BeginRead()).value();
      auto c = std::move(r->NewCursor()).value();
      int n = 0;
      std::string gen;
      Status st = c->First();
      for (; st.ok() && c->Valid(); st = c->Next(), ++n) {
        std::string v(c->value());
        if (n == 0) gen = v;
        if (c->key() != Key(n) || v != gen) {
          why = "key " + std::string(c->key()) + " = " + v.substr(0, 12) + " in a snapshot of " +
                gen.substr(0, 12);
          break;
        }
      }
      if (why.empty() && !st.ok()) why = st.ToString();
      if (why.empty() && n != kKeys) why = std::to_string(n) + " keys";
    }
    if (!why.empty() && bad++ == 0) first_bad = why;
  }
  stop.store(true);
  writer.join();
  EXPECT_EQ(bad, 0) << bad << " of " << opens << " opens went wrong, the first: " << first_bad;
  EXPECT_GT(opens, 10);
}

// Starts a child process that opens `path` read-only (pinning its snapshot in the reader table),
// checks a key, and then sleeps until killed. Returns its pid once it has pinned.
pid_t StartReadOnlyChild(const std::string& path) {
  int ready[2];
  EXPECT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();  // the test process has no other thread at this point
  if (child == 0) {
    Options ro;
    ro.read_only = true;
    auto db = Db::Open(path, ro);
    std::string v;
    const char ok = db.ok() && (*db)->Get(Key(7), &v).ok() ? 'y' : 'n';
    (void)!::write(ready[1], &ok, 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char ok = 0;
  EXPECT_EQ(::read(ready[0], &ok, 1), 1);
  ::close(ready[0]);
  EXPECT_EQ(ok, 'y') << "the read-only child could not open or read";
  return child;
}

// A read-only Db in another process pins its snapshot in the reader table while it lives: six
// rounds of overwrites then cannot reuse that snapshot's pages. Once the process is SIGKILLed,
// its pin (still in the table) counts for nothing: the same rounds reuse them, deterministically
// fewer pages, and the next read-only Db takes the dead one's slot.
TEST(EngineTest, AKilledReadOnlyProcessStopsHoldingPagesBack) {
  constexpr int kKeys = 2000;
  Options o;
  o.commit_log = false;  // every sync commit flushes the data file: freed pages come back soon
  uint64_t grown[2];
  for (bool killed_first : {false, true}) {
    SCOPED_TRACE(killed_first ? "reader killed before the writes" : "reader alive");
    TempDir dir;
    std::string path = dir.File("db");
    {
      auto rw = MustOpen(path, o);
      ASSERT_NO_FATAL_FAILURE(OverwriteAll(rw.get(), kKeys, 1, 'a'));
    }
    const pid_t child = StartReadOnlyChild(path);
    uint64_t pinned = 0;
    size_t slot = 0;
    for (size_t i = 0; i < 128; ++i) {
      const auto [owner, txn] = ReaderSlots(path)[i];
      if (owner >> 32 == static_cast<uint64_t>(child)) pinned = txn, slot = i;
    }
    EXPECT_NE(pinned, 0u) << "the child's snapshot is not in the reader table";
    if (killed_first) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
    }
    auto rw = MustOpen(path, o);
    const uint64_t before = rw->GetStats()->last_page;
    ASSERT_NO_FATAL_FAILURE(OverwriteAll(rw.get(), kKeys, 6, 'b'));
    grown[killed_first] = rw->GetStats()->last_page - before;
    if (!killed_first) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
    } else {
      EXPECT_EQ(ReaderSlots(path)[slot].second, pinned) << "the dead pin was cleared, not ignored";
      Options ro;
      ro.read_only = true;
      auto next = MustOpen(path, ro);
      EXPECT_EQ(ReaderSlots(path)[slot].first >> 32, static_cast<uint64_t>(::getpid()))
          << "the next read-only Db did not take the dead one's slot";
    }
    auto rep = rw->Verify();
    EXPECT_TRUE(rep.ok) << rep.ToString();
  }
  EXPECT_LT(grown[1], grown[0]) << "a dead reader's pin held pages back as a live one's does";
}

// Backup reads every value: one it cannot read fails the backup instead of ending it early.
TEST(EngineTest, BackupFailsOnAValueItCannotRead) {
  TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    WriteBatch b;
    for (int i = 0; i < 10; ++i) b.Put(Key(i), std::string(5000, static_cast<char>('a' + i)));
    ASSERT_TRUE(db->Write(b).ok());
  }
  auto runs = PagesStartingWith(path, 'e');  // Key(4)'s run
  ASSERT_EQ(runs.size(), 2u);
  FlipByte(path, runs[0] * 4096 + 100);
  auto db = MustOpen(path);
  Status s = db->Backup(dir.File("backup"));
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("overflow run at page " + std::to_string(runs[0])), std::string::npos)
      << s.message();
  struct stat st;
  EXPECT_NE(::stat(dir.File("backup").c_str(), &st), 0) << "a partial backup was left behind";
}

// A version 2 run keeps its length in its own header, which nothing checks when the value is
// replaced without being read: a damaged length must be Corruption, not a reason to free pages
// that other values still use.
TEST(EngineTest, FreeingARunWhoseHeaderDisagreesWithItsValueIsCorruption) {
  TempDir dir;
  std::string path = dir.File("db");
  Options o;
  o.format_version = 2;
  {
    auto db = MustOpen(path, o);
    WriteBatch b;
    b.Put("big", std::string(9000, 'Z'));  // 9000 + a 32-byte header: 3 pages
    b.Put("other", std::string(5000, 'Y'));
    ASSERT_TRUE(db->Write(b).ok());
  }
  int fd = ::open(path.c_str(), O_RDWR);
  uint64_t run = 0;
  for (uint64_t p = 2; run == 0; ++p) {
    uint8_t hdr[64];
    ASSERT_EQ(::pread(fd, hdr, sizeof hdr, static_cast<off_t>(p * 4096)), 64);
    if (hdr[4] == format::kOverflow && hdr[32] == 'Z') run = p;
  }
  const uint32_t wrong = 7;
  ASSERT_EQ(::pwrite(fd, &wrong, 4, static_cast<off_t>(run * 4096 + 24)), 4);
  ::close(fd);
  {
    auto db = MustOpen(path);
    Status s = db->Put("big", "x");
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
    EXPECT_NE(s.message().find("header records 7 pages"), std::string::npos) << s.message();
  }
  auto db = MustOpen(path);
  std::string v;
  ASSERT_TRUE(db->Get("other", &v).ok());
  EXPECT_EQ(v, std::string(5000, 'Y'));
}

// Crafted references (leaf and meta checksums made to match): a run naming a tree page, a run
// outside the file, a run with txn id 0. Each is Corruption or a Verify problem; nothing crashes,
// nothing is freed that is not the run's, and the file still opens.
TEST(EngineTest, CraftedRunReferencesAreCorruption) {
  TempDir dir;
  {
    std::string path = dir.File("tree-page");
    {
      auto db = MustOpen(path);
      WriteBatch b;
      b.Put("a", std::string(2000, 'x'));
      b.Put("b", "small");
      ASSERT_TRUE(db->Write(b).ok());
    }
    CraftRootCell(path, 0, [](format::Meta& m, uint8_t* ref) {
      format::Store(ref, m.main.root);           // the leaf itself, verified as a leaf
      format::Store(ref + 16, uint32_t{12345});  // a checksum nothing matches
    });
    auto db = MustOpen(path);
    std::string v;
    ASSERT_TRUE(db->Get("b", &v).ok());  // the leaf is read (and verified) first
    Status s = db->Get("a", &v);
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  }
  for (uint64_t bad : {uint64_t{0}, uint64_t{1} << 42}) {
    SCOPED_TRACE("run at page " + std::to_string(bad));
    std::string path = dir.File("outside" + std::to_string(bad));
    {
      auto db = MustOpen(path);
      ASSERT_TRUE(db->Put("big", std::string(5000, 'Z')).ok());
      ASSERT_TRUE(db->Put("small", "s").ok());
    }
    CraftRootCell(path, 0, [&](format::Meta&, uint8_t* ref) { format::Store(ref, bad); });
    {
      auto db = MustOpen(path);
      std::string v;
      EXPECT_TRUE(db->Get("big", &v).IsCorruption());
      Status s = db->Put("big", "fixed");  // frees the old run: it must lie inside the file
      EXPECT_TRUE(s.IsCorruption()) << s.ToString();
      EXPECT_NE(s.message().find("outside the database"), std::string::npos) << s.message();
      EXPECT_TRUE(db->Delete("big").IsCorruption());
      auto w = db->BeginWrite();
      ASSERT_TRUE((*w)->Put("other", "v").ok());
      EXPECT_TRUE((*w)->Delete("big").IsCorruption());
      // The transaction may hold half of the failed delete: it refuses to go on.
      EXPECT_FALSE((*w)->Put("more", "v").ok());
      EXPECT_FALSE((*w)->Commit().ok());
      ASSERT_TRUE(db->Put(Key(1), "v").ok());
    }
    auto db = MustOpen(path);  // nothing was freed that should not have been
    std::string v;
    ASSERT_TRUE(db->Get("small", &v).ok());
    ASSERT_TRUE(db->Get(Key(1), &v).ok());
    EXPECT_TRUE(db->Get("other", &v).IsNotFound());
  }
  {
    std::string path = dir.File("txn-zero");
    const std::string big(9000, 'Z');
    {
      auto db = MustOpen(path, NoShrinkOptions());
      WriteBatch f;
      for (int i = 0; i < 300; ++i) f.Put("f", Key(i), std::string(5000, 'f'));
      ASSERT_TRUE(db->Write(f).ok());
      ASSERT_TRUE(db->Put("big", big).ok());
      auto w = db->BeginWrite();
      ASSERT_TRUE((*w)->DropTree("f").ok());
      ASSERT_TRUE((*w)->Commit().ok());
      ASSERT_TRUE(db->Sync().ok());
    }
    CraftRootCell(path, 0,
                  [](format::Meta&, uint8_t* ref) { format::Store(ref + 8, uint64_t{0}); });
    auto db = MustOpen(path, NoShrinkOptions());
    auto rep = db->Verify();
    EXPECT_FALSE(rep.ok);
    EXPECT_NE(rep.ToString().find("names txn 0"), std::string::npos) << rep.ToString();
    ASSERT_TRUE(db->Shrink().ok());  // moves the run down, byte for byte
    std::string v;
    ASSERT_TRUE(db->Get("big", &v).ok());
    EXPECT_TRUE(v == big);
  }
}

// A crafted version 2 page whose slot points into the uncovered middle of the page, with every
// checksum up to the meta made to match, is Corruption: cells must lie in [upper, page size).
TEST(EngineTest, ACellInThePagesUncheckedMiddleIsCorruption) {
  TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(db->Put(Key(i), "v").ok());
  }
  int fd = ::open(path.c_str(), O_RDWR);
  format::Meta m[2];
  ASSERT_EQ(::pread(fd, &m[0], sizeof m[0], 0), static_cast<ssize_t>(sizeof m[0]));
  ASSERT_EQ(::pread(fd, &m[1], sizeof m[1], 4096), static_cast<ssize_t>(sizeof m[1]));
  format::Meta& cur = m[0].txnid > m[1].txnid ? m[0] : m[1];
  const int slot = &cur == &m[0] ? 0 : 1;
  ASSERT_EQ(cur.main.depth, 1u);  // the root is the only leaf
  std::vector<uint8_t> page(4096);
  const off_t at = static_cast<off_t>(cur.main.root * 4096);
  ASSERT_EQ(::pread(fd, page.data(), 4096, at), 4096);
  format::PageView v{page.data()};
  format::LeafCell c0{v.cell(0)};
  const uint32_t size = c0.size();
  const uint32_t moved = v.upper() - size;  // in the gap, below upper
  ASSERT_GE(moved, v.lower());
  std::memmove(page.data() + moved, v.cell(0), size);
  v.set_slot(0, static_cast<uint16_t>(moved));
  uint32_t crc = Crc32c(page.data() + 4, v.lower() - 4);
  crc = Crc32c(page.data() + v.upper(), 4096 - v.upper(), crc);
  v.set_crc(crc);
  ASSERT_EQ(::pwrite(fd, page.data(), 4096, at), 4096);
  cur.main.root_crc = crc;
  cur.durable_txn = cur.txnid;  // no open-time walk: the read path must catch it
  cur.crc = 0;
  cur.crc = Crc32c(reinterpret_cast<const uint8_t*>(&cur), sizeof cur);
  ASSERT_EQ(::pwrite(fd, &cur, sizeof cur, slot * 4096), static_cast<ssize_t>(sizeof cur));
  ::close(fd);
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  std::string v0;
  Status s = db->Get(Key(0), &v0);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("outside the page"), std::string::npos) << s.message();
  EXPECT_FALSE(db->Verify().ok);
}

// A commit whose pages do not all match what the meta expects is treated as torn: the database
// opens at the commit before it and says so. Here a power cut keeps every write of a nosync
// commit (meta included), and then its pages are damaged, as if some had never been written.
TEST(EngineTest, TornLastCommitFallsBackAndIsReported) {
  for (bool log : {true, false}) {
    SCOPED_TRACE(log ? "with the commit log" : "without the commit log");
    TempDir dir;
    std::string path = dir.File("db");
    const Options o = PowerCutOptions(log);
    uint64_t before, after;
    {
      auto db = MustOpen(path, o);
      ASSERT_TRUE(db->Put("old", "1").ok());  // sync
      before = db->GetStats()->last_page;
      WriteBatch b;
      for (int i = 0; i < 100; ++i) b.Put(Key(i), "value");
      ASSERT_TRUE(db->Write(b, WriteOptions{false}).ok());
      after = db->GetStats()->last_page;
      ASSERT_TRUE(db->SimulatePowerCut(1, 1.0).ok());
    }
    ASSERT_GT(after, before);
    for (uint64_t p = before; p < after; ++p) FlipByte(path, p * 4096 + 100);
    auto db = MustOpen(path);
    std::string v;
    EXPECT_TRUE(db->Get("old", &v).ok());
    EXPECT_TRUE(db->Get(Key(1), &v).IsNotFound());
    auto st = db->GetStats();
    EXPECT_NE(st->recovery_note.find("rejected"), std::string::npos) << st->recovery_note;
    // With the log, "old" came back by replay (the fallback meta predates it).
    EXPECT_EQ(st->recovery_note.find("replayed 1 commits") != std::string::npos, log)
        << st->recovery_note;
    EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
  }
}

// A clean close leaves both meta slots describing the last commit, so a damaged newest meta
// loses nothing.
TEST(EngineTest, BadMetaFallsBackToTheOther) {
  TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    ASSERT_TRUE(db->Put("a", "1").ok());
    ASSERT_TRUE(db->Put("b", "2").ok());
  }
  uint32_t slot;
  {
    Options ro;
    ro.read_only = true;
    auto db = MustOpen(path, ro);
    slot = db->GetStats()->meta_slot;
  }
  FlipByte(path, uint64_t{slot} * 4096 + 30);  // inside the newest meta
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  std::string v;
  EXPECT_TRUE(db->Get("a", &v).ok());
  EXPECT_TRUE(db->Get("b", &v).ok());
  EXPECT_NE(db->GetStats()->recovery_note.find("invalid"), std::string::npos)
      << db->GetStats()->recovery_note;
  EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
  ASSERT_TRUE(db->Put("c", "3").ok());  // and the database keeps working
}

// A file of only zeros is what an interrupted creation leaves, and Open starts it again; it is
// also what another opener has just grown and is writing its first metas into, under the
// writer's lock. Open then reports Busy and leaves the file alone: it truncated it first, and
// the other opener died of SIGBUS writing into its mapping past the new end.
TEST(EngineTest, AZeroFileAnotherOpenerIsCreatingIsLeftAlone) {
  TempDir dir;
  const std::string path = dir.File("db");
  const std::string zeros(8192, '\0');
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, zeros.data(), zeros.size()), static_cast<ssize_t>(zeros.size()));
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);  // the other opener, mid-creation
  auto db = Db::Open(path, Options{});
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().c_code(), TESSERA_BUSY) << db.status().ToString();
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 8192) << "truncated under the other opener";
  ::close(fd);  // its lock goes: an interrupted creation is started again
  auto again = MustOpen(path);
  ASSERT_TRUE(again);
  ASSERT_TRUE(again->Put("k", "v").ok());
}

// A Db opened through a symbolic link keeps its commit log where an open by the real path looks:
// sync commits acknowledged through the link survive a power cut and come back by the real path.
// (The log was named after the path as given: `link-log`, never read by the real path's open.)
TEST(EngineTest, SyncCommitsMadeThroughASymlinkSurviveAPowerCut) {
  TempDir dir;
  ASSERT_TRUE(MustOpen(dir.File("real")));  // created, closed
  ASSERT_EQ(::symlink(dir.File("real").c_str(), dir.File("link").c_str()), 0);
  {
    auto db = MustOpen(dir.File("link"), PowerCutOptions(true));
    ASSERT_TRUE(db);
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(db->Put("k" + std::to_string(i), "v" + std::to_string(i)).ok());
    }
    ASSERT_TRUE(db->SimulatePowerCut(1, 0.0).ok());
  }
  auto db = MustOpen(dir.File("real"));
  ASSERT_TRUE(db);
  for (int i = 0; i < 10; ++i) {
    std::string v;
    ASSERT_TRUE(db->Get("k" + std::to_string(i), &v).ok()) << "lost acknowledged k" << i;
    EXPECT_EQ(v, "v" + std::to_string(i));
  }
}

// A clean close leaves the database in its one file: no commit log stays beside it, so a file
// replaced by an older copy of itself opens as that copy. (A log left behind had its records
// replayed onto the copy, or refused as a gap: "commits ... are lost".)
TEST(EngineTest, AnOlderCopyPutBackAfterACleanCloseOpensAsThatCopy) {
  TempDir dir;
  const std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(db->Put("k" + std::to_string(i), "old").ok());
  }
  std::filesystem::copy_file(path, dir.File("copy"));
  for (int round = 0; round < 2; ++round) {
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(db->Put("k" + std::to_string(i), "new").ok());
  }
  EXPECT_FALSE(std::filesystem::exists(path + "-log"));
  std::filesystem::copy_file(dir.File("copy"), path,
                             std::filesystem::copy_options::overwrite_existing);
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  for (int i = 0; i < 20; ++i) {
    std::string v;
    ASSERT_TRUE(db->Get("k" + std::to_string(i), &v).ok()) << i;
    EXPECT_EQ(v, "old") << "k" << i;
  }
}

// The commit log grows ahead of need in steps as large as itself (up to 4 MiB). Where the step does
// not fit but the record does (a nearly full disk, here a file size limit 256 KiB past a 1 MiB
// log), it grows by what the record needs: the commits go on. (The failed step made the Db refuse
// every write with 176 KiB still free.) In a child process, which alone gets the limit.
TEST(EngineTest, ACommitLogStepThatDoesNotFitGrowsByWhatTheRecordNeeds) {
  TempDir dir;
  const std::string path = dir.File("db");
  const pid_t child = ::fork();  // the test process has no other thread at this point
  if (child == 0) {
    auto db = Db::Open(path, Options{});
    if (!db.ok()) ::_exit(10);
    const std::string value(1000, 'v');
    // One key overwritten: the data file stays small while the log grows.
    struct stat st {};
    int puts = 0;
    while (::stat((path + "-log").c_str(), &st) != 0 || st.st_size < (1 << 20)) {
      if (!(*db)->Put("k", value).ok() || ++puts > 5000) ::_exit(11);
    }
    ::signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails with EFBIG instead
    rlimit lim{(1 << 20) + (256 << 10), (1 << 20) + (256 << 10)};
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(12);
    // About 600 KiB of records: past the 1 MiB log's end (which it reached half way through
    // it), within the limit.
    for (int i = 0; i < 550; ++i) {
      if (!(*db)->Put("k", value).ok()) ::_exit(13);
    }
    ::_exit(0);
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "11: no 1 MiB log, 12: no limit, 13: a commit failed";
}

// The log a clean close removes is the one the Db opened, even when the path it was opened by
// reaches another database by then (a `current` link switched to a new version): that
// database's live log, holding its acknowledged sync commits, stays. (The close named the log
// after the path again, and removed the other database's.)
TEST(EngineTest, ACleanCloseRemovesItsOwnLogOnlyAfterALinkMoved) {
  TempDir dir;
  ASSERT_EQ(::mkdir(dir.File("a").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(dir.File("b").c_str(), 0755), 0);
  ASSERT_EQ(::symlink(dir.File("a").c_str(), dir.File("current").c_str()), 0);
  auto first = MustOpen(dir.File("current/db"));
  ASSERT_TRUE(first);
  ASSERT_TRUE(first->Put("k", "a").ok());
  ASSERT_TRUE(std::filesystem::exists(dir.File("a/db-log")));
  auto second = MustOpen(dir.File("b/db"), PowerCutOptions(true));
  ASSERT_TRUE(second);
  ASSERT_TRUE(second->Put("k1", "b").ok());
  ASSERT_TRUE(std::filesystem::exists(dir.File("b/db-log")));
  // The link now reaches b.
  ASSERT_EQ(::symlink(dir.File("b").c_str(), dir.File("next").c_str()), 0);
  ASSERT_EQ(::rename(dir.File("next").c_str(), dir.File("current").c_str()), 0);
  first.reset();  // clean close
  EXPECT_FALSE(std::filesystem::exists(dir.File("a/db-log")));
  EXPECT_TRUE(std::filesystem::exists(dir.File("b/db-log")));
  ASSERT_TRUE(second->Put("k2", "b").ok());
  ASSERT_TRUE(second->SimulatePowerCut(1, 0.0).ok());
  second.reset();
  auto b = MustOpen(dir.File("b/db"));
  ASSERT_TRUE(b);
  std::string v;
  EXPECT_TRUE(b->Get("k1", &v).ok()) << "acknowledged k1 lost";
  EXPECT_TRUE(b->Get("k2", &v).ok()) << "acknowledged k2 lost";
}

// A sync commit whose commit-log append fails is refused with a sticky fatal error, and it is
// absent when the file is opened again: its meta, already in the mapping, is put back, so the
// OS writing the page back later cannot make a commit the caller was told failed appear.
TEST(EngineTest, ACommitWhoseLogAppendFailsIsAbsentAfterReopen) {
  TempDir dir;
  std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    // The log is created at the first append: a directory in its place makes that fail.
    ASSERT_EQ(::mkdir((path + "-log").c_str(), 0755), 0);
    Status s = db->Put("k", "v");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.c_code(), TESSERA_FATAL) << s.ToString();
    s = db->Put("k2", "v2");
    EXPECT_EQ(s.c_code(), TESSERA_FATAL) << "not sticky: " << s.ToString();
  }
  ASSERT_EQ(::rmdir((path + "-log").c_str()), 0);
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  std::string v;
  EXPECT_TRUE(db->Get("k", &v).IsNotFound()) << "the failed commit is there: " << v;
  ASSERT_TRUE(db->Put("k", "again").ok());
  ASSERT_TRUE(db->Get("k", &v).ok());
  EXPECT_EQ(v, "again");
  auto rep = db->Verify();
  EXPECT_TRUE(rep.ok) << rep.ToString();
}

// Damage to the older meta's txnid can make it look newer; its checksum shows it is invalid, and
// the note says that, not that a newer commit was rejected (the newest one was kept).
TEST(EngineTest, ADamagedOlderMetaIsNotCalledARejectedNewerCommit) {
  TempDir dir;
  const std::string path = dir.File("db");
  {
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    ASSERT_TRUE(db->Put("a", "1").ok());
    ASSERT_TRUE(db->Put("b", "2").ok());
  }
  uint64_t txnid[2];
  const std::string bytes = testing::ReadFile(path);
  for (int s = 0; s < 2; ++s) std::memcpy(&txnid[s], bytes.data() + s * 4096 + 16, 8);
  const uint32_t older = txnid[0] < txnid[1] ? 0 : 1, newest = 1 - older;
  FlipByte(path, uint64_t{older} * 4096 + 16 + 7);  // the top byte of the older txnid
  auto db = MustOpen(path);
  ASSERT_TRUE(db);
  std::string v;
  EXPECT_TRUE(db->Get("b", &v).ok());
  const std::string note = db->GetStats()->recovery_note;
  EXPECT_EQ(note.find("newer commit rejected"), std::string::npos) << note;
  EXPECT_NE(note.find("meta page " + std::to_string(older) + " is invalid"), std::string::npos)
      << note;
  EXPECT_NE(note.find("opened txn " + std::to_string(txnid[newest])), std::string::npos) << note;
}

// Without a clean close the other slot holds an older meta: a damaged newest meta falls back to
// it, and the commit log brings back the sync commits made since.
TEST(EngineTest, BadMetaAfterACrashIsRepairedFromTheLog) {
  for (bool log : {true, false}) {
    SCOPED_TRACE(log ? "with the commit log" : "without the commit log");
    TempDir dir;
    std::string path = dir.File("db");
    const Options o = PowerCutOptions(log);
    uint32_t slot;
    {
      auto db = MustOpen(path, o);
      ASSERT_TRUE(db->Put("a", "1").ok());
      ASSERT_TRUE(db->Put("b", "2").ok());
      slot = db->GetStats()->meta_slot;
      ASSERT_TRUE(db->SimulatePowerCut(2, 1.0).ok());
    }
    FlipByte(path, uint64_t{slot} * 4096 + 30);  // inside the newest meta
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    std::string v;
    EXPECT_TRUE(db->Get("a", &v).ok());
    // Without the log each sync commit flushed its own meta, so the fallback is the commit of
    // "a"; with it, the fallback is older and the log replays both.
    EXPECT_EQ(db->Get("b", &v).ok(), log);
    EXPECT_TRUE(db->Verify().ok) << db->Verify().ToString();
    ASSERT_TRUE(db->Put("c", "3").ok());
  }
}

// Writers sleeping until their group commits, and writers polling for it (group_commit_spin_us).
class GroupCommitTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(GroupCommitTest, CombinesConcurrentWriters) {
  TempDir dir;
  Options o;
  o.group_commit_spin_us = GetParam();
  auto db = MustOpen(dir.File("db"), o);
  const int threads = 16, per = 50;
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < per; ++i) {
        WriteBatch b;
        b.Put("t" + std::to_string(t) + "-" + std::to_string(i), std::to_string(i));
        if (!db->Write(b, WriteOptions{true}).ok()) ++failures;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto st = db->GetStats();
  EXPECT_EQ(st->trees[0].entries, static_cast<uint64_t>(threads * per));
  EXPECT_EQ(st->batches_written, static_cast<uint64_t>(threads * per));
  EXPECT_LE(st->flushes, st->batches_written);
  std::printf("group commit: %llu batches in %llu commits, %llu flushes\n",
              static_cast<unsigned long long>(st->batches_written),
              static_cast<unsigned long long>(st->commits),
              static_cast<unsigned long long>(st->flushes));
  EXPECT_TRUE(db->Verify().ok);
}

INSTANTIATE_TEST_SUITE_P(SleepOrSpin, GroupCommitTest, ::testing::Values(0u, 300u));

TEST(EngineTest, GroupCommitSpinOverASecondIsRefused) {
  TempDir dir;
  Options o;
  o.group_commit_spin_us = 1000001;
  auto db = Db::Open(dir.File("db"), o);
  ASSERT_FALSE(db.ok());
  EXPECT_TRUE(db.status().IsInvalidArgument()) << db.status().ToString();
  EXPECT_NE(db.status().message().find("group_commit_spin_us"), std::string::npos);
}

TEST(EngineTest, BackupWhileWriting) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"));
  WriteBatch b;
  for (int i = 0; i < 5000; ++i) b.Put(Key(i), "v1");
  ASSERT_TRUE(db->Write(b).ok());
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) (void)db->Put(Key(i % 5000), "v2");
  });
  ASSERT_TRUE(db->Backup(dir.File("backup")).ok());
  stop = true;
  writer.join();
  EXPECT_TRUE(db->Backup(dir.File("backup")).IsInvalidArgument());  // never overwrites
  auto copy = MustOpen(dir.File("backup"));
  auto st = copy->GetStats();
  EXPECT_EQ(st->trees[0].entries, 5000u);
  EXPECT_TRUE(copy->Verify().ok);
}

// Keys order as unsigned bytes, shorter first on a common prefix, whatever their length and
// wherever they differ (the comparison goes eight bytes at a time).
TEST(EngineTest, KeysOrderAsUnsignedBytes) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"), NosyncOptions());
  std::vector<std::string> keys = {
      "\x01", "\x7f", "\x80", "\xff", std::string("\xff\x00", 2), "a", std::string("a\x00", 2),
      "ab",   "b"};
  for (size_t len : {7, 8, 9, 15, 16, 17, 24, 33}) {
    for (size_t at : {size_t{0}, len / 2, len - 1}) {
      for (char c : {'\x00', '\x01', '\x7f', '\x80', '\xfe'}) {
        std::string k(len, 'm');
        k[at] = c;
        keys.push_back(k);
      }
    }
  }
  std::map<std::string, std::string> want;
  WriteBatch b;
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& k = keys[(i * 37) % keys.size()];  // not in order
    b.Put(k, "v" + std::to_string(i));
    want[k] = "v" + std::to_string(i);
  }
  ASSERT_TRUE(db->Write(b).ok());
  auto r = db->BeginRead();
  ASSERT_TRUE(r.ok());
  auto c = (*r)->NewCursor();
  ASSERT_TRUE(c.ok());
  auto it = want.begin();
  for (Status s = (*c)->First(); (*c)->Valid(); s = (*c)->Next(), ++it) {
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_NE(it, want.end());
    EXPECT_EQ((*c)->key(), it->first);
  }
  EXPECT_EQ(it, want.end());
  for (const auto& [k, v] : want) {
    std::string got;
    ASSERT_TRUE(db->Get(k, &got).ok()) << k.size();
    EXPECT_EQ(got, v);
    ASSERT_TRUE((*c)->Seek(k).ok());
    ASSERT_TRUE((*c)->Valid());
    EXPECT_EQ((*c)->key(), k);
  }
}

TEST(EngineTest, CursorDirectionsAndPrefix) {
  TempDir dir;
  auto db = MustOpen(dir.File("db"));
  WriteBatch b;
  for (int i = 0; i < 3000; ++i) b.Put(Key(i), std::to_string(i));
  ASSERT_TRUE(db->Write(b).ok());
  auto r = db->BeginRead();
  auto c = std::move((*r)->NewCursor()).value();
  int n = 0;
  for (Status s = c->First(); c->Valid(); s = c->Next()) {
    ASSERT_TRUE(s.ok());
    ASSERT_EQ(c->key(), Key(n));
    ++n;
  }
  EXPECT_EQ(n, 3000);
  n = 3000;
  for (Status s = c->Last(); c->Valid(); s = c->Prev()) ASSERT_EQ(c->key(), Key(--n));
  EXPECT_EQ(n, 0);
  ASSERT_TRUE(c->Seek("key00001500x").ok());
  EXPECT_EQ(c->key(), Key(1501));
  ASSERT_TRUE(c->SeekForPrev("key00001500x").ok());
  EXPECT_EQ(c->key(), Key(1500));
  ASSERT_TRUE(c->SeekForPrev("a").ok());
  EXPECT_FALSE(c->Valid());
  ASSERT_TRUE(c->Seek("zzz").ok());
  EXPECT_FALSE(c->Valid());
  n = 0;
  for (Status s = c->SeekPrefix("key0000012"); c->Valid(); s = c->Next()) ++n;
  EXPECT_EQ(n, 10);
}

}  // namespace
}  // namespace tessera::engine
