#include "protector.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <thrift/transport/TTransportException.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "page_stream.h"
#include "parity_holder.h"
#include "tessera/erasure/codec.h"

namespace tessera::orchestrator {
namespace {

using Clock = std::chrono::steady_clock;
using gen::ErrorCode;

// Why an append to a skipped holder failed without being sent (TailBatcher::skipped).
constexpr const char* kSkipNote = "; appends skip it until a call once a second reaches it again";

constexpr const char* kSeqTree = "_p";
constexpr const char* kSeqKey = "seq";
constexpr int kDeltaChunk = 256;  // pages per StageDelta call (1 MiB)
// Pages per rebuild batch: 1 MiB per source call. With 4 MiB batches the answers in flight
// (sources x batches) outgrew the caches, and every copy of a page went to memory.
constexpr int kRebuildChunk = 256;

void PutU32(std::string* s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
std::string SeqBytes(int64_t seq) {
  std::string s;
  PutU32(&s, static_cast<uint32_t>(static_cast<uint64_t>(seq) >> 32));
  PutU32(&s, static_cast<uint32_t>(static_cast<uint64_t>(seq)));
  return s;
}

// The tail seq a snapshot includes (0: none).
int64_t SeqOf(const engine::ReadTxn& snap) {
  auto v = snap.Get(kSeqTree, kSeqKey);
  if (!v.ok() || v->size() != 8) return 0;
  return static_cast<int64_t>((uint64_t{GetU32(v->data())} << 32) | GetU32(v->data() + 4));
}

std::string Hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
}
bool Unhex(const std::string& h, std::string* out) {
  if (h.size() % 2) return false;
  out->clear();
  for (size_t i = 0; i < h.size(); i += 2) {
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int a = nib(h[i]), b = nib(h[i + 1]);
    if (a < 0 || b < 0) return false;
    out->push_back(static_cast<char>(a * 16 + b));
  }
  return true;
}

std::string PinLine(int64_t g, const engine::SnapshotDescriptor& d) {
  std::ostringstream out;
  out << g << ' ' << d.page_size << ' ' << d.commit_seq << ' ' << d.last_page << ' '
      << Hex(d.meta_bytes) << '\n';
  return out.str();
}

bool AllZero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

}  // namespace

std::string ShardTree(int shard) { return "s" + std::to_string(shard); }

void AddOps(const std::vector<gen::Op>& ops, engine::WriteBatch* b) {
  for (const auto& op : ops) {
    if (op.put) {
      b->Put(ShardTree(op.shard), op.key, op.value);
    } else {
      b->Delete(ShardTree(op.shard), op.key);
    }
  }
}

std::string EncodeOps(const std::vector<gen::Op>& ops) {
  std::string s;
  PutU32(&s, static_cast<uint32_t>(ops.size()));
  for (const auto& op : ops) {
    s.push_back(op.put ? 1 : 0);
    PutU32(&s, static_cast<uint32_t>(op.shard));
    PutU32(&s, static_cast<uint32_t>(op.key.size()));
    s += op.key;
    PutU32(&s, static_cast<uint32_t>(op.value.size()));
    s += op.value;
  }
  return s;
}

Result<std::vector<gen::Op>> DecodeOps(const std::string& b) {
  auto bad = [] { return Status::Corruption("tail entry is truncated or malformed"); };
  if (b.size() < 4) return bad();
  size_t pos = 4;
  uint32_t n = GetU32(b.data());
  std::vector<gen::Op> ops;
  for (uint32_t i = 0; i < n; ++i) {
    if (b.size() - pos < 9) return bad();
    gen::Op op;
    op.put = b[pos] != 0;
    op.shard = static_cast<int32_t>(GetU32(b.data() + pos + 1));
    uint32_t kl = GetU32(b.data() + pos + 5);
    pos += 9;
    if (b.size() - pos < kl + size_t{4}) return bad();
    op.key = b.substr(pos, kl);
    pos += kl;
    uint32_t vl = GetU32(b.data() + pos);
    pos += 4;
    if (b.size() - pos < vl) return bad();
    op.value = b.substr(pos, vl);
    pos += vl;
    ops.push_back(std::move(op));
  }
  if (pos != b.size()) return bad();
  return ops;
}

// Drops the protector's pins unless disarmed (declared after the Db they belong to).
struct PinGuard {
  Protector* p;
  bool armed = true;
  ~PinGuard() {
    if (armed) p->Close();
  }
};

// One Write in flight. `answered`, `stored`, `abandon`, `done`, `commit_turn`, `waiting` and
// `status` are guarded by seq_mu_; the writer sleeps on its waiter until `done` (or its turn to
// commit), and only the thread that commits its batch or hands it the turn wakes it (never a
// broadcast: on two cores every needless wake-up costs a context switch).
struct Protector::Pending {
  const std::vector<gen::Op>* ops = nullptr;
  int64_t seq = 0;
  bool sync = false;
  size_t holders = 0;   // tail appends this batch waits for
  size_t need = 0;      // of which must have stored the entry
  size_t answered = 0;  // appends finished, stored or not
  size_t stored = 0;
  bool abandon = false;
  bool maybe_stored = false;  // a holder stored the entry or gave no answer (may have stored it)
  bool done = false;
  bool commit_turn = false;  // ready and next in seq order: its writer commits (see CommitReady)
  bool waiting = false;      // its writer sleeps on `waiter` (in Write)
  Status status;
  std::shared_ptr<Waiter> waiter;
};

void Protector::Wakes::Add(bool* waiting, const std::shared_ptr<Waiter>& w) {
  if (!*waiting) return;
  list.push_back(w);  // first: a failed allocation leaves the flag set, not a wake lost
  *waiting = false;
}

void Protector::Wakes::Run() {
  for (auto& w : list) w->sem.release();
  list.clear();
}

Protector::Wakes::~Wakes() { Run(); }

void Protector::Waiter::Sleep(std::unique_lock<std::mutex>& l) {
  l.unlock();
  sem.acquire();
  l.lock();
}

namespace {
int64_t FailpointSeq(const char* name) { return std::atoll(FailpointArg(name).c_str()); }
}  // namespace

Protector::Protector(ProtectorOptions o)
    : crash_after_tail_(FailpointSeq("crash_after_tail")),
      crash_before_ack_(FailpointSeq("crash_before_ack")),
      fail_undo_(FailpointSeq("fail_undo")),
      crash_in_advance_(FailpointSeq("crash_in_advance")),
      fail_commit_after_first_(FailpointSeq("fail_commit_after_first")),
      o_(std::move(o)),
      holder_pool_(
          rpc::Timeouts{std::chrono::milliseconds(1000), std::chrono::milliseconds(10000)}),
      quick_pool_(rpc::Timeouts{std::chrono::milliseconds(1000), kQuickTimeout}),
      worker_pool_(
          rpc::Timeouts{std::chrono::milliseconds(1000), std::chrono::milliseconds(10000)}) {}

Protector::~Protector() { Close(); }

void Protector::Close() {
  Reveal(/*closing=*/true);  // the snapshot must go before the Db does
  std::lock_guard<std::mutex> l(mu_);
  pins_.clear();
}

Result<std::unique_ptr<engine::ReadTxn>> Protector::BeginVisibleRead(engine::Db* db) {
  // Under the lock: with visible_ null no commit can be hidden before this read begins.
  std::lock_guard<std::mutex> v(visible_mu_);
  return visible_ ? db->BeginReadAt(*visible_) : db->BeginRead();
}

Status Protector::VisibleGet(engine::Db* db, std::string_view tree, std::string_view key,
                             std::string* value) {
  const uint64_t g = hide_gen_.load();
  if ((g & 1) == 0) {
    Status st = db->Get(tree, key, value);
    if (hide_gen_.load() == g) return st;  // nothing was hidden before or during the read
  }
  std::shared_ptr<engine::ReadTxn> vis;
  {
    std::lock_guard<std::mutex> v(visible_mu_);
    if (!visible_) return db->Get(tree, key, value);
    vis = visible_;
  }
  // A visible snapshot, perhaps revealed past by now: still a state readers may see.
  TESSERA_ASSIGN_OR_RETURN(auto txn, db->BeginReadAt(*vis));
  TESSERA_ASSIGN_OR_RETURN(std::string_view v, txn->Get(tree, key));
  value->assign(v.data(), v.size());
  return Status::Ok();
}

Status Protector::Hide(engine::Db* db) {
  std::lock_guard<std::mutex> v(visible_mu_);
  if (!poison_.ok()) return poison_;
  if (!visible_) {
    auto r = db->BeginRead();
    if (!r.ok()) return r.status();
    visible_ = std::shared_ptr<engine::ReadTxn>(std::move(r).value());
  }
  // Odd from before the commit is published (seq_cst, as the engine's publish) until Reveal.
  if ((hide_gen_.load() & 1) == 0) hide_gen_.fetch_add(1);
  return Status::Ok();
}

void Protector::Reveal(bool closing) {
  std::lock_guard<std::mutex> v(visible_mu_);
  if (!poison_.ok() && !closing) return;  // what is hidden stays hidden for good
  visible_.reset();
  if ((hide_gen_.load() & 1) != 0) hide_gen_.fetch_add(1);
}

Status Protector::Poisoned() {
  std::lock_guard<std::mutex> v(visible_mu_);
  return poison_;
}

Status Protector::Undo(engine::Db* db, const std::vector<TailReq*>& group, int64_t last_seq) {
  std::shared_ptr<engine::ReadTxn> vis;
  {
    std::lock_guard<std::mutex> v(visible_mu_);
    vis = visible_;
  }
  TESSERA_ASSERT(vis != nullptr, "undo of a commit that was not hidden");
  if (fail_undo_ > 0 && last_seq >= fail_undo_) {
    // Test failpoint (TESSERA_FAILPOINT=fail_undo:N): the undo fails, as a full disk would.
    return Status::IoError("failpoint fail_undo at seq " + std::to_string(last_seq));
  }
  // Read through the visible snapshot itself (this thread is its only user; readers only open
  // second handles on it): no reader slot is needed, so running out of them cannot stop an undo.
  engine::WriteBatch b;
  for (const TailReq* q : group) {
    for (const auto& op : *q->pending->ops) {
      std::string tree = ShardTree(op.shard);
      auto v = vis->Get(tree, op.key);
      if (v.ok()) {
        b.Put(tree, op.key, *v);
      } else if (v.status().IsNotFound()) {
        b.Delete(tree, op.key);
      } else {
        return v.status();
      }
    }
  }
  // The seq stays recorded: a restart must not replay this group from a holder that stored it
  // after all (its answer lost): readers never saw it.
  b.Put(kSeqTree, kSeqKey, SeqBytes(last_seq));
  // Always durable before the failure is reported: the hidden commit may already be on disk
  // (a reclaim flush, an advance's Sync, the kernel's writeback), and a power cut that kept it
  // but lost the undo would bring the failed write back with its seq recorded (the TLA+ model
  // found this: tla/findings/Protection_commit_first_unsynced_undo.cfg).
  return db->Write(b, engine::WriteOptions{true});
}

void Protector::ApplyMap(const ShardMap& map) {
  const Protection& p = map.protection;
  std::lock_guard<std::mutex> l(mu_);
  if (p.scheme == "none" || p.scheme.empty()) {
    enabled_.store(false);
    return;
  }
  scheme_ = p.scheme;
  k_ = p.k;
  m_ = p.m;
  int slot = -1;
  for (size_t i = 0; i < p.slot_nodes.size(); ++i) {
    if (p.slot_nodes[i] == o_.node_id) slot = static_cast<int>(i);
  }
  slot_.store(slot);
  if (slot >= 0 && static_cast<size_t>(slot) < p.slot_epochs.size()) epoch_ = p.slot_epochs[slot];
  slot_addresses_ = p.slot_addresses;
  holders_.resize(p.holder_nodes.size());
  for (size_t j = 0; j < p.holder_nodes.size(); ++j) {
    const std::string address = j < p.holder_addresses.size() ? p.holder_addresses[j] : "";
    if (holders_[j].node != p.holder_nodes[j] || holders_[j].address != address) {
      // Another node, or the same one elsewhere: what the last one did not answer says nothing
      // about it. (A batcher's lock is never held while mu_ is taken.)
      if (j < batchers_.size()) {
        std::lock_guard<std::mutex> bl(batchers_[j]->mu);
        SetSkipped(batchers_[j].get(), false);
      }
    }
    if (holders_[j].node != p.holder_nodes[j]) {
      holders_[j].node = p.holder_nodes[j];
      holders_[j].gen = -1;  // a new holder: learn what it records
    }
    holders_[j].address = address;
  }
  frozen_.store(p.frozen);
  enabled_.store(slot >= 0);
}

void Protector::SetProgress(const std::string& json) {
  std::lock_guard<std::mutex> l(progress_mu_);
  progress_ = json;
}

std::string Protector::Progress() const {
  std::lock_guard<std::mutex> l(progress_mu_);
  return progress_;
}

template <typename F>
Status Protector::CallHolder(size_t j, F&& f, bool* no_answer, bool* unreachable, bool quick) {
  std::string addr, node;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (j >= holders_.size()) return Status::Unavailable("no parity holder " + std::to_string(j));
    addr = holders_[j].address;
    node = holders_[j].node;
  }
  if (addr.empty()) {
    return Status::Unavailable("parity holder " + std::to_string(j) + " has not registered");
  }
  auto ep = rpc::Endpoint::Parse(addr);
  if (!ep.ok()) return ep.status();
  Status last;
  constexpr int kAttempts = 3;
  auto& pool = quick ? quick_pool_ : holder_pool_;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto lease = pool.Get(*ep);
    if (!lease.ok()) {
      std::string msg = "parity holder " + node;
      msg += " at " + addr + ": ";
      msg += lease.status().message();
      last = Status::Unavailable(msg);
    } else {
      try {
        f(*(*lease).operator->());
        Unskip(j);
        return Status::Ok();
      } catch (const gen::TesseraError& e) {
        Unskip(j);  // a refusal is an answer: it is there
        Status s = FromError(e);
        if (e.code == ErrorCode::STALE_EPOCH) {
          return Status::Unavailable("stale epoch: " + s.message()).WithCCode(-2);
        }
        if (e.code == ErrorCode::GENERATION_MISMATCH) {
          return Status::Unavailable("generation mismatch: " + s.message()).WithCCode(-7);
        }
        return s;
      } catch (const std::exception& e) {
        if (no_answer != nullptr) *no_answer = true;
        lease->Broken();
        const auto* te = dynamic_cast<const apache::thrift::transport::TTransportException*>(&e);
        const bool timed_out =
            te != nullptr &&
            te->getType() == apache::thrift::transport::TTransportException::TIMED_OUT;
        if (!timed_out) {
          // The other pooled connections are likely dead too (a restart). Not after a timeout:
          // the holder is slow or hung, and the connections to the others are fine.
          holder_pool_.Clear();
          quick_pool_.Clear();
        }
        std::string msg = "parity holder " + node;
        msg += " at " + addr + ": ";
        msg += e.what();
        last = Status::Unavailable(msg);
        if (quick && timed_out) {
          last = Status::Unavailable(msg + " (no answer in " +
                                     std::to_string(kQuickTimeout.count()) + " ms)");
          break;
        }
      }
    }
    // A pause before the next attempt only: after the last one the caller learns at once.
    if (attempt + 1 < kAttempts)
      std::this_thread::sleep_for(std::chrono::milliseconds(50 << attempt));
  }
  if (unreachable != nullptr) *unreachable = true;
  return last;
}

