// Tessera's embeddable key-value engine: a copy-on-write B+tree on an mmap-backed vmem region.
//
// Design in brief (docs/architecture.md has the rest):
//  - Pages 0 and 1 are meta pages. A commit writes new pages into free space (never a page that
//    the last durable commit or a live reader can reach), then writes the meta slot that does not
//    hold the last durable commit, then (for sync commits) flushes once. Opening picks the newer
//    meta if every page it wrote validates, else the other: a crash at any instant leaves the last
//    durable commit readable, and a nosync commit is either wholly there or wholly gone.
//  - One writer at a time; concurrent Write() calls are combined by group commit (one flush for
//    many batches). Readers never block and are never blocked: each reads a stable snapshot.
//  - Values are returned as views into the mapping, valid until the transaction that produced
//    them ends (zero copy).
//  - A failed flush makes the Db refuse further writes with a sticky error (TESSERA_FATAL):
//    after a durability failure nothing is guessed. Reopen to continue.
//
// Thread safety: a Db may be used from any number of threads. A ReadTxn or Cursor is used by one
// thread at a time; a WriteTxn by the thread that began it. Only one WriteTxn exists at a time:
// BeginWrite blocks until the previous one ends (and Write() calls wait for it too).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tessera/common/status.h"

namespace tessera::engine {

inline constexpr size_t kMaxKeySize = 1024;
inline constexpr size_t kMaxValueSize = size_t{1} << 30;
inline constexpr size_t kMaxTreeNameSize = 255;

struct Options {
  uint32_t page_size = 4096;  // power of two, 4096..65536; fixed when the file is created
  bool create_if_missing = true;
  // No writes and no lock taken, so a live Db can be inspected: the snapshot at open, pinned in
  // `<path>-readers` so that the writer reuses none of its pages while this Db is open.
  bool read_only = false;
  uint64_t reserve_bytes = uint64_t{64} << 30;  // address space reserved: the file's size limit
  bool sync = true;          // default WriteOptions::sync for the Db-level Put/Delete/Write
  size_t max_readers = 126;  // concurrent read transactions, 1 to 4096
  size_t group_commit_max_batches = 1024;  // batches combined into one commit at most
  size_t group_commit_max_bytes = size_t{16} << 20;
  // How long a writer whose batch waits for another writer's group commit polls for it (yielding
  // the CPU between polls) before it sleeps; 0..1000000, 0 (the default): it sleeps at once.
  // Pays with idle CPUs where a sleeping thread wakes slowly (a virtual machine), as while sync
  // commits wait for the disk. With busy CPUs a yielding writer waits out another thread's time
  // slice, so a yield that took long stops every writer's polling for 100 ms.
  uint32_t group_commit_spin_us = 0;
  bool simulate_power_cut = false;  // test mode: see Db::SimulatePowerCut
  // Protection: pages freed by a transaction newer than this txnid are not reused after open
  // until a snapshot pinned with OpenSnapshot (or nothing older) needs them no more. Set it to
  // the oldest snapshot the caller will pin again, so that snapshot's pages survive a restart.
  // 0: every free page is reusable at open.
  uint64_t retain_freed_after = 0;
  // A sync commit whose predecessors since the last flush are all logged (or flushed) appends its
  // operations to the commit log `<path>-log` and flushes that small file instead of the data
  // file's scattered pages; Open replays it. false: every sync commit flushes the data file.
  bool commit_log = true;
  // Format of a file this Open creates (an existing file keeps its own): 0 the newest (3);
  // 2 stores a value too large for a leaf with a page header in front (a 4 KiB value then takes
  // two pages, not one); 1 the first format, whose checksums also cover every byte of a page
  // (slower commits).
  uint32_t format_version = 0;
  // A clean close (the destructor) runs Shrink when a quarter of the file, and at least 8 MiB, is
  // free (never with retain_freed_after set). Off for a caller that keeps page numbers of old
  // snapshots (protection).
  bool shrink_on_close = true;
};

struct WriteOptions {
  bool sync = true;  // flushed before return; false: the OS writes back, a crash may lose it
};

class WriteBatch {
 public:
  void Put(std::string_view key, std::string_view value) { Put({}, key, value); }
  void Put(std::string_view tree, std::string_view key, std::string_view value);
  void Delete(std::string_view key) { Delete({}, key); }
  void Delete(std::string_view tree, std::string_view key);
  void Clear();
  size_t Count() const { return ops_.size(); }
  size_t ByteSize() const { return bytes_; }

  struct Op {
    bool is_put;
    std::string tree;  // empty: the main tree
    std::string key;
    std::string value;
  };
  const std::vector<Op>& ops() const { return ops_; }

