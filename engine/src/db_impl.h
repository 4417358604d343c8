// Internal state of a Db, shared by db.cc (transactions, B+tree, commit), cursor.cc and verify.cc.
//
// Invariants:
//  - `meta_` is the last committed meta; `current_txn_` == meta_.txnid once published, and
//    ring_[txnid % kRing] holds that meta for readers.
//  - Every page p in [2, meta_.last_page) is reachable from meta_ (trees, overflow runs, freelist
//    chain) or listed in the free state (reusable_ ∪ pending_), never both.
//  - A page freed by txn T moves to reusable only when no live reader's snapshot and no snapshot
//    a crash recovery can fall back to reaches it: no live reader's txn s has W <= s < T, where W
//    is the txn that wrote it (readers that start later see T or newer), and either
//    T <= durable_txn or the page itself was written after durable_txn ("young": the durable
//    meta never reached it, and a newer meta that did would fail its open-time validation).
//  - Meta slot durable_slot_ holds the last flushed meta (txnid durable_txn_); commits write the
//    other slot, so a crash mid-commit always leaves the durable meta intact.
//  - logged_upto is the newest txn made durable by the data file or the commit log: the log holds
//    every commit in (durable_txn, logged_upto]. kNotLogged means a nosync commit (or an old file
//    without a db_id) broke that chain, and the next sync commit must flush the data file.
//
// Thread safety: write_mu_ is held by the single active write transaction (and by Sync, Backup's
// writer side, Verify of the writer state); everything under "writer state" is guarded by it.
// Readers touch only reader slots, the ring and the mapping, lock-free.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "commit_log.h"
#include "format.h"
#include "page_set.h"
#include "shared_readers.h"
#include "tessera/engine/db.h"
#include "tessera/vmem/region.h"

namespace tessera::engine {

using format::Meta;
using format::PageView;
using format::TreeInfo;

// CRC32C of data[0, len), continuing from `crc` (0 for a fresh checksum).
uint32_t Crc32c(const uint8_t* data, size_t len, uint32_t crc = 0);
// A random nonzero id for a new file (Meta::db_id).
uint64_t NewDbId();

struct alignas(64) ReaderSlot {
  std::atomic<uint32_t> busy{0};
  std::atomic<uint64_t> txn{0};
};

struct Db::Impl {
  static constexpr size_t kRing = 256;
  static constexpr size_t kMetaWords = sizeof(Meta) / 8;

  std::string path;
  Options opts;
  std::unique_ptr<vmem::Region> region;
  // The file's reader table (shared_readers.h): a read-only Db's slot pins its snapshot; the
  // writer counts every pinned snapshot as live. Null when it could not be opened (then a
  // read-only Db is not protected from page reuse, and says so in its recovery note).
  std::unique_ptr<SharedReaders> shared_readers;
  uint32_t page_size = 0;
  // The file's format version allows a branch or leaf checksum to skip the page's gap.
  bool crc_skips_gap = false;
  // The file's format version stores overflow runs without a page header (format.h).
  bool headerless_runs = false;

  // Pages whose checksum has been verified (or that this process wrote) since open.
  std::unique_ptr<std::atomic<uint64_t>[]> verified;
  uint64_t verified_pages = 0;
  // The file's pages below this were faulted in for writing ahead of use (btree::AllocPages;
  // writer only; a hint). flushed_lately: the last commit flushed the data file, or FlushDurable
  // ran since; a flush writes the faulted-in pages (zeros) and write-protects them again, so
  // while the data file is flushed at commits no window is faulted in.
  uint64_t prefaulted_upto = 0;
  bool flushed_lately = false;
  // First pages of version 3 overflow runs whose checksum this process verified (or that it
  // wrote), apart from `verified`: such a run has no header, so a page verified as anything
  // else must not pass for one. Cleared when a page is allocated; never used read-only.
  std::unique_ptr<std::atomic<uint64_t>[]> run_verified;
  // Leaves whose checksum the writing transaction computed into their header once it had
  // finished changing them, while they were still in the cache (btree::DescendForWrite, on to
  // another leaf): Finalize takes the checksum from the header instead of reading the whole page
  // again at commit, cold. A mark is cleared whenever its page is touched for writing, allocated
  // or freed, and Finalize consults it only for pages the committing transaction wrote, every one
  // of which it allocated: the clear at allocation is what keeps a mark an earlier or aborted
  // transaction left (its txnid may be reused) from being trusted. `crc_resealed`: leaves changed
  // again after they were sealed in this transaction; they are not sealed again (a leaf changed
  // over and over, with others in between, would be checksummed at every change), so a leaf is
  // checksummed at most twice per transaction. Cleared at allocation too. Used by the writer only
  // (under write_mu).
  struct PageBits {
    std::unique_ptr<uint64_t[]> w;
    void Reset(uint64_t pages) { w.reset(new uint64_t[pages / 64 + 1]()); }
    bool Test(uint64_t p) const { return (w[p >> 6] >> (p & 63)) & 1; }
    void Set(uint64_t p) { w[p >> 6] |= uint64_t{1} << (p & 63); }
    void Clear(uint64_t p) { w[p >> 6] &= ~(uint64_t{1} << (p & 63)); }
  };
  PageBits crc_fresh;
  PageBits crc_resealed;

