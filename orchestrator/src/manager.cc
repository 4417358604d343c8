#include "tessera/orchestrator/manager.h"

#include <fcntl.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "convert.h"
#include "page_stream.h"
#include "parity_holder.h"
#include "replicator.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {
namespace {

using Clock = std::chrono::steady_clock;
using gen::ErrorCode;

constexpr const char* kManagerHolder = "manager";
constexpr int64_t kMinSessionTtlMs = 200;
constexpr int64_t kMaxSessionTtlMs = 3600 * 1000;
constexpr int kCommandTimeoutMs = 3000;
constexpr int64_t kMaxLockWaitMs = 60000;  // one Acquire call waits at most this long
constexpr int64_t kShutdownFreshMs = 60000;
// How long a shutdown that could not tell every worker keeps refusing Register before it ends:
// longer than a worker's retry interval (worker.cc: a 2 s call budget, then up to 1 s backoff).
constexpr int kShutdownLingerMs = 4000;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// True when `j` has ShapeOf's fields with their types (a file from elsewhere may not).
bool ValidShape(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("protection") || !j["protection"].is_string()) return false;
  for (const char* f : {"k", "m", "workers", "shards"}) {
    if (!j.contains(f) || !j[f].is_number_integer()) return false;
    const auto v = j[f].get<int64_t>();
    if (v < 0 || v > 1000000) return false;
  }
  return !j.contains("peers") || j["peers"].is_string();  // (files of before it lack it)
}

// --peers as every member must be given it ("" without: a manager of its own).
std::string PeersText(const std::string& peers) {
  std::string out;
  size_t from = 0;
  while (from <= peers.size() && !peers.empty()) {
    const size_t comma = peers.find(',', from);
    std::string a =
        peers.substr(from, comma == std::string::npos ? std::string::npos : comma - from);
    a.erase(0, a.find_first_not_of(' '));
    a.erase(a.find_last_not_of(' ') + 1);
    out += (out.empty() ? "" : ",") + a;
    if (comma == std::string::npos) break;
    from = comma + 1;
  }
  return out;
}

std::string SpecText(const ProtectionSpec& p) {
  if (p.scheme == "rs") return "rs:" + std::to_string(p.k) + "+" + std::to_string(p.m);
  return p.scheme;
}

// The cluster's shape: what its init command records, every manager must be started with, and
// DATA/cluster.json keeps so that a restart with other flags is refused before it serves.
nlohmann::json ShapeOf(const ProtectionSpec& spec, int workers, int shards) {
  return {{"protection", SpecText(spec)},
          {"k", spec.k},
          {"m", spec.m},
          {"workers", workers},
          {"shards", shards}};
}

// Why a manager started with shape `flags` cannot serve the cluster of shape `stored` (whose
// data is in `data_dir`); empty when it can. Both have every field of ShapeOf (ValidShape).
std::string ShapeMismatch(const std::string& data_dir, const nlohmann::json& stored,
                          const nlohmann::json& flags) {
  auto s = [](const nlohmann::json& j, const char* f) { return j.at(f).get<std::string>(); };
  auto n = [](const nlohmann::json& j, const char* f) { return j.at(f).get<int>(); };
  if (s(stored, "protection") == "xor" && s(flags, "protection") == "xor" &&
      n(stored, "k") != n(flags, "k")) {
    // With xor every data worker is a slot (k = --workers): name the flag that differs.
    return "the cluster expects " + std::to_string(n(stored, "workers")) +
           " workers (protection xor over " + std::to_string(n(stored, "k")) +
           "+1 nodes), not --workers " + std::to_string(n(flags, "workers")) +
           " (every manager must be started with the same flags)";
  }
  if (s(stored, "protection") != s(flags, "protection") || n(stored, "k") != n(flags, "k") ||
      n(stored, "m") != n(flags, "m")) {
    return "manager data in " + data_dir + " belongs to a cluster with protection " +
           s(stored, "protection") + " over " + std::to_string(n(stored, "k")) + "+" +
           std::to_string(n(stored, "m")) + " nodes, not " + s(flags, "protection") + " over " +
           std::to_string(n(flags, "k")) + "+" + std::to_string(n(flags, "m"));
  }
  if (n(stored, "workers") != n(flags, "workers")) {
    return "the cluster expects " + std::to_string(n(stored, "workers")) +
           " workers, not --workers " + std::to_string(n(flags, "workers")) +
           " (every manager must be started with the same flags)";
  }
  if (stored.contains("peers") && flags.contains("peers") &&
      s(stored, "peers") != s(flags, "peers")) {
    // A member of replicated managers started on its own would lead alone, on a log the others
    // go on with: two leaders, and its entries later overwriting committed ones.
    auto said = [](const std::string& p) {
      return p.empty() ? std::string("without --peers") : "with --peers " + p;
    };
    return "manager data in " + data_dir + " belongs to a manager started " +
           said(s(stored, "peers")) + ", not " + said(s(flags, "peers")) +
           " (every manager must be started with the same --peers as before)";
  }
  if (n(stored, "shards") != n(flags, "shards")) {
    // It used to keep the stored count silently while its log named the flag's.
    return "the cluster has " + std::to_string(n(stored, "shards")) + " shards, not --shards " +
           std::to_string(n(flags, "shards")) +
           " (every manager must be started with the same flags)";
  }
  return "";
}

// Membership, shard map, protection records and the lock service: the managers' replicated
// state machine. Every change is a command in the Raft log (Apply); the JSON image is the Raft
// snapshot. Apply is deterministic: the same commands give the same state on every manager.
// Heartbeat times, liveness and session deadlines are the leader's own soft state.
class ManagerState : public ReplicatedState {
 public:
  void Init(const ManagerOptions& o, const ProtectionSpec& spec) {
    opts_ = o;
    spec_ = spec;
    Reset();
  }

  std::string Apply(uint64_t index, const std::string& command, bool replay) override {
    std::unique_lock<std::mutex> l(mu);
    nlohmann::json reply;
    try {
      auto j = nlohmann::json::parse(command, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        Throw(ErrorCode::INTERNAL, "log entry " + std::to_string(index) + " is not a command",
              "manager");
      }
      reply = ApplyLocked(j, replay);
    } catch (const gen::TesseraError& e) {
      reply = {{"error", static_cast<int>(e.code)}, {"message", e.message}, {"node", e.node}};
    } catch (const nlohmann::json::exception& e) {
      reply = {{"error", static_cast<int>(ErrorCode::INTERNAL)},
               {"message", "log entry " + std::to_string(index) + ": " + e.what()},
               {"node", "manager"}};
    }
    l.unlock();
    changed.notify_all();
    return reply.dump();
  }

  std::string Snapshot() override {
    std::lock_guard<std::mutex> l(mu);
    return Image().dump();
  }

