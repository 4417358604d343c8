// The commit log: sync commits made durable by the log alone survive power cuts, damaged or foreign
// logs are handled, and the data file's own recovery still works underneath. Randomized cases
// print their seed; replay with TESSERA_SEED=<seed>.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "seed.h"
#include "subprocess.h"
#include "tessera/engine/db.h"

namespace tessera::engine {
namespace {

using testing::TempDir;
using Model = std::map<std::string, std::map<std::string, std::string>>;  // tree -> key -> value

std::unique_ptr<Db> MustOpen(const std::string& path, Options o = {}) {
  auto db = Db::Open(path, o);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return db.ok() ? std::move(db).value() : nullptr;
}

// Everything in the database, tree by tree (empty trees are left out, as in the model).
Model Dump(Db& db) {
  Model out;
  auto r = std::move(db.BeginRead()).value();
  auto names = std::move(r->ListTrees()).value();
  names.insert(names.begin(), std::string());
  for (const auto& name : names) {
    auto c = std::move(r->NewCursor(name)).value();
    for (Status s = c->First(); c->Valid(); s = c->Next()) {
      out[name][std::string(c->key())] = std::string(c->value());
    }
  }
  return out;
}

Model NonEmpty(Model m) {
  std::erase_if(m, [](const auto& t) { return t.second.empty(); });
  return m;
}

// Random commits (puts, deletes, named trees, dropped trees; some sync, some not), then a power
// cut that keeps a random part of the unflushed page writes. After reopening, the database must
// equal the state after some commit no older than the last acknowledged sync commit.
TEST(CommitLogTest, PowerCutKeepsEverySyncCommit) {
  const uint64_t seed = testing::TestSeed("commit log test");
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 25; ++round) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " round " + std::to_string(round));
    TempDir dir;
    const std::string path = dir.File("db");
    Options o;
    o.simulate_power_cut = true;
    std::vector<Model> states{Model{}};  // states[i]: after the i-th commit of this session
    size_t last_sync = 0;
    uint64_t log_syncs = 0;
    {
      auto db = MustOpen(path, o);
      ASSERT_TRUE(db);
      Model m;
      const int commits = 5 + static_cast<int>(rng() % 40);
      for (int c = 0; c < commits; ++c) {
        auto w = std::move(db->BeginWrite()).value();
        const int ops = 1 + static_cast<int>(rng() % (rng() % 4 == 0 ? 400 : 8));
        for (int i = 0; i < ops; ++i) {
          std::string tree = rng() % 3 == 0 ? "t" + std::to_string(rng() % 3) : "";
          std::string key = "k" + std::to_string(rng() % 300);
          const uint64_t what = rng() % 20;
          if (what < 12) {
            std::string value(rng() % 3 == 0 ? 1 + rng() % 6000 : 1 + rng() % 50,
                              static_cast<char>('a' + rng() % 26));
            ASSERT_TRUE(w->Put(tree, key, value).ok());
            m[tree][key] = value;
          } else if (what < 18) {
            Status s = w->Delete(tree, key);
            ASSERT_TRUE(s.ok() || s.IsNotFound()) << s.ToString();
            if (s.ok()) m[tree].erase(key);
          } else if (what == 18 && !tree.empty()) {
            ASSERT_TRUE(w->CreateTree(tree).ok());
          } else if (!tree.empty()) {
            Status s = w->DropTree(tree);
            ASSERT_TRUE(s.ok() || s.IsNotFound()) << s.ToString();
            m.erase(tree);
          }
        }
        const bool sync = rng() % 3 != 0;
        ASSERT_TRUE(w->Commit(WriteOptions{sync}).ok());
        states.push_back(NonEmpty(m));
        if (sync) last_sync = states.size() - 1;
      }
      log_syncs = db->GetStats()->log_syncs;
      const double keep = static_cast<double>(rng() % 101) / 100.0;
      ASSERT_TRUE(db->SimulatePowerCut(rng(), keep).ok());
    }
    auto db = MustOpen(path);
    ASSERT_TRUE(db);
    Model got = NonEmpty(Dump(*db));
    bool matched = false;
    for (size_t i = last_sync; i < states.size() && !matched; ++i) matched = got == states[i];
    EXPECT_TRUE(matched) << "state after reopen matches no commit from " << last_sync << " to "
                         << states.size() - 1 << " (log syncs " << log_syncs
                         << ", note: " << db->GetStats()->recovery_note << ")";
    auto rep = db->Verify();
    EXPECT_TRUE(rep.ok) << rep.ToString();
  }
}

