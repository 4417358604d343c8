// Raft in an in-process cluster, after the MIT 6.5840 Raft lab tests (2A elections, 2B agreement,
// 2C persistence, 2D snapshots), plus pre-vote / check-quorum and ReadIndex. Every test runs
// under the cluster's checker (election safety, state machine safety); randomized tests print
// their seed and replay with TESSERA_RAFT_SEED=<seed>.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "cluster.h"

namespace tessera::raft::testing {
namespace {

constexpr int kElection = 10;  // ClusterOptions::election_tick

std::string RandomCmd(Cluster& c) { return "c" + std::to_string(c.rng()() % 1000000000); }

bool HasRead(Cluster& c, uint64_t id, const std::string& ctx, uint64_t* index = nullptr) {
  for (const ReadState& r : c.reads(id)) {
    if (r.context == ctx) {
      if (index != nullptr) *index = r.index;
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------- elections (2A)

TEST(RaftElection, InitialElection) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(3, seed);
  c.CheckOneLeader();
  const uint64_t term1 = c.CheckTerms();
  EXPECT_GE(term1, 1u);
  // Without failures nobody starts another election.
  c.Tick(5 * kElection);
  EXPECT_EQ(c.CheckTerms(), term1) << "term changed even though there were no failures";
  c.CheckOneLeader();
}

TEST(RaftElection, ReElectionAfterLeaderFailure) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(3, seed);
  const uint64_t leader1 = c.CheckOneLeader();
  c.Disconnect(leader1);
  c.CheckOneLeader();
  // The old leader rejoining does not disturb the new one.
  c.Connect(leader1);
  const uint64_t leader2 = c.CheckOneLeader();
  // Without a quorum no leader is elected.
  c.Disconnect(leader2);
  c.Disconnect(c.Nth(leader2));  // Nth is 0-based: the node after leader2
  c.Tick(3 * kElection);
  c.CheckNoLeader();
  // A quorum arises again.
  c.Connect(c.Nth(leader2));
  c.CheckOneLeader();
  c.Connect(leader2);
  c.CheckOneLeader();
}

TEST(RaftElection, NoLeaderWithoutQuorum) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(5, seed);
  const uint64_t leader = c.CheckOneLeader();
  std::vector<uint64_t> cut{leader, c.Nth(leader), c.Nth(leader + 1)};
  for (uint64_t id : cut) c.Disconnect(id);
  // Check-quorum: the cut-off leader steps down within about an election timeout.
  c.Tick(2 * kElection + 1);
  EXPECT_NE(c.node(leader)->role(), Role::kLeader) << "leader without a quorum did not step down";
  for (int i = 0; i < 20; ++i) {
    c.Tick(kElection);
    c.CheckNoLeader();  // the remaining two are no quorum of five
  }
  c.Connect(cut[1]);
  c.CheckOneLeader();
}

TEST(RaftElection, ManyElections) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(5, seed);
  c.CheckOneLeader();
  for (int iter = 0; iter < 30; ++iter) {
    // Cut two random nodes: the other three are a quorum and must agree on one leader.
    const uint64_t a = c.Nth(c.rng()() % 5);
    const uint64_t b = c.Nth(c.rng()() % 5);
    c.Disconnect(a);
    c.Disconnect(b);
    c.CheckOneLeader();
    c.Connect(a);
    c.Connect(b);
  }
  c.CheckOneLeader();
}

// ---------------------------------------------------------------- agreement (2B)

TEST(RaftAgreement, BasicAgreement) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(3, seed);
  c.CheckOneLeader();
  uint64_t prev = 0;
  for (int i = 1; i <= 3; ++i) {
    const uint64_t next = c.node(c.CheckOneLeader())->last_index() + 1;
    EXPECT_EQ(c.NCommitted(next), 0u) << "some have committed before Propose";
    const uint64_t index = c.One("cmd" + std::to_string(i * 100), 3, false);
    EXPECT_EQ(index, next);
    EXPECT_GT(index, prev);
    prev = index;
  }
}

