#include "tessera/orchestrator/worker.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <shared_mutex>
#include <thread>

#include <sys/file.h>

#include "convert.h"
#include "manager_link.h"
#include "page_stream.h"
#include "parity_holder.h"
#include "protector.h"
#include "tessera/engine/db.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {
namespace {

using gen::ErrorCode;

Result<std::string> LoadOrCreateNodeId(const std::string& dir) {
  std::string path = dir + "/node_id";
  std::ifstream in(path);
  std::string id;
  if (in && std::getline(in, id) && !id.empty()) return id;
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "w-%08x%08x", rd(), rd());
  id = buf;
  TESSERA_RETURN_IF_ERROR(WriteFileDurably(path, id + "\n"));
  return id;
}

// Each start of a node is a new incarnation, strictly greater than every earlier one of the same
// data directory (kept in DATA/incarnation, written before registering), so the manager can
// refuse a late registration from a dead process (TLA+ finding 1, tla/README.md).
Result<int64_t> NextIncarnation(const std::string& dir) {
  std::string path = dir + "/incarnation";
  int64_t last = 0;
  {
    std::ifstream in(path);
    if (in) in >> last;
  }
  int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  int64_t next = std::max(last + 1, now_ms);
  TESSERA_RETURN_IF_ERROR(WriteFileDurably(path, std::to_string(next) + "\n"));
  return next;
}

class WorkerState {
 public:
  WorkerOptions opts;
  std::string node_id;
  int64_t incarnation = 0;
  std::string address;
  std::unique_ptr<engine::Db> db;
  std::atomic<engine::Db*> dbp{nullptr};  // set once the engine is recovered and protected
  std::unique_ptr<Protector> protector;
  std::mutex holder_mu;
  std::shared_ptr<ParityHolder> holder;  // role parity, once the map names this node

  engine::Db* Db() const {
    engine::Db* d = dbp.load(std::memory_order_acquire);
    if (!d) Throw(ErrorCode::UNAVAILABLE, "worker is recovering its data", node_id);
    return d;
  }
  std::shared_ptr<ParityHolder> Holder() {
    std::lock_guard<std::mutex> l(holder_mu);
    if (!holder) Throw(ErrorCode::UNAVAILABLE, "this node is not a parity holder (yet)", node_id);
    return holder;
  }

  std::atomic<bool> registered{false};
  std::atomic<bool> shutting_down{false};
  std::atomic<bool> exit_requested{false};
  std::atomic<bool> cleanup{false};
  std::atomic<bool> drain_failed{false};
  std::atomic<int> in_flight{0};

  // Shard ownership as learned from the manager: epoch if owned, 0 otherwise.
  std::shared_mutex map_mu;
  std::vector<int64_t> owned_epoch;
  int num_shards = 0;
  bool formed = false;

  void ApplyMap(const ShardMap& m) {
    std::unique_lock<std::shared_mutex> l(map_mu);
    num_shards = m.num_shards;
    formed = m.formed;
    owned_epoch.assign(m.num_shards, 0);
    for (const auto& s : m.shards) {
      if (s.owner == node_id && s.shard >= 0 && s.shard < m.num_shards) {
        owned_epoch[s.shard] = s.epoch;
      }
    }
  }

  // Throws the right TesseraError unless this worker serves `shard` at `epoch` now.
  void CheckShard(int shard, int64_t epoch) {
    if (shutting_down.load()) Throw(ErrorCode::UNAVAILABLE, "worker is shutting down", node_id);
    if (!registered.load()) Throw(ErrorCode::UNAVAILABLE, "worker has not registered yet", node_id);
    if (!dbp.load(std::memory_order_acquire)) {
      Throw(ErrorCode::UNAVAILABLE, "worker is recovering its data", node_id);
    }
    std::shared_lock<std::shared_mutex> l(map_mu);
    if (!formed) {
      Throw(ErrorCode::UNAVAILABLE, "worker has not learned the formed shard map yet", node_id);
    }
    if (shard < 0 || shard >= num_shards) {
      Throw(ErrorCode::INVALID_ARGUMENT,
            "shard " + std::to_string(shard) + " out of range 0.." + std::to_string(num_shards - 1),
            node_id);
    }
    int64_t mine = owned_epoch[shard];
    if (mine == 0)
      Throw(ErrorCode::NOT_OWNER, "shard " + std::to_string(shard) + " is not here", node_id);
    if (epoch < mine) {
      Throw(ErrorCode::STALE_EPOCH,
            "shard " + std::to_string(shard) + " epoch " + std::to_string(epoch) +
                " is stale (current " + std::to_string(mine) + ")",
            node_id);
    }
    if (epoch > mine) {
      Throw(ErrorCode::UNAVAILABLE,
            "shard " + std::to_string(shard) + " epoch " + std::to_string(epoch) +
                " not yet known here (have " + std::to_string(mine) + ")",
            node_id);
    }
  }
};

