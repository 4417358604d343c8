// Tessera Raft: a pure Raft state machine (Ongaro & Ousterhout, "In Search of an Understandable
// Consensus Algorithm", extended version; plus pre-vote, check-quorum and ReadIndex from
// Ongaro's thesis). It does no I/O, starts no threads and reads no clock: time is Tick(), the
// network is Step() in and Ready::messages out, the disk is the Storage the driver writes.
//
// Invariants this library keeps (Raft paper, Figure 3):
//  - Election safety: at most one leader per term. A node votes at most once per term (the vote
//    is in HardState, durable before the vote is sent) and a leader needs a quorum of votes.
//  - Log matching: if two logs hold an entry with the same index and term, the logs are
//    identical up to that index. A follower appends only after checking the entry before the new
//    ones (index, term) and truncates a conflicting suffix.
//  - Leader completeness: a committed entry is in the log of every later leader. Votes go only to
//    candidates whose log is at least as up to date (last term, then last index) as the voter's,
//    and a leader counts replicas only for entries of its own term (Figure 8): earlier-term
//    entries commit indirectly. A new leader appends a no-op so that this happens promptly.
//  - State machine safety: no two nodes apply different entries at one index. Only committed
//    entries are handed out for applying, in index order, each once per RawNode.
// Beyond the paper: pre-vote and check-quorum keep a node that was cut off from disrupting the
// cluster when it returns (it cannot win a pre-vote while the others hear from a leader, so it
// does not raise the term); a leader that cannot reach a quorum for an election timeout steps
// down. ReadIndex serves linearizable reads: the leader records its commit index, confirms it is
// still the leader with a heartbeat round acknowledged by a quorum, and only once it has
// committed an entry of its own term (before that, its commit index may be behind).
//
// Driving a RawNode (the "Ready loop"), from one thread:
//   1. Tick() every tick interval; Step(m) for every message received; Propose / ReadIndex.
//   2. If HasReady(): rd = GetReady(); then in this order
//        a. persist: storage.Save(rd.hard_state, rd.entries, rd.snapshot) — durable;
//        b. send rd.messages (only after a: a vote or an acknowledgement promises durable state);
//        c. apply rd.snapshot (if not empty) and then rd.committed_entries to the state machine;
//        d. serve reads of rd.read_states once the applied index reaches their index;
//        e. Advance(rd).
//   Errors: InvalidArgument for a bad call or message; Unavailable / Busy when the node's role
//   does not allow the request (not the leader, transfer in progress). Anything else means a
//   storage read failed: the node stops (every later call returns that error, and what the
//   failing call produced is discarded) and must be rebuilt from storage. A failed Save by the
//   driver is the driver's to handle the same way: do not send, do not Advance, rebuild.
//
// Thread safety: none. A RawNode and its Storage are owned by one driver, which calls them from
// one thread at a time. Nothing is called back.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tessera/common/status.h"
#include "tessera/raft/storage.h"

namespace tessera::raft {

enum class Role : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };
const char* RoleName(Role role);

enum class MessageType : uint8_t {
  kAppend,             // AppendEntries: index/log_term is the entry before `entries`
  kAppendResponse,     // index: last matching index; on reject also log_term/reject_hint
  kVote,               // index/log_term: the candidate's last entry
  kVoteResponse,       //
  kPreVote,            // term: the term the sender would campaign in (its own + 1)
  kPreVoteResponse,    //
  kSnapshot,           // InstallSnapshot, the whole snapshot in one message
  kHeartbeat,          // commit: min(follower's match, leader's commit); context: a read's ctx
  kHeartbeatResponse,  // context echoed
  kReadIndex,          // follower -> leader: a read request, context identifies it
  kReadIndexResponse,  // leader -> follower: index to wait for, context
  kTimeoutNow,         // leader -> transfer target: campaign now, skipping pre-vote
};
const char* MessageTypeName(MessageType type);

