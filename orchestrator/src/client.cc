#include "tessera/orchestrator/client.h"

#include <spdlog/spdlog.h>

#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "convert.h"
#include "manager_link.h"
#include "tessera/erasure/codec.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {

using gen::ErrorCode;
using Clock = std::chrono::steady_clock;

struct Client::Impl {
  ClientOptions opts;
  std::unique_ptr<ManagerLink> link;
  rpc::ClientPool<gen::WorkerServiceClient> workers;
  std::mutex mu;
  std::shared_ptr<const ShardMap> map;

  explicit Impl(const ClientOptions& o)
      : opts(o), workers(rpc::Timeouts{std::chrono::milliseconds(1000), o.io_timeout}) {}

  // One call to the leading manager (found by the link); transport failures and a missing leader
  // become Unavailable naming the managers.
  template <typename F>
  Status CallManager(F&& f) {
    try {
      return link->Call(f, opts.deadline);
    } catch (const gen::TesseraError& e) {
      return FromError(e);
    }
  }

  Result<std::shared_ptr<const ShardMap>> Map(bool refresh) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (map && !refresh) return map;
    }
    gen::ShardMap m;
    TESSERA_RETURN_IF_ERROR(CallManager([&](auto& lease) { lease->GetShardMap(m, opts.token); }));
    auto fresh = std::make_shared<const ShardMap>(FromGen(m));
    std::lock_guard<std::mutex> l(mu);
    if (!map || fresh->version >= map->version) map = fresh;
    return map;
  }

  // Runs `call(worker, shard_info)` for the shard of `key` until it succeeds, retrying per the
  // policy in client.h.
  template <typename F>
  Status WithShard(int shard_hint, std::string_view key, F&& call) {
    auto deadline = Clock::now() + opts.deadline;
    auto backoff = std::chrono::milliseconds(10);
    bool refresh = false;
    bool refreshed_for_this = false;
    Status last;
    for (;;) {
      auto m = Map(refresh);
      refresh = false;
      if (m.ok()) {
        const ShardMap& sm = **m;
        if (!sm.formed) {
          last = Status::Unavailable("cluster is still forming (manager " + link->Current() + ")");
        } else if (sm.state == "shutting_down") {
          return Status::Unavailable("cluster is shutting down");
        } else {
          int shard = shard_hint >= 0 ? shard_hint : ShardOf(key, sm.num_shards);
          if (shard >= sm.num_shards)
            return Status::InvalidArgument("no shard " + std::to_string(shard));
          const ShardInfo& si = sm.shards[shard];
          auto ep = rpc::Endpoint::Parse(si.address);
          if (!ep.ok()) {
            last = Status::Unavailable("shard " + std::to_string(shard) + " has no address");
          } else {
            auto lease = workers.Get(*ep);
            if (!lease.ok()) {
              last = Status::Unavailable("worker " + si.owner + " at " + si.address + ": " +
                                         lease.status().message());
            } else {
              try {
                call(*lease, si);
                return Status::Ok();
              } catch (const gen::TesseraError& e) {
                if ((e.code == ErrorCode::NOT_OWNER || e.code == ErrorCode::STALE_EPOCH) &&
                    !refreshed_for_this) {
                  refresh = true;
                  refreshed_for_this = true;
                  last = FromError(e);
                  continue;  // retry at once with a fresh map; after that, back off
                }
                if (e.code != ErrorCode::UNAVAILABLE) return FromError(e);
                last = FromError(e);
              } catch (const std::exception& e) {
                lease->Broken();
                last = Status::Unavailable("worker " + si.owner + " at " + si.address + ": " +
                                           e.what());
              }
            }
          }
        }
      } else {
        if (!m.status().IsUnavailable()) return m.status();
        last = m.status();
      }
      if (Clock::now() + backoff > deadline) {
        return Status::Unavailable("gave up after " + std::to_string(opts.deadline.count()) +
                                   " ms: " + last.message());
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
      refresh = true;
      refreshed_for_this = false;
    }
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  TESSERA_ASSIGN_OR_RETURN(auto managers, ManagerLink::ParseList(options.manager));
  impl->link = std::make_unique<ManagerLink>(
      std::move(managers), rpc::Timeouts{std::chrono::milliseconds(1000), options.io_timeout});
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

namespace {

Status CheckKey(std::string_view key) {
  if (key.empty() || key.size() > kMaxKeyBytes) {
    return Status::InvalidArgument("key of " + std::to_string(key.size()) +
                                   " bytes: keys must be 1 to 1024 bytes");
  }
  return Status::Ok();
}

}  // namespace

Status Client::Put(std::string_view key, std::string_view value, bool sync) {
  TESSERA_RETURN_IF_ERROR(CheckKey(key));
  if (value.size() > kMaxValueBytes) return Status::InvalidArgument("value over 16 MiB");
  return impl_->WithShard(-1, key, [&](auto& w, const ShardInfo& si) {
    gen::Op op;
    op.shard = si.shard;
    op.epoch = si.epoch;
    op.put = true;
    op.key.assign(key);
    op.value.assign(value);
    w->Write(impl_->opts.token, {op}, sync);
  });
}

Result<std::optional<std::string>> Client::Get(std::string_view key) {
  TESSERA_RETURN_IF_ERROR(CheckKey(key));
  gen::GetReply r;
  TESSERA_RETURN_IF_ERROR(impl_->WithShard(-1, key, [&](auto& w, const ShardInfo& si) {
    w->Get(r, impl_->opts.token, si.shard, si.epoch, std::string(key));
  }));
  if (!r.found) return std::optional<std::string>();
  return std::optional<std::string>(std::move(r.value));
}

Result<bool> Client::Delete(std::string_view key, bool sync) {
  TESSERA_ASSIGN_OR_RETURN(auto existing, Get(key));
  if (!existing) return false;
  TESSERA_RETURN_IF_ERROR(impl_->WithShard(-1, key, [&](auto& w, const ShardInfo& si) {
    gen::Op op;
    op.shard = si.shard;
    op.epoch = si.epoch;
    op.put = false;
    op.key.assign(key);
    w->Write(impl_->opts.token, {op}, sync);
  }));
  return true;
}

Status Client::PutMany(const std::vector<std::pair<std::string, std::string>>& kvs, bool sync) {
  for (const auto& [k, v] : kvs) TESSERA_RETURN_IF_ERROR(CheckKey(k));
  TESSERA_ASSIGN_OR_RETURN(auto map, impl_->Map(false));
  if (!map->formed) {
    // Fall back to one key at a time, which waits for the cluster to form.
    for (const auto& [k, v] : kvs) TESSERA_RETURN_IF_ERROR(Put(k, v, sync));
    return Status::Ok();
  }
  // Group by shard; each shard's group goes to its owner (retried independently).
  std::map<int, std::vector<const std::pair<std::string, std::string>*>> by_shard;
  for (const auto& kv : kvs) by_shard[ShardOf(kv.first, map->num_shards)].push_back(&kv);
  std::map<std::string, std::vector<int>> by_owner;
  for (const auto& [shard, items] : by_shard) by_owner[map->shards[shard].owner].push_back(shard);
  std::vector<std::future<Status>> futures;
  futures.reserve(by_owner.size());
  for (const auto& [owner, shards] : by_owner) {
    futures.push_back(std::async(std::launch::async, [&, shards = shards]() -> Status {
      for (int shard : shards) {
        const auto& items = by_shard[shard];
        TESSERA_RETURN_IF_ERROR(impl_->WithShard(shard, {}, [&](auto& w, const ShardInfo& si) {
          std::vector<gen::Op> ops;
          ops.reserve(items.size());
          for (const auto* kv : items) {
            gen::Op op;
            op.shard = si.shard;
            op.epoch = si.epoch;
            op.put = true;
            op.key = kv->first;
            op.value = kv->second;
            ops.push_back(std::move(op));
          }
          w->Write(impl_->opts.token, ops, sync);
        }));
      }
      return Status::Ok();
    }));
  }
  Status result;
  for (auto& f : futures) {
    Status s = f.get();
    if (result.ok() && !s.ok()) result = s;
  }
  return result;
}

Result<ScanPage> Client::Scan(std::string_view prefix, int limit, const std::string& token) {
  if (limit < 1 || limit > kMaxScanLimit) {
    return Status::InvalidArgument("limit must be 1 to " + std::to_string(kMaxScanLimit));
  }
  // Token: "<shard>:<start key>".
  int shard = 0;
  std::string start;
  if (!token.empty()) {
    size_t colon = token.find(':');
    if (colon == std::string::npos) return Status::InvalidArgument("bad scan token");
    shard = std::atoi(token.substr(0, colon).c_str());
    start = token.substr(colon + 1);
  }
  TESSERA_ASSIGN_OR_RETURN(auto map, impl_->Map(false));
  ScanPage page;
  while (shard < std::max(map->num_shards, 1) && static_cast<int>(page.items.size()) < limit) {
    gen::ScanReply r;
    TESSERA_RETURN_IF_ERROR(impl_->WithShard(shard, {}, [&](auto& w, const ShardInfo& si) {
      w->Scan(r, impl_->opts.token, si.shard, si.epoch, start, std::string(prefix),
              limit - static_cast<int>(page.items.size()));
    }));
    for (auto& kv : r.items) page.items.push_back({std::move(kv.key), std::move(kv.value)});
    if (!r.next_start.empty()) {
      page.next = std::to_string(shard) + ":" + r.next_start;
      return page;
    }
    ++shard;
    start.clear();
  }
  if (shard < map->num_shards) page.next = std::to_string(shard) + ":";
  return page;
}

Result<ClusterStatus> Client::GetStatus() {
  gen::ClusterStatus s;
  TESSERA_RETURN_IF_ERROR(
      impl_->CallManager([&](auto& lease) { lease->Status(s, impl_->opts.token); }));
  return FromGen(s);
}

Result<ShardMap> Client::GetShardMap(bool refresh) {
  TESSERA_ASSIGN_OR_RETURN(auto m, impl_->Map(refresh));
  return *m;
}

Status Client::Shutdown(bool cleanup) {
  return impl_->CallManager([&](auto& lease) { lease->Shutdown(impl_->opts.token, cleanup); });
}

Result<ScrubReport> Client::Scrub(const std::function<void(uint64_t, uint64_t)>& progress) {
  TESSERA_ASSIGN_OR_RETURN(auto map, impl_->Map(true));
  const Protection& p = map->protection;
  if (p.scheme == "none" || p.scheme.empty()) {
    return Status::InvalidArgument("this cluster keeps no parity (protection none)");
  }
  TESSERA_ASSIGN_OR_RETURN(auto codec, erasure::Codec::Create(p.scheme, p.k, p.m));
  rpc::Timeouts t{std::chrono::milliseconds(1000), impl_->opts.io_timeout};
  rpc::ClientPool<gen::ParityServiceClient> holders(t);
  rpc::ClientPool<gen::WorkerServiceClient> workers(t);
  const std::string& token = impl_->opts.token;
  auto call = [](auto& pool, const std::string& addr, const std::string& what, auto&& f) -> Status {
    auto ep = rpc::Endpoint::Parse(addr);
    if (!ep.ok()) return Status::Unavailable(what + " has no address");
    auto lease = pool.Get(*ep);
    if (!lease.ok())
      return Status::Unavailable(what + " at " + addr + ": " + lease.status().message());
    try {
      f(*(*lease).operator->());
      return Status::Ok();
    } catch (const gen::TesseraError& e) {
      return FromError(e);
    } catch (const std::exception& e) {
      lease->Broken();
      return Status::Unavailable(what + " at " + addr + ": " + e.what());
    }
  };
  const int k = p.k, m = p.m;
  auto records = [&](std::vector<std::vector<gen::GenRecord>>* out) -> Status {
    out->assign(static_cast<size_t>(m), {});
    for (int j = 0; j < m; ++j) {
      gen::ParityPages pp;
      TESSERA_RETURN_IF_ERROR(
          call(holders, p.holder_addresses[j], "parity holder " + p.holder_nodes[j],
               [&](gen::ParityServiceClient& c) { c.ReadParity(pp, token, 0, 0); }));
      (*out)[static_cast<size_t>(j)] = pp.records;
    }
    return Status::Ok();
  };
  auto gens_of = [](const std::vector<gen::GenRecord>& rs) {
    std::vector<int64_t> g;
    g.reserve(rs.size());
    for (const auto& r : rs) g.push_back(r.gen);
    return g;
  };
  std::vector<std::vector<gen::GenRecord>> recs;
  TESSERA_RETURN_IF_ERROR(records(&recs));
  uint64_t last = 2;
  for (const auto& rs : recs) {
    for (const auto& r : rs) last = std::max<uint64_t>(last, static_cast<uint64_t>(r.last_page));
  }
  ScrubReport rep;
  const size_t ps = 4096;
  const uint64_t chunk = 64;
  const uint64_t total = last - 2;
  auto note = [&rep](std::string s) {
    if (rep.problems.size() < 20) rep.problems.push_back(std::move(s));
  };
  for (uint64_t first = 2; first < last; first += chunk) {
    const uint64_t count = std::min(chunk, last - first);
    bool done = false;
    std::string why;
    for (int attempt = 0; attempt < 20 && !done; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::vector<std::vector<uint8_t>> parity(static_cast<size_t>(m),
                                               std::vector<uint8_t>(count * ps, 0));
      std::vector<int64_t> gens;
      Status st;
      for (int j = 0; j < m && st.ok(); ++j) {
        gen::ParityPages pp;
        st = call(holders, p.holder_addresses[j], "parity holder " + p.holder_nodes[j],
                  [&](gen::ParityServiceClient& c) {
                    c.ReadParity(pp, token, static_cast<int64_t>(first),
                                 static_cast<int32_t>(count));
                  });
        if (!st.ok()) break;
        auto g = gens_of(pp.records);
        if (static_cast<int>(g.size()) != k) {
          st = Status::Corruption("parity holder " + p.holder_nodes[j] + " answered " +
                                  std::to_string(g.size()) + " records for " + std::to_string(k) +
                                  " slots");
          break;
        }
        if (j == 0) gens = g;
        if (g != gens) st = Status::Unavailable("holders record different generations");
        if (st.ok() && !UnpackRun(pp.run, count, ps, parity[j].data())) {
          st = Status::Corruption("parity holder " + p.holder_nodes[j] + " sent a malformed run");
        }
      }
      std::vector<std::vector<uint8_t>> data(static_cast<size_t>(k),
                                             std::vector<uint8_t>(count * ps, 0));
      for (int i = 0; i < k && st.ok(); ++i) {
        if (gens[static_cast<size_t>(i)] == 0) continue;
        gen::PageRun imgs;
        st = call(workers, p.slot_addresses[i], "worker " + p.slot_nodes[i],
                  [&](gen::WorkerServiceClient& c) {
                    c.ReadImage(imgs, token, gens[static_cast<size_t>(i)],
                                static_cast<int64_t>(first), static_cast<int32_t>(count));
                  });
        if (st.ok() && !UnpackRun(imgs, count, ps, data[i].data())) {
          st = Status::Corruption("worker " + p.slot_nodes[i] + " sent a malformed run");
        }
      }
      // The generations must not have moved while the images were read.
      std::vector<std::vector<gen::GenRecord>> after;
      if (st.ok()) st = records(&after);
      for (int j = 0; st.ok() && j < m; ++j) {
        if (gens_of(after[static_cast<size_t>(j)]) != gens)
          st = Status::Unavailable("a generation advanced");
      }
      if (!st.ok()) {
        why = st.message();
        continue;
      }
      std::vector<const uint8_t*> dp;
      dp.reserve(data.size());
      for (auto& d : data) dp.push_back(d.data());
      std::vector<std::vector<uint8_t>> fresh(static_cast<size_t>(m),
                                              std::vector<uint8_t>(count * ps));
      std::vector<uint8_t*> fp;
      fp.reserve(fresh.size());
      for (auto& f : fresh) fp.push_back(f.data());
      TESSERA_RETURN_IF_ERROR(codec->Encode(dp, fp, count * ps));
      for (int j = 0; j < m; ++j) {
        for (uint64_t q = 0; q < count; ++q) {
          if (std::memcmp(fresh[j].data() + q * ps, parity[j].data() + q * ps, ps) != 0) {
            ++rep.mismatches;
            note("holder " + std::to_string(j) + " (" + p.holder_nodes[j] + ") page " +
                 std::to_string(first + q) + ": parity differs from the recomputed one");
          }
        }
      }
      done = true;
    }
    if (done) {
      rep.stripes_checked += count;
    } else {
      rep.unverified += count;
      note("pages " + std::to_string(first) + ".." + std::to_string(first + count - 1) +
           " not verified: " + why);
    }
    if (progress) progress(first + count - 2, total);
  }
  return rep;
}

}  // namespace tessera::orchestrator

namespace tessera::orchestrator {

namespace {
// A lock wait is served by the leader in one call of at most this long; longer waits repeat it.
constexpr std::chrono::milliseconds kMaxWaitPerCall{30000};
}  // namespace

Result<std::unique_ptr<LockSession>> Client::OpenSession(std::chrono::milliseconds ttl,
                                                         const std::string& owner) {
  int64_t id = 0;
  TESSERA_RETURN_IF_ERROR(impl_->CallManager(
      [&](auto& lease) { id = lease->OpenSession(impl_->opts.token, ttl.count(), owner); }));
  return std::unique_ptr<LockSession>(new LockSession(this, id, ttl));
}

Result<bool> Client::CheckToken(const std::string& name, int64_t token) {
  bool current = false;
  TESSERA_RETURN_IF_ERROR(impl_->CallManager(
      [&](auto& lease) { current = lease->CheckToken(impl_->opts.token, name, token); }));
  return current;
}

Result<LockList> Client::ListLocks() {
  gen::LockList g;
  TESSERA_RETURN_IF_ERROR(
      impl_->CallManager([&](auto& lease) { lease->ListLocks(g, impl_->opts.token); }));
  LockList out;
  for (const auto& l : g.locks) {
    out.locks.push_back({l.name, l.holder_session, l.holder_owner, l.token, l.waiters});
  }
  for (const auto& x : g.sessions) out.sessions.push_back({x.id, x.owner, x.ttl_ms});
  return out;
}

LockSession::LockSession(Client* client, int64_t id, std::chrono::milliseconds ttl)
    : client_(client), id_(id), ttl_(ttl), last_ok_ns_(Clock::now().time_since_epoch().count()) {
  keeper_ = std::thread([this] { KeepAliveLoop(); });
}

bool LockSession::alive() const {
  auto since = Clock::now().time_since_epoch() - std::chrono::nanoseconds(last_ok_ns_.load());
  return alive_.load() && since < ttl_ * 9 / 10;
}

LockSession::~LockSession() { (void)Close(); }

void LockSession::KeepAliveLoop() {
  auto* impl = client_->impl_.get();
  const auto period = std::max(ttl_ / 3, std::chrono::milliseconds(20));
  std::unique_lock<std::mutex> l(mu_);
  while (!closed_) {
    cv_.wait_for(l, period, [&] { return closed_; });
    if (closed_) break;
    l.unlock();
    Status s;
    const int64_t sent = Clock::now().time_since_epoch().count();
    try {
      s = impl->link->Call([&](auto& lease) { lease->KeepAlive(impl->opts.token, id_); }, period);
      if (s.ok()) last_ok_ns_.store(sent);
    } catch (const gen::TesseraError& e) {
      s = FromError(e);
    }
    if (s.IsNotFound()) {
      spdlog::warn("lock session {} expired: {}", id_, s.message());
      alive_.store(false);
    }
    l.lock();
    if (!alive_.load()) break;
  }
}

Result<int64_t> LockSession::Acquire(const std::string& name, std::chrono::milliseconds wait) {
  auto* impl = client_->impl_.get();
  auto deadline = Clock::now() + wait;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    const auto cap = std::clamp(impl->opts.io_timeout - std::chrono::milliseconds(2000),
                                std::chrono::milliseconds(500), kMaxWaitPerCall);
    auto chunk = std::clamp(left, std::chrono::milliseconds(0), cap);
    const bool last = chunk >= left;  // earlier calls keep the session's place in the queue
    int64_t token = 0;
    Status s;
    try {
      // The leader holds the call while the session waits: the link's I/O timeout must not cut
      // it short, so each wait is bounded well below it.
      s = impl->link->Call(
          [&](auto& lease) {
            token = lease->Acquire(impl->opts.token, name, id_, chunk.count(), !last);
          },
          std::max(impl->opts.deadline, chunk + std::chrono::milliseconds(5000)));
    } catch (const gen::TesseraError& e) {
      s = FromError(e);
    }
    if (s.ok()) return token;
    if (s.IsBusy() && !last) continue;
    if (!s.IsBusy() && !s.IsNotFound()) {
      // The outcome is unknown (no leader answered, or it changed): withdraw, so the lock is
      // not granted later to a caller that gave up. Best effort: an expiring session does too.
      (void)Release(name, 0);
    }
    return s;
  }
}

Status LockSession::Release(const std::string& name, int64_t token) {
  return client_->impl_->CallManager(
      [&](auto& lease) { lease->Release(client_->impl_->opts.token, name, id_, token); });
}

Status LockSession::Close() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (closed_) return Status::Ok();
    closed_ = true;
  }
  cv_.notify_all();
  if (keeper_.joinable()) keeper_.join();
  if (!alive_.load()) return Status::Ok();
  return client_->impl_->CallManager(
      [&](auto& lease) { lease->CloseSession(client_->impl_->opts.token, id_); });
}

}  // namespace tessera::orchestrator