TEST(RaftAgreement, AgreementDespiteFollowerFailure) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(3, seed);
  c.One("101", 3, false);
  const uint64_t leader = c.CheckOneLeader();
  c.Disconnect(c.Nth(leader));  // one follower
  c.One("102", 2, false);
  c.One("103", 2, false);
  c.Tick(kElection);
  c.One("104", 2, false);
  c.One("105", 2, false);
  c.Connect(c.Nth(leader));
  c.One("106", 3, true);
  c.Tick(kElection);
  c.One("107", 3, true);
}

TEST(RaftAgreement, NoAgreementWithoutQuorum) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(5, seed);
  c.One("10", 5, false);
  const uint64_t leader = c.CheckOneLeader();
  for (uint64_t k = 0; k < 3; ++k) c.Disconnect(c.Nth(leader + k));  // three followers
  auto r = c.Propose(leader, "20");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  c.Tick(4 * kElection);
  EXPECT_EQ(c.NCommitted(r->index), 0u) << "committed without a majority";
  for (uint64_t k = 0; k < 3; ++k) c.Connect(c.Nth(leader + k));
  c.One("30", 5, true);
  c.One("1000", 5, true);
}

TEST(RaftAgreement, PartitionedLeaderRejoins) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(3, seed);
  c.One("101", 3, true);
  const uint64_t leader1 = c.CheckOneLeader();
  c.Disconnect(leader1);
  // The cut-off leader accepts entries that can never commit.
  for (const char* stale : {"stale102", "stale103", "stale104"}) {
    EXPECT_TRUE(c.Propose(leader1, stale).ok());
  }
  c.One("103", 2, true);
  const uint64_t leader2 = c.CheckOneLeader();
  c.Disconnect(leader2);
  c.Connect(leader1);  // its stale entries must be overwritten by leader2's
  c.One("104", 2, true);
  c.Connect(leader2);
  c.One("105", 3, true);
  for (const auto& [index, e] : c.committed()) {
    EXPECT_EQ(e.data.rfind("stale", 0), std::string::npos) << "stale entry committed at " << index;
  }
}

TEST(RaftAgreement, FastBackupOfDivergentLogs) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(5, seed);
  c.One(RandomCmd(c), 5, true);
  // Leader1 and one follower keep 50 entries that never commit.
  const uint64_t leader1 = c.CheckOneLeader();
  const uint64_t l1 = leader1 - 1;  // 0-based
  for (uint64_t k = 2; k <= 4; ++k) c.Disconnect(c.Nth(l1 + k));
  for (int i = 0; i < 50; ++i) (void)c.Propose(leader1, RandomCmd(c));
  c.Tick(kElection / 2);
  c.Disconnect(leader1);
  c.Disconnect(c.Nth(l1 + 1));
  // The other three commit 50 entries of their own.
  for (uint64_t k = 2; k <= 4; ++k) c.Connect(c.Nth(l1 + k));
  for (int i = 0; i < 50; ++i) c.One(RandomCmd(c), 3, true);
  // Now their leader and one follower take 50 more that never commit.
  const uint64_t leader2 = c.CheckOneLeader();
  uint64_t other = c.Nth(l1 + 2);
  if (other == leader2) other = c.Nth(l1 + 3);
  c.Disconnect(other);
  for (int i = 0; i < 50; ++i) (void)c.Propose(leader2, RandomCmd(c));
  c.Tick(kElection / 2);
  // Leader1's group comes back with `other`: 50 divergent entries each must be replaced.
  for (uint64_t id : c.ids()) c.Disconnect(id);
  c.Connect(leader1);
  c.Connect(c.Nth(l1 + 1));
  c.Connect(other);
  c.ResetCounters();
  for (int i = 0; i < 50; ++i) c.One(RandomCmd(c), 3, true);
  for (uint64_t id : {leader1, c.Nth(l1 + 1), other}) {
    EXPECT_LT(c.DeliveredRejections(id), 10u) << "node " << id << " needed many round trips";
  }
  // Everyone: leader2's 50 uncommitted entries are replaced the same way.
  c.ResetCounters();
  for (uint64_t id : c.ids()) c.Connect(id);
  c.One(RandomCmd(c), 5, true);
  for (uint64_t id : c.ids()) {
    EXPECT_LT(c.DeliveredRejections(id), 10u) << "node " << id << " needed many round trips";
  }
}

