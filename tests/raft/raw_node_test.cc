// RawNode on its own: configuration checks, the single-member fast path, message validation, and
// the rule that a storage failure stops the node.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "tessera/raft/raft.h"
#include "tessera/raft/storage.h"

namespace tessera::raft {
namespace {

Config OneNode() {
  Config c;
  c.id = 1;
  c.voters = {1};
  c.seed = 7;
  return c;
}

// Runs the Ready loop once: persist, then Advance. Returns the Ready for inspection.
Ready Drain(RawNode& node, Storage& storage) {
  Ready rd = node.GetReady();
  EXPECT_TRUE(storage
                  .Save(rd.hard_state ? &*rd.hard_state : nullptr, rd.entries,
                        rd.snapshot.empty() ? nullptr : &rd.snapshot)
                  .ok());
  EXPECT_TRUE(node.Advance(rd).ok());
  return rd;
}

TEST(RawNodeTest, RejectsBadConfig) {
  MemoryStorage s;
  Config c = OneNode();
  c.voters = {2, 3};  // without our id
  EXPECT_TRUE(RawNode::Create(c, &s).status().IsInvalidArgument());
  c = OneNode();
  c.voters = {1, 1, 2};
  EXPECT_TRUE(RawNode::Create(c, &s).status().IsInvalidArgument());
  c = OneNode();
  c.heartbeat_tick = c.election_tick;
  EXPECT_TRUE(RawNode::Create(c, &s).status().IsInvalidArgument());
  c = OneNode();
  c.id = 0;
  EXPECT_TRUE(RawNode::Create(c, &s).status().IsInvalidArgument());
  EXPECT_TRUE(RawNode::Create(OneNode(), nullptr).status().IsInvalidArgument());
}

TEST(RawNodeTest, SingleMemberCommitsAlone) {
  MemoryStorage s;
  auto node = RawNode::Create(OneNode(), &s);
  ASSERT_TRUE(node.ok());
  RawNode& n = **node;
  EXPECT_TRUE(n.Propose("x").status().IsUnavailable());  // not leader yet
  ASSERT_TRUE(n.Campaign().ok());
  EXPECT_EQ(n.role(), Role::kLeader);
  Ready rd = Drain(n, s);
  ASSERT_TRUE(rd.soft_state.has_value());
  EXPECT_EQ(rd.soft_state->role, Role::kLeader);
  ASSERT_EQ(rd.committed_entries.size(), 1u);  // the no-op
  EXPECT_EQ(rd.committed_entries[0].type, EntryType::kNoop);
  auto p = n.Propose("x");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->index, 2u);
  ASSERT_TRUE(n.ReadIndex("r").ok());
  rd = Drain(n, s);
  ASSERT_EQ(rd.committed_entries.size(), 1u);
  EXPECT_EQ(rd.committed_entries[0].data, "x");
  ASSERT_EQ(rd.read_states.size(), 1u);
  EXPECT_EQ(rd.read_states[0].index, 2u);
  EXPECT_TRUE(rd.messages.empty());
  EXPECT_FALSE(n.HasReady());
  // A restart over the same storage finds the term, vote and log.
  auto again = RawNode::Create(OneNode(), &s);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->term(), n.term());
  EXPECT_EQ((*again)->last_index(), 2u);
  EXPECT_EQ((*again)->commit_index(), 2u);
}

// The commit index on disk may lag: the driver does not flush a Ready that only moves it, and a
// crash between a received snapshot's file and its log record leaves it below the snapshot. A
// restart must still work, and hand out only what was not applied yet.
TEST(RawNodeTest, RestartsWhenTheCommitOnDiskLagsTheSnapshotOrTheApplied) {
  auto log = [](MemoryStorage* s) {
    std::vector<Entry> ents;
    for (uint64_t i = 1; i <= 10; ++i) ents.push_back(Entry{1, i, EntryType::kNormal, "e"});
    ASSERT_TRUE(s->Append(ents).ok());
    ASSERT_TRUE(s->SetHardState(HardState{1, 1, 3}).ok());
  };
  // Committed entries handed out after a campaign, until the new leader's no-op.
  auto committed_after_campaign = [](RawNode& n, Storage& s) {
    std::vector<uint64_t> out;
    EXPECT_TRUE(n.Campaign().ok());
    while (n.HasReady()) {
      for (const auto& e : Drain(n, s).committed_entries) out.push_back(e.index);
    }
    return out;
  };
  {
    MemoryStorage s;  // snapshot at 8, compacted to 8, disk commit 3
    log(&s);
    ASSERT_TRUE(s.CreateSnapshot(Snapshot{{8, 1, {1}}, "s8"}).ok());
    ASSERT_TRUE(s.Compact(8).ok());
    Config c = OneNode();
    c.applied = 8;
    auto n = RawNode::Create(c, &s);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_EQ((*n)->commit_index(), 8u);
    EXPECT_EQ(committed_after_campaign(**n, s), (std::vector<uint64_t>{9, 10, 11}));
  }
  {
    MemoryStorage s;  // applied 9, disk commit 3, no snapshot
    log(&s);
    Config c = OneNode();
    c.applied = 9;
    auto n = RawNode::Create(c, &s);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_EQ((*n)->commit_index(), 9u);
    EXPECT_EQ(committed_after_campaign(**n, s), (std::vector<uint64_t>{10, 11}));
  }
  {
    MemoryStorage s;  // applied past the end of the log: a wrong configuration
    log(&s);
    Config c = OneNode();
    c.applied = 11;
    EXPECT_TRUE(RawNode::Create(c, &s).status().IsInvalidArgument());
  }
}