// Sync commits with nothing unflushed before them go to the log, not to the data file.
TEST(CommitLogTest, SyncCommitsUseTheLogAndOpenReplaysThem) {
  TempDir dir;
  const std::string path = dir.File("db");
  Options o;
  o.simulate_power_cut = true;
  {
    auto db = MustOpen(path, o);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(db->Put("k" + std::to_string(i), "v").ok());
    auto st = db->GetStats();
    EXPECT_EQ(st->log_syncs, 50u);
    EXPECT_EQ(st->flushes, 0u);
    // A nosync commit breaks the chain: the next sync commit flushes the file and the one after
    // it logs again.
    WriteBatch b;
    b.Put("nosync", "1");
    ASSERT_TRUE(db->Write(b, WriteOptions{false}).ok());
    ASSERT_TRUE(db->Put("after", "1").ok());
    EXPECT_EQ(db->GetStats()->flushes, 1u);
    ASSERT_TRUE(db->Put("logged again", "1").ok());
    EXPECT_EQ(db->GetStats()->log_syncs, 51u);
    ASSERT_TRUE(db->SimulatePowerCut(3, 0.0).ok());  // no unflushed page write survives
  }
  struct stat st;
  ASSERT_EQ(::stat((path + "-log").c_str(), &st), 0);
  auto db = MustOpen(path);
  std::string v;
  for (int i = 0; i < 50; ++i) EXPECT_TRUE(db->Get("k" + std::to_string(i), &v).ok()) << i;
  EXPECT_TRUE(db->Get("nosync", &v).ok());
  EXPECT_TRUE(db->Get("after", &v).ok());
  EXPECT_TRUE(db->Get("logged again", &v).ok());
  EXPECT_NE(db->GetStats()->recovery_note.find("replayed 1 commits"), std::string::npos)
      << db->GetStats()->recovery_note;
  EXPECT_TRUE(db->Verify().ok);
}

// Without the option every sync commit flushes the data file.
TEST(CommitLogTest, OptionOffFlushesEveryCommit) {
  TempDir dir;
  const std::string path = dir.File("db");
  Options o;
  o.commit_log = false;
  auto db = MustOpen(path, o);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(db->Put("k" + std::to_string(i), "v").ok());
  EXPECT_EQ(db->GetStats()->log_syncs, 0u);
  EXPECT_EQ(db->GetStats()->flushes, 10u);
  struct stat st;
  EXPECT_NE(::stat((path + "-log").c_str(), &st), 0);
}

// Crashes a database after `n` logged commits of distinct keys; returns the log's path.
std::string CrashWithLoggedCommits(const std::string& path, int n) {
  Options o;
  o.simulate_power_cut = true;
  auto db = MustOpen(path, o);
  for (int i = 0; i < n; ++i) EXPECT_TRUE(db->Put("k" + std::to_string(i), "v").ok());
  EXPECT_EQ(db->GetStats()->log_syncs, static_cast<uint64_t>(n));
  EXPECT_TRUE(db->SimulatePowerCut(4, 0.0).ok());
  return path + "-log";
}

std::string ReadFile(const std::string& path) {
  std::string s;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return s;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

void WriteFile(const std::string& path, const std::string& s) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_TRUE(f);
  ASSERT_EQ(std::fwrite(s.data(), 1, s.size(), f), s.size());
  std::fclose(f);
}

// Offsets of the records, found by their magic ("TSLG" little-endian) at 8-byte steps.
std::vector<size_t> RecordOffsets(const std::string& log) {
  std::vector<size_t> out;
  for (size_t o = 0; o + 4 <= log.size(); o += 8) {
    if (log.compare(o, 4, "TSLG") == 0) out.push_back(o);
  }
  return out;
}

// Flips one bit inside the payload of the record at `offset` of the log at `log_path`.
void FlipPayloadBit(const std::string& log_path, size_t offset) {
  std::string log = ReadFile(log_path);
  log[offset + 45] ^= 0x10;
  WriteFile(log_path, log);
}

TEST(CommitLogTest, TornLastRecordIsDropped) {
  TempDir dir;
  const std::string path = dir.File("db");
  const std::string log_path = CrashWithLoggedCommits(path, 10);
  auto recs = RecordOffsets(ReadFile(log_path));
  ASSERT_EQ(recs.size(), 10u);
  FlipPayloadBit(log_path, recs.back());
  auto db = MustOpen(path);
  std::string v;
  for (int i = 0; i < 9; ++i) EXPECT_TRUE(db->Get("k" + std::to_string(i), &v).ok()) << i;
  EXPECT_TRUE(db->Get("k9", &v).IsNotFound());
  EXPECT_NE(db->GetStats()->recovery_note.find("replayed 9 commits"), std::string::npos)
      << db->GetStats()->recovery_note;
}

