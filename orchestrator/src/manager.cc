#include "tessera/orchestrator/manager.h"

#include <httplib.h>
#include <lmdb.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "convert.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {
namespace {

using Clock = std::chrono::steady_clock;
using gen::ErrorCode;

constexpr const char* kStateKey = "state";

// Membership and shard map, persisted as one JSON record in LMDB.
class ManagerState {
 public:
  Status Open(const ManagerOptions& o) {
    opts_ = o;
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

  gen::RegisterReply Register(const std::string& id, const std::string& address,
                              int64_t incarnation) {
    std::lock_guard<std::mutex> l(mu);
    if (shutting_down_) Throw(ErrorCode::UNAVAILABLE, "cluster is shutting down", "manager");
    if (id.empty() || id.size() > 128) {
      Throw(ErrorCode::INVALID_ARGUMENT, "node id must be 1 to 128 bytes", "manager");
    }
    auto [err, ep] = CheckAddress(address);
    if (!err.empty()) Throw(ErrorCode::INVALID_ARGUMENT, err, "manager");
    auto it = nodes_.find(id);
    if (it != nodes_.end() && it->second.incarnation == incarnation &&
        it->second.address == address) {
      it->second.last_hb = Clock::now();  // a retried registration: nothing changes
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
      for (auto& s : shards_) {
        if (s.owner == id) ++s.epoch;
      }
      ++version_;
      spdlog::info("manager: node {} re-registered at {} (incarnation {}), epochs bumped", id,
                   address, incarnation);
      Persist();
    } else {
      Node n;
      n.address = address;
      n.incarnation = incarnation;
      n.last_hb = Clock::now();
      n.up = true;
      n.order = static_cast<int>(nodes_.size());
      nodes_[id] = n;
      ++version_;
      spdlog::info("manager: node {} registered at {} ({} of {} expected)", id, address,
                   nodes_.size(), opts_.expected_workers);
      if (!formed_ && static_cast<int>(nodes_.size()) >= opts_.expected_workers) Form();
      Persist();
    }
    gen::RegisterReply r;
    r.shard_map = MapLocked();
    r.heartbeat_ms = opts_.heartbeat_ms;
    return r;
  }

  gen::ShardMap Heartbeat(const std::string& id, int64_t incarnation) {
    std::lock_guard<std::mutex> l(mu);
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
      g.role = "worker";
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
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [id, n] : nodes_) out.emplace_back(id, n.address);
    return out;
  }

 private:
  struct Node {
    std::string address;
    int64_t incarnation = 0;
    Clock::time_point last_hb;
    bool up = false;
    int order = 0;
  };
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
    for (const auto& [id, n] : nodes_) order.emplace_back(n.order, id);
    std::sort(order.begin(), order.end());
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
      node.up = true;
      nodes_[n.value("id", "")] = node;
    }
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
      j["nodes"].push_back(
          {{"id", id}, {"address", n.address}, {"incarnation", n.incarnation}, {"order", n.order}});
    }
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
                const std::string& address, int64_t incarnation) override {
    Auth(token);
    r = st_->Register(node_id, address, incarnation);
  }
  void Heartbeat(gen::ShardMap& r, const std::string& token, const std::string& node_id,
                 int64_t incarnation) override {
    Auth(token);
    r = st_->Heartbeat(node_id, incarnation);
  }
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
  ManagerState* st_;
  ManagerOptions opts_;
  std::atomic<bool>* done_;
  std::atomic<bool>* cleanup_;
  std::mutex shutdown_mu_;
};

}  // namespace

Status RunManager(const ManagerOptions& options, std::atomic<bool>* stop) {
  if (options.num_shards < 1 || options.num_shards > kMaxShards) {
    return Status::InvalidArgument("--shards must be 1 to " + std::to_string(kMaxShards));
  }
  if (options.expected_workers < 1) return Status::InvalidArgument("--workers must be at least 1");
  TESSERA_ASSIGN_OR_RETURN(rpc::Endpoint ep, rpc::Endpoint::Parse(options.listen));
  ManagerState state;
  TESSERA_RETURN_IF_ERROR(state.Open(options));
  std::atomic<bool> done{false}, cleanup{false};
  auto handler = std::make_shared<Handler>(&state, options, &done, &cleanup);
  auto processor = std::make_shared<gen::ManagerServiceProcessor>(handler);
  auto server = rpc::Server::Start(ep, processor);
  if (!server.ok()) {
    state.Close();
    return server.status();
  }
  spdlog::info("manager: serving on {} (data {}, {} shards, expecting {} workers)", options.listen,
               options.data_dir, options.num_shards, options.expected_workers);

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