// ---- the write path -------------------------------------------------------------------------

void Protector::Write(engine::Db* db, const std::vector<gen::Op>& ops, bool sync) {
  if (Status poison = Poisoned(); !poison.ok()) {
    Throw(ErrorCode::INTERNAL, poison.message(), o_.node_id);
  }
  gen::TailEntry e;
  e.batch = EncodeOps(ops);
  // One per writer thread, shared with whoever may wake it (who may do so after this Write
  // returned: the wake is sent after the notifier unlocked).
  thread_local const auto waiter = std::make_shared<Waiter>();
  Pending p;
  p.ops = &ops;
  p.sync = sync;
  p.waiter = waiter;
  int slot;
  int64_t epoch;
  size_t m;
  std::vector<TailBatcher*> batchers;
  {
    std::lock_guard<std::mutex> l(mu_);
    slot = slot_.load();
    epoch = epoch_;
    m = holders_.size();
    while (batchers_.size() < m) {
      batchers_.push_back(std::make_unique<TailBatcher>());
      batchers_.back()->index = batchers_.size() - 1;
    }
    for (size_t j = 0; j < m; ++j) batchers.push_back(batchers_[j].get());
  }
  p.holders = m;
  p.need = o_.min_holders > 0 ? std::min<size_t>(static_cast<size_t>(o_.min_holders), m) : m;
  std::vector<TailReq> reqs(m);
  for (size_t j = 0; j < m; ++j) {
    reqs[j].entry = &e;
    reqs[j].sync = sync;
    reqs[j].pending = &p;
    reqs[j].waiter = waiter;
  }
  // From the seq on, queues and ready_ point into this frame until `done`, and every later
  // writer waits for this seq to pass: nothing may throw before then (an allocation failure
  // ends the process, and a restart replays the tails).
  [&]() noexcept {
    {
      // The seq and the queue positions are taken together, so every holder's queue is in seq
      // order: with one holder, an acknowledged group is a run of consecutive seqs.
      std::lock_guard<std::mutex> l(seq_mu_);
      p.seq = ++next_seq_;
      e.seq = p.seq;
      for (size_t j = 0; j < m; ++j) {
        std::lock_guard<std::mutex> bl(batchers[j]->mu);
        batchers[j]->queue.push_back(&reqs[j]);
      }
      if (m == 0) {  // nowhere to store the entry: abandoned, but its seq must still pass
        p.abandon = true;
        ready_[p.seq] = &p;
      }
    }
    if (m == 0) CommitReady(db);
    // Every holder's queue has the entry; drive each in turn (a leader sends every queued entry
    // in one call, so the holders work in parallel when writers are many). The batch is ready
    // once every append has answered; the thread that makes it ready commits it, unless a
    // commit is under way (that committer hands the turn on) or an earlier seq is not ready.
    for (size_t j = 0; j < m; ++j) DriveTail(db, batchers[j], &reqs[j], slot, epoch);
    std::unique_lock<std::mutex> l(seq_mu_);
    while (!p.done) {
      if (p.commit_turn) {
        p.commit_turn = false;
        l.unlock();
        CommitReady(db);
        l.lock();
        continue;
      }
      p.waiting = true;
      p.waiter->Sleep(l);
    }
  }();
  const size_t stored = p.stored;  // p is done: nothing writes it any more
  bool stale = false;
  std::string missing;
  for (size_t j = 0; j < m; ++j) {
    const Status& st = reqs[j].status;
    if (!st.ok()) {
      stale = stale || st.c_code() == -2;
      missing += (missing.empty() ? "" : "; ") + st.message();
    }
  }
  // A holder that stored the entry, or gave no answer, may replay it in a rebuild.
  bool maybe_stored = false;
  for (size_t j = 0; j < m; ++j)
    maybe_stored = maybe_stored || reqs[j].status.ok() || reqs[j].no_answer;
  if (p.abandon) {
    // The seq is recorded locally as passed (Undo, or CommitReady for an abandoned batch): no
    // restart replays it. A holder may still keep the entry, and a rebuild of this worker would
    // replay it: the failure is reported only once every holder's generation covers the seq.
    if (maybe_stored && !SettleGivenUp(db, p.seq)) {
      Throw(ErrorCode::UNAVAILABLE,
            "write outcome unknown: not applied on this worker, but its tail entry is at " +
                std::to_string(stored) + " of " + std::to_string(m) +
                " parity holders (and perhaps at one that gave no answer), which cannot be told "
                "to drop it yet (the others: " +
                missing +
                "); if this worker's disk is lost before that, its rebuild may apply the write",
            o_.node_id);
    }
    Throw(stale ? ErrorCode::STALE_EPOCH : ErrorCode::UNAVAILABLE,
          "write not applied: tail entry stored at " + std::to_string(stored) + " of " +
              std::to_string(m) + " parity holders (" + missing + ")",
          o_.node_id);
  }
  if (!p.status.ok()) {
    // The engine refused the commit, but every holder keeps the entry: a restart replays it.
    Throw(p.status.IsInvalidArgument() ? ErrorCode::INVALID_ARGUMENT : ErrorCode::INTERNAL,
          p.status.ToString() +
              (maybe_stored ? " (the parity holders keep its tail entry: a restart may apply it)"
                            : ""),
          o_.node_id);
  }
}