  Status Restore(const std::string& image) override {
    auto j = nlohmann::json::parse(image, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return Status::Corruption("manager state snapshot is not valid JSON");
    {
      std::lock_guard<std::mutex> l(mu);
      Reset();
      Load(j);
      CheckScheme();
      spdlog::info("manager: restored cluster state (map version {}, {} nodes, {})", version_,
                   nodes_.size(), formed_ ? "formed" : "forming");
    }
    changed.notify_all();
    return Status::Ok();
  }

  void OnLeadership(bool leader) override {
    std::lock_guard<std::mutex> l(mu);
    leader_ = leader;
    // A new leader knows nothing of heartbeats and keep-alives sent to the old one: everything
    // counts as alive for one more timeout.
    for (auto& [id, n] : nodes_) n.last_hb = Clock::now();
    session_deadline_.clear();
    changed.notify_all();  // lock waiters on a deposed leader give up at once
  }

  std::mutex mu;
  std::condition_variable changed;  // notified after every applied command
  std::string self_address;         // the manager's own address (its parity holder's)
  uint64_t self_id = 0;             // Raft id when replicated, else 0
  uint64_t holder_term = 0;         // replicated xor: the term this manager's holder serves

  bool initialized() const { return initialized_; }
  std::string fatal() const { return fatal_; }
  bool exit_requested() const { return exit_requested_; }
  bool exit_cleanup() const { return exit_cleanup_; }
  nlohmann::json InitCommand() const {
    nlohmann::json j = ShapeOf(spec_, opts_.expected_workers, opts_.num_shards);
    j["op"] = "init";
    return j;
  }

  // Register command (see ManagerService.Register); mu held.
  nlohmann::json RegisterLocked(const std::string& id, const std::string& address,
                                int64_t incarnation, const std::string& role_in,
                                const std::string& replace, bool has_data) {
    // Also after shutdown_done, while this process is about to exit: a worker registering in
    // that window would otherwise wait for the gone manager forever (TLA+ finding 4).
    if (shutting_down_ || exit_requested_) {
      Throw(ErrorCode::UNAVAILABLE, "cluster is shutting down", "manager");
    }
    if (id.empty() || id.size() > 128) {
      Throw(ErrorCode::INVALID_ARGUMENT, "node id must be 1 to 128 bytes", "manager");
    }
    const std::string role = role_in.empty() ? "worker" : role_in;
    if (role != "worker" && role != "parity") {
      Throw(ErrorCode::INVALID_ARGUMENT, "unknown role '" + role + "'", "manager");
    }
    if (role == "parity" && spec_.scheme != "rs") {
      Throw(ErrorCode::INVALID_ARGUMENT,
            "this cluster has no parity workers (protection " + SpecText(spec_) +
                (spec_.scheme == "xor" ? "; the manager holds the parity" : "") + ")",
            "manager");
    }
    if (retired_.count(id)) {
      Throw(ErrorCode::STALE_EPOCH, "node " + id + " was replaced by another node", "manager");
    }
    auto [err, ep] = CheckAddress(address);
    if (!err.empty()) Throw(ErrorCode::INVALID_ARGUMENT, err, "manager");
    bool rebuild = false;
    auto it = nodes_.find(id);
    if (it != nodes_.end() && it->second.role != role) {
      Throw(ErrorCode::INVALID_ARGUMENT,
            "node " + id + " registered as " + it->second.role + ", not " + role, "manager");
    }
    if (it != nodes_.end() && it->second.incarnation == incarnation &&
        it->second.address == address) {
      it->second.last_hb = Clock::now();  // a retried registration: nothing changes
      rebuild = it->second.rebuild_pending;
    } else if (it != nodes_.end() && incarnation < it->second.incarnation) {
      // A registration from a process older than the one registered (a late message from a dead
      // process): it must not replace the live one (TLA+ finding 1).
      Throw(ErrorCode::STALE_EPOCH,
            "incarnation " + std::to_string(incarnation) + " of node " + id +
                " is older than the registered " + std::to_string(it->second.incarnation),
            "manager");
    } else if (it != nodes_.end()) {
      // A restart (or a move to another address): keep the shards, fence the old incarnation.
      it->second.address = address;
      it->second.incarnation = incarnation;
      it->second.last_hb = Clock::now();
      it->second.up = true;
      for (int sh = 0; sh < num_shards_; ++sh) {
        if (shards_[sh].owner == id) BumpShard(sh, id);
      }
      int slot = SlotOf(id);
      if (slot >= 0) {
        ++slot_epochs_[static_cast<size_t>(slot)];
        if (!has_data && spec_.scheme != "none") {
          rebuild = true;
          rebuilding_.insert(slot);
        }
      }
      it->second.rebuild_pending = rebuild;
      ++version_;
      spdlog::info("manager: node {} re-registered at {} (incarnation {}), epochs bumped{}", id,
                   address, incarnation, rebuild ? "; its data was lost: it rebuilds" : "");
    } else if (std::string victim = Victim(role, address, replace, has_data, id); !victim.empty()) {
      rebuild = TakeOver(victim, id, address, incarnation, role);
    } else {
      if (role == "parity") {
        auto free_row = std::find(holder_nodes_.begin(), holder_nodes_.end(), std::string());
        if (free_row == holder_nodes_.end()) {
          Throw(ErrorCode::INVALID_ARGUMENT,
                "all " + std::to_string(spec_.m) +
                    " parity holders are registered; a replacement needs --replace NODE_ID",
                "manager");
        }
        *free_row = id;
      }
      if (role == "worker" && DataWorkers() >= expected_workers_) {
        // An extra worker would get no shards and stay listed (and down, once stopped) for good.
        Throw(ErrorCode::INVALID_ARGUMENT,
              "this cluster already has its " + std::to_string(expected_workers_) +
                  " data workers; a new node takes one's place with --replace NODE_ID (or on "
                  "the address that node served on, with an empty data directory)",
              "manager");
      }
      Node n;
      n.address = address;
      n.incarnation = incarnation;
      n.last_hb = Clock::now();
      n.up = true;
      n.order = next_order_++;
      n.role = role;
      nodes_[id] = n;
      ++version_;
      spdlog::info("manager: {} {} registered at {} ({} of {} data workers)", role, id, address,
                   DataWorkers(), expected_workers_);
      MaybeForm();
    }
    return {{"rebuild", rebuild}};
  }

  gen::RegisterReply RegisterReply(bool rebuild) {
    std::lock_guard<std::mutex> l(mu);
    gen::RegisterReply r;
    r.shard_map = MapLocked();
    r.heartbeat_ms = opts_.heartbeat_ms;
    r.rebuild = rebuild;
    return r;
  }

  // A heartbeat, on the leader: soft state only. Returns the map, and in *rebuilt whether the
  // node just finished a rebuild (the caller then proposes rebuild_done).
  gen::ShardMap Heartbeat(const std::string& id, int64_t incarnation, const std::string& progress,
                          bool* rebuilt) {
    std::lock_guard<std::mutex> l(mu);
    CheckInitialized();
    if (retired_.count(id)) {
      Throw(ErrorCode::STALE_EPOCH, "node " + id + " was replaced by another node", "manager");
    }
    auto it = nodes_.find(id);
    if (it == nodes_.end())
      Throw(ErrorCode::UNAVAILABLE, "unknown node " + id + "; register", "manager");
    if (it->second.incarnation != incarnation) {
      Throw(ErrorCode::STALE_EPOCH,
            "node " + id + " incarnation " + std::to_string(incarnation) +
                " was replaced by incarnation " + std::to_string(it->second.incarnation),
            "manager");
    }
    it->second.last_hb = Clock::now();
    if (!it->second.up) {
      spdlog::info("manager: node {} is up again", id);
      it->second.up = true;
    }
    it->second.progress = progress;
    int slot = SlotOf(id);
    *rebuilt = progress.empty() && slot >= 0 && rebuilding_.count(slot);
    return MapLocked();
  }

  gen::ShardMap Map() {
    std::lock_guard<std::mutex> l(mu);
    return MapLocked();
  }

  gen::ClusterStatus StatusReply() {
    std::lock_guard<std::mutex> l(mu);
    gen::ClusterStatus s;
    auto now = Clock::now();
    for (const auto& [id, n] : nodes_) {
      gen::NodeInfo g;
      g.node_id = id;
      g.address = n.address;
      g.role = n.role;
      g.progress = n.progress;
      g.last_heartbeat_ms_ago =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - n.last_hb).count();
      g.up = n.up;
      g.incarnation = n.incarnation;
      g.shards_owned = 0;
      for (const auto& sh : shards_) g.shards_owned += sh.owner == id ? 1 : 0;
      s.nodes.push_back(g);
    }
    s.shard_map = MapLocked();
    s.expected_workers = expected_workers_;
    s.manager_address = opts_.listen;
    return s;
  }

  // On the leader, before a registration is proposed: "" unless node `id` is registered at
  // another address and still heartbeating. Then the caller is a second process with that node
  // id (a copied data directory), and registering it would fence the live one; a worker that
  // really restarted elsewhere gets in once its old incarnation's heartbeats time out.
  std::string LiveElsewhere(const std::string& id, const std::string& address) {
    std::lock_guard<std::mutex> l(mu);
    std::string at;
    const int64_t age = HeartbeatAge(id, &at);
    if (age < 0 || at == address) return "";
    return "node " + id + " is registered and alive at " + at + " (its last heartbeat " +
           std::to_string(age) +
           " ms ago): a second process with the same node id (a copied data directory?) may "
           "register only once that one stops";
  }

  // On the leader, before a registration with --replace `victim` is proposed: "" unless that node
  // still heartbeats. Replacing it would fence a healthy node (a mistyped node id takes one out);
  // the replacement registers once the replaced node's heartbeats stop.
  std::string LiveVictim(const std::string& victim) {
    std::lock_guard<std::mutex> l(mu);
    std::string at;
    const int64_t age = HeartbeatAge(victim, &at);
    if (age < 0) return "";
    return "--replace " + victim + ": that node is alive at " + at + " (its last heartbeat " +
           std::to_string(age) +
           " ms ago); stop it first: the replacement registers once its heartbeats stop";
  }