struct Message {
  MessageType type = MessageType::kAppend;
  uint64_t from = 0;
  uint64_t to = 0;
  uint64_t term = 0;
  uint64_t log_term = 0;  // kAppend: term of `index`; vote: last log term; reject: conflict term
  uint64_t index = 0;
  std::vector<Entry> entries;
  uint64_t commit = 0;
  bool reject = false;
  // kAppendResponse rejections: the follower's first index of the conflicting term (log_term),
  // or its last index + 1 when its log is too short (log_term 0). The leader jumps straight
  // there instead of backing up one entry per round trip.
  uint64_t reject_hint = 0;
  Snapshot snapshot;
  std::string context;
};

struct ReadState {
  uint64_t index = 0;  // serve the read once the applied index is at least this
  std::string context;
};

struct SoftState {
  uint64_t leader = 0;
  Role role = Role::kFollower;
  friend bool operator==(const SoftState&, const SoftState&) = default;
};

struct Ready {
  std::optional<SoftState> soft_state;   // set when leader or role changed (not persisted)
  std::optional<HardState> hard_state;   // set when it changed: persist it
  std::vector<Entry> entries;            // append to storage (truncating a conflicting suffix)
  Snapshot snapshot;                     // when not empty(): persist, then apply it
  std::vector<Entry> committed_entries;  // apply in order, after persisting
  std::vector<Message> messages;         // send after persisting
  std::vector<ReadState> read_states;
};

struct Config {
  uint64_t id = 0;               // nonzero
  std::vector<uint64_t> voters;  // every member, including id; fixed for the cluster's life
  int election_tick = 10;        // election timeout T: random in [T, 2T) ticks per node
  int heartbeat_tick = 1;        // leader heartbeat interval, < election_tick
  bool pre_vote = true;
  bool check_quorum = true;
  // The index the application's state machine has applied (0 or the snapshot's index after a
  // restart that restored the snapshot). Committed entries after it are handed out again.
  uint64_t applied = 0;
  uint64_t max_bytes_per_message = 1 << 20;
  // Randomness for election timeouts. If unset, a std::mt19937_64 seeded with `seed`.
  std::function<uint64_t()> random;
  uint64_t seed = 0;
};

struct ProposeResult {
  uint64_t index = 0;
  uint64_t term = 0;
};

namespace detail {
class Raft;
}

// One Raft member. See the top of this file for how to drive it.
class RawNode {
 public:
  // Restores hard state and log from `storage` (which must outlive the node). voters come from
  // the storage's snapshot when it has one and must then match config.voters.
  static Result<std::unique_ptr<RawNode>> Create(const Config& config, Storage* storage);
  ~RawNode();
  RawNode(const RawNode&) = delete;
  RawNode& operator=(const RawNode&) = delete;

  // One logical tick of the election / heartbeat clocks.
  Status Tick();
  // A message from a peer. Messages for another node or from a non-member are InvalidArgument.
  Status Step(const Message& m);
  // Appends `data` to the log if this node is the leader: returns where it will be committed if
  // it is (no promise that it will be). Unavailable if not the leader, Busy while transferring.
  Result<ProposeResult> Propose(std::string data);
  // Requests a linearizable read; a ReadState with the same context appears in a later Ready
  // (or never, if leadership changes: retry after a timeout). Contexts must be unique among
  // requests in flight. Unavailable when no leader is known.
  Status ReadIndex(std::string context);
  // Starts an election now (with pre-vote if configured).
  Status Campaign();
  // Asks the leader to hand leadership to `to` once `to`'s log is up to date.
  Status TransferLeader(uint64_t to);

  bool HasReady() const;
  Ready GetReady();
  // Tells the node that rd (the last GetReady) was persisted, sent and applied.
  Status Advance(const Ready& rd);

  uint64_t id() const;
  uint64_t term() const;
  uint64_t leader() const;  // 0 when unknown
  Role role() const;
  uint64_t commit_index() const;
  uint64_t applied_index() const;
  uint64_t last_index() const;
  const std::vector<uint64_t>& voters() const;

 private:
  explicit RawNode(std::unique_ptr<detail::Raft> raft);
  std::unique_ptr<detail::Raft> raft_;
};

}  // namespace tessera::raft
