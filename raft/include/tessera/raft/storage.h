// Raft storage: the durable half of a Raft node (hard state, log entries, the latest snapshot).
//
// The state machine in raft.h never writes storage itself. It hands the driver a Ready; the driver
// persists Ready's snapshot, entries and hard state (Save, one atomic write) before it sends
// Ready's messages, then calls RawNode::Advance. The state machine reads storage for entries that
// are already durable (to replicate them, to apply them, to answer Term(i)).
//
// The log as storage sees it: a compaction point (index, term) — the last entry discarded, 0/0 for
// a fresh log — followed by the entries FirstIndex()..LastIndex(), FirstIndex() being the
// compaction point's index + 1. Term(i) is answered for the compaction point too, so the entry
// after a snapshot can be checked against it. Entries at or below the latest snapshot's index may
// be discarded (Compact); entries above it never are, except by a newer snapshot.
//
// Status conventions, relied on by the state machine:
//   kNotFound     the requested index is compacted away (below FirstIndex()-1 for Term)
//   kUnavailable  the requested index is past LastIndex()
//   kCorruption   a stored record failed its length or checksum check; the message names the key
//   anything else an I/O failure; the node that sees it stops (see raft.h)
//
// Thread safety: not thread-safe. The one driver that owns the RawNode owns its Storage too.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tessera/common/status.h"

struct MDB_env;  // lmdb.h, kept out of our header

namespace tessera::raft {

enum class EntryType : uint8_t {
  kNormal = 0,  // an application command
  kNoop = 1,    // appended by a new leader so that it can commit entries of earlier terms
};

struct Entry {
  uint64_t term = 0;
  uint64_t index = 0;
  EntryType type = EntryType::kNormal;
  std::string data;
  friend bool operator==(const Entry&, const Entry&) = default;
};

// What must be durable before any message that depends on it is sent.
struct HardState {
  uint64_t term = 0;
  uint64_t vote = 0;  // 0: no vote in `term`
  uint64_t commit = 0;
  friend bool operator==(const HardState&, const HardState&) = default;
};

struct SnapshotMeta {
  uint64_t index = 0;  // last log index the snapshot covers
  uint64_t term = 0;   // term of that entry
  std::vector<uint64_t> voters;
  friend bool operator==(const SnapshotMeta&, const SnapshotMeta&) = default;
};

struct Snapshot {
  SnapshotMeta meta;
  std::string data;  // the application's state machine image, opaque to Raft
  bool empty() const { return meta.index == 0; }
  friend bool operator==(const Snapshot&, const Snapshot&) = default;
};

struct InitialState {
  HardState hard_state;
  std::vector<uint64_t> voters;  // from the snapshot; empty when there is none
};

class Storage {
 public:
  virtual ~Storage() = default;

  virtual Result<InitialState> LoadInitialState() = 0;
  // Entries [lo, hi), at most `max_bytes` of data but always at least one entry if lo < hi.
  virtual Result<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) = 0;
  virtual Result<uint64_t> Term(uint64_t index) = 0;
  virtual Result<uint64_t> FirstIndex() = 0;
  virtual Result<uint64_t> LastIndex() = 0;
  virtual Result<Snapshot> GetSnapshot() = 0;  // empty() when none was taken or received

  // One atomic, durable write of a Ready: first the snapshot (which replaces the whole log), then
  // the entries (any stored entries at or after entries[0].index are removed first: a new leader
  // overwrote them), then the hard state. Null / empty parts are skipped.
  virtual Status Save(const HardState* hard_state, const std::vector<Entry>& entries,
                      const Snapshot* snapshot) = 0;
  Status SetHardState(const HardState& hs) { return Save(&hs, {}, nullptr); }
  Status Append(const std::vector<Entry>& entries) { return Save(nullptr, entries, nullptr); }
  Status ApplySnapshot(const Snapshot& snapshot) { return Save(nullptr, {}, &snapshot); }

  // Records a snapshot the application took of its own state machine at meta.index (which must
  // be in the log with term meta.term and newer than the current snapshot). Keeps the log.
  virtual Status CreateSnapshot(const Snapshot& snapshot) = 0;
  // Discards the entries up to and including `index`, which must be covered by the snapshot:
  // an entry no snapshot covers could never be sent to a follower that needs it.
  virtual Status Compact(uint64_t index) = 0;
};

// In memory; for tests and for a driver that has its own durability. "Durable" means "in this
// object": a test crashes a node by dropping its RawNode and restarts it over the same storage.
class MemoryStorage final : public Storage {
 public:
  MemoryStorage();

  Result<InitialState> LoadInitialState() override;
  Result<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) override;
  Result<uint64_t> Term(uint64_t index) override;
  Result<uint64_t> FirstIndex() override;
  Result<uint64_t> LastIndex() override;
  Result<Snapshot> GetSnapshot() override;
  Status Save(const HardState* hard_state, const std::vector<Entry>& entries,
              const Snapshot* snapshot) override;
  Status CreateSnapshot(const Snapshot& snapshot) override;
  Status Compact(uint64_t index) override;

  // The checks Save makes before it changes anything: a Save that passes them cannot fail.
  Status CheckSave(const std::vector<Entry>& entries, const Snapshot* snapshot) const;

 private:
  HardState hard_state_;
  Snapshot snapshot_;
  // entries_[0] is the compaction point (only its index and term are meaningful), so the entry
  // with index i is entries_[i - entries_[0].index].
  std::vector<Entry> entries_;
};