// Waits for `r` to be answered by its holder; whoever finds the holder idle sends every queued
// entry in one AppendTail call, lets the next leader go, commits what became ready and then wakes
// exactly the writers it answered. A TailReq lives on its writer's stack until `done` is seen
// under b->mu, so it is touched only under b->mu once answered.
void Protector::DriveTail(engine::Db* db, TailBatcher* b, TailReq* r, int slot,
                          int64_t epoch) noexcept {
  Wakes wakes;  // declared first: sent once `l` is unlocked
  std::unique_lock<std::mutex> l(b->mu);
  while (!r->done) {
    if (b->busy || r->sent) {
      r->waiting = true;  // cleared by whoever wakes it
      r->waiter->Sleep(l);
      continue;
    }
    b->busy = true;
    std::vector<TailReq*> group;
    size_t bytes = 0;
    while (b->queue.size() > group.size() && group.size() < 1000 && bytes < (8u << 20)) {
      group.push_back(b->queue[group.size()]);
      group.back()->sent = true;
      bytes += group.back()->entry->batch.size();
    }
    b->queue.erase(b->queue.begin(), b->queue.begin() + static_cast<ptrdiff_t>(group.size()));
    const bool skip = b->skipped;
    l.unlock();
    // Overlap: with one holder, and this group next in seq order with no commit under way, its
    // local commit goes ahead while the append is in flight (one round trip instead of a round
    // trip plus a commit), hidden from readers until acknowledged. Not while the
    // crash_after_tail failpoint is armed for these seqs: it needs the commit after the append.
    const int64_t last = group.back()->pending->seq;
    bool overlap = false;
    if (!skip) {
      std::lock_guard<std::mutex> sl(seq_mu_);
      overlap =
          !committing_ && ready_.empty() && !(crash_after_tail_ > 0 && last >= crash_after_tail_);
      for (size_t i = 0; overlap && i < group.size(); ++i) {
        const Pending* pd = group[i]->pending;
        overlap = pd->holders == 1 && pd->seq == committed_seq_ + 1 + static_cast<int64_t>(i);
      }
      if (overlap) committing_ = true;
    }
    if (overlap && !Hide(db).ok()) {  // no reader slot, or poisoned: the plain path decides
      Reveal();
      std::lock_guard<std::mutex> sl(seq_mu_);
      committing_ = false;
      overlap = false;
    }
    int64_t recorded = 0;
    // Read before sending: an advance may move the holder on while the answer is on its way,
    // and the answer then names the generation before, which is no loss of data.
    int64_t known_gen = -1;
    std::string known_node;
    {
      std::lock_guard<std::mutex> ml(mu_);
      if (b->index < holders_.size()) {
        known_gen = holders_[b->index].gen;
        known_node = holders_[b->index].node;
      }
    }
    Status st, local;
    bool commit_tried = false;
    bool no_answer = false;
    bool unreachable = false;
    if (skip) {
      // Nothing is sent: the entry is certainly not stored there (no_answer stays false).
      std::lock_guard<std::mutex> ml(mu_);
      const bool known = b->index < holders_.size();
      st = Status::Unavailable("parity holder " +
                               (known ? holders_[b->index].node : std::to_string(b->index)) +
                               (known ? " at " + holders_[b->index].address : std::string()) +
                               " is not answering" + kSkipNote);
    } else {
      try {
        std::vector<gen::TailEntry> entries;
        entries.reserve(group.size());
        bool sync = false;
        for (TailReq* q : group) {
          entries.push_back(*q->entry);
          sync = sync || q->sync;
        }
        engine::WriteBatch wb;
        if (overlap) {
          for (TailReq* q : group) AddOps(*q->pending->ops, &wb);
          wb.Put(kSeqTree, kSeqKey, SeqBytes(last));
        }
        // A short timeout only when the writes can be acknowledged without this holder
        // (--min-holders below the holder count): otherwise a write fails without it anyway, and
        // a busy holder (an append waits for its LMDB writer lock behind a large advance, then
        // syncs) must get its full time.
        const Pending* first = group.front()->pending;
        const bool quick = first->need < first->holders;
        st = CallHolder(
            b->index,
            [&](gen::ParityServiceClient& c) {
              c.send_AppendTail(o_.token, slot, epoch, entries, sync);
              if (overlap && !commit_tried) {  // once, whatever attempt the call succeeds at
                commit_tried = true;
                try {
                  local = db->Write(wb, engine::WriteOptions{sync});
                } catch (const std::exception& ex) {  // not a transport error: no retry. (Db::Write
                                                      // throws only allocation failures, before it
                                                      // publishes anything.)
                  local = Status::Internal(std::string("local commit: ") + ex.what());
                }
                if (crash_before_ack_ > 0 && last >= crash_before_ack_) {
                  // Test failpoint (TESSERA_FAILPOINT=crash_before_ack:N): die between the local
                  // commit and the tail acknowledgement.
                  spdlog::warn("{}: failpoint crash_before_ack at seq {}", o_.node_id, last);
                  ::raise(SIGKILL);
                }
              }
              // The answer is due within a round trip: waiting for it awake saves the wake-up
              // of a sleeping read (`--poll-us`; see rpc::ServerOptions::poll).
              if (o_.poll.count() > 0) rpc::SpinForReply(c.getInputProtocol().get(), o_.poll);
              recorded = c.recv_AppendTail();
            },
            &no_answer, &unreachable, quick);
      } catch (const std::exception& ex) {  // allocation: the group must still be answered
        st = Status::Internal(std::string("tail append: ") + ex.what());
      }
    }
    if (st.ok()) {
      std::lock_guard<std::mutex> ml(mu_);
      // (Only while the row names the node it named at the send: a map may have put another
      // there since, whose answer says nothing about the first.)
      if (b->index < holders_.size() && holders_[b->index].node == known_node &&
          recorded < known_gen) {
        // The holder went back in time: it lost its data (a replaced disk). Re-protect to it.
        spdlog::warn("{}: parity holder {} records generation {} but had {}: re-protecting",
                     o_.node_id, b->index, recorded, known_gen);
        holders_[b->index].gen = -1;
      }
    }
    bool any_ready = false;
    if (overlap) {
      if (!commit_tried || !local.ok()) {
        Reveal();  // nothing was committed: nothing hidden
        if (!st.ok() && no_answer) {
          // Given up, and the holder may have stored it: record the seq as passed, as
          // CommitReady does for an abandoned batch (a failure here leaves the outcome unknown).
          Status rec = RecordSeq(db, last);
          if (!rec.ok())
            spdlog::warn("{}: recording given-up seq {}: {}", o_.node_id, last, rec.message());
        }
      }
      if (commit_tried && local.ok()) {
        Status undone;
        if (!st.ok()) {
          try {
            undone = Undo(db, group, last);
          } catch (const std::exception& ex) {
            undone = Status::Internal(std::string("undo: ") + ex.what());
          }
          if (undone.ok()) {
            spdlog::warn("{}: tail append of seqs up to {} failed ({}): its local commit undone",
                         o_.node_id, last, st.message());
          } else {
            // The engine holds a write no holder stored. Readers keep the visible snapshot for
            // good and every later write is refused: revealing anything would expose it.
            spdlog::error(
                "{}: undo of seqs up to {} after a failed tail append: {}; refusing "
                "writes; the next start rebuilds from parity",
                o_.node_id, last, undone.ToString());
            // The engine may make that commit durable before long (a flush, a clean close):
            // the next start must not trust it, and rebuilds from parity instead.
            Status marked = WriteFileDurably(o_.data_dir + "/unprotected", undone.message() + "\n");
            if (!marked.ok()) {
              spdlog::error(
                  "{}: cannot mark the engine untrusted ({}): a restart may serve the "
                  "failed write",
                  o_.node_id, marked.ToString());
            }
            std::lock_guard<std::mutex> v(visible_mu_);
            poison_ = Status::Internal("an unprotected local commit could not be undone (" +
                                       undone.message() +
                                       "); restart the worker: it rebuilds from parity");
          }
        }
        Reveal();  // the latest commit: this group, or the undo of it (not when poisoned)
      }
      std::lock_guard<std::mutex> sl(seq_mu_);
      for (TailReq* q : group) {
        Pending* pd = q->pending;
        ++pd->answered;
        if (st.ok()) ++pd->stored;
        pd->abandon = pd->stored < pd->need;
        if (commit_tried) pd->status = local;
        pd->done = true;
        wakes.Add(&pd->waiting, pd->waiter);
      }
      EndCommit(last, group.size(), &wakes);
    } else {
      std::lock_guard<std::mutex> sl(seq_mu_);
      for (TailReq* q : group) {
        Pending* pd = q->pending;
        ++pd->answered;
        if (st.ok()) ++pd->stored;
        if (st.ok() || no_answer) pd->maybe_stored = true;
        if (pd->answered == pd->holders) {
          pd->abandon = pd->stored < pd->need;
          ready_[pd->seq] = pd;
          any_ready = true;
        }
      }
    }
    l.lock();
    b->busy = false;
    if (unreachable && SetSkipped(b, true)) {
      spdlog::warn("{}: {}{}", o_.node_id, st.message(), kSkipNote);
    }
    // The next group goes out while this one commits: led by the first queued writer waiting
    // here (with several holders, a writer may still be busy at another one).
    for (TailReq* q : b->queue) {
      if (q->waiting) {
        wakes.Add(&q->waiting, q->waiter);
        break;
      }
    }
    l.unlock();
    wakes.Run();
    // Commit before answering the group (one pass, so this is bounded): with one holder its
    // writers then usually wake once, already committed.
    if (any_ready) CommitReady(db);
    l.lock();
    for (TailReq* q : group) {
      q->status = st;
      q->no_answer = no_answer;
      q->done = true;
      if (q != r) wakes.Add(&q->waiting, q->waiter);
    }
    if (!r->done) {  // this writer's entry is in a later group: wake this one's before waiting
      l.unlock();
      wakes.Run();
      l.lock();
    }
  }
}

