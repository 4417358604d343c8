#include "replicator.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <functional>
#include <random>

#include "convert.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {
namespace {

using Clock = std::chrono::steady_clock;

// Log entries a snapshot keeps behind it, so a follower a little behind catches up from the log
// instead of receiving the whole state.
constexpr uint64_t kCompactionSlack = 1000;
// Messages a sender holds for a peer that does not keep up; older ones are dropped (Raft
// resends what matters).
constexpr size_t kMaxQueued = 4096;

}  // namespace

gen::RaftMessage RaftToGen(const raft::Message& m) {
  gen::RaftMessage g;
  g.type = static_cast<int8_t>(m.type);
  g.from_id = static_cast<int64_t>(m.from);
  g.to_id = static_cast<int64_t>(m.to);
  g.term = static_cast<int64_t>(m.term);
  g.log_term = static_cast<int64_t>(m.log_term);
  g.index = static_cast<int64_t>(m.index);
  g.entries.reserve(m.entries.size());
  for (const auto& e : m.entries) {
    gen::RaftEntry ge;
    ge.term = static_cast<int64_t>(e.term);
    ge.index = static_cast<int64_t>(e.index);
    ge.type = static_cast<int8_t>(e.type);
    ge.data = e.data;
    g.entries.push_back(std::move(ge));
  }
  g.commit = static_cast<int64_t>(m.commit);
  g.reject = m.reject;
  g.reject_hint = static_cast<int64_t>(m.reject_hint);
  g.snapshot_index = static_cast<int64_t>(m.snapshot.meta.index);
  g.snapshot_term = static_cast<int64_t>(m.snapshot.meta.term);
  for (uint64_t v : m.snapshot.meta.voters) g.snapshot_voters.push_back(static_cast<int64_t>(v));
  g.snapshot_data = m.snapshot.data;
  g.context = m.context;
  return g;
}

// Converts a received message; false when a field is out of range (a peer speaking nonsense).
bool RaftFromGen(const gen::RaftMessage& g, raft::Message* m) {
  if (g.type < 0 || g.type > static_cast<int8_t>(raft::MessageType::kTimeoutNow)) return false;
  if (g.from_id <= 0 || g.to_id <= 0 || g.term < 0 || g.log_term < 0 || g.index < 0 ||
      g.commit < 0 || g.reject_hint < 0 || g.snapshot_index < 0 || g.snapshot_term < 0) {
    return false;
  }
  m->type = static_cast<raft::MessageType>(g.type);
  m->from = static_cast<uint64_t>(g.from_id);
  m->to = static_cast<uint64_t>(g.to_id);
  m->term = static_cast<uint64_t>(g.term);
  m->log_term = static_cast<uint64_t>(g.log_term);
  m->index = static_cast<uint64_t>(g.index);
  m->entries.clear();
  m->entries.reserve(g.entries.size());
  for (const auto& ge : g.entries) {
    if (ge.term <= 0 || ge.index <= 0 || ge.type < 0 || ge.type > 1) return false;
    raft::Entry e;
    e.term = static_cast<uint64_t>(ge.term);
    e.index = static_cast<uint64_t>(ge.index);
    e.type = static_cast<raft::EntryType>(ge.type);
    e.data = ge.data;
    m->entries.push_back(std::move(e));
  }
  m->commit = static_cast<uint64_t>(g.commit);
  m->reject = g.reject;
  m->reject_hint = static_cast<uint64_t>(g.reject_hint);
  m->snapshot.meta.index = static_cast<uint64_t>(g.snapshot_index);
  m->snapshot.meta.term = static_cast<uint64_t>(g.snapshot_term);
  m->snapshot.meta.voters.clear();
  for (int64_t v : g.snapshot_voters) {
    if (v <= 0) return false;
    m->snapshot.meta.voters.push_back(static_cast<uint64_t>(v));
  }
  m->snapshot.data = g.snapshot_data;
  m->context = g.context;
  return true;
}

