// Storage semantics shared by MemoryStorage, LmdbStorage and WalStorage, and LmdbStorage's
// durability and corruption handling (WalStorage's: wal_storage_test.cc).
#include <gtest/gtest.h>
#include <lmdb.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "subprocess.h"
#include "tessera/raft/storage.h"

namespace tessera::raft {
namespace {

using tessera::testing::TempDir;

std::vector<Entry> Ents(uint64_t from, uint64_t to, uint64_t term) {
  std::vector<Entry> out;
  for (uint64_t i = from; i <= to; ++i) {
    out.push_back(
        Entry{term, i, EntryType::kNormal, "v" + std::to_string(i) + "t" + std::to_string(term)});
  }
  return out;
}

enum class Impl { kMemory, kLmdb, kWal };

class StorageTest : public ::testing::TestWithParam<Impl> {
 protected:
  void SetUp() override {
    if (GetParam() == Impl::kLmdb) {
      auto s = LmdbStorage::Open(dir_.path() + "/raft");
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      storage_ = std::move(*s);
    } else if (GetParam() == Impl::kWal) {
      auto s = WalStorage::Open(dir_.path() + "/raft");
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      storage_ = std::move(*s);
    } else {
      storage_ = std::make_unique<MemoryStorage>();
    }
  }
  uint64_t First() { return *storage_->FirstIndex(); }
  uint64_t Last() { return *storage_->LastIndex(); }