// Commits ready batches in seq order: whoever finds the next seq ready commits every
// consecutive ready batch in one engine write (group commit), recording the last seq. One pass
// only, so a caller answering its own group is never held for long: if the next seq became
// ready meanwhile (its thread found this commit under way and left it), its writer gets the
// turn and commits it.
void Protector::CommitReady(engine::Db* db) noexcept {
  Wakes wakes;  // declared first: sent once `l` is unlocked
  std::unique_lock<std::mutex> l(seq_mu_);
  if (!committing_) {
    int64_t s = committed_seq_ + 1;
    std::vector<Pending*> group;
    for (auto g = ready_.find(s); g != ready_.end() && g->first == s; g = ready_.find(s)) {
      group.push_back(g->second);
      ready_.erase(g);
      ++s;
    }
    if (group.empty()) return;
    committing_ = true;
    l.unlock();
    if (crash_after_tail_ > 0 && s - 1 >= crash_after_tail_) {
      // Test failpoint (TESSERA_FAILPOINT=crash_after_tail:N): die between the tail appends and
      // the local commit, as a power cut or SIGKILL there would.
      spdlog::warn("{}: failpoint crash_after_tail at seq {}", o_.node_id, s - 1);
      ::raise(SIGKILL);
    }
    engine::WriteBatch wb;
    bool sync = false, abandoned = false;
    for (Pending* g : group) {
      if (g->abandon) {
        abandoned = abandoned || g->maybe_stored;  // nothing to record when no holder has it
        continue;
      }
      AddOps(*g->ops, &wb);
      sync = sync || g->sync;
    }
    // An abandoned batch's seq is recorded too, durably before its failure is reported: a holder
    // may have stored its entry after all (the answer lost), and a restart that replayed the
    // tail from an older seq would apply a write its client was told failed.
    const bool write = wb.Count() > 0 || abandoned;
    Status st = write ? Poisoned() : Status::Ok();  // a hidden write must stay so
    if (write && st.ok()) {
      wb.Put(kSeqTree, kSeqKey, SeqBytes(s - 1));
      st = db->Write(wb, engine::WriteOptions{sync || abandoned});
    }
    l.lock();
    for (Pending* g : group) {
      g->status = st;
      g->done = true;
      wakes.Add(&g->waiting, g->waiter);
    }
    EndCommit(s - 1, group.size(), &wakes);
  }
}

// With seq_mu_ held, after the committer answered seqs up to `last` (`count` batches): the
// next seq, if it became ready meanwhile (its thread found this commit under way and left it),
// gets its writer's turn to commit.
void Protector::EndCommit(int64_t last, size_t count, Wakes* wakes) {
  committed_seq_ = last;
  committing_ = false;
  commits_since_advance_.fetch_add(static_cast<int64_t>(count));
  auto next = ready_.find(last + 1);
  if (next != ready_.end()) {
    next->second->commit_turn = true;
    wakes->Add(&next->second->waiting, next->second->waiter);
  }
}

Status Protector::RecordSeq(engine::Db* db, int64_t seq) {
  TESSERA_RETURN_IF_ERROR(Poisoned());
  engine::WriteBatch wb;
  wb.Put(kSeqTree, kSeqKey, SeqBytes(seq));
  return db->Write(wb, engine::WriteOptions{true});
}

bool Protector::SettleGivenUp(engine::Db* db, int64_t seq) {
  int64_t g = given_up_.load();
  while (g < seq && !given_up_.compare_exchange_weak(g, seq)) {
  }
  if (covered_.load() >= seq) return true;
  // Writers that fail together settle together: whoever waited for another's attempt takes its
  // verdict instead of running (and waiting out an unreachable holder) again.
  const uint64_t seen = settle_attempts_.load();
  std::lock_guard<std::mutex> one(settle_mu_);
  if (covered_.load() >= seq) return true;
  if (settle_attempts_.load() != seen) return false;
  // Not forced: while a rebuild has advances frozen the outcome is reported unknown instead.
  Status st = Advance(db, false);
  settle_attempts_.fetch_add(1);
  if (!st.ok()) {
    spdlog::warn("{}: given-up seq {} may still be in a holder's tail: advance: {}", o_.node_id,
                 seq, st.message());
  }
  return covered_.load() >= seq;
}

// ---- recovery -------------------------------------------------------------------------------

Status Protector::ApplyTailEntry(engine::Db* db, const gen::TailEntry& e) {
  TESSERA_ASSIGN_OR_RETURN(auto ops, DecodeOps(e.batch));
  engine::WriteBatch b;
  AddOps(ops, &b);
  b.Put(kSeqTree, kSeqKey, SeqBytes(e.seq));
  return db->Write(b, engine::WriteOptions{false});
}

// Replays every entry after `from_seq` that any holder keeps, in seq order: the union of their
// tails (as `TailsOf` in tla/Protection.tla); every holder must answer. One holder's tail alone is
// not enough: with --min-holders below the holder count a write is acknowledged while a holder is
// down, and that holder, back with its disk, stores the later entries, so its tail can be as long
// as another's with a hole in it.
Status Protector::ReplayTails(engine::Db* db, int64_t from_seq, int64_t* newest) {
  int slot = slot_.load();
  int64_t epoch;
  size_t m;
  {
    std::lock_guard<std::mutex> l(mu_);
    epoch = epoch_;
    m = holders_.size();
  }
  struct Source {
    size_t holder;
    std::vector<gen::TailEntry> entries;  // read ahead, in seq order
    size_t next = 0;
    bool exhausted = false;
  };
  std::vector<Source> sources;
  for (size_t j = 0; j < m; ++j) {
    gen::GenRecord r;
    Status st =
        CallHolder(j, [&](gen::ParityServiceClient& c) { c.GetRecord(r, o_.token, slot, epoch); });
    // Every holder is read: one left out may keep the only copy of an acknowledged write, or
    // entries of an older incarnation that a later seq would then contradict. (The advance
    // that follows a replay needs every holder as well.)
    if (!st.ok()) return Status::Unavailable("replaying the tail: " + st.message());
    if (newest != nullptr) *newest = std::max(*newest, r.gen);
    // A holder whose generation covers seqs beyond from_seq (re-protected after losing its
    // data) keeps only the entries after its generation: the others supply the ones before.
    if (r.tail_last > from_seq) sources.push_back(Source{j, {}, 0, false});
  }
  int64_t after = from_seq;
  int64_t replayed = 0;
  for (;;) {
    // The next entry is the lowest seq after `after` at any holder.
    const gen::TailEntry* next = nullptr;
    for (Source& src : sources) {
      while (!src.exhausted) {
        while (src.next < src.entries.size() && src.entries[src.next].seq <= after) ++src.next;
        if (src.next < src.entries.size()) break;
        src.entries.clear();
        src.next = 0;
        TESSERA_RETURN_IF_ERROR(CallHolder(src.holder, [&](gen::ParityServiceClient& c) {
          c.ReadTail(src.entries, o_.token, slot, epoch, after, 1000);
        }));
        src.exhausted = src.entries.empty();
      }
      if (src.exhausted) continue;
      const gen::TailEntry& head = src.entries[src.next];
      if (next == nullptr || head.seq < next->seq) {
        next = &head;
      } else if (head.seq == next->seq && head.batch != next->batch) {
        // Not guessed: the worker does not serve until the holders agree (a seq is never
        // reused by this code; tails written before the replay read every holder could).
        return Status::Corruption(
            "replaying the tail: parity holders keep different entries for seq " +
            std::to_string(head.seq) + " (holder " + std::to_string(src.holder) +
            " and an earlier one)");
      }
    }
    if (next == nullptr) break;
    TESSERA_RETURN_IF_ERROR(ApplyTailEntry(db, *next));
    after = next->seq;
    if (++replayed % 1000 == 0) {
      SetProgress(nlohmann::json({{"phase", "replaying tail"}, {"entries", replayed}}).dump());
    }
  }
  TESSERA_RETURN_IF_ERROR(db->Sync());
  {
    std::lock_guard<std::mutex> l(seq_mu_);
    next_seq_ = committed_seq_ = std::max(after, from_seq);
  }
  if (replayed > 0) {
    spdlog::info("{}: replayed {} tail entries (now at seq {})", o_.node_id, replayed, after);
  }
  return Status::Ok();
}

Status Protector::SavePins(const std::set<int64_t>& except) {
  std::string out;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [g, snap] : pins_) {
      if (!except.count(g)) out += PinLine(g, snap->Descriptor());
    }
  }
  return WriteFileDurably(o_.data_dir + "/protected", out);
}

