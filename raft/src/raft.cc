#include "tessera/raft/raft.h"

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>

#include "raft_log.h"

namespace tessera::raft {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "pre-candidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "?";
}

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kAppend:
      return "Append";
    case MessageType::kAppendResponse:
      return "AppendResponse";
    case MessageType::kVote:
      return "Vote";
    case MessageType::kVoteResponse:
      return "VoteResponse";
    case MessageType::kPreVote:
      return "PreVote";
    case MessageType::kPreVoteResponse:
      return "PreVoteResponse";
    case MessageType::kSnapshot:
      return "Snapshot";
    case MessageType::kHeartbeat:
      return "Heartbeat";
    case MessageType::kHeartbeatResponse:
      return "HeartbeatResponse";
    case MessageType::kReadIndex:
      return "ReadIndex";
    case MessageType::kReadIndexResponse:
      return "ReadIndexResponse";
    case MessageType::kTimeoutNow:
      return "TimeoutNow";
  }
  return "?";
}

namespace detail {
namespace {

// Marks a vote request sent because of a leadership transfer: voters grant it even while they
// still hear from the (outgoing) leader.
constexpr char kTransferContext[] = "transfer";

// The leader's view of one follower.
struct Progress {
  enum class State {
    kProbe,      // not sure where the logs match: one AppendEntries at a time
    kReplicate,  // logs match up to match: stream entries, advancing next optimistically
    kSnapshot,   // a snapshot was sent; wait for the follower to acknowledge it
  };
  uint64_t match = 0;
  uint64_t next = 1;
  State state = State::kProbe;
  bool probe_sent = false;        // kProbe: an AppendEntries is outstanding
  uint64_t pending_snapshot = 0;  // kSnapshot: its index
  int snapshot_ticks = 0;         // kSnapshot: ticks since it was sent
  bool recent_active = false;     // heard from since the last check-quorum

  bool Paused() const {
    return state == State::kSnapshot || (state == State::kProbe && probe_sent);
  }
  void BecomeProbe() {
    if (state == State::kSnapshot) {
      next = std::max(match + 1, pending_snapshot + 1);
    } else {
      next = match + 1;
    }
    state = State::kProbe;
    probe_sent = false;
    pending_snapshot = 0;
  }
  void BecomeReplicate() {
    state = State::kReplicate;
    next = match + 1;
    probe_sent = false;
    pending_snapshot = 0;
  }
  void BecomeSnapshot(uint64_t index) {
    state = State::kSnapshot;
    pending_snapshot = index;
    snapshot_ticks = 0;
    probe_sent = false;
  }
  // An acknowledgement up to `index`; false if it tells nothing new.
  bool MaybeUpdate(uint64_t index) {
    bool updated = false;
    if (index > match) {
      match = index;
      updated = true;
      probe_sent = false;
    }
    next = std::max(next, index + 1);
    return updated;
  }
};

struct PendingRead {
  uint64_t index = 0;  // the commit index when the request arrived
  std::string context;
  uint64_t from = 0;  // who asked: this node or a follower
  std::set<uint64_t> acks;
};

}  // namespace

class Raft {
 public:
  Raft(const Config& config, Storage* storage)
      : id_(config.id),
        voters_(config.voters),
        election_tick_(config.election_tick),
        heartbeat_tick_(config.heartbeat_tick),
        pre_vote_(config.pre_vote),
        check_quorum_(config.check_quorum),
        max_bytes_(config.max_bytes_per_message),
        random_(config.random),
        rng_(config.seed),
        storage_(storage),
        log_(storage) {
    std::sort(voters_.begin(), voters_.end());
  }

  Status Init(const Config& config) {
    TESSERA_ASSIGN_OR_RETURN(InitialState st, storage_->LoadInitialState());
    if (!st.voters.empty()) {
      std::sort(st.voters.begin(), st.voters.end());
      if (st.voters != voters_) {
        return Status::InvalidArgument("raft: config voters differ from the snapshot's voters");
      }
    }
    TESSERA_RETURN_IF_ERROR(log_.Init(st.hard_state.commit, config.applied));
    term_ = st.hard_state.term;
    vote_ = st.hard_state.vote;
    prev_hard_ = HardState{term_, vote_, log_.committed()};
    BecomeFollower(term_, 0);
    prev_soft_ = SoftState{lead_, role_};
    return log_.error();
  }