TEST(RawNodeTest, StepValidatesMessages) {
  MemoryStorage s;
  Config c = OneNode();
  c.voters = {1, 2, 3};
  auto node = RawNode::Create(c, &s);
  ASSERT_TRUE(node.ok());
  Message m;
  m.type = MessageType::kHeartbeat;
  m.from = 2;
  m.to = 3;  // not us
  m.term = 1;
  EXPECT_TRUE((*node)->Step(m).IsInvalidArgument());
  m.to = 1;
  m.from = 9;  // not a member
  EXPECT_TRUE((*node)->Step(m).IsInvalidArgument());
  m.from = 2;
  m.term = 0;
  EXPECT_TRUE((*node)->Step(m).IsInvalidArgument());
  m.term = 1;
  EXPECT_TRUE((*node)->Step(m).ok());
  EXPECT_EQ((*node)->leader(), 2u);
  EXPECT_EQ((*node)->term(), 1u);
}

TEST(RawNodeTest, ElectionTimeoutIsRandomInRange) {
  // With three members nobody answers, so each timeout starts a new pre-vote round: the ticks
  // between rounds are the randomized timeouts, all in [T, 2T).
  MemoryStorage s;
  Config c = OneNode();
  c.voters = {1, 2, 3};
  c.pre_vote = false;
  c.election_tick = 10;
  uint64_t draws = 0;
  c.random = [&draws] { return draws++ * 7; };
  auto node = RawNode::Create(c, &s);
  ASSERT_TRUE(node.ok());
  RawNode& n = **node;
  uint64_t last_term = n.term();
  int since = 0;
  std::vector<int> gaps;
  for (int t = 0; t < 400 && gaps.size() < 10; ++t) {
    ASSERT_TRUE(n.Tick().ok());
    ++since;
    if (n.term() != last_term) {
      gaps.push_back(since);
      since = 0;
      last_term = n.term();
    }
    Drain(n, s);
  }
  ASSERT_EQ(gaps.size(), 10u);
  for (int g : gaps) {
    EXPECT_GE(g, 10);
    EXPECT_LT(g, 20);
  }
  EXPECT_NE(*std::min_element(gaps.begin(), gaps.end()),
            *std::max_element(gaps.begin(), gaps.end()))
      << "timeouts are not randomized";
}

// Fails every read once `fail` is set.
class FailingStorage : public Storage {
 public:
  bool fail = false;
  Result<InitialState> LoadInitialState() override { return inner.LoadInitialState(); }
  Result<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) override {
    if (fail) return Status::IoError("injected");
    return inner.Entries(lo, hi, max_bytes);
  }
  Result<uint64_t> Term(uint64_t index) override {
    if (fail) return Status::IoError("injected");
    return inner.Term(index);
  }
  Result<uint64_t> FirstIndex() override {
    if (fail) return Status::IoError("injected");
    return inner.FirstIndex();
  }
  Result<uint64_t> LastIndex() override {
    if (fail) return Status::IoError("injected");
    return inner.LastIndex();
  }
  Result<Snapshot> GetSnapshot() override { return inner.GetSnapshot(); }
  Status Save(const HardState* hs, const std::vector<Entry>& e, const Snapshot* s) override {
    return inner.Save(hs, e, s);
  }
  Status CreateSnapshot(const Snapshot& s) override { return inner.CreateSnapshot(s); }
  Status Compact(uint64_t index) override { return inner.Compact(index); }
  MemoryStorage inner;
};

TEST(RawNodeTest, StorageFailureStopsTheNode) {
  FailingStorage s;
  auto node = RawNode::Create(OneNode(), &s);
  ASSERT_TRUE(node.ok());
  RawNode& n = **node;
  ASSERT_TRUE(n.Campaign().ok());
  Drain(n, s);
  s.fail = true;
  Status st = n.Propose("x").status();
  EXPECT_TRUE(st.IsIoError()) << st.ToString();
  // Sticky: every later call reports it, and nothing more comes out.
  EXPECT_TRUE(n.Tick().IsIoError());
  EXPECT_TRUE(n.Campaign().IsIoError());
  EXPECT_FALSE(n.HasReady());
  s.fail = false;
  EXPECT_TRUE(n.Tick().IsIoError()) << "the node must be rebuilt from storage";
}

}  // namespace
}  // namespace tessera::raft
