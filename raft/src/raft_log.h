// RaftLog: the log as the state machine sees it — the durable part in Storage plus the "unstable"
// tail (entries, or a received snapshot) that was handed out in a Ready but not yet reported
// persisted by Advance. Also tracks the commit and applied indexes.
//
// Storage failures (anything but compacted / past-the-end) are recorded as a sticky error that
// the caller checks after each operation; accessors then return harmless values (0) so that the
// operation can unwind, and the node discards whatever it produced.
//
// Thread safety: none; owned by one Raft.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "tessera/common/status.h"
#include "tessera/raft/storage.h"

namespace tessera::raft::detail {

class RaftLog {
 public:
  explicit RaftLog(Storage* storage) : storage_(storage) {}
  // Reads the storage's bounds; `committed` from the hard state.
  Status Init(uint64_t committed, uint64_t applied);

  const Status& error() const { return error_; }
  // Makes a storage failure seen outside the log sticky too.
  void RecordError(const Status& s) { Fail(s, 0); }

  uint64_t FirstIndex();
  uint64_t LastIndex();
  uint64_t LastTerm() { return TermOrZero(LastIndex()); }
  // kNotFound when compacted, kUnavailable past the end, else a storage error.
  Result<uint64_t> Term(uint64_t index);
  // 0 for compacted or out-of-range indexes (no term is 0 for a real entry).
  uint64_t TermOrZero(uint64_t index);
  bool MatchTerm(uint64_t index, uint64_t term) {
    return term != 0 ? TermOrZero(index) == term : index == 0;
  }
  // Entries [lo, hi) limited to max_bytes (at least one); kNotFound when lo is compacted.
  Result<std::vector<Entry>> Slice(uint64_t lo, uint64_t hi, uint64_t max_bytes);

  // Follower side of AppendEntries: returns the last index of the new entries if (index, term)
  // matches, nullopt otherwise.
  std::optional<uint64_t> MaybeAppend(uint64_t index, uint64_t log_term, uint64_t leader_commit,
                                      const std::vector<Entry>& entries);
  // Appends entries at entries[0].index, dropping what followed. Returns the new last index.
  uint64_t Append(const std::vector<Entry>& entries);
  bool IsUpToDate(uint64_t last_index, uint64_t last_term);
  // Commits up to max_index if that entry is of `term` (the counting rule of Figure 8).
  bool MaybeCommit(uint64_t max_index, uint64_t term);
  void CommitTo(uint64_t index);
  void AppliedTo(uint64_t index);
  // Replaces the log with a snapshot's position; the snapshot becomes unstable.
  void Restore(const Snapshot& snapshot);

  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }

  // For Ready / Advance.
  const std::vector<Entry>& unstable_entries() const { return unstable_; }
  const std::optional<Snapshot>& unstable_snapshot() const { return unstable_snapshot_; }
  bool HasNextCommitted();
  std::vector<Entry> NextCommitted(uint64_t max_bytes);
  void StableTo(uint64_t index, uint64_t term);
  void StableSnapshotTo(uint64_t index);

 private:
  // Records a storage failure; returns `fallback` so callers can unwind.
  template <typename T>
  T Fail(const Status& s, T fallback) {
    if (error_.ok()) error_ = s;
    return fallback;
  }

  Storage* storage_;
  Status error_;
  std::optional<Snapshot> unstable_snapshot_;
  std::vector<Entry> unstable_;  // entries offset_, offset_+1, ...
  uint64_t offset_ = 1;
  uint64_t committed_ = 0;
  uint64_t applied_ = 0;
};

}  // namespace tessera::raft::detail