// One thread per peer: sends what the driver queued as one RaftStep call, reconnecting as
// needed. A peer that cannot be reached loses the messages (Raft retries by itself).
class Replicator::Sender {
 public:
  Sender(ReplicaPeer peer, uint64_t self, std::string token, std::string peers,
         std::function<void(std::vector<raft::Message>)> on_reply)
      : peer_(std::move(peer)),
        self_(self),
        token_(std::move(token)),
        peers_(std::move(peers)),
        on_reply_(std::move(on_reply)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Sender() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Send(raft::Message m) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (queue_.size() >= kMaxQueued) queue_.pop_front();
      queue_.push_back(std::move(m));
    }
    cv_.notify_one();
  }

 private:
  void Run() {
    std::unique_ptr<gen::ManagerServiceClient> client;
    auto retry_at = Clock::now();
    std::string last_error;
    for (;;) {
      std::vector<raft::Message> batch;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        batch.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.end()));
        queue_.clear();
      }
      if (!client) {
        if (Clock::now() < retry_at) continue;  // drop: the peer was unreachable just now
        auto ep = rpc::Endpoint::Parse(peer_.address);
        auto conn = ep.ok() ? rpc::Connect(*ep, rpc::Timeouts{std::chrono::milliseconds(200),
                                                              std::chrono::milliseconds(2000)})
                            : Result<rpc::Connection>(ep.status());
        if (!conn.ok()) {
          if (conn.status().message() != last_error) {
            spdlog::debug("manager: raft peer {} at {}: {}", peer_.id, peer_.address,
                          conn.status().message());
            last_error = conn.status().message();
          }
          retry_at = Clock::now() + std::chrono::milliseconds(50);
          continue;
        }
        client = std::make_unique<gen::ManagerServiceClient>(conn->protocol);
        last_error.clear();
      }
      std::vector<gen::RaftMessage> out;
      out.reserve(batch.size());
      for (const auto& m : batch) out.push_back(RaftToGen(m));
      try {
        std::vector<gen::RaftMessage> replies;
        client->RaftStep(replies, token_, static_cast<int64_t>(self_), out, peers_);
        std::vector<raft::Message> in;
        in.reserve(replies.size());
        for (const auto& g : replies) {
          raft::Message m;
          if (!RaftFromGen(g, &m) || m.from != peer_.id || m.to != self_) {
            spdlog::warn("manager: raft peer {} at {} answered with a malformed message", peer_.id,
                         peer_.address);
            in.clear();
            break;
          }
          in.push_back(std::move(m));
        }
        if (!in.empty()) on_reply_(std::move(in));
      } catch (const gen::TesseraError& e) {
        // Refused by name (another peer list, a wrong token): say so once, keep the connection.
        if (e.message != last_error) {
          spdlog::error("manager: raft peer {} at {} refuses our messages: {}", peer_.id,
                        peer_.address, e.message);
          last_error = e.message;
        }
        retry_at = Clock::now() + std::chrono::milliseconds(50);
      } catch (const std::exception& e) {
        spdlog::debug("manager: raft peer {} at {}: {}", peer_.id, peer_.address, e.what());
        client.reset();
        retry_at = Clock::now() + std::chrono::milliseconds(50);
      }
    }
  }

  ReplicaPeer peer_;
  uint64_t self_;
  std::string token_;
  std::string peers_;
  std::function<void(std::vector<raft::Message>)> on_reply_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<raft::Message> queue_;
  bool stop_ = false;
  std::thread thread_;
};

Replicator::Replicator(const ReplicatorOptions& options, ReplicatedState* state)
    : options_(options), state_(state) {}

Result<std::unique_ptr<Replicator>> Replicator::Start(const ReplicatorOptions& options,
                                                      ReplicatedState* state) {
  std::unique_ptr<Replicator> r(new Replicator(options, state));
  // The log is an append-only file (one flush per Ready). A directory written by an earlier
  // version holds an LMDB log instead; it is kept and read as it is.
  if (std::filesystem::exists(options.dir + "/data.mdb")) {
    TESSERA_ASSIGN_OR_RETURN(r->storage_, raft::LmdbStorage::Open(options.dir));
  } else {
    TESSERA_ASSIGN_OR_RETURN(r->storage_, raft::WalStorage::Open(options.dir));
  }
  TESSERA_ASSIGN_OR_RETURN(raft::InitialState init, r->storage_->LoadInitialState());
  TESSERA_ASSIGN_OR_RETURN(raft::Snapshot snap, r->storage_->GetSnapshot());
  raft::Config c;
  c.id = options.id;
  for (const auto& p : options.peers) c.voters.push_back(p.id);
  c.election_tick = options.election_tick;
  c.heartbeat_tick = options.heartbeat_tick;
  c.seed = options.seed != 0 ? options.seed
                             : static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^
                                   (options.id * 0x9e3779b97f4a7c15ULL);
  if (!snap.empty()) {
    TESSERA_RETURN_IF_ERROR(state->Restore(snap.data).WithContext("raft snapshot"));
    c.applied = snap.meta.index;
    r->snapshot_index_ = snap.meta.index;
    r->applied_.store(snap.meta.index);
  }
  r->replay_until_ = init.hard_state.commit;
  r->saved_ = init.hard_state;
  TESSERA_ASSIGN_OR_RETURN(r->persisted_index_, r->storage_->LastIndex());
  r->term_.store(init.hard_state.term);
  TESSERA_ASSIGN_OR_RETURN(r->node_, raft::RawNode::Create(c, r->storage_.get()));
  for (const auto& p : options.peers) {
    if (p.id != options.id)
      r->senders_[p.id] =
          std::make_unique<Sender>(p, options.id, options.token, r->PeerList(),
                                   [rp = r.get()](auto m) { rp->Receive(std::move(m)); });
  }
  if (options.peers.size() == 1) {
    // Alone: nobody to wait for.
    TESSERA_RETURN_IF_ERROR(r->node_->Campaign());
  }
  r->driver_ = std::thread([p = r.get()] { p->Run(); });
  return r;
}

