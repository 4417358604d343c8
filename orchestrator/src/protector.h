// The data worker's side of protection: the tail written at every parity holder before a batch
// commits locally (log first), background generation advances that send the deltas of changed
// pages, restart with the disk intact (re-pin, replay the tail, protect, then serve) and the
// rebuild of a lost engine from the survivors' images and the parity.
//
// Invariants:
//  - a batch is visible to readers and acknowledged only after its tail entry is stored at every
//    parity holder (or at least min_holders of them). With several holders it is committed
//    locally only then; with one, the local commit of the next group in seq order goes ahead
//    while its append is in flight, hidden from readers (visible_) until the acknowledgement,
//    and undone by a new local commit if the append fails. Local commits happen in tail-seq
//    order, and each records its seq in the engine (tree "_p").
//  - a generation's snapshot stays pinned while any holder records it; it is listed in
//    DATA/protected (written durably before a holder can record it), so a restart pins it again.
//  - nothing is served after a restart until everything the engine holds is protected.
//
// Thread safety: Write, ReadImage and Progress may be called from any thread; Recover and the
// advance loop run on their own threads.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <set>
#include <string>
#include <vector>

#include "convert.h"
#include "tessera/engine/db.h"
#include "tessera/rpc/rpc.h"

namespace tessera::orchestrator {

struct ProtectorOptions {
  std::string data_dir;
  std::string token;
  std::string node_id;
  int min_holders = 0;             // 0: all holders must store a tail entry
  int protect_every = 20000;       // commits between generation advances
  int protect_interval_ms = 2000;  // and at most this long between them
  // How long a tail append polls for a holder's answer before sleeping (rpc::SpinForReply).
  std::chrono::microseconds poll{0};
};

class Protector {
 public:
  explicit Protector(ProtectorOptions o);
  ~Protector();

  // Called with every map the manager sends: slot, epoch, holders, freeze.
  void ApplyMap(const ShardMap& map);
  bool enabled() const { return enabled_.load(); }
  int slot() const { return slot_.load(); }

  // Opens the engine (pinning the protected snapshots listed in DATA/protected) or, when
  // `rebuild`, rebuilds it from parity; replays the tails; protects; then returns the Db.
  Result<std::unique_ptr<engine::Db>> Recover(bool rebuild, const std::atomic<bool>& stop);

  // The log-first write: tail appends at the holders and a local commit in seq order; readers
  // see the batch only once every append is acknowledged. Throws TesseraError (UNAVAILABLE
  // naming the holder that could not store the entry).
  void Write(engine::Db* db, const std::vector<gen::Op>& ops, bool sync);

  // A read transaction on what readers may see: the last commit whose tail appends are all
  // acknowledged. Every read the worker serves, and every generation advance, goes through it.
  Result<std::unique_ptr<engine::ReadTxn>> BeginVisibleRead(engine::Db* db);
  // Db::Get of what readers may see (Db::Get itself unless a commit awaits acknowledgement).
  Status VisibleGet(engine::Db* db, std::string_view tree, std::string_view key,
                    std::string* value);
  // Not OK once an undo failed: the engine then holds a write no holder stored; writes are
  // refused, and the next start rebuilds from parity (DATA/unprotected marks it).
  Status Poisoned();

  // Advances the protected generation if anything changed (skipped while frozen unless force).
  Status Advance(engine::Db* db, bool force);
  // Runs advances every protect_every commits or protect_interval_ms until stop.
  void AdvanceLoop(engine::Db* db, const std::atomic<bool>& stop);

  // Pages [first, first + count) of the pinned generation `gen`, where they lie in its snapshot
  // (kept alive by the view): what a survivor answers to a rebuilder's ReadImage.
  struct ImageView {
    std::shared_ptr<engine::ReadTxn> snap;
    std::string present;                // one byte per page: 1 when in `pages`, 0 all zeros
    std::vector<const uint8_t*> pages;  // the present pages, in order
    size_t page_size = 0;
  };
  ImageView ReadImage(engine::Db* db, int64_t gen, int64_t first, int count);
  std::string Progress() const;

  // Drops the pins (before the Db closes).
  void Close();