// The paper's Figure 8, scripted: an entry of an older term that reaches a majority must not be
// committed by counting replicas, because a node holding a later term's entry at that index can
// still win an election and overwrite it. No ticks here: elections happen only by Campaign.
TEST(RaftAgreement, Figure8ScriptedOlderTermEntryNotCommittedByCounting) {
  ClusterOptions o;
  o.pre_vote = false;
  o.check_quorum = false;
  o.max_bytes_per_message = 0;  // one entry per AppendEntries, so the script can pick which
  Cluster c(5, /*seed=*/1, o);
  ASSERT_TRUE(c.Campaign(1).ok());
  ASSERT_EQ(c.node(1)->role(), Role::kLeader);
  ASSERT_EQ(c.NCommitted(1), 5u);  // S1's no-op
  // (a) S1 replicates X at index 2 to S2 only, then crashes.
  c.drop_filter = [](const Message& m) {
    return m.type == MessageType::kAppend && m.from == 1 && m.to != 2;
  };
  auto x = c.Propose(1, "X");
  ASSERT_TRUE(x.ok());
  ASSERT_EQ(x->index, 2u);
  c.Crash(1);
  // (b) S5 wins the next term with S3 and S4; its no-op at index 2 reaches nobody. Crash.
  c.drop_filter = [](const Message& m) { return m.type == MessageType::kAppend && m.from == 5; };
  ASSERT_TRUE(c.Campaign(5).ok());
  ASSERT_EQ(c.node(5)->role(), Role::kLeader);
  ASSERT_EQ(c.node(5)->last_index(), 2u);
  const uint64_t t5 = c.node(5)->term();
  c.Crash(5);
  // (c) S1 restarts and wins a later term; X reaches S3 and S4 (a majority with S1 and S2), but
  // S1's own no-op does not. X is of an older term: it must stay uncommitted.
  c.Restart(1);
  c.drop_filter = [&c](const Message& m) {
    if (m.type != MessageType::kAppend || m.from != 1) return false;
    // A probe the follower will reject anyway passes: the rejection makes S1 back up to X.
    if (c.node(m.to) != nullptr && c.node(m.to)->last_index() < m.index) return false;
    for (const Entry& e : m.entries) {
      if (e.type == EntryType::kNoop) return true;
    }
    return false;
  };
  for (int i = 0; i < 3 && c.node(1)->role() != Role::kLeader; ++i) ASSERT_TRUE(c.Campaign(1).ok());
  ASSERT_EQ(c.node(1)->role(), Role::kLeader);
  ASSERT_GT(c.node(1)->term(), t5);
  EXPECT_EQ(c.node(3)->last_index(), 2u) << "X did not reach S3";
  EXPECT_EQ(c.node(1)->commit_index(), 1u) << "an older term's entry was committed by counting";
  EXPECT_EQ(c.NCommitted(2), 0u);
  // (d) S1 crashes; S5 (last term t5) can win and overwrite index 2. That is legal only because
  // X was never committed; the checker fails the test if anyone had applied X.
  c.Crash(1);
  c.drop_filter = nullptr;
  c.Restart(5);
  for (int i = 0; i < 3 && c.node(5)->role() != Role::kLeader; ++i) ASSERT_TRUE(c.Campaign(5).ok());
  ASSERT_EQ(c.node(5)->role(), Role::kLeader);
  c.Restart(1);
  c.One("Y", 5, true);
  std::string at2;
  EXPECT_EQ(c.NCommitted(2, &at2), 5u);
  EXPECT_NE(at2, "X");
}

