#include "tessera/orchestrator/manager.h"

#include <httplib.h>
#include <lmdb.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "convert.h"
#include "parity_holder.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {
namespace {

using Clock = std::chrono::steady_clock;
using gen::ErrorCode;

constexpr const char* kStateKey = "state";
constexpr const char* kManagerHolder = "manager";

// Membership and shard map, persisted as one JSON record in LMDB.
class ManagerState {
 public:
  Status Open(const ManagerOptions& o, const ProtectionSpec& spec) {
    opts_ = o;
    spec_ = spec;
    std::error_code ec;
    std::filesystem::create_directories(o.data_dir, ec);
    if (ec)
      return Status::IoError("cannot create data directory '" + o.data_dir + "': " + ec.message());
    std::string path = o.data_dir + "/manager.mdb";
    if (int rc = mdb_env_create(&env_); rc != 0) return Lmdb(rc, "env_create");
    mdb_env_set_mapsize(env_, size_t{256} << 20);
    if (int rc = mdb_env_open(env_, path.c_str(), MDB_NOSUBDIR, 0644); rc != 0) {
      return Lmdb(rc, "open " + path);
    }
    MDB_txn* t;
    if (int rc = mdb_txn_begin(env_, nullptr, 0, &t); rc != 0) return Lmdb(rc, "txn");
    if (int rc = mdb_dbi_open(t, nullptr, 0, &dbi_); rc != 0) {
      mdb_txn_abort(t);
      return Lmdb(rc, "dbi");
    }
    MDB_val k{std::strlen(kStateKey), const_cast<char*>(kStateKey)}, v;
    int rc = mdb_get(t, dbi_, &k, &v);
    if (rc == 0) {
      auto j = nlohmann::json::parse(std::string(static_cast<char*>(v.mv_data), v.mv_size), nullptr,
                                     false);
      if (j.is_discarded()) {
        mdb_txn_abort(t);
        return Status::Corruption("manager state in " + path + " is not valid JSON");
      }
      Load(j);
      spdlog::info("manager: loaded cluster state (map version {}, {} nodes, {})", version_,
                   nodes_.size(), formed_ ? "formed" : "forming");
    } else if (rc != MDB_NOTFOUND) {
      mdb_txn_abort(t);
      return Lmdb(rc, "read state");
    }
    mdb_txn_commit(t);
    if (!stored_scheme_.empty() && stored_scheme_ != SpecText(spec)) {
      return Status::InvalidArgument("manager data in " + o.data_dir +
                                     " belongs to a cluster with " + "protection " +
                                     stored_scheme_ + ", not " + SpecText(spec));
    }
    if (spec_.scheme != "none") {
      slot_nodes_.resize(static_cast<size_t>(spec_.k));
      slot_epochs_.resize(static_cast<size_t>(spec_.k), 0);
      holder_nodes_.resize(static_cast<size_t>(spec_.m));
      if (spec_.scheme == "xor") holder_nodes_[0] = kManagerHolder;
    }
    if (num_shards_ == 0) {
      num_shards_ = o.num_shards;
      shards_.assign(num_shards_, {});
    } else if (num_shards_ != o.num_shards) {
      spdlog::warn("manager: keeping the stored {} shards (--shards {} ignored)", num_shards_,
                   o.num_shards);
    }
    // After a restart nodes count as up until their heartbeat timeout passes.
    for (auto& [id, n] : nodes_) n.last_hb = Clock::now();
    return Status::Ok();
  }

  void Close() {
    if (env_) mdb_env_close(env_);
    env_ = nullptr;
  }

  std::mutex mu;
  std::string self_address;  // the manager's own address (its parity holder's)

  gen::RegisterReply Register(const std::string& id, const std::string& address,
                              int64_t incarnation, const std::string& role_in,
                              const std::string& replace, bool has_data) {
    std::lock_guard<std::mutex> l(mu);
    if (shutting_down_) Throw(ErrorCode::UNAVAILABLE, "cluster is shutting down", "manager");
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
      for (auto& sh : shards_) {
        if (sh.owner == id) ++sh.epoch;
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
      Persist();
    } else if (std::string victim = Victim(role, address, replace, has_data, id); !victim.empty()) {
      rebuild = TakeOver(victim, id, address, incarnation, role);
      Persist();
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
                   DataWorkers(), opts_.expected_workers);
      MaybeForm();
      Persist();
    }
    gen::RegisterReply r;
    r.shard_map = MapLocked();
    r.heartbeat_ms = opts_.heartbeat_ms;
    r.rebuild = rebuild;
    return r;
  }

  gen::ShardMap Heartbeat(const std::string& id, int64_t incarnation, const std::string& progress) {
    std::lock_guard<std::mutex> l(mu);
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
    if (progress.empty() && slot >= 0 && rebuilding_.count(slot)) {
      rebuilding_.erase(slot);
      it->second.rebuild_pending = false;
      ++version_;
      spdlog::info("manager: node {} (slot {}) recovered and serves again", id, slot);
      Persist();
    }
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
    s.expected_workers = opts_.expected_workers;
    s.manager_address = opts_.listen;
    return s;
  }