 private:
  struct Holder {
    std::string node;
    std::string address;
    int64_t gen = -1;  // the generation it records for this slot (-1: not known yet)
  };
  struct Pending;
  // A writer thread's sleep. The thread that changes what a writer waits for, under a mutex,
  // wakes it only after unlocking that mutex (Wakes): a thread woken while the mutex is still
  // held would only go to sleep again on it, two context switches for one wake-up. Shared, as
  // the waker may send the wake after the writer has returned. One per writer thread, which runs
  // one Write at a time and sets at most one `waiting` flag, only just before it sleeps, and
  // never stops waiting on its own (no timed wait): so each release ends exactly the sleep it
  // was sent for.
  struct Waiter {
    std::counting_semaphore<> sem{0};
    // Unlocks `l`, sleeps until woken, locks `l` again (the caller set its `waiting` flag under
    // `l`; the waker clears it, so each sleep gets exactly one wake).
    void Sleep(std::unique_lock<std::mutex>& l);
  };
  // Wakes collected under a mutex, sent by Run() or the destructor once it is unlocked.
  struct Wakes {
    std::vector<std::shared_ptr<Waiter>> list;
    // With the writer's mutex held: when *waiting, clears it and queues the wake.
    void Add(bool* waiting, const std::shared_ptr<Waiter>& w);
    void Run();
    ~Wakes();
  };
  // Tail appends to one holder, combined: concurrent writers' entries travel in one call. A
  // TailReq's entry, pending and sync are set before it is queued and never change; its other
  // fields are guarded by its batcher's mu.
  struct TailReq {
    const gen::TailEntry* entry = nullptr;
    Pending* pending = nullptr;
    bool sync = false;
    bool sent = false;     // taken into a call; its leader answers it
    bool waiting = false;  // its writer sleeps on `waiter` in DriveTail
    bool done = false;
    Status status;
    bool no_answer = false;  // failed without the holder's answer: it may have stored the entry
    std::shared_ptr<Waiter> waiter;
  };
  struct TailBatcher {
    size_t index = 0;  // the holder's position
    std::mutex mu;
    std::vector<TailReq*> queue;  // in seq order
    bool busy = false;            // a call is in flight
    // Appends skip this holder, failing at once as if it had refused (nothing is sent: the entry
    // is certainly not stored there): its last call got no answer through every attempt (down,
    // or unreachable), and a write must not wait out those attempts again. Cleared when any call
    // to it gets an answer (the advance loop calls it every kHolderProbe: ProbeSkippedHolders),
    // or when the map names another node or address for the row.
    bool skipped = false;
  };
  static constexpr std::chrono::milliseconds kHolderProbe{1000};
  void ProbeSkippedHolders(const std::atomic<bool>& stop);
  // With mu_ held: each batcher's `skipped`, by holder index.
  std::vector<bool> SkippedFlags();
  void Unskip(size_t j);
  // With b->mu held: sets b->skipped, keeping skipped_holders_ in step; true when it changed.
  bool SetSkipped(TailBatcher* b, bool skipped);
  std::atomic<int> skipped_holders_{0};  // batchers with `skipped` set
  void DriveTail(engine::Db* db, TailBatcher* b, TailReq* r, int slot, int64_t epoch) noexcept;

  Status ApplyTailEntry(engine::Db* db, const gen::TailEntry& e);
  // *newest (when given): the newest generation any holder records.
  Status ReplayTails(engine::Db* db, int64_t from_seq, int64_t* newest = nullptr);
  // `newer` (a rebuild's): when some holder records a generation that this worker has not
  // pinned, *newer is set and the call returns at once (the rebuild decoded an older one and
  // must start again: no advance could start from that holder's generation).
  Status CatchUpAndProtect(engine::Db* db, int64_t from_seq, const std::atomic<bool>& stop,
                           bool* newer = nullptr);
  Result<std::unique_ptr<engine::Db>> Rebuild(const std::atomic<bool>& stop);
  Result<std::unique_ptr<engine::Db>> RebuildInstead(const std::string& path,
                                                     const std::string& suffix,
                                                     const std::atomic<bool>& stop);
  // What one advance cost: pages the engine reported changed, and deltas sent (non-zero).
  struct AdvanceCost {
    size_t changed = 0;
    size_t deltas = 0;
  };
  Status ProtectTo(engine::Db* db, size_t j, const engine::ReadTxn& snap, int64_t covered,
                   int64_t* base, AdvanceCost* cost = nullptr);
  Status CommitTo(size_t j, const engine::ReadTxn& snap, int64_t covered, int64_t base);
  // Brings the m holders to pinned snapshot `pinned` (generation g, covering tail seq
  // `covered`), then releases the pins no holder needs; the first error, if any.
  Status AdvanceTo(engine::Db* db, const engine::ReadTxn& pinned, int64_t g, int64_t covered,
                   size_t m);
  void NoteCovered(int64_t covered);  // covered_ only grows
  Status SavePins(const std::set<int64_t>& except = {});
  // Drops the pins no holder records, keeping `keep` (only once every holder's is known).
  Status ReleasePins(int64_t keep);
  static constexpr size_t kMaxPins = 32;
  void AuditHolders();
  void CommitReady(engine::Db* db) noexcept;
  void EndCommit(int64_t last, size_t count, Wakes* wakes);
  // The overlapped commit of a group with one holder (see DriveTail): Hide makes readers use
  // the latest commit's snapshot (before the append is sent: it needs a reader slot), then the
  // group is committed locally while its append is in flight.
  Status Hide(engine::Db* db);
  // Makes the latest commit visible again (not once poisoned, unless closing).
  void Reveal(bool closing = false);
  // Puts back, in a new local commit, what the hidden group changed (its values in the visible
  // snapshot), recording `last_seq`: the engine then holds what readers saw.
  Status Undo(engine::Db* db, const std::vector<TailReq*>& group, int64_t last_seq);
  void SetProgress(const std::string& json);
  // Calls f on a connection to holder j, retrying transport errors. *no_answer (when given) is
  // set when an attempt failed after sending and without an answer: the holder may have acted.
  // *unreachable (when given) is set when every attempt failed in transport. `quick` (a probe,
  // and a tail append when writes can be acknowledged without this holder): the call's I/O
  // timeout is kQuickTimeout, and an attempt that timed out is the last one (the holder is hung
  // or stalled; three attempts tripled the wait of every write queued behind it, past a
  // client's 10 s I/O timeout).
  template <typename F>
  Status CallHolder(size_t j, F&& f, bool* no_answer = nullptr, bool* unreachable = nullptr,
                    bool quick = false);
  static constexpr std::chrono::milliseconds kQuickTimeout{5000};
  // After a write was given up that a holder may have stored: a forced advance of the visible
  // snapshot (whose recorded seq includes the given-up one) makes every holder drop the entry.
  // True when a generation covering `seq` is recorded by every holder.
  bool SettleGivenUp(engine::Db* db, int64_t seq);
  // Records `seq` as passed in the engine, durably (a given-up batch that committed nothing).
  Status RecordSeq(engine::Db* db, int64_t seq);