Replicator::~Replicator() { Stop(); }

void Replicator::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ && !driver_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (driver_.joinable()) driver_.join();
  senders_.clear();
  FailWaiters("the manager is stopping");
  std::lock_guard<std::mutex> l(mu_);
  for (auto& p : proposals_) p.waiter->done.set_value(Status::Unavailable("manager stopping"));
  proposals_.clear();
  for (auto& [ctx, r] : read_requests_) r->done.set_value(Status::Unavailable("manager stopping"));
  read_requests_.clear();
}

std::string Replicator::PeerList() const {
  std::string s;
  for (const auto& p : options_.peers) s += (s.empty() ? "" : ",") + p.address;
  return s;
}

std::string Replicator::LeaderAddress() const {
  uint64_t l = leader_.load();
  for (const auto& p : options_.peers) {
    if (p.id == l) return p.address;
  }
  return "";
}

Result<std::string> Replicator::Propose(std::string command, std::chrono::milliseconds timeout) {
  auto w = std::make_shared<Waiter>();
  auto f = w->done.get_future();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ || failed_.load()) return Status::Unavailable("the manager is stopping");
    proposals_.push_back({std::move(command), w});
  }
  cv_.notify_one();
  if (f.wait_for(timeout) != std::future_status::ready) {
    return Status::Unavailable("not committed within " + std::to_string(timeout.count()) +
                               " ms (no quorum of managers?)");
  }
  return f.get();
}

Status Replicator::ReadBarrier(std::chrono::milliseconds timeout) {
  auto r = std::make_shared<PendingRead>();
  auto f = r->done.get_future();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ || failed_.load()) return Status::Unavailable("the manager is stopping");
    read_requests_.emplace_back(std::to_string(next_read_++), r);
  }
  cv_.notify_one();
  if (f.wait_for(timeout) != std::future_status::ready) {
    return Status::Unavailable("leadership not confirmed within " +
                               std::to_string(timeout.count()) + " ms (no quorum of managers?)");
  }
  return f.get();
}

void Replicator::Receive(std::vector<raft::Message> messages) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return;
    for (auto& m : messages) inbox_.push_back(std::move(m));
  }
  cv_.notify_one();
}

std::vector<raft::Message> Replicator::Exchange(std::vector<raft::Message> messages, uint64_t from,
                                                std::chrono::milliseconds wait) {
  auto slot = std::make_shared<ReplySlot>();
  slot->to = from;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ || failed_.load()) return {};  // no driver will answer
    for (auto& m : messages) inbox_.push_back(std::move(m));
    reply_slots_.push_back(slot);
  }
  cv_.notify_one();
  std::unique_lock<std::mutex> l(slot->mu);
  slot->cv.wait_for(l, wait, [&] { return slot->done; });
  slot->done = true;  // from now on the driver sends to `from` by the sender thread
  return std::move(slot->messages);
}

void Replicator::CompleteSlots(std::vector<std::shared_ptr<ReplySlot>>* slots) {
  for (auto& slot : *slots) {
    {
      std::lock_guard<std::mutex> l(slot->mu);
      slot->done = true;
    }
    slot->cv.notify_all();
  }
  slots->clear();
}

void Replicator::FailWaiters(const std::string& why) {
  for (auto& [index, w] : waiters_) w->done.set_value(Status::Unavailable(why));
  waiters_.clear();
  for (auto& [ctx, r] : reads_) r->done.set_value(Status::Unavailable(why));
  reads_.clear();
}