  // ---- public operations (RawNode forwards) ----

  Status Tick() {
    TESSERA_RETURN_IF_ERROR(error());
    if (role_ == Role::kLeader) {
      TickHeartbeat();
    } else {
      TickElection();
    }
    return Finish();
  }

  Status Step(const Message& m) {
    TESSERA_RETURN_IF_ERROR(error());
    if (m.to != id_) return Status::InvalidArgument("raft: message for another node");
    if (!IsVoter(m.from) || m.from == id_) {
      return Status::InvalidArgument("raft: message from a non-member");
    }
    if (m.term == 0) return Status::InvalidArgument("raft: message without a term");
    StepNetwork(m);
    return Finish();
  }

  Result<ProposeResult> Propose(std::string data) {
    TESSERA_RETURN_IF_ERROR(error());
    if (role_ != Role::kLeader) {
      return Status::Unavailable("raft: not the leader (leader is " + std::to_string(lead_) + ")");
    }
    if (lead_transferee_ != 0) return Status::Busy("raft: leadership transfer in progress");
    Entry e;
    e.term = term_;
    e.index = log_.LastIndex() + 1;
    e.type = EntryType::kNormal;
    e.data = std::move(data);
    ProposeResult r{e.index, e.term};
    AppendEntry(std::move(e));
    BroadcastAppend();
    TESSERA_RETURN_IF_ERROR(Finish());
    return r;
  }

  Status ReadIndex(std::string context) {
    TESSERA_RETURN_IF_ERROR(error());
    if (role_ == Role::kLeader) {
      LeaderRead(std::move(context), id_);
    } else if (role_ == Role::kFollower && lead_ != 0) {
      Message m;
      m.type = MessageType::kReadIndex;
      m.to = lead_;
      m.context = std::move(context);
      Send(std::move(m));
    } else {
      return Status::Unavailable("raft: no leader to serve a read");
    }
    return Finish();
  }

  Status Campaign() {
    TESSERA_RETURN_IF_ERROR(error());
    Hup(false);
    return Finish();
  }

  Status TransferLeader(uint64_t to) {
    TESSERA_RETURN_IF_ERROR(error());
    if (!IsVoter(to)) return Status::InvalidArgument("raft: transfer to a non-member");
    if (role_ != Role::kLeader) return Status::Unavailable("raft: not the leader");
    if (to == id_ || to == lead_transferee_) return Status::Ok();
    lead_transferee_ = to;
    // The transfer must finish within an election timeout or it is abandoned (TickHeartbeat).
    election_elapsed_ = 0;
    if (prs_[to].match == log_.LastIndex()) {
      SendTimeoutNow(to);
    } else {
      SendAppend(to, true);
    }
    return Finish();
  }

  bool HasReady() {
    if (!error().ok()) return false;
    if (SoftState{lead_, role_} != prev_soft_) return true;
    if (HardState{term_, vote_, log_.committed()} != prev_hard_) return true;
    return !msgs_.empty() || !log_.unstable_entries().empty() || log_.unstable_snapshot() ||
           !read_states_.empty() || log_.HasNextCommitted();
  }

  Ready GetReady() {
    Ready rd;
    if (!error().ok()) return rd;
    SoftState soft{lead_, role_};
    if (soft != prev_soft_) {
      rd.soft_state = soft;
      prev_soft_ = soft;
    }
    HardState hard{term_, vote_, log_.committed()};
    if (hard != prev_hard_) rd.hard_state = hard;
    rd.entries = log_.unstable_entries();
    if (log_.unstable_snapshot()) rd.snapshot = *log_.unstable_snapshot();
    rd.committed_entries = log_.NextCommitted(max_bytes_);
    rd.messages = std::move(msgs_);
    msgs_.clear();
    rd.read_states = std::move(read_states_);
    read_states_.clear();
    if (!error().ok()) return Ready();
    return rd;
  }

  Status Advance(const Ready& rd) {
    TESSERA_RETURN_IF_ERROR(error());
    if (rd.hard_state) prev_hard_ = *rd.hard_state;
    if (!rd.snapshot.empty()) {
      log_.StableSnapshotTo(rd.snapshot.meta.index);
      if (rd.snapshot.meta.index > log_.applied()) log_.AppliedTo(rd.snapshot.meta.index);
    }
    if (!rd.entries.empty()) log_.StableTo(rd.entries.back().index, rd.entries.back().term);
    if (!rd.committed_entries.empty()) log_.AppliedTo(rd.committed_entries.back().index);
    return error();
  }