// ---------------------------------------------------------------- persistence (2C)

void CrashesWithDurableStorage(bool wal) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  ClusterOptions o;
  o.lmdb = !wal;
  o.wal = wal;
  Cluster c(3, seed, o);
  c.One("11", 3, true);
  for (uint64_t id : c.ids()) c.Crash(id);
  for (uint64_t id : c.ids()) c.Restart(id);
  c.One("12", 3, true);
  const uint64_t leader1 = c.CheckOneLeader();
  c.Crash(leader1);
  c.Restart(leader1);
  c.One("13", 3, true);
  const uint64_t leader2 = c.CheckOneLeader();
  c.Crash(leader2);
  const uint64_t i14 = c.One("14", 2, true);
  c.Restart(leader2);
  for (int t = 0; t < 20 * kElection && c.NCommitted(i14) < 3; ++t) c.Tick();
  EXPECT_EQ(c.NCommitted(i14), 3u);
  const uint64_t i3 = c.Nth(c.CheckOneLeader());  // a follower
  c.Crash(i3);
  c.One("15", 2, true);
  c.Restart(i3);
  c.One("16", 3, true);
  // Several nodes down at once, all of them at once too (after 6.5840's Persist2).
  for (int iter = 0; iter < 3; ++iter) {
    const uint64_t l = c.CheckOneLeader() - 1;  // 0-based
    c.Crash(c.Nth(l + 1));
    c.One("p" + std::to_string(iter) + "a", 2, true);
    c.Crash(c.Nth(l));
    c.Crash(c.Nth(l + 2));
    c.Restart(c.Nth(l + 1));
    c.Restart(c.Nth(l + 2));
    c.Tick(kElection);
    c.One("p" + std::to_string(iter) + "b", 2, true);
    c.Restart(c.Nth(l));
    c.One("p" + std::to_string(iter) + "c", 3, true);
  }
  // Every node's applied history equals everyone else's (checked as they applied), and all of
  // them reached the end.
  const uint64_t last = c.One("1000", 3, true);
  for (uint64_t id : c.ids()) EXPECT_GE(c.applied(id), last);
}

TEST(RaftPersistence, CrashesWithLmdbStorage) { CrashesWithDurableStorage(false); }
TEST(RaftPersistence, CrashesWithWalStorage) { CrashesWithDurableStorage(true); }

void Figure8(bool unreliable) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  ClusterOptions o;
  // One entry per AppendEntries: otherwise a new leader's no-op travels with the older entries
  // and reaches a majority with them, and the Figure 8 hazard (counting replicas of an older
  // term's entry) could hardly ever arise here.
  o.max_bytes_per_message = 1;
  Cluster c(5, seed, o);
  if (unreliable) c.SetNet(NetOptions{0.1, 0.05, 2, 0.0});
  c.One(RandomCmd(c), 1, true);
  size_t nup = 5;
  for (int iter = 0; iter < 600; ++iter) {
    if (unreliable && iter == 150) c.SetNet(NetOptions{0.1, 0.05, 2, 0.1});  // long reordering
    uint64_t leader = 0;
    for (uint64_t id : c.ids()) {
      if (!c.up(id) || !c.connected(id)) continue;
      if (c.Propose(id, RandomCmd(c)).ok()) leader = id;
    }
    if (c.rng()() % 1000 < 100) {
      c.Tick(static_cast<int>(c.rng()() % (5 * kElection)));
    } else {
      c.Tick(static_cast<int>(c.rng()() % 13));
    }
    if (leader != 0 && (!unreliable || c.rng()() % 2 == 0)) {
      // Reliable: crash the leader (its log survives). Unreliable: cut it off.
      if (unreliable) {
        c.Disconnect(leader);
      } else {
        c.Crash(leader);
      }
      --nup;
    }
    if (nup < 3) {
      const uint64_t s = c.Nth(c.rng()() % 5);
      if (unreliable && !c.connected(s)) {
        c.Connect(s);
        ++nup;
      } else if (!unreliable && !c.up(s)) {
        c.Restart(s);
        ++nup;
      }
    }
  }
  c.SetNet(NetOptions{});
  for (uint64_t id : c.ids()) {
    if (!c.up(id)) c.Restart(id);
    c.Connect(id);
  }
  c.One(RandomCmd(c), 5, true);
  std::cout << "[   info   ] " << c.Summary() << std::endl;
}

