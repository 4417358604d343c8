// The Tessera client library: talks to the manager for the shard map and straight to the owning
// worker for data. Keys map to shards by ShardOf (XXH3); the map is cached and refreshed on
// NOT_OWNER / STALE_EPOCH; UNAVAILABLE and connection failures are retried with backoff until the
// deadline, then reported with the node that could not be reached.
//
// Thread safety: a Client may be shared by threads; each call is independent.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tessera/common/status.h"
#include "tessera/orchestrator/cluster.h"

namespace tessera::orchestrator {

struct ClientOptions {
  std::string manager = "127.0.0.1:8081";  // or every manager: "HOST:PORT,HOST:PORT,..."
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

struct LockInfo {
  std::string name;
  int64_t holder_session = 0;  // 0: free
  std::string holder_owner;
  int64_t token = 0;  // of the current (or last) grant
  int waiters = 0;
};

struct SessionInfo {
  int64_t id = 0;
  std::string owner;
  int64_t ttl_ms = 0;
};

struct LockList {
  std::vector<LockInfo> locks;  // including "shard/N": each shard's epoch is its token
  std::vector<SessionInfo> sessions;
};

class Client;

// A lock-service session on the managers. A background thread keeps it alive (a keep-alive
// every TTL/3); when keep-alives stop reaching the leader for a TTL the managers expire it and
// release its locks. alive() turns false as soon as that may have happened: when the managers
// refuse a keep-alive, or when none has succeeded for 9/10 of the TTL (counted from when it was
// sent), so a holder cut off from the managers stops before another can be granted its locks.
//
// Thread safety: every method may be called from any thread.
class LockSession {
 public:
  ~LockSession();  // Close()
  int64_t id() const { return id_; }
  bool alive() const;
  // Acquires `name` and returns its fencing token (tokens of one lock strictly increase, across
  // leader changes too). Waits in FIFO order up to `wait`; 0 is a try. Busy when not granted.
  // Whatever the error, the session is afterwards neither waiting for nor holding `name`.
  Result<int64_t> Acquire(const std::string& name, std::chrono::milliseconds wait);
  // Releases `name` if this session holds it with `token`; otherwise nothing happens.
  Status Release(const std::string& name, int64_t token);
  // Ends the session (its locks are released). Idempotent.
  Status Close();

 private:
  friend class Client;
  LockSession(Client* client, int64_t id, std::chrono::milliseconds ttl);
  void KeepAliveLoop();
  Client* client_;
  int64_t id_;
  std::chrono::milliseconds ttl_;
  std::atomic<bool> alive_{true};
  std::atomic<int64_t> last_ok_ns_;  // steady-clock send time of the last accepted keep-alive
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  std::thread keeper_;
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

  // Lock service (see LockSession). `owner` labels the session in ListLocks.
  Result<std::unique_ptr<LockSession>> OpenSession(std::chrono::milliseconds ttl,
                                                   const std::string& owner);
  // Whether `token` is the current grant of `name` (a linearizable read): a server guarding a
  // resource rejects a holder whose token is not.
  Result<bool> CheckToken(const std::string& name, int64_t token);
  Result<LockList> ListLocks();

  struct Impl;

 private:
  friend class LockSession;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::orchestrator
