// Plain C++ views of the cluster's control state, shared by the manager, workers, client and CLI.
// Generated Thrift types stop at orchestrator/src; nothing here depends on them.
//
// Invariants: a formed ShardMap has num_shards entries, shard i at index i, each with an owner
// and an epoch >= 1; epochs of a shard only increase (each change of owner or owner incarnation
// bumps it), and version increases with every change of the map.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tessera/common/status.h"

namespace tessera::orchestrator {

inline constexpr int kDefaultShards = 64;
inline constexpr int kMaxShards = 4096;
inline constexpr int kDefaultWorkers = 3;
inline constexpr size_t kMaxKeyBytes = 1024;
inline constexpr size_t kMaxValueBytes = 16 << 20;  // per value over the wire
inline constexpr int kMaxScanLimit = 10000;

struct ShardInfo {
  int shard = 0;
  std::string owner;    // node id; empty while unassigned
  std::string address;  // owner's host:port
  int64_t epoch = 0;
};

// Protection of the data workers' engines by erasure-coded parity (scheme "none", "xor", "rs").
// Slot i < k is a data worker; holder j < m keeps parity row j, the slots' tails and records.
struct Protection {
  std::string scheme = "none";
  int k = 0;
  int m = 0;
  std::vector<std::string> slot_nodes;  // "" while the slot is empty
  std::vector<std::string> slot_addresses;
  std::vector<int64_t> slot_epochs;
  std::vector<std::string> holder_nodes;
  std::vector<std::string> holder_addresses;
  bool frozen = false;
  std::vector<int> rebuilding;
};

struct ShardMap {
  int64_t version = 0;
  int num_shards = 0;
  bool formed = false;
  std::string state;  // "forming", "serving", "shutting_down"
  std::vector<ShardInfo> shards;
  Protection protection;
};

struct NodeInfo {
  std::string node_id;
  std::string address;
  std::string role;
  int64_t last_heartbeat_ms_ago = 0;
  bool up = false;
  int64_t incarnation = 0;
  int shards_owned = 0;
  std::string progress;  // JSON from the node while it rebuilds or replays; "" otherwise
};

struct ClusterStatus {
  std::vector<NodeInfo> nodes;
  ShardMap map;
  int expected_workers = 0;
  std::string manager_address;
  std::vector<std::string> managers;  // every manager's address
  int64_t raft_term = 0;
  int64_t raft_commit = 0;
};

// The shard of a key: a stable 64-bit hash (XXH3) modulo the shard count.
int ShardOf(std::string_view key, int num_shards);

// Reads the cluster token from a file (trailing whitespace dropped); "" when path is empty.
Result<std::string> ReadTokenFile(const std::string& path);

// JSON for `tessera status` and the manager's GET /status.
std::string StatusJson(const ClusterStatus& s);

}  // namespace tessera::orchestrator