TEST(RaftPersistence, Figure8) { Figure8(false); }
TEST(RaftPersistence, Figure8Unreliable) { Figure8(true); }

TEST(RaftPersistence, UnreliableChurn) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(5, seed);
  c.SetNet(NetOptions{0.1, 0.05, 3, 0.02});
  for (int iter = 0; iter < 400; ++iter) {
    // Clients: propose on whichever node currently claims to lead.
    for (uint64_t id : c.ids()) {
      if (c.up(id) && c.node(id)->role() == Role::kLeader) (void)c.Propose(id, RandomCmd(c));
    }
    const uint64_t who = c.Nth(c.rng()() % 5);
    const uint64_t dice = c.rng()() % 100;
    if (dice < 20) {
      c.Disconnect(who);
    } else if (dice < 50) {
      c.Connect(who);
    } else if (dice < 60) {
      c.Crash(who);
    } else if (dice < 80) {
      if (!c.up(who)) c.Restart(who);
    }
    c.Tick(static_cast<int>(1 + c.rng()() % 7));
  }
  c.SetNet(NetOptions{});
  for (uint64_t id : c.ids()) {
    if (!c.up(id)) c.Restart(id);
    c.Connect(id);
  }
  c.Tick(3 * kElection);
  const uint64_t last = c.One(RandomCmd(c), 5, true);
  for (uint64_t id : c.ids()) EXPECT_GE(c.applied(id), last);
  std::cout << "[   info   ] " << c.Summary() << std::endl;
}

// ---------------------------------------------------------------- snapshots (2D)

void SnapshotCommon(bool crash, bool lmdb, bool unreliable) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  ClusterOptions o;
  o.lmdb = lmdb;
  o.snapshot_every = 9;
  Cluster c(3, seed, o);
  if (unreliable) c.SetNet(NetOptions{0.1, 0.05, 2, 0.0});
  c.One(RandomCmd(c), 3, true);
  uint64_t leader1 = c.CheckOneLeader();
  for (int iter = 0; iter < 12; ++iter) {
    uint64_t victim = c.Nth(leader1);  // the follower after leader1
    uint64_t sender = leader1;
    if (iter % 3 == 1) {
      sender = c.Nth(leader1);
      victim = leader1;
    }
    if (crash) {
      c.Crash(victim);
      c.One(RandomCmd(c), 1, true);
    } else {
      c.Disconnect(victim);
      c.One(RandomCmd(c), 2, true);
    }
    // Enough entries that the victim's next entry is compacted away on the others.
    for (int i = 0; i < 11; ++i) (void)c.Propose(sender, RandomCmd(c));
    c.One(RandomCmd(c), crash ? 1 : 2, true);
    if (crash) {
      c.Restart(victim);
    } else {
      c.Connect(victim);
    }
    c.One(RandomCmd(c), 3, true);
    leader1 = c.CheckOneLeader();
  }
  EXPECT_GT(c.Delivered(MessageType::kSnapshot), 0u) << "no follower ever needed a snapshot";
  std::cout << "[   info   ] " << c.Summary()
            << " snapshots_delivered=" << c.Delivered(MessageType::kSnapshot) << std::endl;
  if (crash) {
    // Everyone restarts from snapshot + log.
    for (uint64_t id : c.ids()) c.Crash(id);
    for (uint64_t id : c.ids()) c.Restart(id);
    const uint64_t last = c.One(RandomCmd(c), 3, true);
    for (uint64_t id : c.ids()) EXPECT_GE(c.applied(id), last);
  }
}