// Counts a request in flight for the drain at shutdown.
class InFlight {
 public:
  explicit InFlight(WorkerState* s) : s_(s) { s_->in_flight.fetch_add(1); }
  ~InFlight() { s_->in_flight.fetch_sub(1); }

 private:
  WorkerState* s_;
};

class Handler : public gen::WorkerServiceIf {
 public:
  explicit Handler(WorkerState* s) : s_(s) {}

  void Get(gen::GetReply& r, const std::string& token, int32_t shard, int64_t epoch,
           const std::string& key) override {
    InFlight f(s_);
    Auth(token);
    s_->CheckShard(shard, epoch);
    std::string v;
    // Only what every parity holder has acknowledged (a commit may await it; also right after
    // protection is turned off). Without a hidden commit this is Db::Get.
    Status st = s_->protector->VisibleGet(s_->Db(), ShardTree(shard), key, &v);
    if (st.ok()) {
      r.found = true;
      r.value = std::move(v);
    } else if (st.IsNotFound()) {
      r.found = false;
    } else {
      Fail(st);
    }
  }

  void Write(const std::string& token, const std::vector<gen::Op>& ops, bool sync) override {
    InFlight f(s_);
    Auth(token);
    for (const auto& op : ops) {
      s_->CheckShard(op.shard, op.epoch);
      if (op.key.empty() || op.key.size() > kMaxKeyBytes) {
        Throw(ErrorCode::INVALID_ARGUMENT,
              "key of " + std::to_string(op.key.size()) + " bytes (1 to 1024 allowed)",
              s_->node_id);
      }
      if (op.value.size() > kMaxValueBytes) {
        Throw(ErrorCode::INVALID_ARGUMENT,
              "value over " + std::to_string(kMaxValueBytes) + " bytes", s_->node_id);
      }
    }
    if (s_->protector->enabled()) {  // it builds the engine batch itself, in seq order
      s_->protector->Write(s_->Db(), ops, sync || s_->opts.sync);
      return;
    }
    if (Status poison = s_->protector->Poisoned(); !poison.ok()) Fail(poison);
    engine::WriteBatch b;
    AddOps(ops, &b);
    Status st = s_->Db()->Write(b, engine::WriteOptions{sync || s_->opts.sync});
    if (!st.ok()) Fail(st);
  }

  void Scan(gen::ScanReply& r, const std::string& token, int32_t shard, int64_t epoch,
            const std::string& start, const std::string& prefix, int32_t limit) override {
    InFlight f(s_);
    Auth(token);
    s_->CheckShard(shard, epoch);
    if (limit < 1 || limit > kMaxScanLimit) {
      Throw(ErrorCode::INVALID_ARGUMENT, "scan limit must be 1 to " + std::to_string(kMaxScanLimit),
            s_->node_id);
    }
    auto txn = s_->protector->BeginVisibleRead(s_->Db());
    if (!txn.ok()) Fail(txn.status());
    auto cur = (*txn)->NewCursor(ShardTree(shard));
    if (!cur.ok()) {
      if (cur.status().IsNotFound()) return;  // no key was ever written to this shard
      Fail(cur.status());
    }
    std::string from = std::max(start, prefix);
    Status st = prefix.empty() ? (*cur)->Seek(from) : (*cur)->SeekPrefix(prefix);
    if (st.ok() && !prefix.empty() && from != prefix) st = (*cur)->Seek(from);
    for (; st.ok() && (*cur)->Valid(); st = (*cur)->Next()) {
      if (!prefix.empty() && (*cur)->key().substr(0, prefix.size()) != prefix) break;
      if (static_cast<int>(r.items.size()) == limit) {
        r.next_start.assign((*cur)->key());
        break;
      }
      gen::KV kv;
      kv.key.assign((*cur)->key());
      kv.value.assign((*cur)->value());
      r.items.push_back(std::move(kv));
    }
    if (!st.ok()) Fail(st);
  }