  std::unique_ptr<ReaderSlot[]> readers;
  struct RingEntry {
    std::atomic<uint64_t> w[kMetaWords];
  };
  std::unique_ptr<RingEntry[]> ring;
  std::atomic<uint64_t> current_txn{0};

  std::mutex shrink_mu;  // one Shrink at a time (taken before write_mu)
  // ---- writer state (write_mu) ----
  std::mutex write_mu;
  Meta meta{};
  uint32_t meta_slot = 0;
  uint64_t durable_txn = 0;
  uint32_t durable_slot = 0;
  PageSet reusable;  // free pages any transaction may take
  // Pages one commit freed, and the oldest txn that wrote any of them: only snapshots in
  // [wmin, freeing txn) can reach them (0: not known, every older snapshot may).
  struct FreedBatch {
    uint64_t wmin = 0;
    std::vector<uint64_t> pages;
  };
  std::map<uint64_t, FreedBatch> pending;        // freeing txn -> pages not yet reusable
  std::map<uint64_t, FreedBatch> pending_young;  // the same, for young pages
  uint64_t pending_count = 0;                    // pages in pending and pending_young
  uint64_t pending_old_count = 0;                // pages in pending: they wait for a flush
  // Batches are checked against the live snapshots' intervals when they become eligible (young:
  // at the BeginWrites of the next kYoungRecheck commits; old: after a flush covers them). A
  // batch a snapshot still reached then waits for the oldest snapshot to pass its txn.
  static constexpr uint64_t kYoungRecheck = 64;
  uint64_t young_checked_upto = 0;
  uint64_t old_checked_upto = 0;
  std::vector<uint64_t> live_scratch;    // BeginWrite's copy of the live snapshots, reused
  std::vector<uint64_t> freelist_chain;  // pages of the on-disk freelist log, newest first
  Status fatal;                          // sticky: set when a flush fails
  std::string recovery_note;             // what Open rejected, if anything
  void AddRecoveryNote(const std::string& note) {
    recovery_note += (recovery_note.empty() ? "" : "; ") + note;
  }
  bool dead = false;  // after SimulatePowerCut
  static constexpr uint64_t kNotLogged = UINT64_MAX;
  std::unique_ptr<CommitLog> log;  // null: read-only, or Options::commit_log off
  uint64_t logged_upto = kNotLogged;
  // While Open replays the log: pages freed after this txn stay pending (protection pins).
  uint64_t replay_reader_floor = 0;
  // While Open replays the log the commit path never flushes: a flush resets the log, and a
  // crash before the replay ends would lose the records not yet applied (Open checkpoints after).
  bool replaying = false;

  // ---- group commit ----
  // gc_mu guards gc_queue (waiting writers, the leader of the running group first). A writer's
  // own mu guards its lead/done/status, so waking a group's writers takes no shared lock.
  struct Writer {
    const WriteBatch* batch;
    bool sync;
    bool missing_is_not_found = false;
    bool missing = false;  // set by the leader: a delete found no key
    std::mutex mu;
    std::condition_variable cv;
    // Set under mu; atomic so that a waiting writer may poll them before it sleeps on cv.
    std::atomic<bool> lead{false};  // the previous leader handed the queue to this writer
    std::atomic<bool> done{false};  // a leader committed this writer's batch; status holds it
    Status status;
  };
  std::mutex gc_mu;
  std::deque<Writer*> gc_queue;
  // gc_queue's size, for a leader waiting for a group to gather without taking gc_mu.
  std::atomic<size_t> gc_queued{0};
  // Sync groups only: how many writers the last sync group had (1: none to wait for). Each
  // sync group's writers return together and come back together; a leader that took only those
  // already queued split them into two alternating groups, two flushes where one would do. So
  // a sync leader first waits (briefly) for this many to queue.
  std::atomic<size_t> gc_sync_writers{1};
  // Options::group_commit_spin_us: a waiting writer polls its flags (PollYielding) until they
  // change or the time is up; this Db's writers share the switch that busy CPUs turn off.
  std::atomic<int64_t> spin_off_until{0};

  // ---- counters ----
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> flushes{0};
  std::atomic<uint64_t> log_syncs{0};
  std::atomic<uint64_t> batches{0};

