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
  GENERATION_MISMATCH = 7,  // a parity holder records another generation than the delta's base
  NOT_LEADER = 8,        // this manager is not the Raft leader: `leader` names it when known
  BUSY = 9,              // a lock is held by another session (a try, or the deadline passed)
  NOT_FOUND = 10,        // no such session (expired or never opened)
}

exception TesseraError {
  1: ErrorCode code,
  2: string message,
  3: string node,        // the node that raised it
  4: string leader,      // NOT_LEADER: the leader's address ("" while none is known)
}

struct NodeInfo {
  1: string node_id,
  2: string address,      // host:port the node serves on
  3: string role,         // "worker"
  4: i64 last_heartbeat_ms_ago,
  5: bool up,
  6: i64 incarnation,
  7: i32 shards_owned,
  8: string progress,     // JSON progress of a rebuild or replay ("" when none)
}

struct ShardInfo {
  1: i32 shard,
  2: string owner,        // node id, empty while unassigned
  3: string address,      // owner's address
  4: i64 epoch,
}

// Protection (erasure-coded parity over the data workers' engine pages): the stripe group.
struct Protection {
  1: string scheme,            // "none", "xor" or "rs"
  2: i32 k,                    // data slots
  3: i32 m,                    // parity holders
  4: list<string> slot_nodes,  // node id of data slot i ("" while empty)
  5: list<string> slot_addresses,
  6: list<i64> slot_epochs,    // bumped when a new incarnation or a replacement takes the slot
  7: list<string> holder_nodes,     // node id of parity holder j ("manager" for the manager's)
  8: list<string> holder_addresses,
  9: bool frozen,              // generation advances paused: a rebuild is reading the parity
  10: list<i32> rebuilding,    // slots being rebuilt from parity
}

struct ShardMap {
  1: i64 version,         // increases with every change
  2: i32 num_shards,
  3: list<ShardInfo> shards,
  4: bool formed,         // false until the expected workers have registered
  5: string state,        // "forming", "serving", "shutting_down"
  6: Protection protection,
}

struct RegisterReply {
  1: ShardMap shard_map,
  2: i32 heartbeat_ms,
  3: bool rebuild,        // this node's slot lost its data: rebuild from parity before serving
}

// One write batch of a data worker, kept in the tail at every parity holder until a protected
// generation covers it. `batch` is the worker's own encoding of the ops.
struct TailEntry {
  1: i64 seq,
  2: binary batch,
}

// What a parity holder records for one data slot: the generation its parity includes.
struct GenRecord {
  1: i64 gen,              // the engine txnid of the protected snapshot; 0: the empty image
  2: binary descriptor,    // the snapshot's descriptor (engine meta), empty for gen 0
  3: i64 covered_seq,      // tail entries up to this seq are in the generation
  4: i64 last_page,
  5: i64 epoch,            // the highest slot epoch this holder has seen
  6: i64 tail_last,        // the last tail seq held (0: none)
}

struct PageDelta {
  1: i64 pgno,
  2: binary bytes,         // new image XOR old image (a whole page)
}

// A run of pages in one piece: `present` has a byte per page (0: all zeros, not sent), and
// `pages` holds the present pages back to back.
struct PageRun {
  1: binary present,
  2: binary pages,
}

struct ParityPages {
  1: list<GenRecord> records,  // per slot, read with the pages in one snapshot
  2: PageRun run,              // pages first..first+count-1
}