  uint64_t id() const { return id_; }
  uint64_t term() const { return term_; }
  uint64_t leader() const { return lead_; }
  Role role() const { return role_; }
  uint64_t commit_index() const { return log_.committed(); }
  uint64_t applied_index() const { return log_.applied(); }
  uint64_t last_index() { return log_.LastIndex(); }
  const std::vector<uint64_t>& voters() const { return voters_; }

 private:
  const Status& error() const { return log_.error(); }

  // After a storage failure nothing this call produced may leave the node.
  Status Finish() {
    if (!error().ok()) {
      msgs_.clear();
      read_states_.clear();
    }
    return error();
  }

  bool IsVoter(uint64_t id) const { return std::binary_search(voters_.begin(), voters_.end(), id); }
  size_t Quorum() const { return voters_.size() / 2 + 1; }

  uint64_t Random() { return random_ ? random_() : rng_(); }

  void ResetRandomizedElectionTimeout() {
    randomized_election_timeout_ =
        election_tick_ + static_cast<int>(Random() % static_cast<uint64_t>(election_tick_));
  }

  void Send(Message m) {
    m.from = id_;
    // Vote traffic carries its own term (a pre-vote asks for term + 1, a grant echoes the
    // candidate's term); everything else is sent at the current term.
    if (m.term == 0) m.term = term_;
    msgs_.push_back(std::move(m));
  }

  // ---- role changes ----

  void Reset(uint64_t term) {
    if (term_ != term) {
      term_ = term;
      vote_ = 0;
    }
    lead_ = 0;
    election_elapsed_ = 0;
    heartbeat_elapsed_ = 0;
    ResetRandomizedElectionTimeout();
    lead_transferee_ = 0;
    votes_.clear();
    prs_.clear();
    const uint64_t last = log_.LastIndex();
    for (uint64_t v : voters_) {
      Progress& pr = prs_[v];
      pr.next = last + 1;
      if (v == id_) pr.match = last;
    }
    // Reads in flight were accepted under the old role; their askers retry.
    pending_reads_.clear();
    reads_before_commit_.clear();
  }

  void BecomeFollower(uint64_t term, uint64_t lead) {
    Reset(term);
    lead_ = lead;
    role_ = Role::kFollower;
  }

  void BecomePreCandidate() {
    // Neither the term nor the vote changes: a pre-vote that fails leaves no trace.
    role_ = Role::kPreCandidate;
    votes_.clear();
    lead_ = 0;
  }

  void BecomeCandidate() {
    Reset(term_ + 1);
    vote_ = id_;
    role_ = Role::kCandidate;
  }

  void BecomeLeader() {
    Reset(term_);
    lead_ = id_;
    role_ = Role::kLeader;
    prs_[id_].BecomeReplicate();
    for (auto& [id, pr] : prs_) pr.recent_active = (id == id_);
    // The no-op: committing an entry of its own term is how a leader learns what is committed
    // (Figure 8) and unlocks ReadIndex.
    Entry noop;
    noop.term = term_;
    noop.index = log_.LastIndex() + 1;
    noop.type = EntryType::kNoop;
    AppendEntry(std::move(noop));
  }

  // ---- elections ----

  void Hup(bool transfer) {
    if (role_ == Role::kLeader) return;
    if (pre_vote_ && !transfer) {
      StartCampaign(true, false);
    } else {
      StartCampaign(false, transfer);
    }
  }

  void StartCampaign(bool pre, bool transfer) {
    uint64_t term;
    MessageType type;
    if (pre) {
      BecomePreCandidate();
      type = MessageType::kPreVote;
      term = term_ + 1;
    } else {
      BecomeCandidate();
      type = MessageType::kVote;
      term = term_;
    }
    if (Poll(id_, true) == VoteResult::kWon) {  // a single-member cluster
      if (pre) {
        StartCampaign(false, transfer);
      } else {
        BecomeLeader();
        BroadcastAppend();
      }
      return;
    }
    const uint64_t last_index = log_.LastIndex();
    const uint64_t last_term = log_.LastTerm();
    for (uint64_t v : voters_) {
      if (v == id_) continue;
      Message m;
      m.type = type;
      m.to = v;
      m.term = term;
      m.index = last_index;
      m.log_term = last_term;
      if (transfer) m.context = kTransferContext;
      Send(std::move(m));
    }
  }