  // ---- helpers (db.cc) ----
  bool IsVerified(uint64_t p) const {
    return (verified[p >> 6].load(std::memory_order_relaxed) >> (p & 63)) & 1;
  }
  void SetVerified(uint64_t p) {
    verified[p >> 6].fetch_or(uint64_t{1} << (p & 63), std::memory_order_relaxed);
  }
  void ClearVerified(uint64_t p) {
    verified[p >> 6].fetch_and(~(uint64_t{1} << (p & 63)), std::memory_order_relaxed);
  }
  bool IsRunVerified(uint64_t p) const {
    return (run_verified[p >> 6].load(std::memory_order_relaxed) >> (p & 63)) & 1;
  }
  void SetRunVerified(uint64_t p) {
    run_verified[p >> 6].fetch_or(uint64_t{1} << (p & 63), std::memory_order_relaxed);
  }
  void ClearRunVerified(uint64_t p) {
    if (IsRunVerified(p)) {
      run_verified[p >> 6].fetch_and(~(uint64_t{1} << (p & 63)), std::memory_order_relaxed);
    }
  }
  uint8_t* Page(uint64_t p) const { return region->Page(p); }

  // Checks page p (its checksum once per open, its number and, when given, type) within a
  // snapshot whose high-water mark is last_page. Corruption names the page.
  Status CheckPage(uint64_t p, uint64_t last_page, int expect_type, uint64_t expect_txnid) const;
  // CheckPage's common case, inline and without a Status: page p is in range, its checksum was
  // verified since open, and it names itself and the expected writer. False: ask CheckPage.
  bool QuickChecked(uint64_t p, uint64_t last_page, uint64_t expect_txnid) const {
    if (p < format::kMetaPages || p >= last_page || !IsVerified(p)) return false;
    PageView v{Page(p)};
    return v.pgno() == p && (expect_txnid == 0 || v.txnid() == expect_txnid);
  }
  // Pages of the overflow run leaf cell `lc` refers to: from the value's length in a version 3
  // file, else from the run's header (unchecked: the caller has checked that the run's first
  // page lies inside the file).
  uint64_t RunPages(format::LeafCell lc) const {
    return headerless_runs ? RunPagesFor(lc.vlen())
                           : PageView{Page(lc.ovf_pgno())}.overflow_pages();
  }
  // Pages of the overflow run Put makes for a value of vlen bytes in this file's format.
  uint64_t RunPagesFor(uint64_t vlen) const {
    return headerless_runs ? format::HeaderlessRunPages(vlen, page_size)
                           : (vlen + format::kHeaderSize + page_size - 1) / page_size;
  }
  // The run `lc` refers to, as long as Put made it for its value, lies inside a snapshot whose
  // high-water mark is last_page; RunMatches: the bytes of a version 3 run match the reference's
  // checksum (computed now). Corruption names the run.
  Status RunInFile(format::LeafCell lc, uint64_t last_page) const;
  Status RunMatches(format::LeafCell lc) const;
  // A version 3 run this process just wrote at p (n pages): known good as a run, and never to
  // pass for a checked tree page (its bytes 8-24 could mimic a header).
  void MarkRunWritten(uint64_t p, uint64_t n) {
    SetRunVerified(p);
    for (uint64_t k = 0; k < n; ++k) ClearVerified(p + k);
  }
  // Checks the overflow run `lc` refers to within a snapshot whose high-water mark is last_page
  // (its checksum once per open) and returns its value's first byte. Corruption names the run.
  Result<const uint8_t*> CheckRun(format::LeafCell lc, uint64_t last_page) const;
  // What a leaf's reference records as the checksum of version 3 run `run` holding vlen bytes.
  static uint32_t RunCrc(const uint8_t* run, uint64_t vlen) { return Crc32c(run, vlen); }
  Status VerifyChecksum(uint64_t p) const;
  uint32_t PageCrc(const uint8_t* page, uint64_t npages) const;

  // Flushes everything written so far; on success the meta of `txnid` in `slot` is the durable
  // one, on failure the Db turns fatal (sticky TESSERA_FATAL).
  Status FlushDurable(uint64_t txnid, uint32_t slot);
  // Gives back the pages the file has grown ahead of need (past meta.last_page); write_mu held.
  Status TrimToLastPage();
  void Publish(const Meta& m);
  Meta LoadRing(uint64_t txn) const;
  // A free reader slot, marked busy (Busy when every slot is taken).
  Result<size_t> TakeReaderSlot() const;
  // Pins the newest snapshot in `slot`: `load(t)` copies what the caller needs of ring entry t
  // and returns the txnid it read there; it is called again until the copy is consistent.
  template <typename Load>
  void PinNewest(size_t slot, Load load) const;
  // Registers a reader; returns its slot and fills `m` with a consistent snapshot.
  Result<size_t> AcquireReader(Meta* m) const;
  // AcquireReader for a lookup in the main tree, which needs only its TreeInfo and the snapshot's
  // last_page: reads 9 of the meta's 28 words (Db::Get without a tree name).
  Result<size_t> AcquireMainTree(format::TreeInfo* main, uint64_t* last_page) const;
  // Registers a reader of the older snapshot `m` (protection: a pin restored after a restart).
  Result<size_t> AcquireReaderAt(const Meta& m) const;
  void ReleaseReader(size_t slot) const;
  // The snapshots live readers hold (and the replay floor), sorted, into *out.
  void LiveSnapshots(std::vector<uint64_t>* out) const;

