// The Tessera client library: talks to the manager for the shard map and straight to the owning
// worker for data. Keys map to shards by ShardOf (XXH3); the map is cached and refreshed on
// NOT_OWNER / STALE_EPOCH; UNAVAILABLE and connection failures are retried with backoff until the
// deadline, then reported with the node that could not be reached.
//
// Thread safety: a Client may be shared by threads; each call is independent.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tessera/common/status.h"
#include "tessera/orchestrator/cluster.h"

namespace tessera::orchestrator {

struct ClientOptions {
  std::string manager = "127.0.0.1:8081";
  std::string token;
  std::chrono::milliseconds deadline{10000};  // per call, across retries
  std::chrono::milliseconds io_timeout{10000};
};

struct ScanItem {
  std::string key;
  std::string value;
};

struct ScanPage {
  std::vector<ScanItem> items;
  std::string next;  // continuation token for the next page; empty when the scan is complete
};

// What `tessera scrub` found: parity recomputed from the workers' protected images and
// compared with what each parity holder stores.
struct ScrubReport {
  uint64_t stripes_checked = 0;  // page numbers compared across every holder
  uint64_t mismatches = 0;       // (holder, page) pairs whose parity differs
  uint64_t unverified = 0;       // stripes skipped: generations kept moving, or a node was down
  std::vector<std::string> problems;  // the first few mismatches and skips, by holder and page
};

class Client {
 public:
  static Result<std::unique_ptr<Client>> Connect(const ClientOptions& options);
  ~Client();

  Status Put(std::string_view key, std::string_view value, bool sync = true);
  // nullopt when the key is absent.
  Result<std::optional<std::string>> Get(std::string_view key);
  // false when the key was absent.
  Result<bool> Delete(std::string_view key, bool sync = true);
  // Writes many pairs: one request per worker, sent in parallel.
  Status PutMany(const std::vector<std::pair<std::string, std::string>>& kvs, bool sync);
  // Keys in shard order, ordered within each shard; `token` from the previous page.
  Result<ScanPage> Scan(std::string_view prefix, int limit, const std::string& token = {});

  Result<ClusterStatus> GetStatus();
  Result<ShardMap> GetShardMap(bool refresh);
  Status Shutdown(bool cleanup);
  // Recomputes the parity of every stripe from the workers' protected images; `progress` is
  // called with (stripes done, stripes total).
  Result<ScrubReport> Scrub(const std::function<void(uint64_t, uint64_t)>& progress = {});

  struct Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::orchestrator
