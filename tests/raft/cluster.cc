#include "cluster.h"

#include <cstdlib>
#include <cstring>
#include <iostream>

namespace tessera::raft::testing {

uint64_t TestSeed() {
  uint64_t seed;
  if (const char* env = std::getenv("TESSERA_RAFT_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 10);
  } else {
    std::random_device rd;
    seed = (uint64_t{rd()} << 32) ^ rd();
  }
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::cout << "[   seed   ] " << (info ? info->name() : "?") << " seed=" << seed
            << " (replay: TESSERA_RAFT_SEED=" << seed << ")" << std::endl;
  return seed;
}

std::string EncodeLog(const std::vector<AppliedEntry>& log) {
  std::string out;
  for (const AppliedEntry& e : log) {
    const uint64_t len = e.data.size();
    out.append(reinterpret_cast<const char*>(&e.term), 8);
    out.push_back(static_cast<char>(e.type));
    out.append(reinterpret_cast<const char*>(&len), 8);
    out += e.data;
  }
  return out;
}

std::vector<AppliedEntry> DecodeLog(const std::string& data) {
  std::vector<AppliedEntry> log;
  size_t pos = 0;
  while (pos < data.size()) {
    AppliedEntry e;
    uint64_t len = 0;
    std::memcpy(&e.term, data.data() + pos, 8);
    e.type = static_cast<EntryType>(data[pos + 8]);
    std::memcpy(&len, data.data() + pos + 9, 8);
    e.data = data.substr(pos + 17, len);
    pos += 17 + len;
    log.push_back(std::move(e));
  }
  return log;
}

Cluster::Cluster(size_t n, uint64_t seed, ClusterOptions options)
    : options_(options), rng_(seed), nodes_(n) {
  if (options_.lmdb || options_.wal) tmp_ = std::make_unique<tessera::testing::TempDir>();
  for (size_t i = 0; i < n; ++i) voters_.push_back(i + 1);
  for (size_t i = 0; i < n; ++i) {
    NodeState& s = nodes_[i];
    s.id = i + 1;
    if (options_.lmdb || options_.wal) {
      s.dir = tmp_->path() + "/node" + std::to_string(s.id);
    } else {
      s.storage = std::make_unique<MemoryStorage>();
    }
    StartNode(s);
  }
}

Cluster::~Cluster() {
  for (NodeState& n : nodes_) {
    n.node.reset();
    n.storage.reset();  // closes LMDB before the temp dir goes
  }
}

std::vector<uint64_t> Cluster::ids() const { return voters_; }

void Cluster::StartNode(NodeState& n) {
  if (options_.wal) {
    auto s = WalStorage::Open(n.dir);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    n.storage = std::move(*s);
  } else if (options_.lmdb) {
    auto s = LmdbStorage::Open(n.dir);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    n.storage = std::move(*s);
  }
  // The application restores its state machine from the snapshot; Raft hands out the rest.
  auto snap = n.storage->GetSnapshot();
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  n.log.clear();
  n.applied = 0;
  n.snapshot_index = 0;
  n.reads.clear();
  if (!snap->empty()) RestoreSnapshot(n, *snap);
  Config c;
  c.id = n.id;
  c.voters = voters_;
  c.election_tick = options_.election_tick;
  c.heartbeat_tick = options_.heartbeat_tick;
  c.pre_vote = options_.pre_vote;
  c.check_quorum = options_.check_quorum;
  c.applied = n.applied;
  c.max_bytes_per_message = options_.max_bytes_per_message;
  c.seed = rng_();
  auto node = RawNode::Create(c, n.storage.get());
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  n.node = std::move(*node);
}

void Cluster::Tick(int ticks) {
  for (int t = 0; t < ticks && !stalled_; ++t) {
    ++now_;
    for (NodeState& n : nodes_) {
      if (!n.node) continue;
      Status s = n.node->Tick();
      ASSERT_TRUE(s.ok()) << s.ToString();
      Observe(n);
    }
    Pump();
  }
}

void Cluster::Disconnect(uint64_t id) { nodes_.at(id - 1).connected = false; }
void Cluster::Connect(uint64_t id) { nodes_.at(id - 1).connected = true; }

void Cluster::Crash(uint64_t id) {
  NodeState& n = nodes_.at(id - 1);
  n.node.reset();
  if (options_.lmdb || options_.wal) n.storage.reset();
  n.log.clear();
  n.applied = 0;
  n.reads.clear();
}

void Cluster::Restart(uint64_t id) {
  NodeState& n = nodes_.at(id - 1);
  if (n.node) Crash(id);
  StartNode(n);
  Pump();
}

Result<ProposeResult> Cluster::Propose(uint64_t id, const std::string& data) {
  NodeState& n = nodes_.at(id - 1);
  if (!n.node) return Status::Unavailable("node is down");
  auto r = n.node->Propose(data);
  Observe(n);
  Pump();
  return r;
}

Status Cluster::ReadIndex(uint64_t id, const std::string& context) {
  NodeState& n = nodes_.at(id - 1);
  if (!n.node) return Status::Unavailable("node is down");
  Status s = n.node->ReadIndex(context);
  Pump();
  return s;
}

Status Cluster::Campaign(uint64_t id) {
  NodeState& n = nodes_.at(id - 1);
  if (!n.node) return Status::Unavailable("node is down");
  Status s = n.node->Campaign();
  Observe(n);
  Pump();
  return s;
}

Status Cluster::TransferLeader(uint64_t id, uint64_t to) {
  NodeState& n = nodes_.at(id - 1);
  if (!n.node) return Status::Unavailable("node is down");
  Status s = n.node->TransferLeader(to);
  Pump();
  return s;
}

void Cluster::Observe(const NodeState& n) {
  if (!n.node || n.node->role() != Role::kLeader) return;
  auto [it, inserted] = leader_of_term_.emplace(n.node->term(), n.id);
  if (!inserted && it->second != n.id) {
    ADD_FAILURE() << "election safety violated: term " << n.node->term() << " has leaders "
                  << it->second << " and " << n.id;
  }
}

bool Cluster::Linked(uint64_t a, uint64_t b) const {
  const NodeState& x = nodes_.at(a - 1);
  const NodeState& y = nodes_.at(b - 1);
  return x.connected && y.connected && x.node && y.node;
}

void Cluster::Send(Message m) {
  if (!Linked(m.from, m.to)) return;
  if (drop_filter && drop_filter(m)) return;
  if (Uniform() < net_.drop) return;
  const int copies = Uniform() < net_.duplicate ? 2 : 1;
  for (int i = 0; i < copies; ++i) {
    uint64_t delay = 0;
    if (net_.long_delay > 0 && Uniform() < net_.long_delay) {
      delay = rng_() % (5 * static_cast<uint64_t>(options_.election_tick) + 1);
    } else if (net_.max_delay > 0) {
      delay = rng_() % (static_cast<uint64_t>(net_.max_delay) + 1);
    }
    in_flight_.emplace(std::make_pair(now_ + delay, seq_++), m);
  }
}

void Cluster::Deliver(const Message& m) {
  // Connectivity is checked again on arrival: a partition also eats messages already in flight.
  if (!Linked(m.from, m.to)) return;
  if (drop_filter && drop_filter(m)) return;
  NodeState& n = nodes_.at(m.to - 1);
  counters_.delivered[{m.type, m.from}]++;
  ++total_delivered_;
  if (m.type == MessageType::kAppendResponse && m.reject) counters_.rejections[m.from]++;
  Status s = n.node->Step(m);
  ASSERT_TRUE(s.ok()) << s.ToString();
  Observe(n);
}

void Cluster::Pump() {
  if (stalled_) return;
  for (int round = 0; round < 10000; ++round) {
    bool progress = false;
    for (NodeState& n : nodes_) {
      if (n.node && n.node->HasReady()) {
        HandleReady(n);
        progress = true;
      }
    }
    while (!in_flight_.empty() && in_flight_.begin()->first.first <= now_) {
      Message m = std::move(in_flight_.begin()->second);
      in_flight_.erase(in_flight_.begin());
      Deliver(m);
      progress = true;
    }
    if (!progress) return;
  }
  // Messages that never stop (a livelock) would otherwise spin every later tick as well.
  stalled_ = true;
  ADD_FAILURE() << "the cluster did not quiesce within one tick; stopping it";
}

void Cluster::HandleReady(NodeState& n) {
  Ready rd = n.node->GetReady();
  // 1. Persist before anything leaves the node.
  if (rd.hard_state || !rd.entries.empty() || !rd.snapshot.empty()) {
    Status s = n.storage->Save(rd.hard_state ? &*rd.hard_state : nullptr, rd.entries,
                               rd.snapshot.empty() ? nullptr : &rd.snapshot);
    ASSERT_TRUE(s.ok()) << "node " << n.id << ": " << s.ToString();
  }
  // 2. Send.
  for (Message& m : rd.messages) Send(std::move(m));
  // 3. Apply.
  if (!rd.snapshot.empty()) RestoreSnapshot(n, rd.snapshot);
  for (const Entry& e : rd.committed_entries) Apply(n, e);
  for (ReadState& r : rd.read_states) n.reads.push_back(std::move(r));
  Status s = n.node->Advance(rd);
  ASSERT_TRUE(s.ok()) << s.ToString();
  MaybeSnapshot(n);
}

void Cluster::Apply(NodeState& n, const Entry& e) {
  if (e.index != n.applied + 1) {
    ADD_FAILURE() << "node " << n.id << " applied " << e.index << " after " << n.applied;
    return;
  }
  AppliedEntry a{e.term, e.type, e.data};
  auto [it, inserted] = committed_.emplace(e.index, a);
  if (!inserted && !(it->second == a)) {
    ADD_FAILURE() << "state machine safety violated at index " << e.index << ": node " << n.id
                  << " applied term " << a.term << " '" << a.data << "', another node term "
                  << it->second.term << " '" << it->second.data << "'";
  }
  n.log.push_back(std::move(a));
  n.applied = e.index;
}

void Cluster::RestoreSnapshot(NodeState& n, const Snapshot& snap) {
  std::vector<AppliedEntry> log = DecodeLog(snap.data);
  if (log.size() != snap.meta.index) {
    ADD_FAILURE() << "node " << n.id << ": snapshot at " << snap.meta.index << " holds "
                  << log.size() << " entries";
    return;
  }
  for (uint64_t i = 0; i < log.size(); ++i) {
    auto [it, inserted] = committed_.emplace(i + 1, log[i]);
    if (!inserted && !(it->second == log[i])) {
      ADD_FAILURE() << "state machine safety violated by a snapshot at index " << i + 1
                    << " on node " << n.id;
    }
  }
  n.log = std::move(log);
  n.applied = snap.meta.index;
  n.snapshot_index = snap.meta.index;
}

void Cluster::MaybeSnapshot(NodeState& n) {
  if (options_.snapshot_every == 0 || n.applied < n.snapshot_index + options_.snapshot_every) {
    return;
  }
  auto term = n.storage->Term(n.applied);
  ASSERT_TRUE(term.ok()) << term.status().ToString();
  Snapshot snap{{n.applied, *term, voters_}, EncodeLog(n.log)};
  Status s = n.storage->CreateSnapshot(snap);
  ASSERT_TRUE(s.ok()) << s.ToString();
  s = n.storage->Compact(n.applied);
  ASSERT_TRUE(s.ok()) << s.ToString();
  n.snapshot_index = n.applied;
}

uint64_t Cluster::CheckOneLeader(int max_ticks) {
  for (int t = 0; t <= max_ticks; ++t) {
    std::map<uint64_t, std::vector<uint64_t>> leaders;
    for (const NodeState& n : nodes_) {
      if (n.node && n.connected && n.node->role() == Role::kLeader) {
        leaders[n.node->term()].push_back(n.id);
      }
    }
    if (stalled_) break;
    if (!leaders.empty()) {
      const auto& top = leaders.rbegin()->second;
      EXPECT_EQ(top.size(), 1u) << "term " << leaders.rbegin()->first << " has several leaders";
      return top[0];
    }
    Tick();
  }
  ADD_FAILURE() << "expected one leader, got none in " << max_ticks << " ticks";
  return 0;
}

void Cluster::CheckNoLeader() {
  for (const NodeState& n : nodes_) {
    if (n.node && n.connected) {
      EXPECT_NE(n.node->role(), Role::kLeader) << "node " << n.id << " is leader, expected none";
    }
  }
}

uint64_t Cluster::CheckTerms() {
  uint64_t term = 0;
  for (const NodeState& n : nodes_) {
    if (!n.node || !n.connected) continue;
    if (term == 0) {
      term = n.node->term();
    } else {
      EXPECT_EQ(n.node->term(), term) << "servers disagree on term";
    }
  }
  return term;
}

size_t Cluster::NCommitted(uint64_t index, std::string* data) {
  size_t count = 0;
  for (const NodeState& n : nodes_) {
    if (!n.node || index == 0 || n.applied < index || index > n.log.size()) continue;
    const AppliedEntry& e = n.log[index - 1];
    if (count > 0 && data != nullptr && *data != e.data) {
      ADD_FAILURE() << "committed values do not match at index " << index;
    }
    if (data != nullptr) *data = e.data;
    ++count;
  }
  return count;
}

uint64_t Cluster::One(const std::string& cmd, size_t expected, bool retry, int max_ticks) {
  const uint64_t start = now_;
  size_t next = 0;
  while (now_ - start < static_cast<uint64_t>(max_ticks) && !stalled_) {
    uint64_t index = 0;
    for (size_t k = 0; k < nodes_.size(); ++k) {
      NodeState& n = nodes_[(next + k) % nodes_.size()];
      if (!n.node || !n.connected || n.node->role() != Role::kLeader) continue;
      auto r = Propose(n.id, cmd);
      if (r.ok()) {
        index = r->index;
        break;
      }
    }
    next = (next + 1) % nodes_.size();
    if (index != 0) {
      // Up to 20 election timeouts for it to commit.
      for (int t = 0; t < 20 * options_.election_tick; ++t) {
        std::string got;
        size_t n = NCommitted(index, &got);
        if (n > 0 && n >= expected && got == cmd) return index;
        if (stalled_) break;
        Tick();
      }
      if (!retry) {
        ADD_FAILURE() << "one(" << cmd << ") failed to reach agreement";
        return 0;
      }
    } else {
      Tick(3);
    }
  }
  ADD_FAILURE() << "one(" << cmd << ") failed to reach agreement in " << max_ticks << " ticks";
  return 0;
}

uint64_t Cluster::Delivered(MessageType type, uint64_t from) const {
  uint64_t total = 0;
  for (const auto& [key, count] : counters_.delivered) {
    if (key.first == type && (from == 0 || key.second == from)) total += count;
  }
  return total;
}

uint64_t Cluster::DeliveredRejections(uint64_t from) const {
  auto it = counters_.rejections.find(from);
  return it == counters_.rejections.end() ? 0 : it->second;
}

void Cluster::ResetCounters() { counters_ = Counter{}; }

std::string Cluster::Summary() const {
  uint64_t max_term = leader_of_term_.empty() ? 0 : leader_of_term_.rbegin()->first;
  uint64_t normal = 0;
  for (const auto& [index, e] : committed_) normal += e.type == EntryType::kNormal ? 1 : 0;
  return "ticks=" + std::to_string(now_) + " applied_entries=" + std::to_string(committed_.size()) +
         " (commands " + std::to_string(normal) +
         ") terms_with_leader=" + std::to_string(leader_of_term_.size()) +
         " max_term=" + std::to_string(max_term) +
         " messages_delivered=" + std::to_string(total_delivered_);
}

}  // namespace tessera::raft::testing