 private:
  std::vector<Op> ops_;
  size_t bytes_ = 0;
};

struct TreeStats {
  std::string name;  // "" for the main tree
  uint64_t entries = 0;
  uint32_t depth = 0;
  uint64_t branch_pages = 0;
  uint64_t leaf_pages = 0;
  uint64_t overflow_pages = 0;
};

struct Stats {
  uint32_t page_size = 0;
  uint64_t txnid = 0;
  uint64_t commit_seq = 0;
  uint64_t last_page = 0;  // pages in use or free below the high-water mark
  uint64_t free_pages = 0;
  uint64_t file_size = 0;
  std::vector<TreeStats> trees;  // the main tree first, then named trees by name
  uint64_t commits = 0;          // commits by this Db object since it opened
  uint64_t flushes = 0;          // flushes of the data file
  uint64_t log_syncs = 0;        // sync commits made durable by the commit log alone
  uint64_t batches_written = 0;  // batches committed through Write()
  uint32_t meta_slot = 0;        // slot (0 or 1) of the current meta
  // Empty after a clean open; otherwise what Open rejected (e.g. a torn last commit) and why.
  std::string recovery_note;
};

struct VerifyReport {
  bool ok = true;
  std::vector<std::string> problems;  // each names the page and what is wrong
  uint64_t pages_checked = 0;
  uint64_t entries = 0;
  std::string ToString() const;
};

// The descriptor of a snapshot: what travels beside its page images so a file can be restored.
struct SnapshotDescriptor {
  uint32_t page_size = 0;
  uint64_t txnid = 0;
  uint64_t commit_seq = 0;
  uint64_t last_page = 0;
  std::string meta_bytes;  // the snapshot's meta record, checksummed
};

class Db;
class Cursor;

// A stable snapshot. Gets return views valid until the transaction ends.
class ReadTxn {
 public:
  virtual ~ReadTxn();
  // Value of `key` in the main tree (or `tree`); NotFound when absent.
  Result<std::string_view> Get(std::string_view key) const { return Get({}, key); }
  Result<std::string_view> Get(std::string_view tree, std::string_view key) const;
  Result<std::unique_ptr<Cursor>> NewCursor(std::string_view tree = {}) const;
  // Names of the named trees, sorted.
  Result<std::vector<std::string>> ListTrees() const;
  uint64_t txnid() const;
  uint64_t commit_seq() const;
  SnapshotDescriptor Descriptor() const;

 protected:
  friend class Db;
  friend class Cursor;