  // Marks nodes whose heartbeats stopped as down.
  void CheckHeartbeats() {
    std::lock_guard<std::mutex> l(mu);
    auto now = Clock::now();
    for (auto& [id, n] : nodes_) {
      auto age = std::chrono::duration_cast<std::chrono::milliseconds>(now - n.last_hb).count();
      if (n.up && age > opts_.heartbeat_timeout_ms) {
        n.up = false;
        spdlog::warn("manager: node {} at {} is down (no heartbeat for {} ms)", id, n.address, age);
      }
    }
  }

  // A completed shutdown that kept the data: the next start serves again.
  void EndShutdown() {
    std::lock_guard<std::mutex> l(mu);
    shutting_down_ = false;
    Persist();
  }

  // Enters shutdown; returns the workers to tell.
  std::vector<std::pair<std::string, std::string>> BeginShutdown() {
    std::lock_guard<std::mutex> l(mu);
    shutting_down_ = true;
    ++version_;
    Persist();  // a manager restarted mid-shutdown stays shutting down
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

 private:
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

  static std::string SpecText(const ProtectionSpec& p) {
    if (p.scheme == "rs") return "rs:" + std::to_string(p.k) + "+" + std::to_string(p.m);
    return p.scheme;
  }

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
    for (auto& sh : shards_) {
      if (sh.owner == old) {
        sh.owner = id;
        ++sh.epoch;
      }
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
    if (formed_ || DataWorkers() < opts_.expected_workers) return;
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
    for (int s = 0; s < num_shards_; ++s) {
      shards_[s].owner = order[s % order.size()].second;
      shards_[s].epoch = 1;
    }
    formed_ = true;
    spdlog::info("manager: cluster formed: {} shards over {} workers", num_shards_, order.size());
  }

  gen::ShardMap MapLocked() const {
    ShardMap m;
    m.version = version_;
    m.num_shards = num_shards_;
    m.formed = formed_;
    m.state = shutting_down_ ? "shutting_down" : formed_ ? "serving" : "forming";
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
      if (id == kManagerHolder) return self_address;
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
    m.protection.frozen = !rebuilding_.empty();
    m.protection.rebuilding.assign(rebuilding_.begin(), rebuilding_.end());
    return ToGen(m);
  }

  void Load(const nlohmann::json& j) {
    version_ = j.value("version", int64_t{0});
    num_shards_ = j.value("num_shards", 0);
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
  }

  // Writes the whole state in one LMDB transaction (flushed before returning).
  void Persist() {
    nlohmann::json j;
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
    j["protection"] = SpecText(spec_);
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
    std::string body = j.dump();
    MDB_txn* t;
    int rc = mdb_txn_begin(env_, nullptr, 0, &t);
    if (rc == 0) {
      MDB_val k{std::strlen(kStateKey), const_cast<char*>(kStateKey)};
      MDB_val v{body.size(), body.data()};
      rc = mdb_put(t, dbi_, &k, &v, 0);
      rc = rc == 0 ? mdb_txn_commit(t) : (mdb_txn_abort(t), rc);
    }
    if (rc != 0) {
      spdlog::error("manager: persisting cluster state failed: {}", mdb_strerror(rc));
      Throw(ErrorCode::INTERNAL, std::string("persisting state: ") + mdb_strerror(rc), "manager");
    }
  }

  ManagerOptions opts_;
  ProtectionSpec spec_;
  std::string stored_scheme_;
  std::vector<std::string> slot_nodes_;  // data slot -> node id
  std::vector<int64_t> slot_epochs_;
  std::vector<std::string> holder_nodes_;  // parity row -> node id ("manager": this process)
  std::set<int> rebuilding_;
  std::set<std::string> retired_;  // node ids replaced by another node: fenced for good
  int next_order_ = 0;
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
  int64_t version_ = 0;
  int num_shards_ = 0;
  bool formed_ = false;
  bool shutting_down_ = false;
  std::map<std::string, Node> nodes_;
  std::vector<Shard> shards_;
};

class Handler : public gen::ManagerServiceIf {
 public:
  Handler(ManagerState* st, const ManagerOptions& o, std::atomic<bool>* done,
          std::atomic<bool>* cleanup)
      : st_(st), opts_(o), done_(done), cleanup_(cleanup) {}