  // mu held. On the leader: how long ago node `id` last heartbeated, with its address in *at,
  // while that is within the heartbeat timeout; -1 when it is not alive (or unknown, or this
  // manager does not lead and cannot know).
  int64_t HeartbeatAge(const std::string& id, std::string* at) const {
    auto it = nodes_.find(id);
    if (!leader_ || it == nodes_.end() || !it->second.up) return -1;
    const int64_t age =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - it->second.last_hb)
            .count();
    if (age > opts_.heartbeat_timeout_ms) return -1;
    *at = it->second.address;
    return age;
  }

  // Marks nodes whose heartbeats stopped as down.
  void CheckHeartbeats() {
    std::lock_guard<std::mutex> l(mu);
    if (!leader_) return;  // heartbeats go to the leader only
    auto now = Clock::now();
    for (auto& [id, n] : nodes_) {
      auto age = std::chrono::duration_cast<std::chrono::milliseconds>(now - n.last_hb).count();
      if (n.up && age > opts_.heartbeat_timeout_ms) {
        n.up = false;
        spdlog::warn("manager: node {} at {} is down (no heartbeat for {} ms)", id, n.address, age);
      }
    }
  }

  // The workers to tell when shutting down (after shutdown_begin applied).
  std::vector<std::pair<std::string, std::string>> ShutdownTargets() {
    std::lock_guard<std::mutex> l(mu);
    // Data workers first (each protects what it holds on the way out), parity holders last.
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [id, n] : nodes_) {
      if (n.role != "parity") out.emplace_back(id, n.address);
    }
    for (const auto& [id, n] : nodes_) {
      if (n.role == "parity") out.emplace_back(id, n.address);
    }
    return out;
  }

  // ---- Lock service, leader side (soft state and reads; changes are commands) ----

  // Records a keep-alive; false when the session does not exist (expired or never opened).
  bool KeepAlive(int64_t session) {
    std::lock_guard<std::mutex> l(mu);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return false;
    session_deadline_[session] = Clock::now() + std::chrono::milliseconds(it->second.ttl_ms);
    return true;
  }

  // Sessions whose keep-alives stopped for longer than their TTL.
  std::vector<int64_t> ExpiredSessions() {
    std::lock_guard<std::mutex> l(mu);
    std::vector<int64_t> out;
    auto now = Clock::now();
    for (const auto& [id, sess] : sessions_) {
      auto [it, fresh] =
          session_deadline_.try_emplace(id, now + std::chrono::milliseconds(sess.ttl_ms));
      if (!fresh && now > it->second) out.push_back(id);
    }
    return out;
  }

  bool SessionExists(int64_t session) const { return sessions_.count(session) != 0; }

  // Whether the session is still past its deadline (a keep-alive may have arrived since
  // ExpiredSessions listed it).
  bool StillExpired(int64_t session) {
    std::lock_guard<std::mutex> l(mu);
    auto it = session_deadline_.find(session);
    return sessions_.count(session) && it != session_deadline_.end() && Clock::now() > it->second;
  }

  // The token `session` holds `name` with, or 0.
  int64_t HeldToken(const std::string& name, int64_t session) {
    auto it = locks_.find(name);
    return it != locks_.end() && it->second.holder == session ? it->second.token : 0;
  }

  bool CheckToken(const std::string& name, int64_t token) {
    std::lock_guard<std::mutex> l(mu);
    CheckInitialized();
    auto it = locks_.find(name);
    if (it == locks_.end() || token <= 0) return false;
    const Lock& lk = it->second;
    return lk.token == token && (lk.holder != 0 || !lk.node.empty());
  }

  gen::LockList ListLocks() {
    std::lock_guard<std::mutex> l(mu);
    CheckInitialized();
    gen::LockList out;
    for (const auto& [name, lk] : locks_) {
      gen::LockInfo li;
      li.name = name;
      li.holder_session = lk.holder;
      li.holder_owner = lk.node.empty() ? "" : "node " + lk.node;
      if (lk.holder != 0) {
        auto it = sessions_.find(lk.holder);
        if (it != sessions_.end()) li.holder_owner = it->second.owner;
      }
      li.token = lk.token;
      li.waiters = static_cast<int32_t>(lk.waiters.size());
      out.locks.push_back(li);
    }
    for (const auto& [id, sess] : sessions_) {
      gen::SessionInfo si;
      si.id = id;
      si.owner = sess.owner;
      si.ttl_ms = sess.ttl_ms;
      out.sessions.push_back(si);
    }
    return out;
  }

 private:
  struct Lock {
    int64_t token = 0;            // of the current or last grant; only increases
    int64_t holder = 0;           // session holding it, 0 when free
    std::string node;             // shard locks: the owning node (its epoch is the token)
    std::deque<int64_t> waiters;  // sessions in arrival order
  };
  struct Session {
    int64_t ttl_ms = 0;
    std::string owner;
  };

  void CheckInitialized() const {
    if (!initialized_) Throw(ErrorCode::UNAVAILABLE, "the manager is starting", "manager");
  }

  // Every manager must run the same cluster shape: Apply (forming, slots) depends on it.
  // Once the shape is known (init applied, or a snapshot restored): refuses other flags, and
  // keeps the shape in DATA/cluster.json for the next start to check first (RunManager).
  void CheckScheme() {
    if (stored_scheme_.empty()) return;
    const nlohmann::json shape = {{"protection", stored_scheme_},
                                  {"k", stored_k_},
                                  {"m", stored_m_},
                                  {"workers", expected_workers_},
                                  {"shards", num_shards_}};
    std::string why = ShapeMismatch(opts_.data_dir, shape,
                                    ShapeOf(spec_, opts_.expected_workers, opts_.num_shards));
    if (!why.empty()) {
      fatal_ = why;
      return;
    }
    if (shape_saved_) return;
    nlohmann::json saved = shape;
    saved["peers"] = PeersText(opts_.peers);
    // Best effort: without the file the next start still refuses, only later (here).
    if (Status st = WriteFileDurably(opts_.data_dir + "/cluster.json", saved.dump() + "\n");
        !st.ok()) {
      spdlog::warn("manager: cannot record the cluster's shape: {}", st.ToString());
    }
    shape_saved_ = true;
  }

  // A shard's owner changed or restarted: the next token of lock "shard/N" is its new epoch.
  void BumpShard(int s, const std::string& owner) {
    Lock& lk = locks_["shard/" + std::to_string(s)];
    lk.node = owner;
    shards_[s].owner = owner;
    shards_[s].epoch = ++lk.token;
  }

  // Hands `name` to its first waiter whose session still lives.
  void GrantNext(Lock& lk) {
    lk.holder = 0;
    while (!lk.waiters.empty()) {
      int64_t s = lk.waiters.front();
      lk.waiters.pop_front();
      if (sessions_.count(s)) {
        lk.holder = s;
        ++lk.token;
        return;
      }
    }
  }

  void DropSession(int64_t session) {
    sessions_.erase(session);
    session_deadline_.erase(session);
    for (auto& [name, lk] : locks_) {
      std::erase(lk.waiters, session);
      if (lk.holder == session) GrantNext(lk);
    }
  }

  static void CheckLockName(const std::string& name) {
    if (name.empty() || name.size() > 256) {
      Throw(ErrorCode::INVALID_ARGUMENT, "lock name must be 1 to 256 bytes", "manager");
    }
    if (name.rfind("shard/", 0) == 0) {
      Throw(ErrorCode::INVALID_ARGUMENT,
            "lock names starting with shard/ are the shard epochs; choose another name", "manager");
    }
  }

  Session& LiveSession(int64_t session) {
    auto it = sessions_.find(session);
    if (it == sessions_.end()) {
      Throw(ErrorCode::NOT_FOUND,
            "session " + std::to_string(session) + " does not exist (expired or closed)",
            "manager");
    }
    return it->second;
  }

  // One command; mu held. Throws TesseraError for a refused command (it changes nothing).
  nlohmann::json ApplyLocked(const nlohmann::json& j, bool replay) {
    const std::string op = j.at("op").get<std::string>();
    if (op == "init") {
      if (!initialized_) {
        initialized_ = true;
        stored_scheme_ = j.at("protection").get<std::string>();
        stored_k_ = j.at("k").get<int>();
        stored_m_ = j.at("m").get<int>();
        expected_workers_ = j.at("workers").get<int>();
        int shards = j.at("shards").get<int>();
        if (shards != num_shards_) {
          num_shards_ = shards;
          shards_.assign(num_shards_, {});
        }
        CheckScheme();
      }
      return nlohmann::json::object();
    }
    if (!initialized_) {
      Throw(ErrorCode::INTERNAL, "command '" + op + "' before the cluster was initialised",
            "manager");
    }
    if (op == "register") {
      return RegisterLocked(j.at("id"), j.at("address"), j.at("incarnation"), j.at("role"),
                            j.at("replace"), j.at("has_data"));
    }
    if (op == "rebuild_done") {
      const std::string id = j.at("id");
      auto it = nodes_.find(id);
      int slot = SlotOf(id);
      if (it != nodes_.end() && it->second.incarnation == j.at("incarnation").get<int64_t>() &&
          slot >= 0 && rebuilding_.count(slot)) {
        rebuilding_.erase(slot);
        it->second.rebuild_pending = false;
        ++version_;
        spdlog::info("manager: node {} (slot {}) recovered and serves again", id, slot);
      }
      return nlohmann::json::object();
    }
    if (op == "shutdown_begin") {
      if (!shutting_down_) {
        shutting_down_ = true;  // a manager restarted mid-shutdown stays shutting down
        ++version_;
      }
      return nlohmann::json::object();
    }
    if (op == "shutdown_done") {
      // The next start serves again (with cleanup there is no next start).
      shutting_down_ = false;
      // Only a shutdown happening now stops this process: a manager that was down then and
      // learns of it later (or replays it) serves on.
      if (!replay && std::llabs(WallMs() - j.value("at_ms", int64_t{0})) < kShutdownFreshMs) {
        exit_requested_ = true;
        exit_cleanup_ = j.at("cleanup").get<bool>();
      }
      return nlohmann::json::object();
    }
    if (op == "session_open") {
      Session sess;
      sess.ttl_ms = j.at("ttl").get<int64_t>();
      sess.owner = j.at("owner").get<std::string>();
      int64_t id = next_session_++;
      sessions_[id] = sess;
      if (leader_) session_deadline_[id] = Clock::now() + std::chrono::milliseconds(sess.ttl_ms);
      return {{"session", id}};
    }
    if (op == "session_close") {
      int64_t id = j.at("session").get<int64_t>();
      if (sessions_.count(id)) {
        if (j.value("expired", false))
          spdlog::info("manager: session {} ({}) expired; its locks are released", id,
                       sessions_[id].owner);
        DropSession(id);
      }
      return nlohmann::json::object();
    }
    if (op == "acquire" || op == "cancel" || op == "release") {
      const std::string name = j.at("name");
      CheckLockName(name);
      const int64_t session = j.at("session").get<int64_t>();
      if (op == "acquire") {
        LiveSession(session);
        Lock& lk = locks_[name];
        if (lk.holder == session) return {{"token", lk.token}};
        if (lk.holder == 0 && lk.waiters.empty()) {
          lk.holder = session;
          return {{"token", ++lk.token}};
        }
        if (!j.at("wait").get<bool>()) {
          Throw(ErrorCode::BUSY,
                "lock '" + name + "' is held by session " + std::to_string(lk.holder) + " (" +
                    (sessions_.count(lk.holder) ? sessions_[lk.holder].owner : "") + ")",
                "manager");
        }
        if (std::find(lk.waiters.begin(), lk.waiters.end(), session) == lk.waiters.end())
          lk.waiters.push_back(session);
        return {{"queued", true}};
      }
      auto it = locks_.find(name);
      if (it == locks_.end()) return nlohmann::json::object();
      Lock& lk = it->second;
      if (op == "cancel") {
        if (lk.holder == session) return {{"token", lk.token}};
        std::erase(lk.waiters, session);
        return nlohmann::json::object();
      }
      const int64_t token = j.at("token").get<int64_t>();
      if (lk.holder == session && (token == lk.token || token == 0)) {
        GrantNext(lk);
      } else {
        std::erase(lk.waiters, session);
      }
      return nlohmann::json::object();
    }
    Throw(ErrorCode::INTERNAL, "unknown command '" + op + "'", "manager");
  }

  void Reset() {
    stored_scheme_.clear();
    stored_k_ = stored_m_ = 0;
    expected_workers_ = opts_.expected_workers;
    slot_nodes_.clear();
    slot_epochs_.clear();
    holder_nodes_.clear();
    rebuilding_.clear();
    retired_.clear();
    next_order_ = 0;
    version_ = 0;
    formed_ = false;
    shutting_down_ = false;
    initialized_ = false;
    nodes_.clear();
    locks_.clear();
    sessions_.clear();
    session_deadline_.clear();
    next_session_ = 1;
    if (spec_.scheme != "none") {
      slot_nodes_.resize(static_cast<size_t>(spec_.k));
      slot_epochs_.resize(static_cast<size_t>(spec_.k), 0);
      holder_nodes_.resize(static_cast<size_t>(spec_.m));
      if (spec_.scheme == "xor") holder_nodes_[0] = kManagerHolder;
    }
    num_shards_ = opts_.num_shards;
    shards_.assign(num_shards_, {});
  }
  struct Node {
    std::string address;
    int64_t incarnation = 0;
    Clock::time_point last_hb;
    bool up = false;
    int order = 0;
    std::string role = "worker";
    std::string progress;          // from its last heartbeat
    bool rebuild_pending = false;  // told to rebuild; a retried Register gets the same answer
  };

  int DataWorkers() const {
    int n = 0;
    for (const auto& [id, node] : nodes_) n += node.role == "worker" ? 1 : 0;
    return n;
  }

  int SlotOf(const std::string& id) const {
    for (size_t i = 0; i < slot_nodes_.size(); ++i) {
      if (slot_nodes_[i] == id) return static_cast<int>(i);
    }
    return -1;
  }

  // The node a registration with an empty data directory takes over: --replace, or the known
  // node of the same role that served on the same address.
  std::string Victim(const std::string& role, const std::string& address,
                     const std::string& replace, bool has_data, const std::string& id) const {
    if (!replace.empty()) {
      auto it = nodes_.find(replace);
      if (it == nodes_.end() || it->second.role != role) {
        Throw(ErrorCode::INVALID_ARGUMENT,
              "--replace " + replace + ": no " + role + " with that node id in this cluster",
              "manager");
      }
      if (has_data) {
        Throw(ErrorCode::INVALID_ARGUMENT,
              "--replace needs an empty data directory (this node already holds data)", "manager");
      }
      return replace;
    }
    if (has_data || !formed_) return "";
    for (const auto& [other, n] : nodes_) {
      if (other != id && n.role == role && n.address == address) return other;
    }
    return "";
  }

  // `id` takes the place of `old`: its shards (epochs bumped), its slot or parity row. Returns
  // whether the new node must rebuild the old one's data from parity.
  bool TakeOver(const std::string& old, const std::string& id, const std::string& address,
                int64_t incarnation, const std::string& role) {
    Node n = nodes_[old];
    nodes_.erase(old);
    retired_.insert(old);
    n.address = address;
    n.incarnation = incarnation;
    n.last_hb = Clock::now();
    n.up = true;
    n.progress.clear();
    bool rebuild = false;
    for (int sh = 0; sh < num_shards_; ++sh) {
      if (shards_[sh].owner == old) BumpShard(sh, id);
    }
    for (auto& h : holder_nodes_) {
      if (h == old) h = id;
    }
    int slot = SlotOf(old);
    if (slot >= 0) {
      slot_nodes_[static_cast<size_t>(slot)] = id;
      ++slot_epochs_[static_cast<size_t>(slot)];
      if (spec_.scheme != "none") {
        rebuild = true;
        rebuilding_.insert(slot);
      }
    }
    n.rebuild_pending = rebuild;
    nodes_[id] = n;
    ++version_;
    spdlog::info("manager: {} {} at {} replaces {} (its data was lost){}", role, id, address, old,
                 rebuild ? "; it rebuilds slot " + std::to_string(slot) + " from parity" : "");
    return rebuild;
  }

  void MaybeForm() {
    if (formed_ || DataWorkers() < expected_workers_) return;
    for (const auto& h : holder_nodes_) {
      if (h.empty()) return;  // rs: wait for every parity worker
    }
    Form();
  }
  struct Shard {
    std::string owner;
    int64_t epoch = 0;
  };

  static Status Lmdb(int rc, const std::string& what) {
    return Status::IoError("manager LMDB " + what + ": " + mdb_strerror(rc));
  }

  static std::pair<std::string, rpc::Endpoint> CheckAddress(const std::string& a) {
    auto ep = rpc::Endpoint::Parse(a);
    if (!ep.ok()) return {ep.status().message(), {}};
    if (ep->port == 0) return {"address '" + a + "' has port 0", {}};
    return {"", *ep};
  }

  void Form() {
    std::vector<std::pair<int, std::string>> order;
    for (const auto& [id, n] : nodes_) {
      if (n.role == "worker") order.emplace_back(n.order, id);
    }
    std::sort(order.begin(), order.end());
    if (spec_.scheme != "none") {
      // Protection covers the first k data workers; shards go to them only.
      order.resize(std::min(order.size(), static_cast<size_t>(spec_.k)));
      for (size_t i = 0; i < order.size(); ++i) {
        slot_nodes_[i] = order[i].second;
        slot_epochs_[i] = 1;
      }
    }
    for (int s = 0; s < num_shards_; ++s) BumpShard(s, order[s % order.size()].second);
    formed_ = true;
    spdlog::info("manager: cluster formed: {} shards over {} workers", num_shards_, order.size());
  }

  gen::ShardMap MapLocked() const {
    ShardMap m;
    m.version = version_;
    m.num_shards = num_shards_;
    m.formed = formed_;
    m.state = shutting_down_ || exit_requested_ ? "shutting_down" : formed_ ? "serving" : "forming";
    for (int s = 0; s < num_shards_; ++s) {
      ShardInfo si;
      si.shard = s;
      si.owner = shards_[s].owner;
      si.epoch = shards_[s].epoch;
      auto it = nodes_.find(si.owner);
      if (it != nodes_.end()) si.address = it->second.address;
      m.shards.push_back(si);
    }
    auto addr = [this](const std::string& id) -> std::string {
      if (id == kManagerHolder) return self_id == 0 || holder_term != 0 ? self_address : "";
      auto it = nodes_.find(id);
      return it == nodes_.end() ? "" : it->second.address;
    };
    m.protection.scheme = spec_.scheme;
    m.protection.k = spec_.k;
    m.protection.m = spec_.m;
    m.protection.slot_nodes = slot_nodes_;
    for (const auto& id : slot_nodes_) m.protection.slot_addresses.push_back(addr(id));
    m.protection.slot_epochs = slot_epochs_;
    m.protection.holder_nodes = holder_nodes_;
    for (const auto& id : holder_nodes_) m.protection.holder_addresses.push_back(addr(id));
    for (auto& id : m.protection.holder_nodes) {
      // Replicated managers: the leader's holder is a new, empty holder in each term it leads,
      // so its name carries the leader's id and term (workers re-protect to a new name).
      if (id == kManagerHolder && self_id != 0) {
        id += "/" + std::to_string(self_id) + "@" + std::to_string(holder_term);
      }
    }
    m.protection.frozen = !rebuilding_.empty();
    m.protection.rebuilding.assign(rebuilding_.begin(), rebuilding_.end());
    return ToGen(m);
  }

  void Load(const nlohmann::json& j) {
    version_ = j.value("version", int64_t{0});
    num_shards_ = j.value("num_shards", opts_.num_shards);
    formed_ = j.value("formed", false);
    shutting_down_ = j.value("shutting_down", false);
    for (const auto& n : j.value("nodes", nlohmann::json::array())) {
      Node node;
      node.address = n.value("address", "");
      node.incarnation = n.value("incarnation", int64_t{0});
      node.order = n.value("order", 0);
      node.role = n.value("role", "worker");
      node.rebuild_pending = n.value("rebuild_pending", false);
      node.up = true;
      next_order_ = std::max(next_order_, node.order + 1);
      nodes_[n.value("id", "")] = node;
    }
    stored_scheme_ = j.value("protection", "");
    stored_k_ = j.value("k", 0);
    stored_m_ = j.value("m", 0);
    expected_workers_ = j.value("workers", opts_.expected_workers);
    slot_nodes_ = j.value("slot_nodes", std::vector<std::string>());
    slot_epochs_ = j.value("slot_epochs", std::vector<int64_t>());
    holder_nodes_ = j.value("holder_nodes", std::vector<std::string>());
    for (int r : j.value("rebuilding", std::vector<int>())) rebuilding_.insert(r);
    for (const auto& r : j.value("retired", std::vector<std::string>())) retired_.insert(r);
    shards_.assign(num_shards_, {});
    for (const auto& s : j.value("shards", nlohmann::json::array())) {
      int i = s.value("shard", -1);
      if (i >= 0 && i < num_shards_)
        shards_[i] = {s.value("owner", ""), s.value("epoch", int64_t{0})};
    }
    initialized_ = j.value("initialized", false);
    for (const auto& l : j.value("locks", nlohmann::json::array())) {
      Lock lk;
      lk.token = l.value("token", int64_t{0});
      lk.holder = l.value("holder", int64_t{0});
      lk.node = l.value("node", "");
      for (int64_t w : l.value("waiters", std::vector<int64_t>())) lk.waiters.push_back(w);
      locks_[l.value("name", "")] = lk;
    }
    for (const auto& x : j.value("sessions", nlohmann::json::array())) {
      sessions_[x.value("id", int64_t{0})] = {x.value("ttl", int64_t{0}), x.value("owner", "")};
    }
    next_session_ = j.value("next_session", int64_t{1});
  }

  // The whole state as JSON: the Raft snapshot image.
  nlohmann::json Image() const {
    nlohmann::json j;
    j["initialized"] = initialized_;
    j["version"] = version_;
    j["num_shards"] = num_shards_;
    j["formed"] = formed_;
    j["shutting_down"] = shutting_down_;
    j["nodes"] = nlohmann::json::array();
    for (const auto& [id, n] : nodes_) {
      j["nodes"].push_back({{"id", id},
                            {"address", n.address},
                            {"incarnation", n.incarnation},
                            {"order", n.order},
                            {"role", n.role},
                            {"rebuild_pending", n.rebuild_pending}});
    }
    j["protection"] = stored_scheme_;
    j["k"] = stored_k_;
    j["m"] = stored_m_;
    j["workers"] = expected_workers_;
    j["slot_nodes"] = slot_nodes_;
    j["slot_epochs"] = slot_epochs_;
    j["holder_nodes"] = holder_nodes_;
    j["rebuilding"] = std::vector<int>(rebuilding_.begin(), rebuilding_.end());
    j["retired"] = std::vector<std::string>(retired_.begin(), retired_.end());
    j["shards"] = nlohmann::json::array();
    for (int s = 0; s < num_shards_; ++s) {
      j["shards"].push_back(
          {{"shard", s}, {"owner", shards_[s].owner}, {"epoch", shards_[s].epoch}});
    }
    j["locks"] = nlohmann::json::array();
    for (const auto& [name, lk] : locks_) {
      j["locks"].push_back(
          {{"name", name},
           {"token", lk.token},
           {"holder", lk.holder},
           {"node", lk.node},
           {"waiters", std::vector<int64_t>(lk.waiters.begin(), lk.waiters.end())}});
    }
    j["sessions"] = nlohmann::json::array();
    for (const auto& [id, sess] : sessions_) {
      j["sessions"].push_back({{"id", id}, {"ttl", sess.ttl_ms}, {"owner", sess.owner}});
    }
    j["next_session"] = next_session_;
    return j;
  }

  ManagerOptions opts_;
  ProtectionSpec spec_;
  bool shape_saved_ = false;   // DATA/cluster.json written by this process
  std::string stored_scheme_;  // the cluster's shape, from the init command
  int stored_k_ = 0, stored_m_ = 0;
  int expected_workers_ = 0;
  std::vector<std::string> slot_nodes_;  // data slot -> node id
  std::vector<int64_t> slot_epochs_;
  std::vector<std::string> holder_nodes_;  // parity row -> node id ("manager": this process)
  std::set<int> rebuilding_;
  std::set<std::string> retired_;  // node ids replaced by another node: fenced for good
  int next_order_ = 0;
  int64_t version_ = 0;
  int num_shards_ = 0;
  bool formed_ = false;
  bool shutting_down_ = false;
  bool initialized_ = false;  // the init command (protection, shards) is applied
  std::map<std::string, Node> nodes_;
  std::vector<Shard> shards_;
  std::map<std::string, Lock> locks_;
  std::map<int64_t, Session> sessions_;
  int64_t next_session_ = 1;
  // Soft state (not replicated).
  bool leader_ = false;
  std::map<int64_t, Clock::time_point> session_deadline_;  // leader: keep-alive deadlines
  std::string fatal_;            // this manager cannot serve the replicated state (flags differ)
  bool exit_requested_ = false;  // a shutdown completed while this process ran
  bool exit_cleanup_ = false;
};

