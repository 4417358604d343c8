// WalStorage's durability: torn writes at any offset of the last batch lose exactly that batch,
// damage to a flushed batch is Corruption naming the offset, a snapshot file newer than the log
// (a crash between the two writes) is honoured, compaction shrinks the file, and a damaged
// snapshot file is Corruption. Randomized cases print their seed (TESSERA_RAFT_SEED replays one).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "cluster.h"
#include "subprocess.h"
#include "tessera/raft/raft.h"
#include "tessera/raft/storage.h"

namespace tessera::raft {
namespace {

using tessera::testing::TempDir;

std::vector<Entry> Ents(uint64_t from, uint64_t to, uint64_t term, size_t size = 40) {
  std::vector<Entry> out;
  for (uint64_t i = from; i <= to; ++i) {
    std::string v = "v" + std::to_string(i) + "t" + std::to_string(term);
    v.resize(std::max(v.size(), size), 'x');
    out.push_back(Entry{term, i, EntryType::kNormal, v});
  }
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// What a reader can see of a storage: enough to tell one batch from the next.
struct View {
  HardState hs;
  uint64_t first = 0, last = 0, last_term = 0;
  friend bool operator==(const View&, const View&) = default;
};
View See(Storage& s) {
  View v;
  v.hs = s.LoadInitialState()->hard_state;
  v.first = *s.FirstIndex();
  v.last = *s.LastIndex();
  v.last_term = *s.Term(v.last);
  return v;
}

TEST(WalStorageTest, TornLastBatchLosesOnlyThatBatch) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  std::mt19937_64 rng(seed);
  TempDir dir;
  const std::string path = dir.path() + "/raft", wal = path + "/wal";
  // Batches of entries and hard states, with conflicting suffixes from "new leaders".
  std::vector<View> views;     // views[k]: after batch k
  std::vector<uint64_t> ends;  // ends[k]: log bytes after batch k
  {
    auto s = WalStorage::Open(path, WalStorageOptions{4096});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    views.push_back(See(**s));
    ends.push_back((*s)->log_bytes());
    uint64_t last = 0, term = 1;
    for (int k = 0; k < 40; ++k) {
      uint64_t from = last + 1;
      if (last > 3 && rng() % 4 == 0) {
        from = last - rng() % 3;  // overwrite a suffix in a newer term
        ++term;
      }
      const uint64_t to = from + rng() % 5;
      HardState hs{term, rng() % 4, std::min<uint64_t>(from - 1, to)};
      ASSERT_TRUE((*s)->Save(&hs, Ents(from, to, term, 10 + rng() % 300), nullptr).ok());
      last = to;
      views.push_back(See(**s));
      ends.push_back((*s)->log_bytes());
    }
  }
  const std::string full = ReadAll(wal);
  ASSERT_GT(full.size(), ends.back());
  for (int round = 0; round < 60; ++round) {
    // The crash tore batch k+1: some of its bytes reached the disk, the rest did not (zeros), or
    // reached it damaged.
    const size_t k = rng() % (views.size() - 1);
    const uint64_t lo = ends[k], hi = ends[k + 1];
    // Before the commit record's checksum: the batch is incomplete.
    const uint64_t cut = lo + rng() % (hi - 8 - lo);
    std::string torn = full;
    std::fill(torn.begin() + static_cast<ptrdiff_t>(cut), torn.end(), '\0');
    if (rng() % 2 == 0 && cut > lo)
      torn[lo + rng() % (cut - lo)] ^= static_cast<char>(1 + rng() % 255);
    WriteAll(wal, torn);
    {
      auto s = WalStorage::Open(path, WalStorageOptions{4096});
      ASSERT_TRUE(s.ok()) << "batch " << k + 1 << " torn at " << cut << ": "
                          << s.status().ToString();
      ASSERT_EQ(See(**s), views[k]) << "batch " << k + 1 << " torn at " << cut;
      // New batches are written over the torn one; nothing of it may come back.
      HardState hs{99, 0, 0};
      ASSERT_TRUE((*s)->Save(&hs, Ents(views[k].last + 1, views[k].last + 1, 99), nullptr).ok());
    }
    auto s = WalStorage::Open(path, WalStorageOptions{4096});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ((*s)->LoadInitialState()->hard_state.term, 99u);
    EXPECT_EQ(*(*s)->LastIndex(), views[k].last + 1);
    EXPECT_EQ(*(*s)->Term(views[k].last + 1), 99u);
  }
}

TEST(WalStorageTest, DamageToAFlushedBatchIsCorruptionNamingTheOffset) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  std::mt19937_64 rng(seed);
  TempDir dir;
  const std::string path = dir.path() + "/raft", wal = path + "/wal";
  std::vector<uint64_t> ends;
  {
    auto s = WalStorage::Open(path);
    ASSERT_TRUE(s.ok());
    ends.push_back((*s)->log_bytes());
    for (uint64_t i = 1; i <= 20; ++i) {
      ASSERT_TRUE((*s)->Append(Ents(i, i, 1)).ok());
      ends.push_back((*s)->log_bytes());
    }
  }
  const std::string full = ReadAll(wal);
  for (int round = 0; round < 20; ++round) {
    // Any byte of batches 1..18 (two intact batches follow it).
    const size_t k = 1 + rng() % 18;
    const uint64_t at = ends[k - 1] + rng() % (ends[k] - ends[k - 1]);
    std::string bad = full;
    bad[at] ^= static_cast<char>(1 << (rng() % 8));
    WriteAll(wal, bad);
    auto s = WalStorage::Open(path);
    ASSERT_FALSE(s.ok()) << "flipped a bit at " << at << " in batch " << k;
    EXPECT_TRUE(s.status().IsCorruption()) << s.status().ToString();
    EXPECT_NE(s.status().message().find("offset " + std::to_string(ends[k - 1])), std::string::npos)
        << s.status().message();
  }
  WriteAll(wal, full);
  auto s = WalStorage::Open(path);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*(*s)->LastIndex(), 20u);
}