  void Ping(std::string& r, const std::string& token) override {
    Auth(token);
    r = s_->node_id;
  }

  // Served by Processor below without gathering the pages into `r`; this is the generated
  // interface's form of the same answer.
  void ReadImage(gen::PageRun& r, const std::string& token, int64_t gen, int64_t first,
                 int32_t count) override {
    Protector::ImageView v = ReadImageView(token, gen, first, count);
    r.present = std::move(v.present);
    r.pages = ConcatPages(v.pages, v.page_size);
  }

  Protector::ImageView ReadImageView(const std::string& token, int64_t gen, int64_t first,
                                     int32_t count) {
    Auth(token);
    return s_->protector->ReadImage(s_->dbp.load(), gen, first, count);
  }

  void Progress(std::string& r, const std::string& token) override {
    Auth(token);
    r = s_->protector->Progress();
  }

  // ParityService: served when this node is a parity holder.
  int64_t AppendTail(const std::string& token, int32_t slot, int64_t epoch,
                     const std::vector<gen::TailEntry>& entries, bool sync) override {
    Auth(token);
    return s_->Holder()->AppendTail(slot, epoch, entries, sync);
  }
  void StageDelta(const std::string& token, int32_t slot, int64_t epoch, int64_t to_gen,
                  const std::vector<gen::PageDelta>& pages, int64_t from_gen) override {
    Auth(token);
    s_->Holder()->StageDelta(slot, epoch, from_gen, to_gen, pages);
  }
  void CommitGeneration(gen::GenRecord& r, const std::string& token, int32_t slot, int64_t epoch,
                        int64_t from_gen, int64_t to_gen, const std::string& descriptor,
                        int64_t covered_seq, int64_t last_page, bool prepare_only) override {
    Auth(token);
    r = s_->Holder()->CommitGeneration(slot, epoch, from_gen, to_gen, descriptor, covered_seq,
                                       last_page, prepare_only);
  }
  void CommitPrepared(gen::GenRecord& r, const std::string& token, int32_t slot,
                      int64_t to_gen) override {
    Auth(token);
    r = s_->Holder()->CommitPrepared(slot, to_gen);
  }
  void GetRecord(gen::GenRecord& r, const std::string& token, int32_t slot,
                 int64_t epoch) override {
    Auth(token);
    r = s_->Holder()->GetRecord(slot, epoch);
  }
  void ReadTail(std::vector<gen::TailEntry>& r, const std::string& token, int32_t slot,
                int64_t epoch, int64_t after_seq, int32_t max_entries) override {
    Auth(token);
    r = s_->Holder()->ReadTail(slot, epoch, after_seq, max_entries);
  }
  void ReadParity(gen::ParityPages& r, const std::string& token, int64_t first_pgno,
                  int32_t count) override {
    Auth(token);
    r = s_->Holder()->ReadParity(first_pgno, count);
  }
  // The holder, for a caller with `token` (Processor's ReadParity).
  std::shared_ptr<ParityHolder> HolderFor(const std::string& token) {
    Auth(token);
    return s_->Holder();
  }