class Handler : public gen::ManagerServiceIf {
 public:
  Handler(ManagerState* st, const ManagerOptions& o) : st_(st), opts_(o) {}

  std::atomic<Replicator*> repl{nullptr};
  std::atomic<bool> done{false};
  std::atomic<bool> cleanup{false};
  std::atomic<bool> stopping{false};  // lock waits end at once

  void Register(gen::RegisterReply& r, const std::string& token, const std::string& node_id,
                const std::string& address, int64_t incarnation, const std::string& role,
                const std::string& replace, bool has_data) override {
    Auth(token);
    if (std::string live = st_->LiveElsewhere(node_id, address); !live.empty()) {
      Throw(ErrorCode::UNAVAILABLE, live, "manager");
    }
    if (!replace.empty() && replace != node_id) {
      if (std::string live = st_->LiveVictim(replace); !live.empty()) {
        Throw(ErrorCode::UNAVAILABLE, live, "manager");
      }
    }
    auto reply = Command({{"op", "register"},
                          {"id", node_id},
                          {"address", address},
                          {"incarnation", incarnation},
                          {"role", role},
                          {"replace", replace},
                          {"has_data", has_data}});
    r = st_->RegisterReply(reply.value("rebuild", false));
  }
  void Heartbeat(gen::ShardMap& r, const std::string& token, const std::string& node_id,
                 int64_t incarnation, const std::string& progress) override {
    Auth(token);
    CaughtUpLeader();
    bool rebuilt = false;
    r = st_->Heartbeat(node_id, incarnation, progress, &rebuilt);
    if (rebuilt) {
      Command({{"op", "rebuild_done"}, {"id", node_id}, {"incarnation", incarnation}});
      r = st_->Map();
    }
  }