// Replays the tail after `from_seq` and protects everything the engine holds, retrying until it
// succeeds (a restarted or rebuilt worker serves nothing before that) or `stop`.
Status Protector::CatchUpAndProtect(engine::Db* db, int64_t from_seq, const std::atomic<bool>& stop,
                                    bool* newer) {
  SetProgress(R"({"phase":"replaying tail"})");
  for (;;) {
    // A retry starts after what the engine holds: the entries an earlier attempt applied may be
    // gone from the tails since (its advance applied at some holders, dropping their tails, and
    // failed at others), and replaying the rest from `from_seq` would put older values back
    // over the write a dropped tail held alone (found in review).
    int64_t start = from_seq;
    int64_t newest = 0;
    Status st;
    {
      auto now = db->BeginRead();  // a failure (no reader slot, say) is retried like the rest
      if (now.ok()) {
        start = std::max(start, SeqOf(**now));
      } else {
        st = now.status();
      }
    }
    if (st.ok()) st = ReplayTails(db, start, &newest);
    if (st.ok() && newer != nullptr && newest > 0) {
      std::lock_guard<std::mutex> l(mu_);
      if (!pins_.count(newest)) {
        spdlog::warn(
            "{}: a parity holder records generation {}, newer than any this worker holds: "
            "rebuilding again",
            o_.node_id, newest);
        *newer = true;
        return Status::Ok();
      }
    }
    if (st.ok()) st = Advance(db, true);
    if (st.ok()) break;
    if (stop.load()) return Status::Unavailable("stopped during recovery");
    spdlog::warn("{}: protecting before serving: {}; retrying", o_.node_id, st.message());
    // Holders that keep different entries for one seq need an operator, not patience.
    SetProgress(nlohmann::json(
                    {{"phase", st.IsCorruption() ? "refusing to serve: corrupt or conflicting tail"
                                                 : "waiting for parity holders"},
                     {"error", st.message()}})
                    .dump());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  SetProgress("");
  return Status::Ok();
}

// Moves the engine file at `path` (if any: a rebuild cut short left none) aside to path +
// `suffix`, then rebuilds it from parity and the tails.
Result<std::unique_ptr<engine::Db>> Protector::RebuildInstead(const std::string& path,
                                                              const std::string& suffix,
                                                              const std::atomic<bool>& stop) {
  std::error_code rec;
  if (std::filesystem::exists(path, rec)) {
    std::filesystem::rename(path, path + suffix, rec);
    if (rec) return Status::IoError("move " + path + " aside: " + rec.message());
    spdlog::warn("{}: moved {} aside to {}{}; rebuilding from parity", o_.node_id, path, path,
                 suffix);
  }
  return Rebuild(stop);
}

Result<std::unique_ptr<engine::Db>> Protector::Recover(bool rebuild,
                                                       const std::atomic<bool>& stop) {
  const std::string path = o_.data_dir + "/data.tdb";
  const std::string marker = o_.data_dir + "/unprotected";
  std::error_code mec;
  if (!rebuild && std::filesystem::exists(marker, mec)) {
    // An earlier run could not undo a write whose tail append failed (Protector::DriveTail):
    // its engine may hold that write. Only the parity and the tails are trusted.
    spdlog::warn("{}: {} says the engine holds an unprotected write: rebuilding from parity",
                 o_.node_id, marker);
    auto rebuilt = RebuildInstead(path, ".unprotected", stop);
    std::error_code rec;
    if (rebuilt.ok()) std::filesystem::remove(marker, rec);  // kept until the rebuild is done
    return rebuilt;
  }
  if (rebuild) return Rebuild(stop);
  // The snapshots holders may record, listed before they could record them.
  std::vector<engine::SnapshotDescriptor> descs;
  {
    std::ifstream in(o_.data_dir + "/protected");
    std::string line;
    while (in && std::getline(in, line)) {
      std::istringstream ls(line);
      engine::SnapshotDescriptor d;
      std::string hex;
      if (ls >> d.txnid >> d.page_size >> d.commit_seq >> d.last_page >> hex &&
          Unhex(hex, &d.meta_bytes)) {
        descs.push_back(d);
      } else {
        spdlog::warn("{}: ignoring a malformed line of {}/protected", o_.node_id, o_.data_dir);
      }
    }
  }
  engine::Options opts;
  opts.sync = false;
  // The holders' parity and the pins a restart restores name page numbers of this file.
  opts.shrink_on_close = false;
  for (const auto& d : descs) {
    opts.retain_freed_after =
        opts.retain_freed_after == 0 ? d.txnid : std::min(opts.retain_freed_after, d.txnid);
  }
  auto db = engine::Db::Open(path, opts);
  if (!db.ok()) return db.status().WithContext("worker data");
  // Pins are read transactions of this Db: they go before it does on every early return.
  PinGuard guard{this};
  bool pins_ok = true;
  for (const auto& d : descs) {
    auto snap = (*db)->OpenSnapshot(d);
    if (!snap.ok()) {
      spdlog::error("{}: protected snapshot txn {} cannot be pinned again: {}", o_.node_id, d.txnid,
                    snap.status().ToString());
      pins_ok = false;
      break;
    }
    std::lock_guard<std::mutex> l(mu_);
    pins_[static_cast<int64_t>(d.txnid)] = std::move(snap).value();
  }
  if (!enabled_.load()) {
    guard.armed = false;
    return std::move(db).value();
  }
  if (!pins_ok) {
    guard.armed = false;
    // Without its protected snapshot this engine cannot compute deltas: start over from what
    // the parity and the tails hold (they cover every acknowledged write).
    Close();
    db->reset();
    return RebuildInstead(path, ".unprotectable", stop);
  }
  int64_t local = 0;
  {
    auto r = (*db)->BeginRead();
    if (!r.ok()) return r.status();
    local = SeqOf(**r);
  }
  TESSERA_RETURN_IF_ERROR(CatchUpAndProtect(db->get(), local, stop));
  guard.armed = false;
  return std::move(db).value();
}

Result<std::unique_ptr<engine::Db>> Protector::Rebuild(const std::atomic<bool>& stop) {
  const std::string path = o_.data_dir + "/data.tdb";
  const int slot = slot_.load();
  std::atomic<int> want_rows{1};  // parity rows fetched per batch
  for (int attempt = 0;; ++attempt) {
    if (stop.load()) return Status::Unavailable("stopped during rebuild");
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::string scheme;
    int k, m;
    int64_t epoch;
    std::vector<std::string> slot_addrs;
    {
      std::lock_guard<std::mutex> l(mu_);
      scheme = scheme_;
      k = k_;
      m = m_;
      epoch = epoch_;
      slot_addrs = slot_addresses_;
    }
    // Records (raising each holder's epoch for this slot fences the old incarnation).
    std::vector<std::optional<gen::GenRecord>> recs(static_cast<size_t>(m));
    for (int j = 0; j < m; ++j) {
      gen::GenRecord r;
      Status st = CallHolder(static_cast<size_t>(j), [&](gen::ParityServiceClient& c) {
        c.GetRecord(r, o_.token, slot, epoch);
      });
      if (st.ok())
        recs[static_cast<size_t>(j)] = r;
      else
        spdlog::warn("{}: rebuild: {}", o_.node_id, st.message());
    }
    // Holders that disagree on a slot's generation (its owner crashed between the commits of an
    // advance): the lagging ones hold that generation prepared; complete it so rows agree.
    {
      std::vector<std::vector<int64_t>> gens(static_cast<size_t>(m));
      for (int j = 0; j < m; ++j) {
        gen::ParityPages pp;
        if (CallHolder(static_cast<size_t>(j), [&](gen::ParityServiceClient& c) {
              c.ReadParity(pp, o_.token, 0, 0);
            }).ok()) {
          for (const auto& r : pp.records) gens[static_cast<size_t>(j)].push_back(r.gen);
        }
      }
      for (int i = 0; i < k; ++i) {
        int64_t newest = -1;
        for (const auto& g : gens) {
          if (static_cast<int>(g.size()) == k) newest = std::max(newest, g[static_cast<size_t>(i)]);
        }
        for (int j = 0; j < m; ++j) {
          const auto& g = gens[static_cast<size_t>(j)];
          if (static_cast<int>(g.size()) != k || g[static_cast<size_t>(i)] >= newest) continue;
          gen::GenRecord r;
          Status st = CallHolder(static_cast<size_t>(j), [&](gen::ParityServiceClient& c) {
            c.CommitPrepared(r, o_.token, i, newest);
          });
          spdlog::info("{}: holder {} completes slot {}'s prepared generation {}: {}", o_.node_id,
                       j, i, newest, st.ok() ? "done" : st.message());
        }
      }
    }
    // The generation to rebuild: the newest any reachable holder records.
    const gen::GenRecord* base = nullptr;
    for (const auto& r : recs) {
      if (r && (!base || r->gen > base->gen)) base = &*r;
    }
    if (!base) {
      SetProgress(R"({"phase":"rebuild: waiting for a parity holder"})");
      continue;
    }
    std::error_code ec;
    std::filesystem::remove(path, ec);
    std::filesystem::remove(o_.data_dir + "/protected", ec);
    const int64_t g = base->gen;
    const int64_t covered = base->covered_seq;
    // Rows to read, those known to record this generation first.
    std::vector<int> row_order;
    for (int j = 0; j < m; ++j) {
      if (recs[static_cast<size_t>(j)] && recs[static_cast<size_t>(j)]->gen == g)
        row_order.push_back(j);
    }
    for (int j = 0; j < m; ++j) {
      if (!recs[static_cast<size_t>(j)] || recs[static_cast<size_t>(j)]->gen != g)
        row_order.push_back(j);
    }
    if (g != 0) {
      engine::SnapshotDescriptor desc;
      desc.page_size = kProtectionPageSize;
      desc.txnid = static_cast<uint64_t>(g);
      desc.last_page = static_cast<uint64_t>(base->last_page);
      desc.meta_bytes = base->descriptor;
      TESSERA_ASSIGN_OR_RETURN(auto codec, erasure::Codec::Create(scheme, k, m));
      const size_t ps = kProtectionPageSize;
      // One batch of stripes: every shard's pages [first, first + count), fetched from every
      // source at once (holders and survivors in parallel), decoded, and this slot's pages kept.
      std::mutex gens_mu;
      std::vector<std::optional<std::vector<int64_t>>> first_gens(static_cast<size_t>(m));
      auto t0 = Clock::now();
      uint64_t rebuilt = 0;
      // One batch as the sources answered it, decoded page by page as it is written.
      struct Fetched {
        uint64_t count = 0;
        std::vector<gen::ParityPages> pps;
        // Survivors' answers, read in place in their connections' frames: each connection is
        // held (not returned to the pool) until the batch has been decoded.
        std::vector<PageRunRef> runs;
        std::vector<std::optional<rpc::ClientPool<gen::WorkerServiceClient>::Lease>> leases;
        // Page i of shard s, where it lies in the answers (null: an all-zero page).
        std::vector<std::vector<const uint8_t*>> pages;
        std::vector<int> erased;
      };
      // Answers are read into recycled batches: a fresh 4 MiB buffer per source and batch would
      // cost a page fault per 4 KiB, a fifth of the rebuilder's time.
      std::mutex spare_mu;
      std::vector<std::shared_ptr<Fetched>> spare;
      auto fetch = [&, slot_addrs](uint64_t first,
                                   uint64_t count) -> Result<std::shared_ptr<Fetched>> {
        std::shared_ptr<Fetched> fetched;
        {
          std::lock_guard<std::mutex> l(spare_mu);
          if (!spare.empty()) {
            fetched = std::move(spare.back());
            spare.pop_back();
          }
        }
        if (!fetched) fetched = std::make_shared<Fetched>();
        fetched->count = count;
        fetched->erased.clear();
        fetched->pps.resize(static_cast<size_t>(m));
        for (auto& p : fetched->pps) p.records.clear();
        fetched->runs.assign(static_cast<size_t>(k), PageRunRef{});
        fetched->leases.clear();
        fetched->leases.resize(static_cast<size_t>(k));
        fetched->pages.resize(static_cast<size_t>(k) + static_cast<size_t>(m));
        for (auto& v : fetched->pages) v.clear();
        auto& pages = fetched->pages;
        auto& pps = fetched->pps;
        auto& runs = fetched->runs;
        auto& erased = fetched->erased;
        std::vector<Status> hst(static_cast<size_t>(m), Status::Unavailable("not asked"));
        std::vector<std::future<void>> hf;
        hf.reserve(static_cast<size_t>(m));
        // As many parity rows as there are lost data shards are enough (more only when some
        // are unusable: then everything is asked for).
        const int rows = std::min(m, want_rows.load());
        for (int n = 0; n < rows; ++n) {
          const int j = row_order[static_cast<size_t>(n)];
          hf.push_back(std::async(std::launch::async, [&, j] {
            hst[j] = CallHolder(static_cast<size_t>(j), [&](gen::ParityServiceClient& c) {
              c.ReadParity(pps[j], o_.token, static_cast<int64_t>(first),
                           static_cast<int32_t>(count));
            });
          }));
        }
        for (auto& f : hf) f.get();
        // Parity rows that record this slot at g and agree with each other on every slot.
        std::optional<std::vector<int64_t>> gens;
        for (int j = 0; j < m; ++j) {
          std::vector<int64_t> rg;
          for (const auto& r : pps[j].records) rg.push_back(r.gen);
          bool usable = hst[j].ok() && static_cast<int>(rg.size()) == k && rg[slot] == g &&
                        (!gens || *gens == rg);
          if (usable) {
            std::lock_guard<std::mutex> l(gens_mu);
            if (first_gens[j] && *first_gens[j] != rg) {
              return Status::Unavailable("parity holder " + std::to_string(j) +
                                         " advanced a generation during the rebuild");
            }
            first_gens[j] = rg;
          }
          if (!usable) {
            erased.push_back(k + j);
            continue;
          }
          gens = rg;
          if (!RunPages(pps[j].run, count, ps,
                        &pages[static_cast<size_t>(k) + static_cast<size_t>(j)])) {
            return Status::Corruption("parity holder " + std::to_string(j) +
                                      " sent a malformed page run");
          }
        }
        if (!gens) {
          if (rows < m) want_rows.store(m);  // ask every holder from now on
          return Status::Unavailable("no parity holder asked records generation " +
                                     std::to_string(g));
        }
        std::vector<Status> wst(static_cast<size_t>(k));
        std::vector<std::future<void>> wf;
        for (int i = 0; i < k; ++i) {
          if (i == slot || (*gens)[i] == 0) continue;  // gen 0: that image is all zeros
          wf.push_back(std::async(std::launch::async, [&, i] {
            const int64_t want = (*gens)[i];
            Status st = Status::Unavailable("no address for slot " + std::to_string(i));
            if (static_cast<size_t>(i) < slot_addrs.size() && !slot_addrs[i].empty()) {
              auto ep = rpc::Endpoint::Parse(slot_addrs[i]);
              if (ep.ok()) {
                auto lease = worker_pool_.Get(*ep);
                st = lease.status();
                if (st.ok()) {
                  try {
                    (*lease)->send_ReadImage(o_.token, want, static_cast<int64_t>(first),
                                             static_cast<int32_t>(count));
                    PageRunRef& run = runs[static_cast<size_t>(i)];
                    run = RecvPageRun((*lease)->getInputProtocol().get(), "ReadImage");
                    if (!RunPages(run, count, ps, &pages[static_cast<size_t>(i)])) {
                      st = Status::Corruption("survivor sent a malformed page run");
                    }
                    fetched->leases[static_cast<size_t>(i)].emplace(std::move(*lease));
                  } catch (const gen::TesseraError& e) {
                    st = FromError(e);
                  } catch (const std::exception& e) {
                    lease->Broken();
                    st = Status::Unavailable(e.what());
                  }
                }
              }
            }
            wst[i] = st;
          }));
        }
        for (auto& f : wf) f.get();
        for (int i = 0; i < k; ++i) {
          if (i == slot || !wst[i].ok()) erased.push_back(i);
        }
        if (static_cast<int>(erased.size()) > m && rows < m) {
          want_rows.store(m);  // ask every holder from now on (the attempt starts over)
          return Status::Unavailable("more survivors are missing: asking every parity holder");
        }
        if (static_cast<int>(erased.size()) > m) {
          return Status::Unavailable("only " + std::to_string(k + m - erased.size()) + " of " +
                                     std::to_string(k + m) +
                                     " shards are reachable; waiting for more survivors");
        }
        return fetched;
      };
      const std::string tmp = path + ".rebuild";
      std::filesystem::remove(tmp, ec);
      // Double buffering: the next batch is fetched while this one is written.
      uint64_t batch_first = 0, batch_count = 0;
      std::shared_ptr<Fetched> batch;
      // Each page is decoded straight from the answers into the engine's buffer. Sources that
      // are absent (gen 0) or all-zero pages read from `zero`; other erased shards (parity rows
      // not asked for) are not rebuilt (NULL); a stripe whose every source page is zero is zero
      // with no arithmetic.
      const std::vector<uint8_t> zero(ps, 0);
      std::vector<uint8_t*> ptrs(static_cast<size_t>(k + m));
      std::vector<bool> is_erased;
      auto decode = [&](uint64_t i, uint8_t* out) -> Status {
        bool any = false;
        for (int sh = 0; sh < k + m; ++sh) {
          const auto s = static_cast<size_t>(sh);
          if (sh == slot) {
            ptrs[s] = out;
          } else if (is_erased[s]) {
            ptrs[s] = nullptr;
          } else {
            const uint8_t* src = batch->pages[s].empty() ? nullptr : batch->pages[s][i];
            any = any || src != nullptr;
            // Decode writes only the erased shards; the sources are read.
            ptrs[s] = const_cast<uint8_t*>(src != nullptr ? src : zero.data());
          }
        }
        if (!any) {
          std::memset(out, 0, ps);
          return Status::Ok();
        }
        return codec->Decode(ptrs, batch->erased, ps);
      };
      // A few batches in flight: the sources answer in parallel while earlier ones are decoded
      // and written.
      constexpr size_t kInFlight = 4;
      std::deque<std::future<Result<std::shared_ptr<Fetched>>>> next;
      uint64_t next_first = 2;
      auto launch = [&]() {
        while (next.size() < kInFlight && next_first < desc.last_page) {
          uint64_t count = std::min<uint64_t>(kRebuildChunk, desc.last_page - next_first);
          next.push_back(std::async(std::launch::async, fetch, next_first, count));
          next_first += count;
        }
      };
      launch();
      Status st = engine::Db::Restore(tmp, desc, [&](uint64_t p, uint8_t* buf) -> Status {
        if (stop.load()) return Status::Unavailable("stopped during rebuild");
        if (batch_count == 0 || p >= batch_first + batch_count || p < batch_first) {
          if (next.empty()) return Status::Internal("rebuild: no batch in flight");
          auto r = next.front().get();
          next.pop_front();
          if (!r.ok()) return r.status();
          if (batch) {
            batch->leases.clear();  // the survivors' connections go back to the pool
            std::lock_guard<std::mutex> l(spare_mu);
            spare.push_back(std::move(batch));
          }
          batch = std::move(r).value();
          batch_first = p;
          batch_count = batch->count;
          is_erased.assign(static_cast<size_t>(k) + static_cast<size_t>(m), false);
          for (int e : batch->erased) is_erased[static_cast<size_t>(e)] = true;
          launch();
          rebuilt += batch_count;
          double secs = std::chrono::duration<double>(Clock::now() - t0).count();
          double mbs = secs > 0 ? rebuilt * ps / 1e6 / secs : 0;
          double left = mbs > 0 ? (desc.last_page - p) * ps / 1e6 / mbs : 0;
          SetProgress(nlohmann::json({{"phase", "rebuilding"},
                                      {"pages_rebuilt", rebuilt},
                                      {"pages_total", desc.last_page},
                                      {"mb_per_s", std::round(mbs * 10) / 10},
                                      {"seconds_left", std::round(left * 10) / 10}})
                          .dump());
        }
        return decode(p - batch_first, buf);
      });
      for (auto& f : next) f.wait();  // never leave a fetch running past its buffers
      if (!st.ok()) {
        spdlog::warn("{}: rebuild attempt {}: {}", o_.node_id, attempt + 1, st.message());
        SetProgress(
            nlohmann::json({{"phase", "rebuild: retrying"}, {"error", st.message()}}).dump());
        continue;
      }
      double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      spdlog::info("{}: rebuilt {} pages ({:.1f} MB) of generation {} in {:.2f} s ({:.0f} MB/s)",
                   o_.node_id, desc.last_page, desc.last_page * ps / 1e6, g, secs,
                   secs > 0 ? desc.last_page * ps / 1e6 / secs : 0.0);
      // The rebuilt generation is listed before the file takes its name: a restart after the
      // rename pins it again.
      TESSERA_RETURN_IF_ERROR(WriteFileDurably(o_.data_dir + "/protected", PinLine(g, desc)));
      std::filesystem::rename(tmp, path, ec);
      if (ec) return Status::IoError("rename " + tmp + ": " + ec.message());
    }
    engine::Options opts;
    opts.sync = false;
    opts.shrink_on_close = false;  // as in Recover
    opts.retain_freed_after = static_cast<uint64_t>(g);
    auto db = engine::Db::Open(path, opts);
    if (!db.ok()) return db.status().WithContext("rebuilt worker data");
    PinGuard guard{this};
    if (g != 0) {
      engine::SnapshotDescriptor desc;
      desc.page_size = kProtectionPageSize;
      desc.txnid = static_cast<uint64_t>(g);
      desc.last_page = static_cast<uint64_t>(base->last_page);
      desc.meta_bytes = base->descriptor;
      auto snap = (*db)->OpenSnapshot(desc);
      if (!snap.ok()) return snap.status().WithContext("rebuilt snapshot");
      std::lock_guard<std::mutex> l(mu_);
      pins_[g] = std::move(snap).value();
    }
    TESSERA_RETURN_IF_ERROR(SavePins());
    {
      std::lock_guard<std::mutex> l(mu_);
      for (size_t j = 0; j < holders_.size(); ++j) {
        holders_[j].gen = recs[j] ? recs[j]->gen : -1;
      }
    }
    // A holder not reached above may record a newer generation (an advance applied at it
    // alone): once it answers, the rebuild starts again from that generation.
    bool newer = false;
    TESSERA_RETURN_IF_ERROR(CatchUpAndProtect(db->get(), covered, stop, &newer));
    if (newer) continue;  // the guard drops the pins before the engine closes
    guard.armed = false;
    return std::move(db).value();
  }
}

// ---- generations ----------------------------------------------------------------------------

// Phase 1 of an advance at holder j: stage the deltas from what it records and prepare the new
// generation (nothing changes in its parity yet). Sets *base to the generation it starts from.
Status Protector::ProtectTo(engine::Db* db, size_t j, const engine::ReadTxn& snap, int64_t covered,
                            int64_t* base_out, AdvanceCost* cost) {
  const int slot = slot_.load();
  int64_t epoch, base;
  {
    std::lock_guard<std::mutex> l(mu_);
    epoch = epoch_;
    base = holders_[j].gen;
  }
  const int64_t g = static_cast<int64_t>(snap.txnid());
  *base_out = base;
  if (base == g) return Status::Ok();
  const engine::ReadTxn* old = nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (base > 0 && pins_.count(base)) old = pins_[base].get();
  }
  if (base < 0 || (base > 0 && !old)) {
    gen::GenRecord r;
    TESSERA_RETURN_IF_ERROR(
        CallHolder(j, [&](gen::ParityServiceClient& c) { c.GetRecord(r, o_.token, slot, epoch); }));
    base = r.gen;
    *base_out = base;
    if (base == g) {
      std::lock_guard<std::mutex> l(mu_);
      holders_[j].gen = g;
      return Status::Ok();
    }
    std::lock_guard<std::mutex> l(mu_);
    if (base > 0) {
      if (!pins_.count(base)) {
        return Status::Internal("parity holder " + std::to_string(j) + " records generation " +
                                std::to_string(base) + ", which this worker no longer holds");
      }
      old = pins_[base].get();
    }
  }
  std::vector<uint64_t> pages;
  const uint64_t last = snap.Descriptor().last_page;
  if (!old) {
    for (uint64_t p = 2; p < last; ++p) pages.push_back(p);
  } else {
    TESSERA_ASSIGN_OR_RETURN(pages, db->ChangedPages(*old, snap));
  }
  if (cost) cost->changed += pages.size();
  const size_t ps = db->page_size();
  std::vector<uint8_t> a(ps), b(ps);
  std::vector<gen::PageDelta> chunk;
  size_t sent = 0;
  auto flush = [&]() -> Status {
    if (chunk.empty()) return Status::Ok();
    Status st = CallHolder(j, [&](gen::ParityServiceClient& c) {
      c.StageDelta(o_.token, slot, epoch, g, chunk, base);
    });
    sent += chunk.size();
    chunk.clear();
    return st;
  };
  for (uint64_t p : pages) {
    TESSERA_RETURN_IF_ERROR(db->PageImage(snap, p, a.data()));
    if (old) {
      TESSERA_RETURN_IF_ERROR(db->PageImage(*old, p, b.data()));
      for (size_t i = 0; i < ps; ++i) a[i] ^= b[i];
    }
    if (AllZero(a.data(), ps)) continue;
    gen::PageDelta d;
    d.pgno = static_cast<int64_t>(p);
    d.bytes.assign(reinterpret_cast<const char*>(a.data()), ps);
    chunk.push_back(std::move(d));
    if (chunk.size() >= static_cast<size_t>(kDeltaChunk)) TESSERA_RETURN_IF_ERROR(flush());
  }
  TESSERA_RETURN_IF_ERROR(flush());
  if (cost) cost->deltas += sent;
  if (sent == 0) {
    // Nothing changed in the image: stage an empty set, so the holder knows this attempt's
    // (from, to) and applies nothing left over from another.
    TESSERA_RETURN_IF_ERROR(CallHolder(
        j, [&](gen::ParityServiceClient& c) { c.StageDelta(o_.token, slot, epoch, g, {}, base); }));
  }
  auto desc = snap.Descriptor();
  gen::GenRecord r;
  Status st = CallHolder(j, [&](gen::ParityServiceClient& c) {
    c.CommitGeneration(r, o_.token, slot, epoch, base, g, desc.meta_bytes, covered,
                       static_cast<int64_t>(desc.last_page), /*prepare_only=*/true);
  });
  if (!st.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    holders_[j].gen = -1;  // learn what it records before the next attempt
    return st;
  }
  spdlog::debug("{}: holder {} prepared generation {} ({} page deltas)", o_.node_id, j, g, sent);
  return Status::Ok();
}