TEST(WalStorageTest, SnapshotFileNewerThanTheLogIsHonoured) {
  TempDir dir;
  const std::string path = dir.path() + "/raft", copy = dir.path() + "/copy";
  {
    auto s = WalStorage::Open(path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Append(Ents(1, 5, 1)).ok());
  }
  std::filesystem::copy(path, copy);
  {
    // A follower receives a snapshot that replaces its log (a different term at 8).
    auto s = WalStorage::Open(path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->ApplySnapshot(Snapshot{{8, 3, {1, 2, 3}}, "state at 8"}).ok());
  }
  // The crash came after the snapshot file was renamed into place but before its log record.
  std::filesystem::copy_file(path + "/snapshot", copy + "/snapshot");
  auto s = WalStorage::Open(copy);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*(*s)->FirstIndex(), 9u);
  EXPECT_EQ(*(*s)->LastIndex(), 8u);
  EXPECT_EQ(*(*s)->Term(8), 3u);
  EXPECT_EQ((*s)->GetSnapshot()->data, "state at 8");
  EXPECT_EQ((*s)->LoadInitialState()->voters, (std::vector<uint64_t>{1, 2, 3}));
  {
    // A node restarts over it, although the hard state's commit (0) is below the snapshot.
    Config c;
    c.id = 1;
    c.voters = {1, 2, 3};
    c.applied = 8;
    auto node = RawNode::Create(c, s->get());
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    EXPECT_EQ((*node)->commit_index(), 8u);
  }
  ASSERT_TRUE((*s)->Append(Ents(9, 10, 3)).ok());
  auto again = WalStorage::Open(copy);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*(*again)->LastIndex(), 10u);

  // A snapshot the application took of entries the log holds keeps them.
  {
    auto w = WalStorage::Open(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append(Ents(9, 12, 3)).ok());
    ASSERT_TRUE((*w)->CreateSnapshot(Snapshot{{11, 3, {1, 2, 3}}, "state at 11"}).ok());
  }
  auto w = WalStorage::Open(path);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(*(*w)->LastIndex(), 12u);
  EXPECT_EQ(*(*w)->Term(12), 3u);
  EXPECT_EQ((*w)->GetSnapshot()->meta.index, 11u);
}