  const int64_t crash_after_tail_;  // test failpoints: 0 when off
  const int64_t crash_before_ack_;
  const int64_t fail_undo_;
  const int64_t crash_in_advance_;
  const int64_t fail_commit_after_first_;
  int64_t advances_ = 0;  // guarded by advance_mu_
  ProtectorOptions o_;
  std::atomic<bool> enabled_{false};
  std::atomic<int> slot_{-1};
  std::atomic<bool> frozen_{false};

  mutable std::mutex mu_;  // map fields below, pins, holders
  std::string scheme_;
  int k_ = 0, m_ = 0;
  int64_t epoch_ = 0;
  std::vector<Holder> holders_;
  std::vector<std::string> slot_addresses_;
  // gen -> pinned snapshot; shared so that a ReadImage in progress keeps its snapshot alive
  // without holding mu_ (a release only drops the map's reference).
  std::map<int64_t, std::shared_ptr<engine::ReadTxn>> pins_;
  std::vector<std::unique_ptr<TailBatcher>> batchers_;  // one per holder (grows only)

  rpc::ClientPool<gen::ParityServiceClient> holder_pool_;
  rpc::ClientPool<gen::ParityServiceClient> quick_pool_;  // CallHolder's `quick` calls
  rpc::ClientPool<gen::WorkerServiceClient> worker_pool_;

  // Commit ordering (and each Pending's fields).
  std::mutex seq_mu_;
  int64_t next_seq_ = 0;       // last seq handed out
  int64_t committed_seq_ = 0;  // every seq <= this is committed or abandoned
  std::map<int64_t, Pending*> ready_;
  bool committing_ = false;  // a thread is committing a group
  std::atomic<int64_t> commits_since_advance_{0};
  // The seq every holder's recorded generation covers (as far as this process knows), and the
  // newest given-up seq a holder may have stored: while given_up_ > covered_ the advance loop
  // retries, since a rebuild could replay that entry until then.
  std::atomic<int64_t> covered_{0};
  std::atomic<int64_t> given_up_{0};
  std::mutex settle_mu_;  // one SettleGivenUp advance at a time
  std::atomic<uint64_t> settle_attempts_{0};

  // Readers' view. Null: the latest commit is visible (no commit awaits its acknowledgement).
  // Otherwise the snapshot readers see; set before a commit that is not yet acknowledged, and
  // cleared once it is (or once it is undone). hide_gen_ is odd while a commit is hidden, made
  // odd before that commit is published, and only grows: a read that began and ended with the
  // same even value saw nothing hidden. poison_: an undo failed; the engine holds a write no
  // holder stored, so nothing is revealed again and writes are refused. All three change only
  // under visible_mu_.
  std::mutex visible_mu_;
  std::shared_ptr<engine::ReadTxn> visible_;
  std::atomic<uint64_t> hide_gen_{0};
  Status poison_;

  std::mutex advance_mu_;
  mutable std::mutex progress_mu_;
  std::string progress_;
};

// Encoding of a batch in the tail: per op, put flag, shard, key and value lengths, bytes.
std::string EncodeOps(const std::vector<gen::Op>& ops);
Result<std::vector<gen::Op>> DecodeOps(const std::string& bytes);

std::string ShardTree(int shard);
// Adds the ops to `b`, each in its shard's tree.
void AddOps(const std::vector<gen::Op>& ops, engine::WriteBatch* b);

}  // namespace tessera::orchestrator