struct ClusterStatus {
  1: list<NodeInfo> nodes,
  2: ShardMap shard_map,
  3: i32 expected_workers,
  4: string manager_address,
  5: list<string> managers,   // every manager's address (one when not replicated)
  6: i64 raft_term,
  7: i64 raft_commit,         // the leader's commit index
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

// Served by every parity holder: the manager (for xor) and `tessera worker --role parity`.
// Each call names the data slot and the caller's slot epoch; a holder refuses (STALE_EPOCH) an
// epoch lower than the highest it has seen for the slot, so a zombie cannot get a write stored.
service ParityService {
  // Stores entries in the slot's tail (idempotent by seq); flushed before returning when sync.
  // Returns the generation the holder records for the slot: lower than the caller's means the
  // holder lost its data, and the caller re-protects to it.
  i64 AppendTail(1: string token, 2: i32 slot, 3: i64 epoch, 4: list<TailEntry> entries,
                  5: bool sync) throws (1: TesseraError e),
  // Stages deltas from generation `from_gen` to `to_gen`; nothing changes in the parity until
  // Commit. Deltas staged for another (from, to) pair are dropped first.
  void StageDelta(1: string token, 2: i32 slot, 3: i64 epoch, 4: i64 to_gen,
                  5: list<PageDelta> pages, 6: i64 from_gen) throws (1: TesseraError e),
  // Atomically: applies the staged deltas if the holder records `from_gen` for the slot
  // (else GENERATION_MISMATCH), records `to_gen`, drops tail entries <= covered_seq.
  // With prepare_only: checks the same, and records the generation as prepared (phase 1 of an
  // advance) without applying it.
  GenRecord CommitGeneration(1: string token, 2: i32 slot, 3: i64 epoch, 4: i64 from_gen,
                             5: i64 to_gen, 6: binary descriptor, 7: i64 covered_seq,
                             8: i64 last_page, 9: bool prepare_only) throws (1: TesseraError e),
  // Applies the generation `to_gen` the slot's owner prepared here (a rebuild completes an
  // advance its crashed owner committed at some holders only). GENERATION_MISMATCH when that
  // generation is not prepared on top of what the holder records.
  GenRecord CommitPrepared(1: string token, 2: i32 slot, 3: i64 to_gen)
      throws (1: TesseraError e),
  // The slot's record; raises the holder's epoch for the slot to `epoch` (fences older ones).
  GenRecord GetRecord(1: string token, 2: i32 slot, 3: i64 epoch) throws (1: TesseraError e),
  list<TailEntry> ReadTail(1: string token, 2: i32 slot, 3: i64 epoch, 4: i64 after_seq,
                           5: i32 max_entries) throws (1: TesseraError e),
  ParityPages ReadParity(1: string token, 2: i64 first_pgno, 3: i32 count)
      throws (1: TesseraError e),
}

// Raft between managers: one message as the pure state machine in raft/ produces it.
struct RaftEntry {
  1: i64 term,
  2: i64 index,
  3: byte type,           // 0 normal, 1 no-op
  4: binary data,
}

struct RaftMessage {
  1: byte type,
  2: i64 from_id,
  3: i64 to_id,
  4: i64 term,
  5: i64 log_term,
  6: i64 index,
  7: list<RaftEntry> entries,
  8: i64 commit,
  9: bool reject,
  10: i64 reject_hint,
  11: i64 snapshot_index,
  12: i64 snapshot_term,
  13: list<i64> snapshot_voters,
  14: binary snapshot_data,
  15: binary context,
}

struct LockInfo {
  1: string name,
  2: i64 holder_session,  // 0: free
  3: string holder_owner, // the holder session's owner label
  4: i64 token,           // fencing token of the current (or last) grant
  5: i32 waiters,
}

struct SessionInfo {
  1: i64 id,
  2: string owner,
  3: i64 ttl_ms,
}

struct LockList {
  1: list<LockInfo> locks,
  2: list<SessionInfo> sessions,
}

service ManagerService extends ParityService {
  // Idempotent: registering again with the same node id and incarnation changes nothing; a new
  // incarnation (a restart) keeps the node's shards and bumps their epochs.
  // `role`: "worker" (data) or "parity" (a parity holder). `replace`: a node id whose slot this
  // node takes over with an empty data directory (`tessera worker --replace`), else "".
  // `has_data`: false when the node starts with an empty data directory.
  RegisterReply Register(1: string token, 2: string node_id, 3: string address,
                         4: i64 incarnation, 5: string role, 6: string replace,
                         7: bool has_data) throws (1: TesseraError e),
  // `progress`: JSON progress of a rebuild or replay on the node ("" when none), for Status.
  ShardMap Heartbeat(1: string token, 2: string node_id, 3: i64 incarnation, 4: string progress)
      throws (1: TesseraError e),
  ShardMap GetShardMap(1: string token) throws (1: TesseraError e),
  ClusterStatus Status(1: string token) throws (1: TesseraError e),
  // Stops taking new work, drains, tells every worker to flush and exit (and delete its data
  // with cleanup), then the manager exits. Returns when the workers have acknowledged.
  void Shutdown(1: string token, 2: bool cleanup) throws (1: TesseraError e),

  // Raft messages from manager `from_id`, in the order produced. Returns the messages this
  // manager answers them with to `from_id` once it has handled them (saved to its log first),
  // waiting a short while at most; what is not ready then travels by a RaftStep the other way.
  // `peers`: the sender's --peers list; ids are positions in it, so a manager started with
  // another list is refused (INVALID_ARGUMENT) rather than confused with another member.
  list<RaftMessage> RaftStep(1: string token, 2: i64 from_id, 3: list<RaftMessage> messages,
                             4: string peers) throws (1: TesseraError e),

  // Lock service (leader only; NOT_LEADER elsewhere). A session lives while KeepAlive reaches
  // the leader within `ttl_ms`; when it expires its locks are released and its waits dropped.
  i64 OpenSession(1: string token, 2: i64 ttl_ms, 3: string owner) throws (1: TesseraError e),
  void KeepAlive(1: string token, 2: i64 session) throws (1: TesseraError e),
  void CloseSession(1: string token, 2: i64 session) throws (1: TesseraError e),
  // Returns the fencing token of the grant: tokens of one lock strictly increase. Waits in FIFO
  // order up to wait_ms (0: a try; at most 60 s a call); BUSY when not granted by then, and the
  // session leaves the queue unless keep_queued (the caller calls again to wait on, keeping
  // its place). Acquiring a lock the session holds returns its token again.
  i64 Acquire(1: string token, 2: string name, 3: i64 session, 4: i64 wait_ms,
              5: bool keep_queued) throws (1: TesseraError e),
  // Releases the lock if `session` holds it with `fencing_token` (0: whatever grant it holds)
  // and leaves its wait queue; otherwise does nothing.
  void Release(1: string token, 2: string name, 3: i64 session, 4: i64 fencing_token)
      throws (1: TesseraError e),
  // True when `fencing_token` is the lock's current grant and it is still held.
  bool CheckToken(1: string token, 2: string name, 3: i64 fencing_token)
      throws (1: TesseraError e),
  LockList ListLocks(1: string token) throws (1: TesseraError e),
}

service WorkerService extends ParityService {
  GetReply Get(1: string token, 2: i32 shard, 3: i64 epoch, 4: binary key)
      throws (1: TesseraError e),
  // All ops apply atomically on this worker (one engine commit); each names its shard and epoch.
  void Write(1: string token, 2: list<Op> ops, 3: bool sync) throws (1: TesseraError e),
  ScanReply Scan(1: string token, 2: i32 shard, 3: i64 epoch, 4: binary start, 5: binary prefix,
                 6: i32 limit) throws (1: TesseraError e),
  string Ping(1: string token) throws (1: TesseraError e),
  // Page images of the pinned protected snapshot `gen` (a survivor's part of a rebuild); an
  // empty binary for an all-zero page. UNAVAILABLE when that generation is not pinned here.
  PageRun ReadImage(1: string token, 2: i64 gen, 3: i64 first_pgno, 4: i32 count)
      throws (1: TesseraError e),
  // Progress of a rebuild or replay on this worker, as JSON ("" when none).
  string Progress(1: string token) throws (1: TesseraError e),
  // From the manager: stop serving, flush, optionally delete the data directory, then exit.
  void Shutdown(1: string token, 2: bool cleanup) throws (1: TesseraError e),
}