  enum class VoteResult { kPending, kWon, kLost };

  VoteResult Poll(uint64_t from, bool granted) {
    votes_.emplace(from, granted);  // the first answer from each voter counts
    size_t yes = 0, no = 0;
    for (const auto& [id, g] : votes_) (g ? yes : no)++;
    if (yes >= Quorum()) return VoteResult::kWon;
    if (no > voters_.size() - Quorum()) return VoteResult::kLost;
    return VoteResult::kPending;
  }

  // A follower that heard from a leader within the election timeout believes the leader is
  // alive; with check-quorum it refuses to help depose it (the leader will step down by itself
  // if it really lost its quorum).
  bool InLease() const { return check_quorum_ && lead_ != 0 && election_elapsed_ < election_tick_; }

  // ---- ticks ----

  void TickElection() {
    ++election_elapsed_;
    if (election_elapsed_ >= randomized_election_timeout_) {
      election_elapsed_ = 0;
      Hup(false);
    }
  }

  void TickHeartbeat() {
    ++heartbeat_elapsed_;
    ++election_elapsed_;
    for (auto& [id, pr] : prs_) {
      if (pr.state == Progress::State::kSnapshot) ++pr.snapshot_ticks;
    }
    if (election_elapsed_ >= election_tick_) {
      election_elapsed_ = 0;
      if (check_quorum_ && !CheckQuorumActive()) {
        BecomeFollower(term_, 0);
        return;
      }
      lead_transferee_ = 0;  // a transfer that did not finish in an election timeout is dropped
    }
    if (heartbeat_elapsed_ >= heartbeat_tick_) {
      heartbeat_elapsed_ = 0;
      // Carry the newest pending read: if the heartbeat round that started it was lost, this
      // one confirms it (and every read before it) instead.
      BroadcastHeartbeat(pending_reads_.empty() ? std::string() : pending_reads_.back().context);
    }
  }

  bool CheckQuorumActive() {
    size_t active = 0;
    for (auto& [id, pr] : prs_) {
      if (id == id_ || pr.recent_active) ++active;
      if (id != id_) pr.recent_active = false;
    }
    return active >= Quorum();
  }

  // ---- messages ----

  void StepNetwork(const Message& m) {
    const bool vote_request = m.type == MessageType::kVote || m.type == MessageType::kPreVote;
    if (m.term > term_) {
      if (vote_request && m.context != kTransferContext && InLease()) return;
      // A pre-vote never changes our term (answering it is free), and a pre-vote grant echoes the
      // term we asked for: we adopt it only by winning the pre-vote.
      const bool keeps_term =
          m.type == MessageType::kPreVote || (m.type == MessageType::kPreVoteResponse && !m.reject);
      if (!keeps_term) {
        const bool from_leader = m.type == MessageType::kAppend ||
                                 m.type == MessageType::kHeartbeat ||
                                 m.type == MessageType::kSnapshot;
        BecomeFollower(m.term, from_leader ? m.from : 0);
      }
    } else if (m.term < term_) {
      if ((check_quorum_ || pre_vote_) &&
          (m.type == MessageType::kHeartbeat || m.type == MessageType::kAppend)) {
        // A leader of an older term. With check-quorum / pre-vote our higher term may never
        // reach it through votes (we may be the one that was cut off), so tell it directly;
        // it steps down and a fresh election brings everyone to one term.
        Message r;
        r.type = MessageType::kAppendResponse;
        r.to = m.from;
        Send(std::move(r));
      } else if (m.type == MessageType::kPreVote) {
        Message r;
        r.type = MessageType::kPreVoteResponse;
        r.to = m.from;
        r.reject = true;
        Send(std::move(r));
      }
      return;
    }

    if (vote_request) {
      HandleVoteRequest(m);
      return;
    }
    switch (role_) {
      case Role::kLeader:
        StepLeader(m);
        break;
      case Role::kCandidate:
      case Role::kPreCandidate:
        StepCandidate(m);
        break;
      case Role::kFollower:
        StepFollower(m);
        break;
    }
  }