TEST(RaftSnapshot, InstallToLaggingFollower) { SnapshotCommon(false, false, false); }
TEST(RaftSnapshot, InstallUnreliable) { SnapshotCommon(false, false, true); }
TEST(RaftSnapshot, CrashAfterSnapshotWithLmdb) { SnapshotCommon(true, true, false); }

TEST(RaftSnapshot, AllCrashWithSnapshotsUnreliable) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  ClusterOptions o;
  o.snapshot_every = 7;
  Cluster c(5, seed, o);
  c.SetNet(NetOptions{0.1, 0.05, 2, 0.0});
  c.One(RandomCmd(c), 5, true);
  for (int iter = 0; iter < 5; ++iter) {
    const int n = 1 + static_cast<int>(c.rng()() % 12);
    for (int i = 0; i < n; ++i) c.One(RandomCmd(c), 3, true);
    for (uint64_t id : c.ids()) c.Crash(id);
    for (uint64_t id : c.ids()) c.Restart(id);
    c.One(RandomCmd(c), 5, true);
  }
}

// ---------------------------------------------------------------- pre-vote and check-quorum

TEST(RaftPreVote, RejoiningFollowerDoesNotDisruptLeader) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(3, seed);
  c.One("a", 3, true);
  const uint64_t leader = c.CheckOneLeader();
  const uint64_t term = c.node(leader)->term();
  const uint64_t follower = c.Nth(leader);
  c.Disconnect(follower);
  c.Tick(20 * kElection);  // many election timeouts alone: pre-votes only, term unchanged
  EXPECT_EQ(c.node(follower)->term(), term) << "a cut-off node raised its term";
  c.Connect(follower);
  c.Tick(5 * kElection);
  EXPECT_EQ(c.CheckOneLeader(), leader) << "the rejoining follower deposed the leader";
  EXPECT_EQ(c.CheckTerms(), term);
  c.One("b", 3, true);
}

// The same scenario without pre-vote and check-quorum shows what the test above guards against.
TEST(RaftPreVote, WithoutPreVoteARejoiningFollowerBumpsTheTerm) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  ClusterOptions o;
  o.pre_vote = false;
  o.check_quorum = false;
  Cluster c(3, seed, o);
  c.One("a", 3, true);
  const uint64_t leader = c.CheckOneLeader();
  const uint64_t term = c.node(leader)->term();
  const uint64_t follower = c.Nth(leader);
  c.Disconnect(follower);
  c.Tick(20 * kElection);
  EXPECT_GT(c.node(follower)->term(), term);
  c.Connect(follower);
  c.Tick(5 * kElection);
  EXPECT_GT(c.CheckTerms(), term) << "expected the rejoin to force a new election";
  c.One("b", 3, true);
}

TEST(RaftPreVote, PartitionedLeaderStepsDownAndRejoins) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(5, seed);
  c.One("a", 5, true);
  const uint64_t leader = c.CheckOneLeader();
  c.Disconnect(leader);
  c.Tick(2 * kElection + 1);
  EXPECT_NE(c.node(leader)->role(), Role::kLeader);
  const uint64_t leader2 = c.CheckOneLeader();
  EXPECT_NE(leader2, leader);
  const uint64_t term2 = c.node(leader2)->term();
  c.Connect(leader);
  c.Tick(5 * kElection);
  EXPECT_EQ(c.CheckOneLeader(), leader2);
  EXPECT_EQ(c.CheckTerms(), term2);
  c.One("b", 5, true);
}

// ---------------------------------------------------------------- ReadIndex