  // ParityService: the manager's own parity holder (protection xor).
  int64_t AppendTail(const std::string& token, int32_t slot, int64_t epoch,
                     const std::vector<gen::TailEntry>& entries, bool sync) override {
    Auth(token);
    return Holder()->AppendTail(slot, epoch, entries, sync);
  }
  void StageDelta(const std::string& token, int32_t slot, int64_t epoch, int64_t to_gen,
                  const std::vector<gen::PageDelta>& pages, int64_t from_gen) override {
    Auth(token);
    Holder()->StageDelta(slot, epoch, from_gen, to_gen, pages);
  }
  void CommitGeneration(gen::GenRecord& r, const std::string& token, int32_t slot, int64_t epoch,
                        int64_t from_gen, int64_t to_gen, const std::string& descriptor,
                        int64_t covered_seq, int64_t last_page, bool prepare_only) override {
    Auth(token);
    r = Holder()->CommitGeneration(slot, epoch, from_gen, to_gen, descriptor, covered_seq,
                                   last_page, prepare_only);
  }
  void CommitPrepared(gen::GenRecord& r, const std::string& token, int32_t slot,
                      int64_t to_gen) override {
    Auth(token);
    r = Holder()->CommitPrepared(slot, to_gen);
  }
  void GetRecord(gen::GenRecord& r, const std::string& token, int32_t slot,
                 int64_t epoch) override {
    Auth(token);
    r = Holder()->GetRecord(slot, epoch);
  }
  void ReadTail(std::vector<gen::TailEntry>& r, const std::string& token, int32_t slot,
                int64_t epoch, int64_t after_seq, int32_t max_entries) override {
    Auth(token);
    r = Holder()->ReadTail(slot, epoch, after_seq, max_entries);
  }
  void ReadParity(gen::ParityPages& r, const std::string& token, int64_t first_pgno,
                  int32_t count) override {
    Auth(token);
    r = Holder()->ReadParity(first_pgno, count);
  }
  // The holder, for a caller with `token` (Processor's ReadParity).
  std::shared_ptr<ParityHolder> HolderFor(const std::string& token) {
    Auth(token);
    return Holder();
  }