  void HandleVoteRequest(const Message& m) {
    const bool pre = m.type == MessageType::kPreVote;
    const bool can_vote = vote_ == m.from || (vote_ == 0 && lead_ == 0) || (pre && m.term > term_);
    Message r;
    r.type = pre ? MessageType::kPreVoteResponse : MessageType::kVoteResponse;
    r.to = m.from;
    if (can_vote && log_.IsUpToDate(m.index, m.log_term)) {
      r.term = m.term;
      if (!pre) {
        // The vote goes into HardState; the driver persists it before the grant is sent.
        election_elapsed_ = 0;
        vote_ = m.from;
      }
    } else {
      r.term = term_;
      r.reject = true;
    }
    Send(std::move(r));
  }

  void StepCandidate(const Message& m) {
    const MessageType my_response =
        role_ == Role::kPreCandidate ? MessageType::kPreVoteResponse : MessageType::kVoteResponse;
    switch (m.type) {
      case MessageType::kAppend:
      case MessageType::kHeartbeat:
      case MessageType::kSnapshot:
        // A leader exists at our term (or a higher one, handled above).
        BecomeFollower(m.term, m.from);
        StepFollower(m);
        return;
      default:
        break;
    }
    if (m.type != my_response) return;
    switch (Poll(m.from, !m.reject)) {
      case VoteResult::kWon:
        if (role_ == Role::kPreCandidate) {
          StartCampaign(false, false);
        } else {
          BecomeLeader();
          BroadcastAppend();
        }
        break;
      case VoteResult::kLost:
        BecomeFollower(term_, 0);
        break;
      case VoteResult::kPending:
        break;
    }
  }

  void StepFollower(const Message& m) {
    switch (m.type) {
      case MessageType::kAppend:
        election_elapsed_ = 0;
        lead_ = m.from;
        HandleAppend(m);
        break;
      case MessageType::kHeartbeat: {
        election_elapsed_ = 0;
        lead_ = m.from;
        log_.CommitTo(m.commit);
        Message r;
        r.type = MessageType::kHeartbeatResponse;
        r.to = m.from;
        r.context = m.context;
        Send(std::move(r));
        break;
      }
      case MessageType::kSnapshot:
        election_elapsed_ = 0;
        lead_ = m.from;
        HandleSnapshot(m);
        break;
      case MessageType::kReadIndexResponse: {
        read_states_.push_back(ReadState{m.index, m.context});
        break;
      }
      case MessageType::kTimeoutNow:
        Hup(true);
        break;
      default:
        // Including kReadIndex: we are not the leader (any more); the asker times out and retries.
        break;
    }
  }

  void HandleAppend(const Message& m) {
    Message r;
    r.type = MessageType::kAppendResponse;
    r.to = m.from;
    if (m.index < log_.committed()) {
      // Everything up to our commit index matches the leader already.
      r.index = log_.committed();
      Send(std::move(r));
      return;
    }
    if (auto last_new = log_.MaybeAppend(m.index, m.log_term, m.commit, m.entries)) {
      r.index = *last_new;
      Send(std::move(r));
      return;
    }
    // Reject, with what the leader needs to skip a whole term per round trip: the term of our
    // entry at m.index and the first index we hold of that term (or our end when too short).
    r.reject = true;
    r.index = m.index;
    const uint64_t last = log_.LastIndex();
    if (m.index > last) {
      r.log_term = 0;
      r.reject_hint = last + 1;
    } else {
      const uint64_t conflict_term = log_.TermOrZero(m.index);
      uint64_t first = m.index;
      // Entries at or below the commit index match the leader, so the search stops there.
      while (first - 1 > log_.committed() && log_.TermOrZero(first - 1) == conflict_term) --first;
      r.log_term = conflict_term;
      r.reject_hint = first;
    }
    Send(std::move(r));
  }

  void HandleSnapshot(const Message& m) {
    Message r;
    r.type = MessageType::kAppendResponse;
    r.to = m.from;
    const SnapshotMeta& meta = m.snapshot.meta;
    if (meta.index <= log_.committed()) {
      r.index = log_.committed();  // stale or duplicate
    } else if (log_.MatchTerm(meta.index, meta.term)) {
      // We hold the snapshot's last entry, so our log up to there is the leader's: just commit.
      log_.CommitTo(meta.index);
      r.index = log_.committed();
    } else {
      log_.Restore(m.snapshot);
      r.index = log_.LastIndex();
    }
    Send(std::move(r));
  }