struct LmdbStorageOptions {
  size_t map_size = size_t{1} << 30;  // LMDB's size limit for the environment
};

// Persisted in an LMDB environment in a directory the caller gives (created if missing). Every
// mutating call commits one durable (fsynced) LMDB transaction before it returns.
//
// Layout: two named databases. "meta" holds "hardstate" (term, vote, commit), "compacted"
// (index, term of the compaction point) and "snapshot" (index, term, voter count, voters, data).
// "log" maps the 8-byte big-endian index to (term, type, data). All integers in values are
// little-endian u64 except the voter count (u32) and the type (u8). Every value ends with an
// 8-byte XXH3 checksum of the key and the rest of the value, so a truncated or damaged record
// reads as kCorruption naming its key, e.g. "log/17".
class LmdbStorage final : public Storage {
 public:
  static Result<std::unique_ptr<LmdbStorage>> Open(const std::string& dir,
                                                   const LmdbStorageOptions& options = {});
  ~LmdbStorage() override;
  LmdbStorage(const LmdbStorage&) = delete;
  LmdbStorage& operator=(const LmdbStorage&) = delete;

  Result<InitialState> LoadInitialState() override;
  Result<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) override;
  Result<uint64_t> Term(uint64_t index) override;
  Result<uint64_t> FirstIndex() override;
  Result<uint64_t> LastIndex() override;
  Result<Snapshot> GetSnapshot() override;
  Status Save(const HardState* hard_state, const std::vector<Entry>& entries,
              const Snapshot* snapshot) override;
  Status CreateSnapshot(const Snapshot& snapshot) override;
  Status Compact(uint64_t index) override;

 private:
  LmdbStorage(MDB_env* env, unsigned meta_dbi, unsigned log_dbi, std::string dir);

  MDB_env* env_;
  unsigned meta_dbi_;
  unsigned log_dbi_;
  std::string dir_;
};

struct WalStorageOptions {
  // The log file grows in zero-filled steps of this size, so that a flush of appended records
  // rewrites blocks the file already owns and needs no file-system journal commit.
  uint64_t preallocate_bytes = uint64_t{4} << 20;
};

// Persisted in a directory the caller gives (created if missing) as an append-only log file
// ("wal") and a snapshot file ("snapshot"); the log and hard state are also kept in memory.
// Every mutating call is durable when it returns: a Save is one write and one fdatasync, which
// is what makes a Raft commit cheap (LmdbStorage needs two flushes per transaction).
//
// Invariants:
//  - "wal" is a sequence of 8-byte-aligned records, each with a 32-byte header (magic, type,
//    batch number, length, XXH3 of header and payload), followed by zeros to the end of the
//    file. A batch is the records of one Save and ends with a commit record; replay applies a
//    batch only when its commit record is intact, so a Save is atomic across a crash.
//  - Batch numbers strictly increase through the file, and across rewrites of it. The file
//    begins with a base batch (compaction point, hard state and every live entry), which
//    Compact and the first Open write to "wal.tmp" and rename over "wal".
//  - "snapshot" is replaced by rename of a flushed "snapshot.tmp"; it is written before any log
//    record that depends on it. Its index is at least the log's compaction point.
//  - Damage: a bad record followed only by zeros or by records of the batch it belongs to is a
//    write torn by a crash (that batch was never acknowledged) and is dropped; a bad record
//    followed by an intact record of a later batch is kCorruption naming the offset, since a
//    later batch is written only after the earlier one was flushed. A bad snapshot file is
//    kCorruption.
//  - After a failed write or flush every later mutating call fails with the same status: what
//    reached the disk is unknown, so the driver must stop (see raft.h).
class WalStorage final : public Storage {
 public:
  static Result<std::unique_ptr<WalStorage>> Open(const std::string& dir,
                                                  const WalStorageOptions& options = {});
  ~WalStorage() override;
  WalStorage(const WalStorage&) = delete;
  WalStorage& operator=(const WalStorage&) = delete;

  Result<InitialState> LoadInitialState() override;
  Result<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) override;
  Result<uint64_t> Term(uint64_t index) override;
  Result<uint64_t> FirstIndex() override;
  Result<uint64_t> LastIndex() override;
  Result<Snapshot> GetSnapshot() override;
  Status Save(const HardState* hard_state, const std::vector<Entry>& entries,
              const Snapshot* snapshot) override;
  Status CreateSnapshot(const Snapshot& snapshot) override;
  Status Compact(uint64_t index) override;

  // Bytes of "wal" in use (up to the end of the last batch); for tests and status.
  uint64_t log_bytes() const { return write_off_; }

 private:
  WalStorage(std::string dir, const WalStorageOptions& options);
  Status Load();
  Status Replay(const std::string& buf);
  Status Rewrite();
  Status AppendBatch(const std::string& records);
  Status WriteSnapshotFile(const Snapshot& snapshot);
  Status Fail(Status s);
  uint64_t AllocFor(uint64_t used) const;  // the file size to preallocate for `used` bytes

  std::string dir_;
  WalStorageOptions options_;
  int fd_ = -1;
  uint64_t write_off_ = 0;  // end of the last batch
  uint64_t alloc_end_ = 0;  // file size; [write_off_, alloc_end_) is zeros
  uint64_t next_batch_ = 1;
  Status failed_;
  MemoryStorage mem_;  // the log and hard state; its snapshot holds the meta only
  Snapshot snapshot_;  // the latest snapshot, with its data
};

}  // namespace tessera::raft
