// The manager: control plane of a Tessera cluster.
//
// It keeps membership (node id, address, incarnation, last heartbeat), the shard map (each shard
// with an owner and an epoch), protection records and the lock service as a state machine
// replicated with Raft over 1, 3 or 5 managers (--peers); the log and snapshots live in LMDB
// under each manager's data directory, so a restarted manager knows its cluster. Only the
// leader answers; the others reply NOT_LEADER naming it. Workers register with a stable node id;
// the map forms (round-robin) when the expected number of workers has registered. Missed heartbeats
// mark a node down. Shutdown drains the workers (optionally deleting their data) and then the
// manager exits.
//
// Thread safety: RunManager blocks; `stop` may be set from a signal handler's thread.
#pragma once

#include <atomic>
#include <string>

#include "tessera/common/status.h"
#include "tessera/orchestrator/cluster.h"

namespace tessera::orchestrator {

struct ManagerOptions {
  std::string listen = "127.0.0.1:8081";
  std::string data_dir = "tessera-manager";
  std::string http;  // HOST:PORT for GET /health and GET /status; empty: none
  int num_shards = kDefaultShards;
  int expected_workers = kDefaultWorkers;
  int heartbeat_ms = 300;
  int heartbeat_timeout_ms = 3000;
  std::string token;
  // "xor" (k = workers, one parity holder inside the manager), "rs:K+M" (K data workers and M
  // parity workers started with `tessera worker --role parity`) or "none".
  std::string protection = "xor";
  // Every manager of a replicated control plane, "HOST:PORT,HOST:PORT,HOST:PORT" (3 or 5), the
  // same list in the same order on each, `listen` among them. Empty: one manager alone.
  std::string peers;
  // How long a connection polls for its next request before its thread sleeps (rpc::ServerOptions).
  int poll_us = 100;
};

// Parses --protection: scheme ("none", "xor", "rs"), k and m (k from `workers` for xor).
struct ProtectionSpec {
  std::string scheme;
  int k = 0;
  int m = 0;
};
Result<ProtectionSpec> ParseProtection(const std::string& text, int workers);

// Serves until a Shutdown request completes (returns Ok) or *stop becomes true (SIGTERM: returns
// Ok after stopping the servers; the workers keep running).
Status RunManager(const ManagerOptions& options, std::atomic<bool>* stop);

}  // namespace tessera::orchestrator