  // ---- leader ----

  void AppendEntry(Entry e) {
    const uint64_t last = log_.Append({std::move(e)});
    prs_[id_].MaybeUpdate(last);
    MaybeCommit();
  }

  // Commits the highest index a quorum holds, if it is of this term.
  bool MaybeCommit() {
    std::vector<uint64_t> matches;
    for (const auto& [id, pr] : prs_) matches.push_back(pr.match);
    std::sort(matches.begin(), matches.end(), std::greater<>());
    const uint64_t candidate = matches[Quorum() - 1];
    const bool had_current = CommittedInCurrentTerm();
    if (!log_.MaybeCommit(candidate, term_)) return false;
    if (!had_current) ReleaseReadsAfterCommit();
    return true;
  }

  bool CommittedInCurrentTerm() { return log_.TermOrZero(log_.committed()) == term_; }

  void BroadcastAppend() {
    for (uint64_t v : voters_) {
      if (v != id_) SendAppend(v, true);
    }
  }

  void BroadcastHeartbeat(const std::string& context) {
    for (uint64_t v : voters_) {
      if (v == id_) continue;
      Message m;
      m.type = MessageType::kHeartbeat;
      m.to = v;
      // Never more than the follower is known to hold: it may not have the rest yet.
      m.commit = std::min(prs_[v].match, log_.committed());
      m.context = context;
      Send(std::move(m));
    }
  }

  // Sends the follower what it is missing: entries from next, or the snapshot when they are
  // compacted. Returns whether a message was sent.
  bool SendAppend(uint64_t to, bool send_if_empty) {
    Progress& pr = prs_[to];
    if (pr.Paused()) return false;
    const uint64_t prev = pr.next - 1;
    auto prev_term = log_.Term(prev);
    Result<std::vector<Entry>> entries = std::vector<Entry>();
    if (prev_term.ok()) entries = log_.Slice(pr.next, log_.LastIndex() + 1, max_bytes_);
    if (!prev_term.ok() || !entries.ok()) {
      const Status& s = !prev_term.ok() ? prev_term.status() : entries.status();
      if (!s.IsNotFound()) {
        TESSERA_ASSERT(!error().ok(), "raft: leader cannot read entry ", prev, ": ", s.ToString());
        return false;
      }
      return SendSnapshot(to, pr);
    }
    if (entries->empty() && !send_if_empty) return false;
    Message m;
    m.type = MessageType::kAppend;
    m.to = to;
    m.index = prev;
    m.log_term = *prev_term;
    m.commit = log_.committed();
    m.entries = std::move(*entries);
    if (pr.state == Progress::State::kReplicate) {
      if (!m.entries.empty()) pr.next = m.entries.back().index + 1;  // optimistic pipelining
    } else {
      pr.probe_sent = true;
    }
    Send(std::move(m));
    return true;
  }

  bool SendSnapshot(uint64_t to, Progress& pr) {
    auto snap = storage_->GetSnapshot();
    if (!snap.ok()) {
      log_.RecordError(snap.status());
      return false;
    }
    TESSERA_ASSERT(!snap->empty(), "raft: entries are compacted but storage has no snapshot");
    Message m;
    m.type = MessageType::kSnapshot;
    m.to = to;
    m.snapshot = std::move(*snap);
    pr.BecomeSnapshot(m.snapshot.meta.index);
    Send(std::move(m));
    return true;
  }

  void SendTimeoutNow(uint64_t to) {
    Message m;
    m.type = MessageType::kTimeoutNow;
    m.to = to;
    Send(std::move(m));
  }

