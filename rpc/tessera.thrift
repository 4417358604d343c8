// Tessera's wire protocol: the manager (control plane) and the workers (data plane).
// Every call carries the cluster token; a caller without it gets UNAUTHENTICATED.
namespace cpp tessera.rpc.gen

enum ErrorCode {
  NOT_OWNER = 1,         // this worker does not own the shard: refresh the shard map
  STALE_EPOCH = 2,       // the request's epoch is not the shard's current one: refresh the map
  UNAVAILABLE = 3,       // not ready, shutting down, or a needed node is down: retry later
  INVALID_ARGUMENT = 4,  // bad key, value, shard number or limit
  UNAUTHENTICATED = 5,   // wrong or missing cluster token
  INTERNAL = 6,          // a bug or an I/O failure on the server
}

exception TesseraError {
  1: ErrorCode code,
  2: string message,
  3: string node,        // the node that raised it
}

struct NodeInfo {
  1: string node_id,
  2: string address,      // host:port the node serves on
  3: string role,         // "worker"
  4: i64 last_heartbeat_ms_ago,
  5: bool up,
  6: i64 incarnation,
  7: i32 shards_owned,
}

struct ShardInfo {
  1: i32 shard,
  2: string owner,        // node id, empty while unassigned
  3: string address,      // owner's address
  4: i64 epoch,
}

struct ShardMap {
  1: i64 version,         // increases with every change
  2: i32 num_shards,
  3: list<ShardInfo> shards,
  4: bool formed,         // false until the expected workers have registered
  5: string state,        // "forming", "serving", "shutting_down"
}

struct RegisterReply {
  1: ShardMap shard_map,
  2: i32 heartbeat_ms,
}

struct ClusterStatus {
  1: list<NodeInfo> nodes,
  2: ShardMap shard_map,
  3: i32 expected_workers,
  4: string manager_address,
}

struct Op {
  1: i32 shard,
  2: i64 epoch,
  3: bool put,            // false: delete
  4: binary key,
  5: binary value,
}

struct GetReply {
  1: bool found,
  2: binary value,
}

struct KV {
  1: binary key,
  2: binary value,
}

struct ScanReply {
  1: list<KV> items,
  2: binary next_start,   // continuation: pass as `start` to continue; empty when done
}

service ManagerService {
  // Idempotent: registering again with the same node id and incarnation changes nothing; a new
  // incarnation (a restart) keeps the node's shards and bumps their epochs.
  RegisterReply Register(1: string token, 2: string node_id, 3: string address,
                         4: i64 incarnation) throws (1: TesseraError e),
  ShardMap Heartbeat(1: string token, 2: string node_id, 3: i64 incarnation)
      throws (1: TesseraError e),
  ShardMap GetShardMap(1: string token) throws (1: TesseraError e),
  ClusterStatus Status(1: string token) throws (1: TesseraError e),
  // Stops taking new work, drains, tells every worker to flush and exit (and delete its data
  // with cleanup), then the manager exits. Returns when the workers have acknowledged.
  void Shutdown(1: string token, 2: bool cleanup) throws (1: TesseraError e),
}

service WorkerService {
  GetReply Get(1: string token, 2: i32 shard, 3: i64 epoch, 4: binary key)
      throws (1: TesseraError e),
  // All ops apply atomically on this worker (one engine commit); each names its shard and epoch.
  void Write(1: string token, 2: list<Op> ops, 3: bool sync) throws (1: TesseraError e),
  ScanReply Scan(1: string token, 2: i32 shard, 3: i64 epoch, 4: binary start, 5: binary prefix,
                 6: i32 limit) throws (1: TesseraError e),
  string Ping(1: string token) throws (1: TesseraError e),
  // From the manager: stop serving, flush, optionally delete the data directory, then exit.
  void Shutdown(1: string token, 2: bool cleanup) throws (1: TesseraError e),
}