 public:
  struct Impl;  // internal
 protected:
  explicit ReadTxn(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Read-your-writes write transaction. Ends with Commit() or Abort() (the destructor aborts).
// A write that fails with anything but NotFound (say, Corruption met part-way) may have changed
// part of the tree, so every later write and the commit return that error again: abort it.
class WriteTxn : public ReadTxn {
 public:
  ~WriteTxn() override;
  Status Put(std::string_view key, std::string_view value) { return Put({}, key, value); }
  Status Put(std::string_view tree, std::string_view key, std::string_view value);
  // NotFound when the key is absent (nothing changes).
  Status Delete(std::string_view key) { return Delete({}, key); }
  Status Delete(std::string_view tree, std::string_view key);
  // Named trees: created on first Put as well; DropTree deletes a tree and all its entries.
  Status CreateTree(std::string_view tree);
  Status DropTree(std::string_view tree);
  Status Commit(const WriteOptions& options = {});
  void Abort();

 private:
  friend class Db;

 public:
  explicit WriteTxn(std::unique_ptr<Impl> impl);  // internal: use Db::BeginWrite
};

// Cursor over one tree of a snapshot. Positions: Seek (first key >= k), SeekForPrev (last key
// <= k), First, Last, then Next/Prev. With a prefix set by SeekPrefix, the cursor becomes invalid
// on leaving the keys that start with it. A cursor of a WriteTxn is invalidated by a write in that
// transaction: its next move returns InvalidArgument until it is positioned again.
class Cursor {
 public:
  ~Cursor();
  Status Seek(std::string_view key);
  Status SeekForPrev(std::string_view key);
  Status SeekPrefix(std::string_view prefix);
  Status First();
  Status Last();
  Status Next();
  Status Prev();
  bool Valid() const;
  std::string_view key() const;
  std::string_view value() const;

 private:
 public:
  struct Impl;                                  // internal
  explicit Cursor(std::unique_ptr<Impl> impl);  // internal: use ReadTxn::NewCursor

 private:
  std::unique_ptr<Impl> impl_;
};

class Db {
 public:
  // Opens or creates the database file `path` (an existing file keeps the page size it was
  // created with). Errors: Busy (another process or Db has it open for writing), Corruption
  // (neither meta page is valid, or not a Tessera file), InvalidArgument (bad options), NotFound
  // (missing and !create_if_missing), IoError/NoSpace from the OS. A read-only Db sees the
  // database as it was when opened. Destroy every transaction and cursor before the Db.
  static Result<std::unique_ptr<Db>> Open(const std::string& path, const Options& options = {});
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Convenience single-operation calls through group commit (sync per Options::sync).
  Status Put(std::string_view key, std::string_view value);
  Status Delete(std::string_view key);
  // Copies the value out. NotFound when absent.
  Status Get(std::string_view key, std::string* value) const;
  Status Get(std::string_view tree, std::string_view key, std::string* value) const;

  // Applies the batch atomically; concurrent callers share one commit and one flush.
  Status Write(const WriteBatch& batch, const WriteOptions& options);
  Status Write(const WriteBatch& batch);

  Result<std::unique_ptr<ReadTxn>> BeginRead() const;
  // A new read transaction on the snapshot `snap` reads, not on the latest commit: a second
  // handle on an open snapshot, for another thread (a ReadTxn is used by one thread at a time,
  // but only `snap`'s fixed snapshot identity is read here, so another thread may be using it).
  // `snap` must stay open until this returns; afterwards each keeps the snapshot on its own.
  // InvalidArgument for a WriteTxn or a transaction of another Db.
  Result<std::unique_ptr<ReadTxn>> BeginReadAt(const ReadTxn& snap) const;
  Result<std::unique_ptr<WriteTxn>> BeginWrite();

  // Flushes everything committed so far (makes nosync commits durable). It waits for the writer
  // lock: do not call it while this thread holds a WriteTxn (it would wait for itself).
  Status Sync();

  // Gives the free space at the end of the file back to the file system: moves the pages in use
  // there into free pages lower down, then truncates. Flushes (like Sync) several times; pages a
  // live reader holds, and a large value with no free run of its size below, stay where they
  // are (Ok when nothing could move); the file never grows. Do not call it while this thread holds
  // a WriteTxn. Only pages in the last `max_bytes` of the file move, which bounds the work. Runs at
  // a clean close (with 256 MiB) when Options::shrink_on_close and a quarter of the file (at least
  // 8 MiB) is free.
  Status Shrink(uint64_t max_bytes = UINT64_MAX);

  // Consistent copy of the current snapshot to `path` while writes go on; the copy is compact
  // (only pages in use) and opens as a normal Db. On any error (a value that cannot be read,
  // say) no file is left at `path`.
  Status Backup(const std::string& path) const;

  Result<Stats> GetStats() const;
  // Walks every page: checksums, key order, each page reachable exactly once or free.
  VerifyReport Verify() const;

  // Protection support. The image of page p of `snap`: its bytes if p is in use in the snapshot,
  // zeros otherwise (meta pages are never in use). `out` must hold page_size bytes.
  Status PageImage(const ReadTxn& snap, uint64_t pgno, uint8_t* out) const;
  // The same image without a copy: the page's bytes in place (valid while `snap` is open), or
  // null when the image is all zeros (a free page, a meta page, or past the snapshot's end).
  Result<const uint8_t*> PageImageView(const ReadTxn& snap, uint64_t pgno) const;
  // Pages whose image differs (or may differ) between two snapshots, `older` before `newer`;
  // cost follows what changed.
  Result<std::vector<uint64_t>> ChangedPages(const ReadTxn& older, const ReadTxn& newer) const;
  // Writes a new engine file at `path` from a descriptor and page images (`image(p, buf)` fills
  // page p for 2 <= p < desc.last_page). The file opens as a Db equal to the snapshot.
  static Status Restore(const std::string& path, const SnapshotDescriptor& desc,
                        const std::function<Status(uint64_t pgno, uint8_t* buf)>& image);
  // Pins the snapshot `desc` describes again after a restart (the Db must have been opened with
  // Options::retain_freed_after <= desc.txnid, and OpenSnapshot called before the first write).
  // Every page of the snapshot is checked (checksums, numbers, the txnids its parents record):
  // Corruption when its pages were reused or damaged, InvalidArgument for a descriptor of
  // another file or a txnid newer than the database's.
  Result<std::unique_ptr<ReadTxn>> OpenSnapshot(const SnapshotDescriptor& desc) const;
  // Verify() of one snapshot.
  VerifyReport VerifySnapshot(const ReadTxn& snap) const;

  uint32_t page_size() const;
  const std::string& path() const;

  // Test mode (Options::simulate_power_cut): acts as a power cut now. Every page write since the
  // last flush survives with probability keep_fraction (chosen by seed); then the Db is dead:
  // destroy it and reopen the file.
  Status SimulatePowerCut(uint64_t seed, double keep_fraction);

  struct Impl;

 private:
  explicit Db(std::unique_ptr<Impl> impl);
  Status BackupTo(const std::string& path) const;  // Backup's copy; Backup removes it on failure
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::engine