  void StepLeader(const Message& m) {
    auto it = prs_.find(m.from);
    if (it == prs_.end()) return;
    Progress& pr = it->second;
    switch (m.type) {
      case MessageType::kAppendResponse:
        pr.recent_active = true;
        if (m.reject) {
          HandleAppendReject(m, pr);
        } else {
          HandleAppendSuccess(m, pr);
        }
        break;
      case MessageType::kHeartbeatResponse:
        pr.recent_active = true;
        pr.probe_sent = false;
        if (pr.state == Progress::State::kSnapshot && pr.snapshot_ticks >= election_tick_) {
          // The snapshot (or its acknowledgement) was probably lost: probe again, which resends
          // it if the follower still needs it.
          pr.BecomeProbe();
        }
        if (pr.match < log_.LastIndex()) SendAppend(m.from, true);
        if (!m.context.empty()) AckRead(m.context, m.from);
        break;
      case MessageType::kReadIndex:
        LeaderRead(m.context, m.from);
        break;
      default:
        break;
    }
  }

  void HandleAppendReject(const Message& m, Progress& pr) {
    // Where the follower's log may match ours: after our last entry of the follower's
    // conflicting term, or at its first entry of that term if we have none of it.
    uint64_t next = m.reject_hint;
    if (m.log_term != 0) {
      uint64_t i = std::min(m.index, log_.LastIndex());
      const uint64_t floor = log_.FirstIndex() - 1;
      while (i > floor && log_.TermOrZero(i) > m.log_term) --i;
      if (i > floor && log_.TermOrZero(i) == m.log_term) next = i + 1;
    }
    if (pr.state == Progress::State::kReplicate) {
      if (m.index <= pr.match) return;  // stale: that index was acknowledged since
      pr.BecomeProbe();
    } else if (pr.next - 1 != m.index) {
      return;  // stale: answers a probe we have since replaced
    }
    pr.next = std::max(std::min(next, m.index), pr.match + 1);
    pr.probe_sent = false;
    SendAppend(m.from, true);
  }

  void HandleAppendSuccess(const Message& m, Progress& pr) {
    const bool was_paused = pr.Paused();
    if (!pr.MaybeUpdate(m.index)) {
      if (pr.state == Progress::State::kProbe && was_paused && m.index + 1 >= pr.next) {
        pr.probe_sent = false;  // an answer to our probe that tells nothing new still unpauses
        SendAppend(m.from, false);
      }
      return;
    }
    if (pr.state == Progress::State::kProbe ||
        (pr.state == Progress::State::kSnapshot && pr.match >= pr.pending_snapshot)) {
      pr.BecomeReplicate();
    }
    if (MaybeCommit()) {
      BroadcastAppend();  // tells everyone the new commit index
    } else {
      // A follower that was paused missed the broadcast of the commit index; an empty
      // AppendEntries brings it up to date without waiting for a heartbeat.
      SendAppend(m.from, was_paused);
    }
    // Keep streaming while the follower is behind and not paused (max_bytes limits messages).
    while (pr.state == Progress::State::kReplicate && pr.next <= log_.LastIndex() &&
           SendAppend(m.from, false)) {
    }
    if (m.from == lead_transferee_ && pr.match == log_.LastIndex()) SendTimeoutNow(m.from);
  }

  // ---- ReadIndex ----

  void LeaderRead(std::string context, uint64_t from) {
    if (voters_.size() == 1) {
      if (CommittedInCurrentTerm()) {
        ServeRead(PendingRead{log_.committed(), std::move(context), from, {}});
      } else {
        reads_before_commit_.push_back(PendingRead{0, std::move(context), from, {}});
      }
      return;
    }
    if (!CommittedInCurrentTerm()) {
      // Until our no-op commits, our commit index may be behind the previous leader's.
      reads_before_commit_.push_back(PendingRead{0, std::move(context), from, {}});
      return;
    }
    StartRead(context, from);
  }

  void StartRead(const std::string& context, uint64_t from) {
    PendingRead r{log_.committed(), context, from, {id_}};
    pending_reads_.push_back(std::move(r));
    BroadcastHeartbeat(context);
  }

  void ReleaseReadsAfterCommit() {
    std::vector<PendingRead> waiting;
    waiting.swap(reads_before_commit_);
    for (auto& r : waiting) {
      if (voters_.size() == 1) {
        r.index = log_.committed();
        ServeRead(std::move(r));
      } else {
        StartRead(r.context, r.from);
      }
    }
  }

