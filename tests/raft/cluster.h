// An in-process Raft cluster for tests: RawNodes driven by the Ready loop over a seeded
// transport that can drop, delay (and so reorder) and duplicate messages, with partitions and
// crash/restart of nodes. Time is logical: Tick() advances every live node by one tick and then
// delivers messages until nothing is due, so a test of thousands of ticks runs in milliseconds.
//
// A checker runs throughout: after every Tick/Step/Propose it records the leader of each term
// (election safety: never two), and every applied entry (or snapshot) is compared with what any
// node applied at that index before (state machine safety). Violations are test failures.
//
// Modelled on the MIT 6.5840 Raft lab's test configuration (one/checkOneLeader/nCommitted),
// written for logical time. Thread safety: none; one test thread.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "subprocess.h"
#include "tessera/raft/raft.h"
#include "tessera/raft/storage.h"

namespace tessera::raft::testing {

// The seed for a randomized test: $TESSERA_RAFT_SEED if set, else a fresh random one. Printed so
// that a failure can be replayed.
uint64_t TestSeed();

#define TESSERA_RAFT_SEEDED_TEST(seed_var)                        \
  const uint64_t seed_var = ::tessera::raft::testing::TestSeed(); \
  SCOPED_TRACE("seed=" + std::to_string(seed_var) +               \
               " (replay with TESSERA_RAFT_SEED=" + std::to_string(seed_var) + ")")

struct ClusterOptions {
  bool lmdb = false;  // LmdbStorage in a temp dir per node, else MemoryStorage
  bool wal = false;   // WalStorage in a temp dir per node
  bool pre_vote = true;
  bool check_quorum = true;
  int election_tick = 10;
  int heartbeat_tick = 1;
  uint64_t snapshot_every = 0;  // a node snapshots and compacts after this many applied entries
  uint64_t max_bytes_per_message = 1 << 20;
};

struct NetOptions {
  double drop = 0;        // probability a message is lost
  double duplicate = 0;   // probability a message is delivered twice
  int max_delay = 0;      // extra delay in ticks, uniform in [0, max_delay]: reorders
  double long_delay = 0;  // probability of a delay of up to 5 election timeouts instead
};

struct AppliedEntry {
  uint64_t term = 0;
  EntryType type = EntryType::kNormal;
  std::string data;
  friend bool operator==(const AppliedEntry&, const AppliedEntry&) = default;
};

class Cluster {
 public:
  Cluster(size_t n, uint64_t seed, ClusterOptions options = {});
  ~Cluster();

  size_t size() const { return nodes_.size(); }
  std::vector<uint64_t> ids() const;
  // id of the i-th node (0-based, wraps), for 6.5840-style "(leader + 1) % n" arithmetic.
  uint64_t Nth(size_t i) const { return static_cast<uint64_t>(i % nodes_.size()) + 1; }
  std::mt19937_64& rng() { return rng_; }
  uint64_t now() const { return now_; }
  const ClusterOptions& options() const { return options_; }

  // ---- time ----
  void Tick(int ticks = 1);

  // ---- faults ----
  void SetNet(const NetOptions& net) { net_ = net; }
  void Disconnect(uint64_t id);  // cut off from every other node
  void Connect(uint64_t id);
  bool connected(uint64_t id) const { return nodes_.at(id - 1).connected; }
  void Crash(uint64_t id);    // drop the RawNode and the application state (and close LMDB)
  void Restart(uint64_t id);  // new RawNode over the same storage; app state from the snapshot
  bool up(uint64_t id) const { return nodes_.at(id - 1).node != nullptr; }
  // Messages for which this returns true are dropped (at send and at delivery).
  std::function<bool(const Message&)> drop_filter;

  // ---- client operations (each pumps the cluster afterwards) ----
  Result<ProposeResult> Propose(uint64_t id, const std::string& data);
  Status ReadIndex(uint64_t id, const std::string& context);
  Status Campaign(uint64_t id);
  Status TransferLeader(uint64_t id, uint64_t to);

  // ---- observers ----
  RawNode* node(uint64_t id) { return nodes_.at(id - 1).node.get(); }
  // Waits up to max_ticks for exactly one leader among the connected live nodes in the highest
  // term; fails the test otherwise. Returns its id.
  uint64_t CheckOneLeader(int max_ticks = 400);
  void CheckNoLeader();   // among connected live nodes
  uint64_t CheckTerms();  // connected live nodes agree on the term; returns it
  // How many live nodes applied `index`; *data is what they applied.
  size_t NCommitted(uint64_t index, std::string* data = nullptr);
  // Proposes cmd on a leader until `expected` nodes applied it at one index (6.5840's one()).
  // Returns the index; fails the test after max_ticks.
  uint64_t One(const std::string& cmd, size_t expected, bool retry, int max_ticks = 3000);
  const std::vector<ReadState>& reads(uint64_t id) const { return nodes_.at(id - 1).reads; }
  uint64_t applied(uint64_t id) const { return nodes_.at(id - 1).applied; }
  // Everything any node applied, by index.
  const std::map<uint64_t, AppliedEntry>& committed() const { return committed_; }

  // Delivered messages of a type from a node (all senders when from == 0).
  uint64_t Delivered(MessageType type, uint64_t from = 0) const;
  uint64_t DeliveredRejections(uint64_t from) const;  // rejected AppendResponses from `from`
  void ResetCounters();
  // "ticks=.. applied=.. max_term=.. delivered=.. snapshots=..", printed by randomized tests so
  // that a run that did nothing is visible.
  std::string Summary() const;

 private:
  struct NodeState {
    uint64_t id = 0;
    std::unique_ptr<Storage> storage;
    std::unique_ptr<RawNode> node;
    bool connected = true;
    std::string dir;  // LMDB directory
    // The application's state machine: the entries it applied, index i at log[i - 1].
    std::vector<AppliedEntry> log;
    uint64_t applied = 0;
    uint64_t snapshot_index = 0;
    std::vector<ReadState> reads;
  };
  struct Counter {
    std::map<std::pair<MessageType, uint64_t>, uint64_t> delivered;
    std::map<uint64_t, uint64_t> rejections;
  };

  void StartNode(NodeState& n);
  void Pump();
  void HandleReady(NodeState& n);
  void Send(Message m);
  void Deliver(const Message& m);
  bool Linked(uint64_t a, uint64_t b) const;
  void Apply(NodeState& n, const Entry& e);
  void RestoreSnapshot(NodeState& n, const Snapshot& snap);
  void MaybeSnapshot(NodeState& n);
  void Observe(const NodeState& n);
  double Uniform() { return std::uniform_real_distribution<double>(0, 1)(rng_); }

  ClusterOptions options_;
  std::mt19937_64 rng_;
  NetOptions net_;
  std::unique_ptr<tessera::testing::TempDir> tmp_;
  std::vector<NodeState> nodes_;
  std::vector<uint64_t> voters_;
  uint64_t now_ = 0;
  uint64_t seq_ = 0;
  std::map<std::pair<uint64_t, uint64_t>, Message> in_flight_;  // (deliver at, seq)
  std::map<uint64_t, uint64_t> leader_of_term_;
  std::map<uint64_t, AppliedEntry> committed_;
  Counter counters_;
  uint64_t total_delivered_ = 0;
  bool stalled_ = false;
};

std::string EncodeLog(const std::vector<AppliedEntry>& log);
std::vector<AppliedEntry> DecodeLog(const std::string& data);

}  // namespace tessera::raft::testing