  void Register(gen::RegisterReply& r, const std::string& token, const std::string& node_id,
                const std::string& address, int64_t incarnation, const std::string& role,
                const std::string& replace, bool has_data) override {
    Auth(token);
    r = st_->Register(node_id, address, incarnation, role, replace, has_data);
  }
  void Heartbeat(gen::ShardMap& r, const std::string& token, const std::string& node_id,
                 int64_t incarnation, const std::string& progress) override {
    Auth(token);
    r = st_->Heartbeat(node_id, incarnation, progress);
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
  std::shared_ptr<ParityHolder> holder;
  void GetShardMap(gen::ShardMap& r, const std::string& token) override {
    Auth(token);
    r = st_->Map();
  }
  void Status(gen::ClusterStatus& r, const std::string& token) override {
    Auth(token);
    r = st_->StatusReply();
  }
  void Shutdown(const std::string& token, bool cleanup) override {
    Auth(token);
    std::lock_guard<std::mutex> once(shutdown_mu_);
    if (done_->load()) return;
    auto workers = st_->BeginShutdown();
    spdlog::info("manager: shutdown requested{}; telling {} workers",
                 cleanup ? " with cleanup" : "", workers.size());
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
            (*lease)->Shutdown(opts_.token, cleanup);
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
    cleanup_->store(cleanup);
    done_->store(true);
    if (!failures.empty()) {
      Throw(ErrorCode::UNAVAILABLE,
            "shutdown finished, but these workers did not answer:" + failures, "manager");
    }
  }

 private:
  void Auth(const std::string& token) const {
    if (token != opts_.token)
      Throw(ErrorCode::UNAUTHENTICATED, "wrong or missing cluster token", "manager");
  }
  ParityHolder* Holder() const {
    if (!holder) {
      Throw(ErrorCode::UNAVAILABLE, "the manager holds no parity (protection is not xor)",
            "manager");
    }
    return holder.get();
  }
  ManagerState* st_;
  ManagerOptions opts_;
  std::atomic<bool>* done_;
  std::atomic<bool>* cleanup_;
  std::mutex shutdown_mu_;
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

Status RunManager(const ManagerOptions& options, std::atomic<bool>* stop) {
  if (options.num_shards < 1 || options.num_shards > kMaxShards) {
    return Status::InvalidArgument("--shards must be 1 to " + std::to_string(kMaxShards));
  }
  if (options.expected_workers < 1) return Status::InvalidArgument("--workers must be at least 1");
  TESSERA_ASSIGN_OR_RETURN(rpc::Endpoint ep, rpc::Endpoint::Parse(options.listen));
  TESSERA_ASSIGN_OR_RETURN(ProtectionSpec spec,
                           ParseProtection(options.protection, options.expected_workers));
  ManagerOptions opts = options;
  if (spec.scheme == "rs") opts.expected_workers = spec.k;
  ManagerState state;
  TESSERA_RETURN_IF_ERROR(state.Open(opts, spec));
  std::atomic<bool> done{false}, cleanup{false};
  auto handler = std::make_shared<Handler>(&state, opts, &done, &cleanup);
  if (spec.scheme == "xor") {
    auto h = ParityHolder::Open(options.data_dir + "/parity", "xor", spec.k, 1, 0, "manager");
    if (!h.ok()) {
      state.Close();
      return h.status();
    }
    handler->holder = std::move(h).value();
  }
  auto processor = std::make_shared<gen::ManagerServiceProcessor>(handler);
  auto server = rpc::Server::Start(ep, processor);
  if (!server.ok()) {
    state.Close();
    return server.status();
  }
  {
    std::lock_guard<std::mutex> l(state.mu);
    state.self_address = ep.host + ":" + std::to_string((*server)->port());
  }
  spdlog::info("manager: serving on {} (data {}, {} shards, expecting {} workers, protection {})",
               options.listen, options.data_dir, options.num_shards, opts.expected_workers,
               options.protection);

  std::unique_ptr<httplib::Server> http;
  std::thread http_thread;
  if (!options.http.empty()) {
    auto hep = rpc::Endpoint::Parse(options.http);
    if (!hep.ok()) return hep.status();
    http = std::make_unique<httplib::Server>();
    http->Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
    http->Get("/status", [&state, &options](const httplib::Request&, httplib::Response& res) {
      ClusterStatus s = FromGen(state.StatusReply());
      s.manager_address = options.listen;
      res.set_content(StatusJson(s) + "\n", "application/json");
    });
    if (!http->bind_to_port(hep->host.c_str(), hep->port)) {
      return Status::Unavailable("cannot listen for HTTP on " + options.http);
    }
    http_thread = std::thread([&http] { http->listen_after_bind(); });
    spdlog::info("manager: HTTP status on http://{}/status", options.http);
  }

  while (!done.load() && !stop->load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    state.CheckHeartbeats();
  }
  // Let the Shutdown reply reach the caller before the listener closes.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  if (http) {
    http->stop();
    http_thread.join();
  }
  (*server)->Stop();
  handler->holder.reset();
  if (done.load() && !cleanup.load()) {
    try {
      state.EndShutdown();
    } catch (const std::exception& e) {
      spdlog::error("manager: recording the end of shutdown failed: {}", e.what());
    }
  }
  state.Close();
  if (done.load() && cleanup.load()) {
    std::error_code ec;
    std::filesystem::remove_all(options.data_dir, ec);
    if (ec) spdlog::warn("manager: removing {}: {}", options.data_dir, ec.message());
  }
  spdlog::info("manager: exited cleanly");
  return Status::Ok();
}

}  // namespace tessera::orchestrator