  // The manager's parity holder; replicated, the one of the term this manager leads (0: the
  // holder of a single manager, valid whatever the term).
  void SetHolder(std::shared_ptr<ParityHolder> h, uint64_t term) {
    std::lock_guard<std::mutex> l(holder_mu_);
    holder_ = std::move(h);
    holder_term_ = term;
  }
  std::shared_ptr<ParityHolder> TakeHolder() {
    std::lock_guard<std::mutex> l(holder_mu_);
    holder_term_ = 0;
    return std::move(holder_);
  }
  uint64_t HolderTerm() {
    std::lock_guard<std::mutex> l(holder_mu_);
    return holder_ ? holder_term_ : 0;
  }

  void GetShardMap(gen::ShardMap& r, const std::string& token) override {
    Auth(token);
    CaughtUpLeader();
    r = st_->Map();
  }
  void Status(gen::ClusterStatus& r, const std::string& token) override {
    Auth(token);
    CaughtUpLeader();
    r = StatusReply();
  }

  gen::ClusterStatus StatusReply() {
    gen::ClusterStatus r = st_->StatusReply();
    Replicator* rp = repl.load();
    if (rp) {
      for (const auto& p : rp->options().peers) r.managers.push_back(p.address);
      r.raft_term = static_cast<int64_t>(rp->Term());
      r.raft_commit = static_cast<int64_t>(rp->CommitIndex());
    }
    return r;
  }

  void Shutdown(const std::string& token, bool cleanup_data) override {
    Auth(token);
    std::lock_guard<std::mutex> once(shutdown_mu_);
    if (done.load()) return;
    Command({{"op", "shutdown_begin"}});
    auto workers = st_->ShutdownTargets();
    spdlog::info("manager: shutdown requested{}; telling {} workers",
                 cleanup_data ? " with cleanup" : "", workers.size());
    rpc::ClientPool<gen::WorkerServiceClient> pool(
        rpc::Timeouts{std::chrono::milliseconds(1000), std::chrono::milliseconds(30000)});
    std::string failures;
    for (const auto& [id, addr] : workers) {
      auto ep = rpc::Endpoint::Parse(addr);
      tessera::Status s = ep.status();
      if (s.ok()) {
        auto lease = pool.Get(*ep);
        s = lease.status();
        if (s.ok()) {
          try {
            (*lease)->Shutdown(opts_.token, cleanup_data);
          } catch (const gen::TesseraError& e) {
            s = FromError(e);
          } catch (const std::exception& e) {
            s = Status::Unavailable(e.what());
          }
        }
      }
      if (s.ok()) {
        spdlog::info("manager: worker {} at {} flushed and is exiting", id, addr);
      } else {
        spdlog::warn("manager: worker {} at {}: {}", id, addr, s.ToString());
        failures += " " + id + " (" + s.message() + ")";
      }
    }
    // A worker that could not be told (it was down, or had not registered: the shutdown came
    // before the cluster formed) may still be retrying Register, or be restarted now. Refusing
    // Register for longer than a worker's retry interval (a 2 s call budget, then a backoff of
    // up to 1 s) lets each such process learn of the shutdown and exit instead of waiting for a
    // gone manager forever (TLA+ finding 4, LingerBeforeExit). When every worker was told, no
    // process is left to wait for.
    if (!failures.empty() || !st_->Map().formed) {
      spdlog::info("manager: {}; refusing registrations for {} ms before exiting",
                   failures.empty() ? "the cluster had not formed" : "some workers were not told",
                   kShutdownLingerMs);
      std::this_thread::sleep_for(std::chrono::milliseconds(kShutdownLingerMs));
    }
    // Every manager applies this and exits (deleting its data with cleanup).
    Command({{"op", "shutdown_done"}, {"cleanup", cleanup_data}, {"at_ms", WallMs()}});
    if (!failures.empty()) {
      Throw(ErrorCode::UNAVAILABLE,
            "shutdown finished, but these workers did not answer:" + failures, "manager");
    }
  }

  void RaftStep(std::vector<gen::RaftMessage>& replies, const std::string& token, int64_t from_id,
                const std::vector<gen::RaftMessage>& messages, const std::string& peers) override {
    Auth(token);
    Replicator* rp = repl.load();
    if (!rp) Throw(ErrorCode::UNAVAILABLE, "the manager is starting", Self());
    if (peers != rp->PeerList()) {
      Throw(ErrorCode::INVALID_ARGUMENT,
            "manager " + std::to_string(from_id) + " runs with --peers " + peers +
                ", this one with " + rp->PeerList() +
                " (every manager needs the same list in the same order)",
            Self());
    }
    if (from_id < 1 || from_id > static_cast<int64_t>(rp->options().peers.size()) ||
        static_cast<uint64_t>(from_id) == rp->options().id) {
      Throw(ErrorCode::INVALID_ARGUMENT,
            "raft messages from manager " + std::to_string(from_id) + ", which is not a peer",
            Self());
    }
    std::vector<raft::Message> in;
    in.reserve(messages.size());
    for (const auto& g : messages) {
      raft::Message m;
      if (!RaftFromGen(g, &m) || m.from != static_cast<uint64_t>(from_id)) {
        Throw(ErrorCode::INVALID_ARGUMENT,
              "malformed raft message from manager " + std::to_string(from_id), Self());
      }
      in.push_back(std::move(m));
    }
    // The answers come back in this reply: well inside the caller's 2 s I/O timeout, and short
    // enough that a stalled disk here does not hold the caller's messages for long.
    for (const auto& m : rp->Exchange(std::move(in), static_cast<uint64_t>(from_id),
                                      std::chrono::milliseconds(200))) {
      replies.push_back(RaftToGen(m));
    }
  }