TEST(RaftReadIndex, ServedOnlyAfterQuorumConfirms) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(3, seed);
  const uint64_t w = c.One("w", 3, true);
  const uint64_t leader = c.CheckOneLeader();
  // Heartbeat acknowledgements to the leader are lost: it cannot confirm its leadership.
  c.drop_filter = [&](const Message& m) {
    return m.type == MessageType::kHeartbeatResponse && m.to == leader;
  };
  ASSERT_TRUE(c.ReadIndex(leader, "r1").ok());
  c.Tick(3);  // less than an election timeout: still leader, but unconfirmed
  EXPECT_EQ(c.node(leader)->role(), Role::kLeader);
  EXPECT_FALSE(HasRead(c, leader, "r1")) << "read served without a quorum's confirmation";
  c.drop_filter = nullptr;
  c.Tick(2);
  uint64_t index = 0;
  ASSERT_TRUE(HasRead(c, leader, "r1", &index));
  EXPECT_GE(index, w);
  // A follower's read goes through the leader.
  const uint64_t follower = c.Nth(leader);
  ASSERT_TRUE(c.ReadIndex(follower, "r2").ok());
  c.Tick(2);
  ASSERT_TRUE(HasRead(c, follower, "r2", &index));
  EXPECT_GE(index, w);
}

TEST(RaftReadIndex, DeposedLeaderServesNoStaleRead) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(5, seed);
  c.One("a", 5, true);
  const uint64_t leader1 = c.CheckOneLeader();
  c.Disconnect(leader1);
  // Leader1 still believes it leads; a read there must not be answered.
  ASSERT_TRUE(c.ReadIndex(leader1, "stale").ok());
  const uint64_t b = c.One("b", 4, true);  // the majority moves on
  c.Tick(3 * kElection);
  c.Connect(leader1);
  c.Tick(3 * kElection);
  EXPECT_FALSE(HasRead(c, leader1, "stale")) << "a deposed leader served a read";
  // Now a follower, it reads through the new leader and sees "b".
  uint64_t index = 0;
  for (int attempt = 0; attempt < 10 && !HasRead(c, leader1, "fresh", &index); ++attempt) {
    (void)c.ReadIndex(leader1, "fresh");
    c.Tick(kElection);
  }
  ASSERT_TRUE(HasRead(c, leader1, "fresh", &index));
  EXPECT_GE(index, b);
}

TEST(RaftReadIndex, NewLeaderWaitsForItsNoop) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(3, seed);
  c.One("a", 3, true);
  const uint64_t old_leader = c.CheckOneLeader();
  const uint64_t target = c.Nth(old_leader);
  // The new leader hears no AppendEntries answers, so its no-op cannot commit.
  c.drop_filter = [&](const Message& m) {
    return m.type == MessageType::kAppendResponse && m.to == target;
  };
  ASSERT_TRUE(c.TransferLeader(old_leader, target).ok());
  c.Tick(2);
  ASSERT_EQ(c.node(target)->role(), Role::kLeader) << "leadership transfer did not happen";
  const uint64_t noop = c.node(target)->last_index();
  ASSERT_TRUE(c.ReadIndex(target, "r").ok());
  c.Tick(3);
  EXPECT_FALSE(HasRead(c, target, "r")) << "read served before the leader committed in its term";
  c.drop_filter = nullptr;
  c.Tick(3);
  uint64_t index = 0;
  ASSERT_TRUE(HasRead(c, target, "r", &index));
  EXPECT_GE(index, noop);
}

TEST(RaftLeaderTransfer, TransfersToUpToDateFollower) {
  TESSERA_RAFT_SEEDED_TEST(seed);
  Cluster c(3, seed);
  c.One("a", 3, true);
  const uint64_t leader = c.CheckOneLeader();
  const uint64_t target = c.Nth(leader + 1);
  ASSERT_TRUE(c.TransferLeader(leader, target).ok());
  c.Tick(2);
  EXPECT_EQ(c.CheckOneLeader(), target);
  c.One("b", 3, true);
}

}  // namespace
}  // namespace tessera::raft::testing