TEST(CommitLogTest, DamageBeforeIntactRecordsIsCorruptionNamingTheOffset) {
  TempDir dir;
  const std::string path = dir.File("db");
  const std::string log_path = CrashWithLoggedCommits(path, 10);
  auto recs = RecordOffsets(ReadFile(log_path));
  ASSERT_EQ(recs.size(), 10u);
  FlipPayloadBit(log_path, recs[4]);
  auto db = Db::Open(path);
  ASSERT_FALSE(db.ok());
  EXPECT_TRUE(db.status().IsCorruption()) << db.status().ToString();
  EXPECT_NE(db.status().message().find("offset " + std::to_string(recs[4])), std::string::npos)
      << db.status().ToString();
  // Nothing was changed by the refused open: with the damage undone, every commit is back.
  FlipPayloadBit(log_path, recs[4]);
  auto again = MustOpen(path);
  std::string v;
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(again->Get("k" + std::to_string(i), &v).ok()) << i;
}

TEST(CommitLogTest, DamagedFirstRecordBeforeIntactOnesIsCorruption) {
  TempDir dir;
  const std::string path = dir.File("db");
  const std::string log_path = CrashWithLoggedCommits(path, 4);
  auto recs = RecordOffsets(ReadFile(log_path));
  ASSERT_EQ(recs.size(), 4u);
  FlipPayloadBit(log_path, recs[0]);
  auto db = Db::Open(path);
  ASSERT_FALSE(db.ok());
  EXPECT_TRUE(db.status().IsCorruption()) << db.status().ToString();
  EXPECT_NE(db.status().message().find("damaged at offset 0"), std::string::npos)
      << db.status().ToString();
}

TEST(CommitLogTest, LogOfAnotherDatabaseIsNotReplayed) {
  TempDir dir;
  const std::string a = dir.File("a"), b = dir.File("b");
  const std::string log_a = CrashWithLoggedCommits(a, 5);
  {
    auto db = MustOpen(b);
    ASSERT_TRUE(db->Put("own", "1").ok());
  }
  WriteFile(b + "-log", ReadFile(log_a));
  auto db = MustOpen(b);
  std::string v;
  EXPECT_TRUE(db->Get("own", &v).ok());
  EXPECT_TRUE(db->Get("k0", &v).IsNotFound());
  EXPECT_EQ(db->GetStats()->recovery_note, "");
}

TEST(CommitLogTest, ReadOnlyOpenSaysWhatItDoesNotShowThenReadWriteReplays) {
  TempDir dir;
  const std::string path = dir.File("db");
  CrashWithLoggedCommits(path, 7);
  {
    Options ro;
    ro.read_only = true;
    auto db = MustOpen(path, ro);
    std::string v;
    EXPECT_TRUE(db->Get("k0", &v).IsNotFound());
    EXPECT_NE(db->GetStats()->recovery_note.find("7 commits"), std::string::npos)
        << db->GetStats()->recovery_note;
  }
  auto db = MustOpen(path);
  std::string v;
  for (int i = 0; i < 7; ++i) EXPECT_TRUE(db->Get("k" + std::to_string(i), &v).ok()) << i;
}

// A file started again (or restored) at a path must not pick up the old log beside it.
TEST(CommitLogTest, NewFileAtTheSamePathRemovesTheOldLog) {
  TempDir dir;
  const std::string path = dir.File("db");
  const std::string log_path = CrashWithLoggedCommits(path, 3);
  ASSERT_EQ(::unlink(path.c_str()), 0);
  auto db = MustOpen(path);
  struct stat st;
  EXPECT_NE(::stat(log_path.c_str(), &st), 0);
  std::string v;
  EXPECT_TRUE(db->Get("k0", &v).IsNotFound());
}

// The log stays bounded: a checkpoint (a flush of the data file) restarts it from offset 0.
TEST(CommitLogTest, LogIsCheckpointedAndStaysBounded) {
  TempDir dir;
  const std::string path = dir.File("db");
  auto db = MustOpen(path);
  const std::string big(1 << 20, 'x');
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(db->Put("k" + std::to_string(i % 7), big).ok());
  auto st = db->GetStats();
  EXPECT_GT(st->log_syncs, 90u);
  EXPECT_GE(st->flushes, 1u);
  struct stat fs;
  ASSERT_EQ(::stat((path + "-log").c_str(), &fs), 0);
  EXPECT_LE(static_cast<uint64_t>(fs.st_size), uint64_t{72} << 20);
}

}  // namespace
}  // namespace tessera::engine