  void Shutdown(const std::string& token, bool cleanup) override {
    Auth(token);
    spdlog::info("worker {}: shutdown requested{}", s_->node_id, cleanup ? " with cleanup" : "");
    s_->shutting_down.store(true);
    // Drain: wait for requests already inside the worker (bounded).
    for (int i = 0; i < 1000 && s_->in_flight.load() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (s_->in_flight.load() > 0) {
      s_->drain_failed.store(true);  // exit once they finish, but report failure now (finding 6)
      // Never report a clean shutdown while an acknowledged write could still be on its way
      // (TLA+ finding 3): the manager reports this worker as failed instead.
      Throw(ErrorCode::UNAVAILABLE,
            std::to_string(s_->in_flight.load()) + " requests still in flight after 10 s",
            s_->node_id);
    }
    if (engine::Db* db = s_->dbp.load()) {
      if (s_->protector->enabled()) {
        // Everything this worker holds is protected before it goes (the tails empty out).
        Status ps = s_->protector->Advance(db, true);
        if (!ps.ok()) spdlog::warn("worker {}: final protection: {}", s_->node_id, ps.message());
      }
      Status st = db->Sync();
      if (!st.ok()) Fail(st);
    }
    s_->cleanup.store(cleanup);
    s_->exit_requested.store(true);
  }

 private:
  void Auth(const std::string& token) const {
    if (token != s_->opts.token) {
      Throw(ErrorCode::UNAUTHENTICATED, "wrong or missing cluster token", s_->node_id);
    }
  }
  [[noreturn]] void Fail(const Status& st) const {
    Throw(st.IsInvalidArgument() ? ErrorCode::INVALID_ARGUMENT : ErrorCode::INTERNAL, st.ToString(),
          s_->node_id);
  }
  WorkerState* s_;
};

// The generated processor, except that the pages of ReadImage (from the pinned snapshot) and
// ReadParity (from the holder's map) go into the answer's frame from where they lie
// (page_stream.h): a rebuild reads every page of the survivors and the parity this way.
class Processor : public gen::WorkerServiceProcessor {
 public:
  explicit Processor(const std::shared_ptr<Handler>& h) : WorkerServiceProcessor(h), h_(h) {}

 protected:
  bool dispatchCall(apache::thrift::protocol::TProtocol* iprot,
                    apache::thrift::protocol::TProtocol* oprot, const std::string& fname,
                    int32_t seqid, void* ctx) override {
    if (fname == "ReadImage") {
      ServeCall<gen::WorkerService_ReadImage_args>(
          iprot, oprot, fname, seqid,
          [&](const auto& a) { return h_->ReadImageView(a.token, a.gen, a.first_pgno, a.count); },
          [&](const Protector::ImageView& v) {
            WritePageRunReply(oprot, fname, seqid, v.present, v.pages, v.page_size);
          });
    } else if (fname == "ReadParity") {
      ServeReadParity(iprot, oprot, fname, seqid,
                      [&](const std::string& token) { return h_->HolderFor(token); });
    } else {
      return WorkerServiceProcessor::dispatchCall(iprot, oprot, fname, seqid, ctx);
    }
    return true;
  }

 private:
  std::shared_ptr<Handler> h_;
};

}  // namespace