TEST(WalStorageTest, CompactionShrinksTheFileAndSurvivesReopen) {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  uint64_t before = 0;
  {
    auto s = WalStorage::Open(path);
    ASSERT_TRUE(s.ok());
    for (uint64_t i = 1; i <= 1000; i += 10) ASSERT_TRUE((*s)->Append(Ents(i, i + 9, 2)).ok());
    ASSERT_TRUE((*s)->SetHardState(HardState{2, 1, 1000}).ok());
    before = (*s)->log_bytes();
    ASSERT_TRUE((*s)->CreateSnapshot(Snapshot{{950, 2, {1}}, "s950"}).ok());
    ASSERT_TRUE((*s)->Compact(900).ok());
    EXPECT_LT((*s)->log_bytes() * 5, before) << "100 of 1000 entries left";
    ASSERT_TRUE((*s)->Append(Ents(1001, 1001, 2)).ok());
  }
  auto s = WalStorage::Open(path);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*(*s)->FirstIndex(), 901u);
  EXPECT_EQ(*(*s)->LastIndex(), 1001u);
  EXPECT_EQ(*(*s)->Term(900), 2u);
  EXPECT_EQ((*s)->LoadInitialState()->hard_state, (HardState{2, 1, 1000}));
  EXPECT_EQ((*s)->Entries(901, 902, 1 << 20)->front(), Ents(901, 901, 2)[0]);
  EXPECT_EQ((*s)->GetSnapshot()->data, "s950");
  EXPECT_TRUE((*s)->Compact(990).IsInvalidArgument()) << "past the snapshot";
}

TEST(WalStorageTest, DamagedOrMissingFilesAreCorruption) {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    auto s = WalStorage::Open(path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Append(Ents(1, 5, 1)).ok());
    ASSERT_TRUE((*s)->CreateSnapshot(Snapshot{{4, 1, {1}}, "s4"}).ok());
    ASSERT_TRUE((*s)->Compact(4).ok());
  }
  const std::string snap = ReadAll(path + "/snapshot");
  std::string bad = snap;
  bad[bad.size() / 2] ^= 4;
  WriteAll(path + "/snapshot", bad);
  auto s = WalStorage::Open(path);
  ASSERT_TRUE(s.status().IsCorruption()) << s.status().ToString();
  EXPECT_NE(s.status().message().find("snapshot"), std::string::npos) << s.status().message();

  WriteAll(path + "/snapshot", snap.substr(0, 20));
  EXPECT_TRUE(WalStorage::Open(path).status().IsCorruption());

  std::filesystem::remove(path + "/snapshot");
  s = WalStorage::Open(path);
  ASSERT_TRUE(s.status().IsCorruption()) << "the log was compacted to 4; its snapshot is gone";
  EXPECT_NE(s.status().message().find("compaction point 4"), std::string::npos)
      << s.status().message();

  WriteAll(path + "/snapshot", snap);
  const std::string wal = ReadAll(path + "/wal");
  WriteAll(path + "/wal", std::string(wal.size(), '\0'));
  s = WalStorage::Open(path);
  ASSERT_TRUE(s.status().IsCorruption()) << s.status().ToString();
  std::filesystem::remove(path + "/wal");
  s = WalStorage::Open(path);
  ASSERT_TRUE(s.status().IsCorruption()) << s.status().ToString();
  WriteAll(path + "/wal", wal);
  s = WalStorage::Open(path);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*(*s)->LastIndex(), 5u);
}

}  // namespace
}  // namespace tessera::raft