  TempDir dir_;
  std::unique_ptr<Storage> storage_;
};

TEST_P(StorageTest, FreshLogIsEmpty) {
  EXPECT_EQ(First(), 1u);
  EXPECT_EQ(Last(), 0u);
  EXPECT_EQ(*storage_->Term(0), 0u);
  EXPECT_TRUE(storage_->Term(1).status().IsUnavailable());
  auto st = storage_->LoadInitialState();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->hard_state, HardState{});
  EXPECT_TRUE(st->voters.empty());
  EXPECT_TRUE(storage_->GetSnapshot()->empty());
}

TEST_P(StorageTest, AppendAndRead) {
  ASSERT_TRUE(storage_->Append(Ents(1, 5, 1)).ok());
  EXPECT_EQ(First(), 1u);
  EXPECT_EQ(Last(), 5u);
  EXPECT_EQ(*storage_->Term(5), 1u);
  auto e = storage_->Entries(2, 5, 1 << 20);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(*e, std::vector<Entry>(Ents(2, 4, 1)));
  // The byte limit still returns one entry.
  EXPECT_EQ(storage_->Entries(2, 5, 0)->size(), 1u);
  EXPECT_TRUE(storage_->Entries(2, 7, 1 << 20).status().IsUnavailable());
}

TEST_P(StorageTest, AppendTruncatesConflictingSuffix) {
  ASSERT_TRUE(storage_->Append(Ents(1, 5, 1)).ok());
  ASSERT_TRUE(storage_->Append(Ents(3, 4, 2)).ok());
  EXPECT_EQ(Last(), 4u);  // entry 5 of term 1 is gone with the suffix
  EXPECT_EQ(*storage_->Term(2), 1u);
  EXPECT_EQ(*storage_->Term(3), 2u);
  auto e = storage_->Entries(1, 5, 1 << 20);
  ASSERT_TRUE(e.ok());
  std::vector<Entry> want = Ents(1, 2, 1);
  for (auto& x : Ents(3, 4, 2)) want.push_back(x);
  EXPECT_EQ(*e, want);
  // A gap is refused and changes nothing.
  EXPECT_TRUE(storage_->Append(Ents(6, 6, 2)).IsInvalidArgument());
  EXPECT_EQ(Last(), 4u);
}

TEST_P(StorageTest, HardStateRoundTrip) {
  ASSERT_TRUE(storage_->SetHardState(HardState{7, 3, 0}).ok());
  EXPECT_EQ(storage_->LoadInitialState()->hard_state, (HardState{7, 3, 0}));
}

TEST_P(StorageTest, SnapshotThenCompact) {
  ASSERT_TRUE(storage_->Append(Ents(1, 10, 2)).ok());
  Snapshot snap{{6, 2, {1, 2, 3}}, "state@6"};
  EXPECT_TRUE(storage_->Compact(4).IsInvalidArgument());  // no snapshot covers 1..4 yet
  EXPECT_TRUE(storage_->CreateSnapshot(Snapshot{{6, 1, {1, 2, 3}}, "x"}).IsInvalidArgument());
  ASSERT_TRUE(storage_->CreateSnapshot(snap).ok());
  EXPECT_EQ(*storage_->GetSnapshot(), snap);
  EXPECT_TRUE(storage_->Compact(7).IsInvalidArgument());  // past the snapshot
  ASSERT_TRUE(storage_->Compact(6).ok());
  EXPECT_EQ(First(), 7u);
  EXPECT_EQ(Last(), 10u);
  EXPECT_EQ(*storage_->Term(6), 2u);  // the compaction point still answers
  EXPECT_TRUE(storage_->Term(5).status().IsNotFound());
  EXPECT_TRUE(storage_->Entries(6, 8, 1 << 20).status().IsNotFound());
  EXPECT_EQ(storage_->Entries(7, 11, 1 << 20)->size(), 4u);
  EXPECT_TRUE(storage_->Compact(3).ok());  // already compacted: nothing to do
  EXPECT_EQ(storage_->LoadInitialState()->voters, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(storage_->CreateSnapshot(snap).IsInvalidArgument());  // not newer
}

TEST_P(StorageTest, ApplySnapshotReplacesLog) {
  ASSERT_TRUE(storage_->Append(Ents(1, 5, 1)).ok());
  Snapshot snap{{20, 4, {1, 2, 3}}, "state@20"};
  HardState hs{4, 0, 20};
  ASSERT_TRUE(storage_->Save(&hs, Ents(21, 22, 4), &snap).ok());
  EXPECT_EQ(First(), 21u);
  EXPECT_EQ(Last(), 22u);
  EXPECT_EQ(*storage_->Term(20), 4u);
  EXPECT_EQ(*storage_->GetSnapshot(), snap);
  EXPECT_EQ(storage_->LoadInitialState()->hard_state, hs);
  // Appending entries the snapshot covers skips them.
  ASSERT_TRUE(storage_->Append(Ents(19, 23, 4)).ok());
  EXPECT_EQ(First(), 21u);
  EXPECT_EQ(Last(), 23u);
  EXPECT_TRUE(storage_->ApplySnapshot(Snapshot{{15, 3, {1, 2, 3}}, ""}).IsInvalidArgument());
}

INSTANTIATE_TEST_SUITE_P(Impl, StorageTest,
                         ::testing::Values(Impl::kMemory, Impl::kLmdb, Impl::kWal),
                         [](const ::testing::TestParamInfo<Impl>& p) {
                           return p.param == Impl::kLmdb  ? "Lmdb"
                                  : p.param == Impl::kWal ? "Wal"
                                                          : "Memory";
                         });

template <class S>
void ReopenKeepsEverything() {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  Snapshot snap{{3, 1, {1, 2, 3}}, "image"};
  {
    auto s = S::Open(path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Append(Ents(1, 8, 1)).ok());
    ASSERT_TRUE((*s)->Append(Ents(7, 9, 2)).ok());
    ASSERT_TRUE((*s)->SetHardState(HardState{2, 1, 6}).ok());
    ASSERT_TRUE((*s)->CreateSnapshot(snap).ok());
    ASSERT_TRUE((*s)->Compact(3).ok());
  }
  auto s = S::Open(path);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->LoadInitialState()->hard_state, (HardState{2, 1, 6}));
  EXPECT_EQ((*s)->LoadInitialState()->voters, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(*(*s)->FirstIndex(), 4u);
  EXPECT_EQ(*(*s)->LastIndex(), 9u);
  EXPECT_EQ(*(*s)->Term(3), 1u);
  EXPECT_EQ(*(*s)->Term(6), 1u);
  EXPECT_EQ(*(*s)->Term(7), 2u);
  EXPECT_EQ(*(*s)->GetSnapshot(), snap);
  EXPECT_EQ((*s)->Entries(7, 10, 1 << 20)->front(), Ents(7, 7, 2)[0]);
}

TEST(LmdbStorageTest, ReopenKeepsEverything) { ReopenKeepsEverything<LmdbStorage>(); }
TEST(WalStorageTest, ReopenKeepsEverything) { ReopenKeepsEverything<WalStorage>(); }

// Rewrites one value in the closed environment, as damage on disk would.
void Damage(const std::string& path, const char* db, const std::string& key,
            const std::function<std::string(std::string)>& change) {
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  ASSERT_EQ(mdb_env_set_maxdbs(env, 2), 0);
  ASSERT_EQ(mdb_env_open(env, path.c_str(), 0, 0644), 0);
  MDB_txn* txn = nullptr;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi dbi;
  ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
  ASSERT_EQ(mdb_get(txn, dbi, &k, &v), 0);
  std::string value = change(std::string(static_cast<char*>(v.mv_data), v.mv_size));
  v = MDB_val{value.size(), value.data()};
  ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

std::string LogKey(uint64_t index) {
  std::string k(8, '\0');
  for (int i = 0; i < 8; ++i) k[7 - i] = static_cast<char>((index >> (8 * i)) & 0xff);
  return k;
}

TEST(LmdbStorageTest, TruncatedLogRecordIsCorruption) {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    auto s = LmdbStorage::Open(path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Append(Ents(1, 5, 1)).ok());
  }
  Damage(path, "log", LogKey(3), [](std::string v) { return v.substr(0, 5); });
  auto s = LmdbStorage::Open(path);
  ASSERT_TRUE(s.ok());
  auto t = (*s)->Term(3);
  ASSERT_TRUE(t.status().IsCorruption()) << t.status().ToString();
  EXPECT_NE(t.status().message().find("log/3"), std::string::npos) << t.status().message();
  auto e = (*s)->Entries(1, 6, 1 << 20);
  ASSERT_TRUE(e.status().IsCorruption());
  EXPECT_NE(e.status().message().find("log/3"), std::string::npos);
  EXPECT_EQ(*(*s)->Term(2), 1u);  // the rest is still readable
}

TEST(LmdbStorageTest, FlippedBitInHardStateIsCorruption) {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    auto s = LmdbStorage::Open(path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->SetHardState(HardState{5, 2, 0}).ok());
  }
  Damage(path, "meta", "hardstate", [](std::string v) {
    v[0] ^= 1;
    return v;
  });
  auto s = LmdbStorage::Open(path);
  ASSERT_TRUE(s.ok());
  auto st = (*s)->LoadInitialState();
  ASSERT_TRUE(st.status().IsCorruption()) << st.status().ToString();
  EXPECT_NE(st.status().message().find("meta/hardstate"), std::string::npos);
}

}  // namespace
}  // namespace tessera::raft