void Replicator::ApplyEntry(const raft::Entry& e) {
  std::string reply;
  if (e.type == raft::EntryType::kNormal) {
    reply = state_->Apply(e.index, e.data, e.index <= replay_until_);
  }
  applied_.store(e.index);
  auto it = waiters_.find(e.index);
  if (it != waiters_.end()) {
    if (it->second->term == e.term) {
      it->second->done.set_value(std::move(reply));
    } else {
      it->second->done.set_value(Status::Unavailable("overwritten by another leader"));
    }
    waiters_.erase(it);
  }
}

void Replicator::ServeReads() {
  for (auto it = reads_.begin(); it != reads_.end();) {
    if (it->second->index != 0 && applied_.load() >= it->second->index) {
      it->second->done.set_value(Status::Ok());
      it = reads_.erase(it);
    } else {
      ++it;
    }
  }
}

void Replicator::Run() {
  const auto tick = std::chrono::milliseconds(options_.tick_ms);
  auto next_tick = Clock::now() + tick;
  for (;;) {
    std::vector<raft::Message> inbox;
    std::vector<PendingProposal> proposals;
    std::vector<std::pair<std::string, std::shared_ptr<PendingRead>>> reads;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_until(l, next_tick, [&] {
        return stop_ || !inbox_.empty() || !proposals_.empty() || !read_requests_.empty();
      });
      if (stop_) return;
      inbox.swap(inbox_);
      proposals.swap(proposals_);
      reads.swap(read_requests_);
      active_slots_.swap(reply_slots_);
    }
    Status s;
    auto now = Clock::now();
    for (int n = 0; now >= next_tick && s.ok(); ++n) {
      // Ticks missed while a slow fsync held the loop are caught up, a few at most.
      if (n < 3) s = node_->Tick();
      next_tick += tick;
    }
    for (const auto& m : inbox) {
      if (!s.ok()) break;
      Status st = node_->Step(m);
      if (st.IsInvalidArgument()) {
        spdlog::warn("manager: dropped a raft message from {}: {}", m.from, st.message());
      } else {
        s = st;
      }
    }
    for (auto& p : proposals) {
      auto r = s.ok() ? node_->Propose(std::move(p.data)) : Result<raft::ProposeResult>(s);
      if (!r.ok()) {
        p.waiter->done.set_value(Status::Unavailable("not the leader"));
        continue;
      }
      p.waiter->term = r->term;
      waiters_[r->index] = p.waiter;
    }
    for (auto& [ctx, r] : reads) {
      Status st = s.ok() ? node_->ReadIndex(ctx) : s;
      if (!st.ok()) {
        r->done.set_value(Status::Unavailable("not the leader"));
        continue;
      }
      reads_[ctx] = r;
    }
    while (s.ok() && node_->HasReady()) s = HandleReady();
    CompleteSlots(&active_slots_);  // the answers to this inbox are all out
    if (!s.ok() && !s.IsUnavailable() && !s.IsBusy()) {
      spdlog::critical("manager: raft stopped: {}", s.ToString());
      const std::string why = "the manager's raft log failed: " + s.message();
      FailWaiters(why);
      std::lock_guard<std::mutex> l(mu_);
      failed_.store(true);  // under mu_: no proposal queues after this and waits forever
      for (auto& p : proposals_) p.waiter->done.set_value(Status::Unavailable(why));
      proposals_.clear();
      for (auto& [ctx, r] : read_requests_) r->done.set_value(Status::Unavailable(why));
      read_requests_.clear();
      return;
    }
  }
}