// Phase 2 at holder j: apply the prepared generation.
Status Protector::CommitTo(size_t j, const engine::ReadTxn& snap, int64_t covered, int64_t base) {
  const int slot = slot_.load();
  int64_t epoch;
  {
    std::lock_guard<std::mutex> l(mu_);
    epoch = epoch_;
  }
  const int64_t g = static_cast<int64_t>(snap.txnid());
  if (base == g) return Status::Ok();
  auto desc = snap.Descriptor();
  gen::GenRecord r;
  Status st = CallHolder(j, [&](gen::ParityServiceClient& c) {
    c.CommitGeneration(r, o_.token, slot, epoch, base, g, desc.meta_bytes, covered,
                       static_cast<int64_t>(desc.last_page), /*prepare_only=*/false);
  });
  std::lock_guard<std::mutex> l(mu_);
  if (!st.ok()) {
    holders_[j].gen = -1;
    return st;
  }
  holders_[j].gen = g;
  return Status::Ok();
}

Status Protector::Advance(engine::Db* db, bool force) {
  std::lock_guard<std::mutex> one(advance_mu_);
  if (!enabled_.load()) return Status::Ok();
  if (!force && frozen_.load()) return Status::Ok();
  // Only what readers may see is protected: a commit awaiting its acknowledgement may be undone.
  auto snap = BeginVisibleRead(db);
  if (!snap.ok()) return snap.status();
  const int64_t g = static_cast<int64_t>((*snap)->txnid());
  const int64_t covered = SeqOf(**snap);
  size_t m;
  {
    std::lock_guard<std::mutex> l(mu_);
    m = holders_.size();
    bool current = m > 0;
    for (const auto& h : holders_) current = current && h.gen == g;
    if (current) NoteCovered(covered);
    if (current || m == 0) return Status::Ok();
  }
  // Every failed advance can leave its snapshot pinned (a holder not reached may record nothing
  // newer), each holding a reader slot: past kMaxPins no new snapshot is pinned until some are
  // released, so an outage cannot use up the engine's readers.
  bool full;
  int64_t newest = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    full = !pins_.count(g) && pins_.size() >= kMaxPins;
    if (full) newest = pins_.rbegin()->first;
  }
  if (full) {
    TESSERA_RETURN_IF_ERROR(ReleasePins(newest));
    const engine::ReadTxn* at_cap = nullptr;
    size_t pinned;
    {
      std::lock_guard<std::mutex> l(mu_);
      pinned = pins_.size();
      if (pinned >= kMaxPins) at_cap = pins_.at(newest).get();
    }
    if (at_cap != nullptr) {
      // First bring the holders to the newest pinned generation: that is also where what a
      // holder nobody knew about records is learned (ProtectTo asks it), so once it is back
      // the older pins go. Only then is the current state pinned and protected, below: an
      // advance that stopped at the older generation would leave the writes after it in the
      // tails alone, while callers (a restart's catch-up, shutdown) take Ok as "protected".
      spdlog::warn(
          "{}: {} protected snapshots are pinned and not every parity holder is known "
          "to record one: advancing to the newest pinned generation {} first",
          o_.node_id, pinned, newest);
      TESSERA_RETURN_IF_ERROR(SavePins());  // listed before any holder can record it
      TESSERA_RETURN_IF_ERROR(AdvanceTo(db, *at_cap, newest, SeqOf(*at_cap), m));
      std::lock_guard<std::mutex> l(mu_);
      if (pins_.size() >= kMaxPins) {
        return Status::Unavailable(std::to_string(pins_.size()) +
                                   " protected snapshots are still pinned after advancing to "
                                   "generation " +
                                   std::to_string(newest));
      }
    }
  }
  // The snapshot must be durable before a holder records it: a restart pins it again.
  TESSERA_RETURN_IF_ERROR(db->Sync());
  const engine::ReadTxn* pinned = snap->get();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!pins_.count(g)) pins_[g] = std::move(snap).value();
    pinned = pins_[g].get();
  }
  TESSERA_RETURN_IF_ERROR(SavePins());
  commits_since_advance_.store(0);
  return AdvanceTo(db, *pinned, g, covered, m);
}