  // `missing_is_not_found`: a delete of a missing key makes this batch's status NotFound (its
  // other writes stand); otherwise such a delete is no error.
  Status Write(const WriteBatch& batch, bool sync, bool missing_is_not_found = false);
  // Open: applies the commit log's records after the chosen meta, then flushes (db owns this).
  Status Replay(Db* db, const std::vector<CommitLog::Record>& records);
  Result<std::unique_ptr<WriteTxn>> BeginWrite();
};

// A snapshot as seen by a transaction, plus the write state when it is a write transaction.
struct ReadTxn::Impl {
  Db::Impl* db = nullptr;
  Meta meta{};             // the snapshot (for a write txn: the base, updated as it writes)
  size_t slot = SIZE_MAX;  // reader slot, released at destruction
  bool write = false;
  bool finished = false;
  uint64_t mod_count = 0;  // bumps on every change, invalidates cursors

  // Named trees looked up (read) or touched (write).
  struct TreeState {
    TreeInfo info;
    bool exists = false;
    bool dirty = false;
  };
  mutable std::map<std::string, TreeState, std::less<>> trees;

  // ---- write transaction state ----
  std::unique_lock<std::mutex> lock;  // write_mu
  uint64_t txnid = 0;
  // Set when a write failed part-way (say, Corruption met after pages were copied): the txn may
  // hold half of it, so it refuses every later write and its commit; only Abort remains.
  Status failed;
  std::vector<uint64_t> dirty;         // pages allocated by this txn
  std::vector<uint64_t> freed;         // committed pages this txn freed (written <= durable)
  std::vector<uint64_t> freed_young;   // committed pages this txn freed (written > durable)
  uint64_t freed_wmin = UINT64_MAX;    // the oldest writer txn among `freed`
  uint64_t young_wmin = UINT64_MAX;    // and among `freed_young`
  std::vector<uint64_t> txn_reusable;  // pages allocated then freed by this txn
  std::vector<uint64_t> taken;         // pages taken from Db::reusable (restored on abort)
  bool freelist_changed = false;
  // The leaf the last Put or Delete changed (0: none), whose checksum the next write's descent
  // computes once it leads to another leaf (Db::Impl::crc_fresh); forgotten when it is freed
  // and at Finalize.
  uint64_t crc_pending_leaf = 0;
  bool freelist_dump = false;  // write the whole free set, not a log record (Shrink)
  // Shrink: nonzero while pages are being moved down; allocations then take only free pages
  // below it (never the end of the file), and fail with NoSpace when there are none.
  uint64_t alloc_limit = 0;
  uint64_t alloc_run_failed = UINT64_MAX;  // no run of this many pages or more is left below it
  // The operations of this write transaction as a commit-log payload, while it stays small enough
  // to log (log_ok); a sync commit with !log_ok flushes the data file instead.
  std::string log_ops;
  bool log_ok = true;
  void LogOp(logop::Kind kind, std::string_view tree, std::string_view key = {},
             std::string_view value = {}) {
    if (!log_ok) return;
    if (log_ops.size() + tree.size() + key.size() + value.size() + 32 >
        CommitLog::kMaxRecordBytes) {
      log_ok = false;
      log_ops.clear();
      log_ops.shrink_to_fit();
      return;
    }
    logop::Append(&log_ops, kind, tree, key, value);
  }

  // Free pages of this snapshot, sorted (loaded on first PageImage).
  mutable std::vector<uint64_t> free_sorted;
  mutable bool free_loaded = false;

  ~Impl();
  Result<TreeInfo*> Tree(std::string_view name, bool create) const;
};

// Reads the freelist log of a snapshot (records newest first, each removing then adding pages;
// the oldest is a full dump) and replays it: page -> the txn that freed it (0: long ago).
Status ReplayFreelist(const Db::Impl* db, uint64_t head, uint64_t head_txnid, uint64_t last_page,
                      std::map<uint64_t, uint64_t>* free, std::vector<uint64_t>* chain);

// A cursor over the catalog (named tree -> TreeInfo) of a transaction (cursor.cc).
Result<std::unique_ptr<Cursor>> NewCatalogCursor(const ReadTxn::Impl& txn);

}  // namespace tessera::engine