Status RunWorker(const WorkerOptions& options, std::atomic<bool>* stop) {
  KeepLargeBuffersInHeap();
  WorkerState s;
  s.opts = options;
  if (options.role != "worker" && options.role != "parity") {
    return Status::InvalidArgument("--role must be 'worker' or 'parity', not '" + options.role +
                                   "'");
  }
  const bool parity_role = options.role == "parity";
  TESSERA_ASSIGN_OR_RETURN(rpc::Endpoint ep, rpc::Endpoint::Parse(options.listen));
  TESSERA_ASSIGN_OR_RETURN(auto managers, ManagerLink::ParseList(options.manager));
  std::error_code ec;
  const bool had_dir = std::filesystem::exists(options.data_dir + "/node_id");
  TESSERA_ASSIGN_OR_RETURN(DataDirLock dir_lock, DataDirLock::Acquire(options.data_dir));
  const bool has_data =
      had_dir && (parity_role || std::filesystem::exists(options.data_dir + "/data.tdb"));
  TESSERA_ASSIGN_OR_RETURN(s.node_id, LoadOrCreateNodeId(options.data_dir));
  TESSERA_ASSIGN_OR_RETURN(s.incarnation, NextIncarnation(options.data_dir));
  ProtectorOptions po;
  po.data_dir = options.data_dir;
  po.token = options.token;
  po.node_id = s.node_id;
  po.min_holders = options.min_holders;
  po.protect_every = options.protect_every;
  po.protect_interval_ms = options.protect_interval_ms;
  po.poll = std::chrono::microseconds(options.poll_us);
  s.protector = std::make_unique<Protector>(po);

  auto handler = std::make_shared<Handler>(&s);
  auto server = rpc::Server::Start(ep, std::make_shared<Processor>(handler),
                                   rpc::ServerOptions{std::chrono::microseconds(options.poll_us)});
  if (!server.ok()) return server.status();
  s.address = ep.host + ":" + std::to_string((*server)->port());
  spdlog::info("worker {}: serving on {} (data {}, incarnation {})", s.node_id, s.address,
               options.data_dir, s.incarnation);

  ManagerLink link(std::move(managers),
                   rpc::Timeouts{std::chrono::milliseconds(1000), std::chrono::milliseconds(5000)});
  int heartbeat_ms = 300;
  std::atomic<bool> quit{false};  // recovery and advance threads stop
  std::thread recovery;
  std::thread advancer;
  Status recovery_failed;
  std::mutex recovery_mu;
  auto start_recovery = [&](bool rebuild) {
    recovery = std::thread([&, rebuild] {
      auto db = s.protector->Recover(rebuild, quit);
      if (!db.ok()) {
        std::lock_guard<std::mutex> l(recovery_mu);
        recovery_failed = db.status();
        return;
      }
      s.db = std::move(db).value();
      s.dbp.store(s.db.get(), std::memory_order_release);
      spdlog::info("worker {}: serving{}", s.node_id, s.protector->enabled() ? " (protected)" : "");
      advancer = std::thread([&] { s.protector->AdvanceLoop(s.db.get(), quit); });
    });
  };
  auto open_holder = [&](const ShardMap& m) {
    if (!parity_role) return Status::Ok();
    const Protection& p = m.protection;
    for (size_t j = 0; j < p.holder_nodes.size(); ++j) {
      if (p.holder_nodes[j] != s.node_id) continue;
      std::lock_guard<std::mutex> l(s.holder_mu);
      if (s.holder && s.holder->row() == static_cast<int>(j)) return Status::Ok();
      TESSERA_ASSIGN_OR_RETURN(auto h,
                               ParityHolder::Open(options.data_dir + "/parity", p.scheme, p.k, p.m,
                                                  static_cast<int>(j), s.node_id));
      s.holder = std::move(h);
    }
    return Status::Ok();
  };
  auto backoff = std::chrono::milliseconds(50);
  bool fenced = false;
  Status refused;  // the manager refused the token or the registration: exit with it
  bool saw_shutdown = false;
  auto last_contact = std::chrono::steady_clock::now();
  std::string last_error;
  // A worker whose drain ran out (its Shutdown failed) leaves once the stragglers are done.
  auto drained_after_failure = [&s] { return s.drain_failed.load() && s.in_flight.load() == 0; };
  while (!stop->load() && !s.exit_requested.load() && !drained_after_failure()) {
    Status st;
    {
      try {
        if (!s.registered.load()) {
          gen::RegisterReply r;
          st = link.Call(
              [&](auto& lease) {
                lease->Register(r, options.token, s.node_id, s.address, s.incarnation, options.role,
                                options.replace, has_data);
              },
              std::chrono::milliseconds(2000));
          if (!st.ok()) throw std::runtime_error(st.message());
          ShardMap map = FromGen(r.shard_map);
          s.protector->ApplyMap(map);  // first: a shard is never served before its protection
          s.ApplyMap(map);
          heartbeat_ms = std::max(50, r.heartbeat_ms);
          s.registered.store(true);
          spdlog::info("worker {}: registered with manager {} as {} (map version {}){}", s.node_id,
                       link.Current(), options.role, r.shard_map.version,
                       r.rebuild ? "; its data was lost: rebuilding from parity" : "");
          if (parity_role) {
            Status hs = open_holder(map);
            if (!hs.ok()) return hs;
          } else if (!recovery.joinable()) {
            start_recovery(r.rebuild);
          }
        } else {
          gen::ShardMap m;
          std::string progress = s.protector->Progress();
          if (!parity_role && !s.dbp.load() && progress.empty())
            progress = R"({"phase":"starting"})";
          st = link.Call(
              [&](auto& lease) {
                lease->Heartbeat(m, options.token, s.node_id, s.incarnation, progress);
              },
              std::chrono::milliseconds(2000));
          if (!st.ok()) throw std::runtime_error(st.message());
          ShardMap map = FromGen(m);
          s.protector->ApplyMap(map);
          s.ApplyMap(map);
          if (parity_role) {
            Status hs = open_holder(map);
            if (!hs.ok()) spdlog::error("worker {}: parity holder: {}", s.node_id, hs.message());
          }
          if (m.state == "shutting_down") saw_shutdown = true;
        }
        backoff = std::chrono::milliseconds(50);
        last_error.clear();
        last_contact = std::chrono::steady_clock::now();
      } catch (const gen::TesseraError& e) {
        st = FromError(e);
        if (e.code == ErrorCode::STALE_EPOCH) {
          spdlog::error("worker {}: fenced by the manager: {}", s.node_id, e.message);
          fenced = true;
          break;
        }
        // Refusals no retry can change end the worker, through the shutdown below: its
        // threads are running (returning from here with them joinable aborted the process).
        if (e.code == ErrorCode::UNAUTHENTICATED) {
          refused = Status::InvalidArgument("manager refused the cluster token: " + e.message);
          break;
        }
        if (e.code == ErrorCode::INVALID_ARGUMENT && !s.registered.load()) {
          // The manager refused this worker's settings (--replace, --role, its address).
          refused = Status::InvalidArgument("manager refused the registration: " + e.message);
          break;
        }
        if (e.code == ErrorCode::UNAVAILABLE &&
            e.message.find("unknown node") != std::string::npos) {
          s.registered.store(false);
        }
        if (e.code == ErrorCode::UNAVAILABLE &&
            e.message.find("cluster is shutting down") != std::string::npos) {
          // The cluster shut down without reaching this worker (it was down or not yet
          // registered): flush and exit rather than retry forever (TLA+ finding 4).
          spdlog::info("worker {}: the cluster is shutting down; exiting", s.node_id);
          break;
        }
      } catch (const std::exception& e) {
        st = Status::Unavailable(e.what());
      }
    }
    {
      std::lock_guard<std::mutex> l(recovery_mu);
      if (!recovery_failed.ok()) break;
    }
    if (!st.ok()) {
      if (saw_shutdown && st.IsUnavailable() &&
          std::chrono::steady_clock::now() - last_contact > std::chrono::seconds(3)) {
        // The manager was shutting down and is gone now: nobody will tell this worker anything
        // more, so flush and exit (TLA+ finding 4).
        spdlog::info("worker {}: the manager shut down; exiting", s.node_id);
        break;
      }
      if (st.message() != last_error) {
        spdlog::warn("worker {}: manager {}: {}", s.node_id, link.Describe(), st.message());
        last_error = st.message();
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
      continue;
    }
    for (int waited = 0; waited < heartbeat_ms && !stop->load() && !s.exit_requested.load() &&
                         !drained_after_failure();
         waited += 10) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  s.shutting_down.store(true);
  // Give an in-progress Shutdown reply time to reach the manager.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  (*server)->Stop();
  quit.store(true);
  if (recovery.joinable()) recovery.join();
  if (advancer.joinable()) advancer.join();
  s.dbp.store(nullptr);
  s.protector->Close();
  Status sync = s.db ? s.db->Sync() : Status::Ok();
  s.db.reset();
  {
    std::lock_guard<std::mutex> l(s.holder_mu);
    s.holder.reset();
  }
  {
    std::lock_guard<std::mutex> l(recovery_mu);
    if (!recovery_failed.ok()) return recovery_failed.WithContext("recovery");
  }
  if (s.exit_requested.load() && s.cleanup.load()) {
    std::filesystem::remove_all(options.data_dir, ec);
    if (ec) spdlog::warn("worker {}: removing {}: {}", s.node_id, options.data_dir, ec.message());
    spdlog::info("worker {}: data directory {} deleted", s.node_id, options.data_dir);
  }
  spdlog::info("worker {}: exited", s.node_id);
  if (!refused.ok()) return refused;
  if (fenced) return Status::Unavailable("fenced: a newer incarnation of this node registered");
  return sync;
}

}  // namespace tessera::orchestrator
