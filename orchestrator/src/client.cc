#include "tessera/orchestrator/client.h"

#include <spdlog/spdlog.h>

#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "convert.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {

using gen::ErrorCode;
using Clock = std::chrono::steady_clock;

struct Client::Impl {
  ClientOptions opts;
  rpc::Endpoint manager;
  rpc::ClientPool<gen::ManagerServiceClient> managers;
  rpc::ClientPool<gen::WorkerServiceClient> workers;
  std::mutex mu;
  std::shared_ptr<const ShardMap> map;

  explicit Impl(const ClientOptions& o)
      : opts(o),
        managers(rpc::Timeouts{std::chrono::milliseconds(1000), o.io_timeout}),
        workers(rpc::Timeouts{std::chrono::milliseconds(1000), o.io_timeout}) {}

  // One call to the manager; transport failures become Unavailable naming it.
  template <typename F>
  Status CallManager(F&& f) {
    auto lease = managers.Get(manager);
    if (!lease.ok())
      return Status::Unavailable("manager " + manager.ToString() + ": " + lease.status().message());
    try {
      f(*lease);
      return Status::Ok();
    } catch (const gen::TesseraError& e) {
      return FromError(e);
    } catch (const std::exception& e) {
      lease->Broken();
      return Status::Unavailable("manager " + manager.ToString() + ": " + e.what());
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
          last =
              Status::Unavailable("cluster is still forming (manager " + manager.ToString() + ")");
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
  TESSERA_ASSIGN_OR_RETURN(impl->manager, rpc::Endpoint::Parse(options.manager));
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

}  // namespace tessera::orchestrator