void Protector::NoteCovered(int64_t covered) {
  int64_t c = covered_.load();
  while (c < covered && !covered_.compare_exchange_weak(c, covered)) {
  }
}

Status Protector::AdvanceTo(engine::Db* db, const engine::ReadTxn& pinned, int64_t g,
                            int64_t covered, size_t m) {
  Status first_error;
  ++advances_;
  // Two phases: every holder stages and prepares before any applies. A crash between the
  // commits leaves holders at different generations, but each lagging one holds the prepared
  // generation, so a rebuild can complete it (CommitPrepared) and decode from agreeing rows.
  std::vector<int64_t> bases(m, -1);
  const auto t0 = Clock::now();
  AdvanceCost cost;
  for (size_t j = 0; j < m; ++j) {
    Status st = ProtectTo(db, j, pinned, covered, &bases[j], &cost);
    if (!st.ok() && first_error.ok()) first_error = st;
  }
  for (size_t j = 0; j < m && first_error.ok(); ++j) {
    Status st;
    if (fail_commit_after_first_ > 0 && advances_ == fail_commit_after_first_ && j >= 1) {
      // Test failpoint (TESSERA_FAILPOINT=fail_commit_after_first:N): in the Nth advance the
      // holders after the first fail to apply the generation the first one applied.
      spdlog::warn("{}: failpoint fail_commit_after_first at holder {}", o_.node_id, j);
      {
        std::lock_guard<std::mutex> l(mu_);
        holders_[j].gen = -1;
      }
      st = Status::Unavailable("failpoint fail_commit_after_first");
    } else {
      st = CommitTo(j, pinned, covered, bases[j]);
    }
    if (!st.ok() && first_error.ok()) first_error = st;
    if (crash_in_advance_ > 0 && advances_ >= crash_in_advance_ && j == 0) {
      // Test failpoint (TESSERA_FAILPOINT=crash_in_advance:N): die in the Nth advance after the
      // first holder recorded the new generation and before the others did.
      spdlog::warn("{}: failpoint crash_in_advance in advance {}", o_.node_id, advances_);
      ::raise(SIGKILL);
    }
  }
  if (first_error.ok()) {
    NoteCovered(covered);
    // The cost follows the pages changed since the holders' generation, not the data size.
    spdlog::info(
        "{}: protected generation {}: {} changed pages, {} deltas ({:.1f} MB) to {} "
        "holders in {:.1f} ms",
        o_.node_id, g, cost.changed, cost.deltas, cost.deltas * db->page_size() / 1e6, m,
        std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  TESSERA_RETURN_IF_ERROR(ReleasePins(g));
  return first_error;
}

Status Protector::ReleasePins(int64_t keep) {
  // Release the snapshots no holder records any more (all known), keeping `keep`. The list on
  // disk shrinks first: a crash in between must not leave a listed snapshot unpinned.
  std::set<int64_t> drop;
  {
    std::lock_guard<std::mutex> l(mu_);
    bool all_known = true;
    for (const auto& h : holders_) all_known = all_known && h.gen >= 0;
    if (all_known) {
      for (const auto& [pg, snap] : pins_) {
        bool used = pg == keep;
        for (const auto& h : holders_) used = used || h.gen == pg;
        if (!used) drop.insert(pg);
      }
    }
  }
  if (!drop.empty()) {
    TESSERA_RETURN_IF_ERROR(SavePins(drop));
    std::lock_guard<std::mutex> l(mu_);
    for (int64_t pg : drop) pins_.erase(pg);
  }
  return Status::Ok();
}

std::vector<bool> Protector::SkippedFlags() {
  std::vector<bool> skipped;
  for (const auto& b : batchers_) {
    std::lock_guard<std::mutex> bl(b->mu);
    skipped.push_back(b->skipped);
  }
  return skipped;
}

void Protector::AuditHolders() {
  std::lock_guard<std::mutex> one(advance_mu_);
  const int slot = slot_.load();
  size_t m;
  int64_t epoch;
  std::vector<bool> skipped;
  {
    std::lock_guard<std::mutex> l(mu_);
    m = holders_.size();
    epoch = epoch_;
    skipped = SkippedFlags();
  }
  for (size_t j = 0; j < m; ++j) {
    // A holder appends skip is called by the probe instead, with a short timeout: a hung one
    // would hold the loop for three full attempts every second.
    if (j < skipped.size() && skipped[j]) continue;
    gen::GenRecord r;
    Status st =
        CallHolder(j, [&](gen::ParityServiceClient& c) { c.GetRecord(r, o_.token, slot, epoch); });
    if (!st.ok()) continue;
    std::lock_guard<std::mutex> l(mu_);
    if (r.gen < holders_[j].gen) {
      spdlog::warn("{}: parity holder {} records generation {} but had {}: re-protecting",
                   o_.node_id, j, r.gen, holders_[j].gen);
      holders_[j].gen = -1;
    }
  }
}

bool Protector::SetSkipped(TailBatcher* b, bool skipped) {
  if (b->skipped == skipped) return false;
  b->skipped = skipped;
  skipped_holders_.fetch_add(skipped ? 1 : -1);
  return true;
}

// Appends may go to holder j again: it answered a call (any call: a write's, an advance's, the
// audit's or the probe's). Takes mu_ and then the batcher's lock: never called under either.
void Protector::Unskip(size_t j) {
  if (skipped_holders_.load() == 0) return;  // the common case: no lock on an append's path
  std::string node;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (j >= batchers_.size()) return;
    std::lock_guard<std::mutex> bl(batchers_[j]->mu);
    if (!SetSkipped(batchers_[j].get(), false)) return;
    node = j < holders_.size() ? holders_[j].node : std::to_string(j);
  }
  spdlog::info("{}: parity holder {} answers again", o_.node_id, node);
}

// Calls each holder that appends skip (TailBatcher::skipped) once: off the write path, so that
// no write waits for a holder that may hang. An answer ends the skip (CallHolder).
void Protector::ProbeSkippedHolders(const std::atomic<bool>& stop) {
  const int slot = slot_.load();
  std::vector<bool> skipped;
  int64_t epoch;
  {
    std::lock_guard<std::mutex> l(mu_);
    epoch = epoch_;
    skipped = SkippedFlags();
  }
  for (size_t j = 0; j < skipped.size(); ++j) {
    if (!skipped[j]) continue;
    if (stop.load()) return;
    gen::GenRecord r;
    (void)CallHolder(
        j, [&](gen::ParityServiceClient& c) { c.GetRecord(r, o_.token, slot, epoch); }, nullptr,
        nullptr, /*quick=*/true);
  }
}

void Protector::AdvanceLoop(engine::Db* db, const std::atomic<bool>& stop) {
  auto last = Clock::now();
  auto last_audit = Clock::now();
  auto last_probe = Clock::now();
  while (!stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (enabled_.load() && Clock::now() - last_probe >= kHolderProbe) {
      ProbeSkippedHolders(stop);  // frozen or not: writes go on while another worker rebuilds
      last_probe = Clock::now();
    }
    if (!enabled_.load() || frozen_.load()) continue;
    if (Clock::now() - last_audit >= std::chrono::seconds(1)) {
      // A holder that lost its disk answers with an older generation: notice it even when no
      // write arrives.
      AuditHolders();
      last_audit = Clock::now();
    }
    bool holder_unknown = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (const auto& h : holders_) holder_unknown = holder_unknown || h.gen < 0;
    }
    int64_t n = commits_since_advance_.load();
    // A given-up write a holder may keep stays replayable by a rebuild until a generation
    // covers it (SettleGivenUp): retry like an unknown holder.
    const bool unsettled = given_up_.load() > covered_.load();
    bool due =
        n >= o_.protect_every ||
        (n > 0 && Clock::now() - last >= std::chrono::milliseconds(o_.protect_interval_ms)) ||
        ((holder_unknown || unsettled) && Clock::now() - last >= std::chrono::milliseconds(500));
    if (!due) continue;
    Status st = Advance(db, false);
    last = Clock::now();
    if (!st.ok()) spdlog::warn("{}: generation advance: {}", o_.node_id, st.message());
  }
}

