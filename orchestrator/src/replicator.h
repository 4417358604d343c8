// Replicator: the driver of one raft::RawNode inside a manager. It owns the Ready loop (persist in
// the raft log file, send over Thrift, apply to the manager's state machine), ticks the clock, and
// turns proposals and linearizable reads into futures that complete once applied here.
//
// Invariants:
//  - Every entry is applied to the StateMachine exactly once per process, in index order, on the
//    driver thread, and only once it is on this disk: after the Ready that carried it was saved
//    (raft.h's Ready order), or before the save of a later Ready for entries saved earlier.
//  - Messages leave only after the Ready that produced them was saved: a vote or an append
//    acknowledgement always promises durable state. (A leader's appends and heartbeats promise
//    nothing about its disk and leave before its save.) A message to a peer whose RaftStep is
//    waiting in Exchange leaves in that call's reply; every other one by the peer's sender.
//  - A failed Save stops the driver for good (Failed() turns true): the manager then exits
//    rather than run on state it could not persist.
//  - A Propose answers with the state machine's result for exactly the entry it proposed (index
//    and term match); an entry overwritten by another leader, or leadership lost, answers
//    Unavailable: the caller cannot know whether it applied and retries an idempotent command.
//
// Thread safety: Propose, ReadBarrier, Receive, Exchange and the accessors may be called from
// any thread.
// The StateMachine is called only from the driver thread (Apply, Snapshot, Restore) and from
// Start before the driver runs; its other users must lock it themselves.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tessera/common/status.h"
#include "tessera/raft/raft.h"
#include "tessera/raft/storage.h"

namespace tessera::rpc::gen {
class RaftMessage;
}

namespace tessera::orchestrator {

// A received Thrift RaftMessage as a raft::Message; false when a field is out of range.
bool RaftFromGen(const rpc::gen::RaftMessage& g, raft::Message* m);
// A raft::Message as the Thrift struct that carries it.
rpc::gen::RaftMessage RaftToGen(const raft::Message& m);

class ReplicatedState {
 public:
  virtual ~ReplicatedState() = default;
  // Applies one committed command; returns the reply for its proposer. `replay`: the entry was
  // committed before this process started (its effects outside the state already happened).
  virtual std::string Apply(uint64_t index, const std::string& command, bool replay) = 0;
  virtual std::string Snapshot() = 0;
  virtual Status Restore(const std::string& image) = 0;
  // Leadership of this manager changed (called on the driver thread).
  virtual void OnLeadership(bool leader) = 0;
};

struct ReplicaPeer {
  uint64_t id = 0;  // 1-based position in --peers
  std::string address;
};

struct ReplicatorOptions {
  uint64_t id = 0;
  std::vector<ReplicaPeer> peers;  // every member, this one included
  std::string dir;                 // raft log, hard state and snapshot (WalStorage)
  std::string token;               // cluster token for RaftStep
  int tick_ms = 20;
  int election_tick = 10;  // 200-400 ms election timeout with 20 ms ticks
  int heartbeat_tick = 2;
  uint64_t snapshot_every = 5000;  // entries applied between snapshots (and log compactions)
  uint64_t seed = 0;               // 0: from the clock
};

class Replicator {
 public:
  static Result<std::unique_ptr<Replicator>> Start(const ReplicatorOptions& options,
                                                   ReplicatedState* state);
  ~Replicator();
  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;
  void Stop();

  // Appends `command` if this node leads, waits until it is applied here and returns the
  // state machine's reply. Unavailable when not the leader, on timeout, or when the outcome
  // became unknown (leadership lost, entry overwritten).
  Result<std::string> Propose(std::string command, std::chrono::milliseconds timeout);
  // Waits until this leader has confirmed its leadership with a quorum after the call began and
  // applied everything committed before it: a read of the state afterwards is linearizable.
  Status ReadBarrier(std::chrono::milliseconds timeout);
  // Raft messages that arrived from a peer.
  void Receive(std::vector<raft::Message> messages);
  // Raft messages that arrived from peer `from`; returns what this node answers them with to
  // `from` (everything the driver sends to `from` while it handles them), waiting at most
  // `wait`. Answers not ready by then go by the sender thread, as all others do. Saves the
  // answers a thread hand-off and an RPC of their own: the commit path is shorter.
  std::vector<raft::Message> Exchange(std::vector<raft::Message> messages, uint64_t from,
                                      std::chrono::milliseconds wait);

  bool IsLeader() const { return leader_.load() == options_.id; }
  uint64_t LeaderId() const { return leader_.load(); }
  std::string LeaderAddress() const;  // "" when none is known
  uint64_t Term() const { return term_.load(); }
  uint64_t CommitIndex() const { return commit_.load(); }
  uint64_t AppliedIndex() const { return applied_.load(); }
  bool Failed() const { return failed_.load(); }
  const ReplicatorOptions& options() const { return options_; }
  // The member list as --peers gives it ("A,B,C"): sent with every RaftStep and checked.
  std::string PeerList() const;

 private:
  struct Waiter {
    uint64_t term = 0;
    std::promise<Result<std::string>> done;
  };
  struct PendingProposal {
    std::string data;
    std::shared_ptr<Waiter> waiter;
  };
  struct PendingRead {
    uint64_t index = 0;  // 0 until the ReadState arrives
    std::promise<Status> done;
  };
  class Sender;
  // An Exchange waiting for the driver: the messages it will return, until `done`.
  struct ReplySlot {
    uint64_t to = 0;
    std::mutex mu;
    std::condition_variable cv;
    std::vector<raft::Message> messages;
    bool done = false;
  };
  void CompleteSlots(std::vector<std::shared_ptr<ReplySlot>>* slots);

  Replicator(const ReplicatorOptions& options, ReplicatedState* state);
  void Run();
  Status HandleReady();
  void FailWaiters(const std::string& why);
  void ServeReads();
  void ApplyEntry(const raft::Entry& e);

  ReplicatorOptions options_;
  ReplicatedState* state_;
  std::unique_ptr<raft::Storage> storage_;
  std::unique_ptr<raft::RawNode> node_;
  uint64_t replay_until_ = 0;  // commit index found on disk at start
  uint64_t snapshot_index_ = 0;
  raft::HardState saved_;         // the last hard state written
  uint64_t persisted_index_ = 0;  // the last log index on disk

  std::mutex mu_;  // guards the queues below
  std::condition_variable cv_;
  std::vector<raft::Message> inbox_;
  std::vector<PendingProposal> proposals_;
  std::vector<std::pair<std::string, std::shared_ptr<PendingRead>>> read_requests_;
  std::vector<std::shared_ptr<ReplySlot>> reply_slots_;  // Exchanges whose messages are queued
  bool stop_ = false;

  // Driver-thread only.
  std::vector<std::shared_ptr<ReplySlot>> active_slots_;  // Exchanges of the inbox in hand
  std::map<uint64_t, std::shared_ptr<Waiter>> waiters_;   // by log index
  std::map<std::string, std::shared_ptr<PendingRead>> reads_;
  uint64_t next_read_ = 0;

  std::atomic<uint64_t> leader_{0};
  std::atomic<uint64_t> term_{0};
  std::atomic<uint64_t> commit_{0};
  std::atomic<uint64_t> applied_{0};
  std::atomic<bool> failed_{false};
  std::map<uint64_t, std::unique_ptr<Sender>> senders_;
  std::thread driver_;
};

}  // namespace tessera::orchestrator