  void AckRead(const std::string& context, uint64_t from) {
    auto it = std::find_if(pending_reads_.begin(), pending_reads_.end(),
                           [&](const PendingRead& r) { return r.context == context; });
    if (it == pending_reads_.end()) return;
    it->acks.insert(from);
    if (it->acks.size() < Quorum()) return;
    // A quorum confirmed we were leader after this request arrived, hence after every earlier
    // one too: all of them are served.
    const auto end = std::next(it);
    for (auto r = pending_reads_.begin(); r != end; ++r) ServeRead(std::move(*r));
    pending_reads_.erase(pending_reads_.begin(), end);
  }

  void ServeRead(PendingRead r) {
    if (r.from == id_) {
      read_states_.push_back(ReadState{r.index, std::move(r.context)});
    } else {
      Message m;
      m.type = MessageType::kReadIndexResponse;
      m.to = r.from;
      m.index = r.index;
      m.context = std::move(r.context);
      Send(std::move(m));
    }
  }

  const uint64_t id_;
  std::vector<uint64_t> voters_;
  const int election_tick_;
  const int heartbeat_tick_;
  const bool pre_vote_;
  const bool check_quorum_;
  const uint64_t max_bytes_;
  std::function<uint64_t()> random_;
  std::mt19937_64 rng_;
  Storage* storage_;
  RaftLog log_;

  uint64_t term_ = 0;
  uint64_t vote_ = 0;
  uint64_t lead_ = 0;
  Role role_ = Role::kFollower;
  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;
  uint64_t lead_transferee_ = 0;
  std::map<uint64_t, Progress> prs_;
  std::map<uint64_t, bool> votes_;
  std::vector<Message> msgs_;
  std::deque<PendingRead> pending_reads_;
  std::vector<PendingRead> reads_before_commit_;
  std::vector<ReadState> read_states_;
  SoftState prev_soft_;
  HardState prev_hard_;
};

}  // namespace detail

RawNode::RawNode(std::unique_ptr<detail::Raft> raft) : raft_(std::move(raft)) {}
RawNode::~RawNode() = default;

Result<std::unique_ptr<RawNode>> RawNode::Create(const Config& config, Storage* storage) {
  if (storage == nullptr) return Status::InvalidArgument("raft: no storage");
  if (config.id == 0) return Status::InvalidArgument("raft: node id 0 is reserved for \"none\"");
  std::vector<uint64_t> voters = config.voters;
  std::sort(voters.begin(), voters.end());
  if (voters.empty() || std::adjacent_find(voters.begin(), voters.end()) != voters.end() ||
      voters.front() == 0 || !std::binary_search(voters.begin(), voters.end(), config.id)) {
    return Status::InvalidArgument(
        "raft: voters must be distinct nonzero ids that include this node's id");
  }
  if (config.election_tick < 1 || config.heartbeat_tick < 1 ||
      config.heartbeat_tick >= config.election_tick) {
    return Status::InvalidArgument("raft: need 1 <= heartbeat_tick < election_tick");
  }
  auto raft = std::make_unique<detail::Raft>(config, storage);
  TESSERA_RETURN_IF_ERROR(raft->Init(config));
  return std::unique_ptr<RawNode>(new RawNode(std::move(raft)));
}

Status RawNode::Tick() { return raft_->Tick(); }
Status RawNode::Step(const Message& m) { return raft_->Step(m); }
Result<ProposeResult> RawNode::Propose(std::string data) { return raft_->Propose(std::move(data)); }
Status RawNode::ReadIndex(std::string context) { return raft_->ReadIndex(std::move(context)); }
Status RawNode::Campaign() { return raft_->Campaign(); }
Status RawNode::TransferLeader(uint64_t to) { return raft_->TransferLeader(to); }
bool RawNode::HasReady() const { return raft_->HasReady(); }
Ready RawNode::GetReady() { return raft_->GetReady(); }
Status RawNode::Advance(const Ready& rd) { return raft_->Advance(rd); }
uint64_t RawNode::id() const { return raft_->id(); }
uint64_t RawNode::term() const { return raft_->term(); }
uint64_t RawNode::leader() const { return raft_->leader(); }
Role RawNode::role() const { return raft_->role(); }
uint64_t RawNode::commit_index() const { return raft_->commit_index(); }
uint64_t RawNode::applied_index() const { return raft_->applied_index(); }
uint64_t RawNode::last_index() const { return raft_->last_index(); }
const std::vector<uint64_t>& RawNode::voters() const { return raft_->voters(); }

}  // namespace tessera::raft