Protector::ImageView Protector::ReadImage(engine::Db* db, int64_t gen, int64_t first, int count) {
  if (count < 0 || count > 4096 || first < 0) {
    Throw(ErrorCode::INVALID_ARGUMENT, "ReadImage: bad page range", o_.node_id);
  }
  std::shared_ptr<engine::ReadTxn> snap;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = pins_.find(gen);
    if (it == pins_.end() || db == nullptr) {
      Throw(ErrorCode::UNAVAILABLE,
            "generation " + std::to_string(gen) + " is not pinned on this worker", o_.node_id);
    }
    snap = it->second;
    // The first image of a snapshot loads its free list; do it under the lock, so the
    // concurrent readers below only read it.
    auto v = db->PageImageView(*snap, static_cast<uint64_t>(first));
    if (!v.ok()) Throw(ErrorCode::INTERNAL, v.status().ToString(), o_.node_id);
  }
  ImageView out;
  out.present.assign(static_cast<size_t>(count), '\0');
  const size_t ps = db->page_size();
  out.page_size = ps;
  out.pages.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    auto v = db->PageImageView(*snap, static_cast<uint64_t>(first + i));
    if (!v.ok()) Throw(ErrorCode::INTERNAL, v.status().ToString(), o_.node_id);
    if (*v != nullptr && !AllZero(*v, ps)) {
      out.present[static_cast<size_t>(i)] = 1;
      out.pages.push_back(*v);
    }
  }
  out.snap = std::move(snap);
  return out;
}

}  // namespace tessera::orchestrator