Status Replicator::HandleReady() {
  raft::Ready rd = node_->GetReady();
  auto send = [this](raft::Message& m) {
    // An answer to a peer whose RaftStep is still waiting goes back in its reply.
    for (auto& slot : active_slots_) {
      if (slot->to != m.to) continue;
      std::lock_guard<std::mutex> l(slot->mu);
      if (!slot->done) {
        slot->messages.push_back(std::move(m));
        return;
      }
    }
    auto it = senders_.find(m.to);
    if (it != senders_.end()) it->second->Send(std::move(m));
  };
  // A leader's appends and heartbeats promise nothing about its own disk (its term and vote
  // were flushed when it campaigned), so they leave before its flush: the followers' flushes
  // run in parallel with the leader's (Raft thesis 10.2.1). Commitment still waits for the
  // quorum's acknowledgements, and nothing is applied before this Ready is saved.
  std::vector<bool> sent(rd.messages.size(), false);
  if (node_->role() == raft::Role::kLeader) {
    for (size_t i = 0; i < rd.messages.size(); ++i) {
      auto type = rd.messages[i].type;
      if (type == raft::MessageType::kAppend || type == raft::MessageType::kHeartbeat) {
        send(rd.messages[i]);
        sent[i] = true;
      }
    }
  }
  // Committed entries already on this disk (saved by an earlier Ready) are applied before this
  // Ready's flush: the flush of new entries must not delay the answers for old ones.
  size_t applied_early = 0;
  if (rd.snapshot.empty()) {
    while (applied_early < rd.committed_entries.size() &&
           rd.committed_entries[applied_early].index <= persisted_index_) {
      ApplyEntry(rd.committed_entries[applied_early++]);
    }
  }
  // A Ready that only moves the commit index writes nothing: Raft needs term, vote and log on
  // disk, not the commit index (a restarted member learns it again; the one on disk is only
  // ever behind). It is written with the next hard state that must be durable.
  const bool commit_only = rd.hard_state && rd.entries.empty() && rd.snapshot.empty() &&
                           rd.hard_state->term == saved_.term && rd.hard_state->vote == saved_.vote;
  if (!commit_only && (rd.hard_state || !rd.entries.empty() || !rd.snapshot.empty())) {
    TESSERA_RETURN_IF_ERROR(storage_->Save(rd.hard_state ? &*rd.hard_state : nullptr, rd.entries,
                                           rd.snapshot.empty() ? nullptr : &rd.snapshot));
  }
  if (!rd.snapshot.empty()) persisted_index_ = rd.snapshot.meta.index;
  if (!rd.entries.empty()) persisted_index_ = rd.entries.back().index;
  if (rd.hard_state) {
    saved_ = *rd.hard_state;
    term_.store(rd.hard_state->term);
  }
  for (size_t i = 0; i < rd.messages.size(); ++i) {
    if (!sent[i]) send(rd.messages[i]);
  }
  if (rd.soft_state) {
    bool was_leader = IsLeader();
    leader_.store(rd.soft_state->leader);
    bool leads = rd.soft_state->role == raft::Role::kLeader;
    if (leads != was_leader) {
      spdlog::info("manager: {} (raft term {}, leader {})",
                   leads ? "became the leader" : "is a follower", node_->term(),
                   rd.soft_state->leader);
      if (!leads) FailWaiters("leadership moved to another manager");
      state_->OnLeadership(leads);
    }
  }
  if (!rd.snapshot.empty()) {
    TESSERA_RETURN_IF_ERROR(state_->Restore(rd.snapshot.data).WithContext("installed snapshot"));
    applied_.store(rd.snapshot.meta.index);
    snapshot_index_ = rd.snapshot.meta.index;
    while (!waiters_.empty() && waiters_.begin()->first <= rd.snapshot.meta.index) {
      waiters_.begin()->second->done.set_value(Status::Unavailable("replaced by a snapshot"));
      waiters_.erase(waiters_.begin());
    }
  }
  for (size_t i = applied_early; i < rd.committed_entries.size(); ++i) {
    ApplyEntry(rd.committed_entries[i]);
  }
  if (!rd.committed_entries.empty()) commit_.store(rd.committed_entries.back().index);
  commit_.store(std::max(commit_.load(), node_->commit_index()));
  for (const auto& rs : rd.read_states) {
    auto it = reads_.find(rs.context);
    if (it != reads_.end()) it->second->index = std::max<uint64_t>(rs.index, 1);
  }
  ServeReads();
  TESSERA_RETURN_IF_ERROR(node_->Advance(rd));
  const uint64_t applied = applied_.load();
  if (applied >= snapshot_index_ + options_.snapshot_every) {
    TESSERA_ASSIGN_OR_RETURN(uint64_t term, storage_->Term(applied));
    raft::Snapshot snap;
    snap.meta.index = applied;
    snap.meta.term = term;
    snap.meta.voters = node_->voters();
    snap.data = state_->Snapshot();
    TESSERA_RETURN_IF_ERROR(storage_->CreateSnapshot(snap));
    snapshot_index_ = applied;
    if (applied > kCompactionSlack) {
      TESSERA_RETURN_IF_ERROR(storage_->Compact(applied - kCompactionSlack));
    }
  }
  return Status::Ok();
}

}  // namespace tessera::orchestrator