  int64_t OpenSession(const std::string& token, int64_t ttl_ms, const std::string& owner) override {
    Auth(token);
    if (ttl_ms < kMinSessionTtlMs || ttl_ms > kMaxSessionTtlMs) {
      Throw(ErrorCode::INVALID_ARGUMENT,
            "session TTL must be " + std::to_string(kMinSessionTtlMs) + " to " +
                std::to_string(kMaxSessionTtlMs) + " ms, not " + std::to_string(ttl_ms),
            Self());
    }
    if (owner.size() > 256) Throw(ErrorCode::INVALID_ARGUMENT, "owner over 256 bytes", Self());
    auto reply = Command({{"op", "session_open"}, {"ttl", ttl_ms}, {"owner", owner}});
    return reply.at("session").get<int64_t>();
  }
  void KeepAlive(const std::string& token, int64_t session) override {
    Auth(token);
    CaughtUpLeader();
    if (!st_->KeepAlive(session)) {
      Throw(ErrorCode::NOT_FOUND,
            "session " + std::to_string(session) + " does not exist (expired or closed)", Self());
    }
  }
  void CloseSession(const std::string& token, int64_t session) override {
    Auth(token);
    Command({{"op", "session_close"}, {"session", session}});
  }
  int64_t Acquire(const std::string& token, const std::string& name, int64_t session,
                  int64_t wait_ms, bool keep_queued) override {
    Auth(token);
    wait_ms = std::clamp<int64_t>(wait_ms, 0, kMaxLockWaitMs);
    auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
    auto reply = Command({{"op", "acquire"},
                          {"name", name},
                          {"session", session},
                          {"wait", wait_ms > 0 || keep_queued}});
    if (reply.contains("token")) return reply.at("token").get<int64_t>();
    {
      std::unique_lock<std::mutex> l(st_->mu);
      int64_t t = 0;
      bool gone = false;
      Replicator* rp = repl.load();
      st_->changed.wait_until(l, deadline, [&] {
        t = st_->HeldToken(name, session);
        gone = !st_->SessionExists(session);
        return t != 0 || gone || !rp->IsLeader() || stopping.load();
      });
      if (t != 0) return t;
      if (gone) {
        Throw(ErrorCode::NOT_FOUND,
              "session " + std::to_string(session) + " expired while waiting for '" + name + "'",
              Self());
      }
    }
    if (keep_queued && repl.load()->IsLeader() && !stopping.load()) {
      Throw(ErrorCode::BUSY, "lock '" + name + "' not granted yet; still queued", Self());
    }
    // Out of time (or leadership moved): leave the queue, unless the grant came first.
    reply = Command({{"op", "cancel"}, {"name", name}, {"session", session}});
    if (reply.contains("token")) return reply.at("token").get<int64_t>();
    Throw(ErrorCode::BUSY,
          "lock '" + name + "' was not granted within " + std::to_string(wait_ms) + " ms", Self());
  }
  void Release(const std::string& token, const std::string& name, int64_t session,
               int64_t fencing_token) override {
    Auth(token);
    Command({{"op", "release"}, {"name", name}, {"session", session}, {"token", fencing_token}});
  }
  bool CheckToken(const std::string& token, const std::string& name,
                  int64_t fencing_token) override {
    Auth(token);
    Replicator* rp = LeaderOrThrow();
    // Linearizable: a token released or superseded before this call began is never current.
    Barrier(rp);
    return st_->CheckToken(name, fencing_token);
  }
  void ListLocks(gen::LockList& r, const std::string& token) override {
    Auth(token);
    CaughtUpLeader();
    r = st_->ListLocks();
  }

  // Proposes `cmd` and returns the state machine's reply; a refused command is rethrown as its
  // TesseraError, a lost leadership as NOT_LEADER (the caller retries on the leader).
  nlohmann::json Command(const nlohmann::json& cmd) {
    Replicator* rp = LeaderOrThrow();
    if (cmd.at("op") != "init") EnsureInitialized();
    auto r = rp->Propose(cmd.dump(), std::chrono::milliseconds(kCommandTimeoutMs));
    if (!r.ok()) {
      if (!rp->IsLeader()) NotLeader(rp);
      Throw(ErrorCode::UNAVAILABLE, r.status().message(), Self());
    }
    auto reply = nlohmann::json::parse(*r);
    if (reply.contains("error")) {
      Throw(static_cast<ErrorCode::type>(reply.at("error").get<int>()), reply.value("message", ""),
            reply.value("node", "manager"));
    }
    return reply;
  }

 private:
  void Auth(const std::string& token) const {
    if (token != opts_.token)
      Throw(ErrorCode::UNAUTHENTICATED, "wrong or missing cluster token", "manager");
  }
  std::string Self() const { return "manager " + opts_.listen; }

  [[noreturn]] void NotLeader(Replicator* rp) const {
    gen::TesseraError e;
    e.code = ErrorCode::NOT_LEADER;
    e.leader = rp && !rp->IsLeader() ? rp->LeaderAddress() : "";
    e.message = "manager " + opts_.listen + " is not the leader" +
                (e.leader.empty() ? " (none is elected yet)" : "; the leader is " + e.leader);
    e.node = Self();
    throw e;
  }
  Replicator* LeaderOrThrow() const {
    Replicator* rp = repl.load();
    if (!rp || !rp->IsLeader()) NotLeader(rp);
    return rp;
  }
  // The leader's state may lag its log right after an election: reads of it wait, once per
  // term, until everything committed before is applied (a read barrier).
  void CaughtUpLeader() {
    Replicator* rp = LeaderOrThrow();
    uint64_t term = rp->Term();
    if (caught_up_term_.load() == term) return;
    Barrier(rp);
    EnsureInitialized();
    caught_up_term_.store(term);
  }
  void Barrier(Replicator* rp) {
    tessera::Status s = rp->ReadBarrier(std::chrono::milliseconds(kCommandTimeoutMs));
    if (s.ok()) return;
    if (!rp->IsLeader()) NotLeader(rp);
    Throw(ErrorCode::UNAVAILABLE, s.message(), Self());
  }
  // The first leader of a new cluster records its protection and shard count before anything
  // else (the leader's loop does too; whoever comes first, the command is idempotent).
  void EnsureInitialized() {
    nlohmann::json init;
    {
      std::lock_guard<std::mutex> l(st_->mu);
      if (st_->initialized()) return;
      init = st_->InitCommand();
    }
    Command(init);
  }
  std::shared_ptr<ParityHolder> Holder() {
    std::lock_guard<std::mutex> l(holder_mu_);
    Replicator* rp = repl.load();
    if (holder_ && holder_term_ != 0 && (!rp || !rp->IsLeader() || rp->Term() != holder_term_)) {
      // A deposed leader's holder: a write stored here would not count at the real one.
      Throw(ErrorCode::UNAVAILABLE,
            "this manager's parity holder served term " + std::to_string(holder_term_) +
                ", which has ended",
            Self());
    }
    if (!holder_) {
      Throw(ErrorCode::UNAVAILABLE,
            opts_.peers.empty() || opts_.protection != "xor"
                ? "the manager holds no parity (protection is not xor)"
                : "this manager holds no parity now (only the leader does)",
            Self());
    }
    return holder_;
  }
  ManagerState* st_;
  ManagerOptions opts_;
  std::mutex shutdown_mu_;
  std::mutex holder_mu_;
  std::shared_ptr<ParityHolder> holder_;
  uint64_t holder_term_ = 0;
  std::atomic<uint64_t> caught_up_term_{0};
};

// The generated processor, except that ReadParity's pages go into the answer's frame from where
// they lie in the holder's map (page_stream.h): a rebuild reads every parity page this way.
class Processor : public gen::ManagerServiceProcessor {
 public:
  explicit Processor(const std::shared_ptr<Handler>& h) : ManagerServiceProcessor(h), h_(h) {}

 protected:
  bool dispatchCall(apache::thrift::protocol::TProtocol* iprot,
                    apache::thrift::protocol::TProtocol* oprot, const std::string& fname,
                    int32_t seqid, void* ctx) override {
    if (fname != "ReadParity") {
      return ManagerServiceProcessor::dispatchCall(iprot, oprot, fname, seqid, ctx);
    }
    ServeReadParity(iprot, oprot, fname, seqid,
                    [&](const std::string& token) { return h_->HolderFor(token); });
    return true;
  }

 private:
  std::shared_ptr<Handler> h_;
};

}  // namespace

Result<ProtectionSpec> ParseProtection(const std::string& text, int workers) {
  ProtectionSpec p;
  if (text == "none") {
    p.scheme = "none";
    return p;
  }
  if (text == "xor") {
    p.scheme = "xor";
    p.k = workers;
    p.m = 1;
    if (workers < 2) return Status::InvalidArgument("--protection xor needs at least 2 workers");
    return p;
  }
  int k = 0, m = 0;
  char extra = 0;
  if (std::sscanf(text.c_str(), "rs:%d+%d%c", &k, &m, &extra) == 2 && k >= 1 && m >= 1 &&
      k + m <= 255) {
    p.scheme = "rs";
    p.k = k;
    p.m = m;
    return p;
  }
  return Status::InvalidArgument("--protection '" + text +
                                 "': expected none, xor or rs:K+M (e.g. rs:4+2)");
}

Result<std::vector<ReplicaPeer>> ParsePeers(const std::string& text, const std::string& listen) {
  std::vector<ReplicaPeer> out;
  if (text.empty()) {
    out.push_back({1, listen});
    return out;
  }
  bool self = false;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string a = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    auto ep = rpc::Endpoint::Parse(a);
    if (!ep.ok() || ep->port == 0) {
      return Status::InvalidArgument("--peers: '" + a + "' is not HOST:PORT with a nonzero port");
    }
    for (const auto& p : out) {
      if (p.address == a) return Status::InvalidArgument("--peers lists " + a + " twice");
    }
    self = self || a == listen;
    out.push_back({out.size() + 1, a});
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (!self) {
    return Status::InvalidArgument("--peers must include this manager's --listen address " +
                                   listen + " (every manager gets the same list)");
  }
  if (out.size() != 1 && out.size() != 3 && out.size() != 5) {
    return Status::InvalidArgument("--peers needs 1, 3 or 5 managers, not " +
                                   std::to_string(out.size()));
  }
  return out;
}

Status RunManager(const ManagerOptions& options, std::atomic<bool>* stop) {
  KeepLargeBuffersInHeap();
  if (options.num_shards < 1 || options.num_shards > kMaxShards) {
    return Status::InvalidArgument("--shards must be 1 to " + std::to_string(kMaxShards));
  }
  if (options.expected_workers < 1) return Status::InvalidArgument("--workers must be at least 1");
  TESSERA_ASSIGN_OR_RETURN(rpc::Endpoint ep, rpc::Endpoint::Parse(options.listen));
  TESSERA_ASSIGN_OR_RETURN(ProtectionSpec spec,
                           ParseProtection(options.protection, options.expected_workers));
  TESSERA_ASSIGN_OR_RETURN(auto peers, ParsePeers(options.peers, options.listen));
  const bool replicated = peers.size() > 1;
  ManagerOptions opts = options;
  if (spec.scheme == "rs") opts.expected_workers = spec.k;

  std::error_code ec;
  TESSERA_ASSIGN_OR_RETURN(DataDirLock dir_lock, DataDirLock::Acquire(options.data_dir));
  if (std::filesystem::exists(options.data_dir + "/manager.mdb") &&
      !std::filesystem::exists(options.data_dir + "/raft")) {
    return Status::InvalidArgument(
        "manager data in " + options.data_dir +
        " was written by a version without Raft (manager.mdb); start from an empty directory");
  }
  // Flags that do not fit the cluster are refused before anything is created or served (the
  // replicated state refuses them too, but only once its log is applied, after serving began).
  // Only beside the Raft data it describes: a directory whose raft/ was removed starts afresh.
  if (const std::string shape_file = options.data_dir + "/cluster.json";
      std::filesystem::exists(shape_file, ec) &&
      std::filesystem::exists(options.data_dir + "/raft", ec)) {
    std::ifstream in(shape_file);
    std::stringstream text;
    text << in.rdbuf();
    auto stored = nlohmann::json::parse(text.str(), nullptr, false);
    if (!in || stored.is_discarded() || !ValidShape(stored)) {
      return Status::Corruption(shape_file +
                                " (the cluster's shape) is not what this version writes; remove "
                                "it to start: the manager's Raft data still records the shape");
    }
    nlohmann::json flags = ShapeOf(spec, opts.expected_workers, opts.num_shards);
    flags["peers"] = PeersText(options.peers);
    std::string why = ShapeMismatch(options.data_dir, stored, flags);
    if (!why.empty()) return Status::InvalidArgument(why);
  }

  ManagerState state;
  state.Init(opts, spec);
  auto handler = std::make_shared<Handler>(&state, opts);
  const std::string parity_dir = options.data_dir + "/parity";
  if (spec.scheme == "xor" && !replicated) {
    TESSERA_ASSIGN_OR_RETURN(auto h,
                             ParityHolder::Open(parity_dir, "xor", spec.k, 1, 0, "manager"));
    handler->SetHolder(std::move(h), 0);
  }
  auto processor = std::make_shared<Processor>(handler);
  TESSERA_ASSIGN_OR_RETURN(
      auto server,
      rpc::Server::Start(ep, processor,
                         rpc::ServerOptions{std::chrono::microseconds(options.poll_us)}));
  const std::string self_address = ep.host + ":" + std::to_string(server->port());
  uint64_t self_id = 1;
  if (replicated) {
    for (const auto& p : peers) {
      if (p.address == options.listen) self_id = p.id;
    }
  } else {
    peers[0].address = self_address;
  }
  {
    std::lock_guard<std::mutex> l(state.mu);
    state.self_address = self_address;
    state.self_id = replicated ? self_id : 0;
  }
  ReplicatorOptions ro;
  ro.id = self_id;
  ro.peers = peers;
  ro.dir = options.data_dir + "/raft";
  ro.token = options.token;
  TESSERA_ASSIGN_OR_RETURN(auto repl, Replicator::Start(ro, &state));
  {
    std::lock_guard<std::mutex> l(state.mu);
    if (!state.fatal().empty()) return Status::InvalidArgument(state.fatal());
  }
  handler->repl.store(repl.get());
  spdlog::info(
      "manager: serving on {} (data {}, {} shards, expecting {} workers, protection {}{})",
      self_address, options.data_dir, options.num_shards, opts.expected_workers, options.protection,
      replicated
          ? ", raft member " + std::to_string(self_id) + " of " + std::to_string(peers.size())
          : "");

  // From here on the servers run: errors stop them in order below rather than return.
  Status result;
  bool exit_cleanup = false;
  std::unique_ptr<httplib::Server> http;
  std::thread http_thread;
  auto hep = options.http.empty() ? Result<rpc::Endpoint>(rpc::Endpoint{})
                                  : rpc::Endpoint::Parse(options.http);
  if (!hep.ok()) result = hep.status();
  if (!options.http.empty() && hep.ok()) {
    http = std::make_unique<httplib::Server>();
    // SO_REUSEADDR only: the library's default also sets SO_REUSEPORT, which let a second
    // manager bind the same status port and share its requests with the first.
    http->set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    http->Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
    http->Get("/status",
              [&handler, &self_address](const httplib::Request&, httplib::Response& res) {
                ClusterStatus s = FromGen(handler->StatusReply());
                s.manager_address = self_address;
                res.set_content(StatusJson(s) + "\n", "application/json");
              });
    if (!http->bind_to_port(hep->host.c_str(), hep->port)) {
      result = Status::Unavailable("cannot listen for HTTP on " + options.http +
                                   " (is another process serving that port?)");
      http.reset();
    } else {
      http_thread = std::thread([&http] { http->listen_after_bind(); });
      spdlog::info("manager: HTTP status on http://{}/status", options.http);
    }
  }

  auto set_holder_term = [&state](uint64_t term) {
    std::lock_guard<std::mutex> l(state.mu);
    state.holder_term = term;
  };
  std::weak_ptr<ParityHolder> retired_holder;  // still referenced by calls in flight
  while (result.ok() && !stop->load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    state.CheckHeartbeats();
    {
      std::lock_guard<std::mutex> l(state.mu);
      if (!state.fatal().empty()) {
        result = Status::InvalidArgument(state.fatal());
        break;
      }
      if (state.exit_requested()) {
        exit_cleanup = state.exit_cleanup();
        handler->done.store(true);
        break;
      }
    }
    if (repl->Failed()) {
      result = Status::IoError("the manager's raft log failed; see the log above");
      break;
    }
    const bool leader = repl->IsLeader();
    try {
      if (leader) {
        bool init;
        {
          std::lock_guard<std::mutex> l(state.mu);
          init = !state.initialized();
        }
        if (init) handler->Command(state.InitCommand());
        const uint64_t term = repl->Term();
        if (spec.scheme == "xor" && replicated && handler->HolderTerm() != term) {
          // A new term: the workers re-protect to a new, empty holder (parity kept from an
          // earlier term no longer matches what they protect). Its files go only once no call
          // in flight uses the old one (LMDB opens an environment once per process).
          set_holder_term(0);
          if (auto old = handler->TakeHolder()) retired_holder = old;
          if (retired_holder.expired()) {
            std::filesystem::remove_all(parity_dir, ec);
            auto h = ParityHolder::Open(parity_dir, "xor", spec.k, 1, 0, "manager");
            if (!h.ok()) {
              result = h.status();
              break;
            }
            handler->SetHolder(std::move(h).value(), term);
            set_holder_term(term);
            spdlog::info("manager: holding the xor parity for term {}", term);
          }
        }
        for (int64_t sess : state.ExpiredSessions()) {
          if (!state.StillExpired(sess)) continue;
          handler->Command({{"op", "session_close"}, {"session", sess}, {"expired", true}});
        }
      } else if (replicated && handler->HolderTerm() != 0) {
        set_holder_term(0);
        retired_holder = handler->TakeHolder();  // only the leader's holder counts
      }
    } catch (const gen::TesseraError& e) {
      spdlog::debug("manager: {}", e.message);
    }
  }
  // Let the Shutdown reply reach the caller, and the commit of the shutdown reach the other
  // managers (they exit when they apply it), before the listener closes.
  std::this_thread::sleep_for(std::chrono::milliseconds(replicated ? 600 : 200));
  if (http) {
    http->stop();
    http_thread.join();
  }
  handler->stopping.store(true);
  state.changed.notify_all();
  server->Stop();
  handler->repl.store(nullptr);
  repl->Stop();
  handler->TakeHolder();
  if (result.ok() && exit_cleanup) {
    std::filesystem::remove_all(options.data_dir, ec);
    if (ec) spdlog::warn("manager: removing {}: {}", options.data_dir, ec.message());
  }
  if (result.ok()) spdlog::info("manager: exited cleanly");
  return result;
}

}  // namespace tessera::orchestrator
