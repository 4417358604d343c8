#include "raft_log.h"

#include <algorithm>
#include <string>
#include <utility>

namespace tessera::raft::detail {

Status RaftLog::Init(uint64_t committed, uint64_t applied) {
  TESSERA_ASSIGN_OR_RETURN(uint64_t first, storage_->FirstIndex());
  TESSERA_ASSIGN_OR_RETURN(uint64_t last, storage_->LastIndex());
  // The commit index on disk may lag behind what was committed: a driver need not flush a
  // Ready that only moves it, and a crash between writing a received snapshot and the hard state
  // that goes with it leaves it below the snapshot. Entries a snapshot covers, and entries the
  // application applied, were committed, so the commit index is at least both.
  if (applied > last) {
    return Status::InvalidArgument("raft: applied index " + std::to_string(applied) +
                                   " is past the end of the log " + std::to_string(last));
  }
  committed = std::max({committed, first - 1, applied});
  if (committed > last) {
    return Status::Corruption("raft storage: hard state commit " + std::to_string(committed) +
                              " is past the end of the log " + std::to_string(last));
  }
  offset_ = last + 1;
  committed_ = committed;
  // Entries up to the compaction point are in the application's snapshot.
  applied_ = std::max(applied, first - 1);
  return Status::Ok();
}

uint64_t RaftLog::FirstIndex() {
  if (unstable_snapshot_) return unstable_snapshot_->meta.index + 1;
  auto r = storage_->FirstIndex();
  return r.ok() ? *r : Fail<uint64_t>(r.status(), 1);
}

uint64_t RaftLog::LastIndex() {
  if (!unstable_.empty()) return offset_ + unstable_.size() - 1;
  if (unstable_snapshot_) return unstable_snapshot_->meta.index;
  auto r = storage_->LastIndex();
  return r.ok() ? *r : Fail<uint64_t>(r.status(), 0);
}

Result<uint64_t> RaftLog::Term(uint64_t index) {
  if (index >= offset_ && index - offset_ < unstable_.size())
    return unstable_[index - offset_].term;
  if (unstable_snapshot_) {
    if (index == unstable_snapshot_->meta.index) return unstable_snapshot_->meta.term;
    if (index < unstable_snapshot_->meta.index) {
      return Status::NotFound("raft log: entry " + std::to_string(index) + " is compacted");
    }
  }
  if (index >= offset_) {
    return Status::Unavailable("raft log: entry " + std::to_string(index) + " is past the end");
  }
  return storage_->Term(index);
}

uint64_t RaftLog::TermOrZero(uint64_t index) {
  auto r = Term(index);
  if (r.ok()) return *r;
  if (r.status().IsNotFound() || r.status().IsUnavailable()) return 0;
  return Fail<uint64_t>(r.status(), 0);
}

Result<std::vector<Entry>> RaftLog::Slice(uint64_t lo, uint64_t hi, uint64_t max_bytes) {
  std::vector<Entry> out;
  if (lo >= hi) return out;
  if (lo < FirstIndex()) {
    return Status::NotFound("raft log: entry " + std::to_string(lo) + " is compacted");
  }
  TESSERA_ASSERT(hi <= LastIndex() + 1 || !error_.ok(), "raft log: slice [", lo, ", ", hi,
                 ") past the last index ", LastIndex());
  uint64_t bytes = 0;
  if (lo < offset_) {
    auto stored = storage_->Entries(lo, std::min(hi, offset_), max_bytes);
    if (!stored.ok()) {
      if (stored.status().IsNotFound()) return stored.status();
      return Fail<Status>(stored.status(), stored.status());
    }
    out = std::move(*stored);
    for (const Entry& e : out) bytes += e.data.size();
    if (out.size() < std::min(hi, offset_) - lo) return out;  // hit max_bytes
  }
  for (uint64_t i = std::max(lo, offset_); i < hi; ++i) {
    const Entry& e = unstable_[i - offset_];
    bytes += e.data.size();
    if (!out.empty() && bytes > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

std::optional<uint64_t> RaftLog::MaybeAppend(uint64_t index, uint64_t log_term,
                                             uint64_t leader_commit,
                                             const std::vector<Entry>& entries) {
  if (!MatchTerm(index, log_term) || !error_.ok()) return std::nullopt;
  const uint64_t last_new = index + entries.size();
  // The first new entry that is not already in the log with the same term. Entries before it
  // match (log matching), so they are kept: a delayed, shorter AppendEntries must not truncate
  // entries a later one appended.
  size_t first_new = entries.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!MatchTerm(entries[i].index, entries[i].term)) {
      first_new = i;
      break;
    }
  }
  if (first_new < entries.size()) {
    TESSERA_ASSERT(entries[first_new].index > committed_,
                   "raft: an AppendEntries conflicts with committed entry ",
                   entries[first_new].index, " (commit ", committed_, ")");
    Append(std::vector<Entry>(entries.begin() + static_cast<ptrdiff_t>(first_new), entries.end()));
  }
  CommitTo(std::min(leader_commit, last_new));
  return last_new;
}

uint64_t RaftLog::Append(const std::vector<Entry>& entries) {
  // After a storage failure the caller computed `entries` from fallback values; drop them.
  if (!error_.ok()) return 0;
  if (entries.empty()) return LastIndex();
  const uint64_t after = entries[0].index;
  TESSERA_ASSERT(after > committed_, "raft: appending at ", after, " at or before commit ",
                 committed_);
  if (after == offset_ + unstable_.size()) {
    unstable_.insert(unstable_.end(), entries.begin(), entries.end());
  } else if (after <= offset_) {
    // Replaces everything from `after` on; storage drops its copy when this tail is saved.
    offset_ = after;
    unstable_ = entries;
  } else {
    unstable_.resize(after - offset_);
    unstable_.insert(unstable_.end(), entries.begin(), entries.end());
  }
  return LastIndex();
}

bool RaftLog::IsUpToDate(uint64_t last_index, uint64_t last_term) {
  const uint64_t my_term = LastTerm();
  return last_term > my_term || (last_term == my_term && last_index >= LastIndex());
}

bool RaftLog::MaybeCommit(uint64_t max_index, uint64_t term) {
  if (max_index > committed_ && TermOrZero(max_index) == term) {
    CommitTo(max_index);
    return true;
  }
  return false;
}

void RaftLog::CommitTo(uint64_t index) {
  if (index <= committed_) return;  // the commit index never goes backwards
  TESSERA_ASSERT(index <= LastIndex() || !error_.ok(), "raft: commit ", index,
                 " past the last index ", LastIndex());
  committed_ = index;
}

void RaftLog::AppliedTo(uint64_t index) {
  if (index == 0) return;
  TESSERA_ASSERT(index <= committed_ && index >= applied_, "raft: applied ", index, " outside [",
                 applied_, ", ", committed_, "]");
  applied_ = index;
}

void RaftLog::Restore(const Snapshot& snapshot) {
  committed_ = snapshot.meta.index;
  offset_ = snapshot.meta.index + 1;
  unstable_.clear();
  unstable_snapshot_ = snapshot;
}

bool RaftLog::HasNextCommitted() { return committed_ + 1 > std::max(applied_ + 1, FirstIndex()); }

std::vector<Entry> RaftLog::NextCommitted(uint64_t max_bytes) {
  const uint64_t lo = std::max(applied_ + 1, FirstIndex());
  auto r = Slice(lo, committed_ + 1, max_bytes);
  if (!r.ok()) {
    // Everything from applied+1 on is kept until applied; a gap is a broken storage.
    return Fail(r.status().IsNotFound()
                    ? Status::Corruption("raft: committed entries from " + std::to_string(lo) +
                                         " are compacted "
                                         "before they were applied")
                    : r.status(),
                std::vector<Entry>());
  }
  return std::move(*r);
}

void RaftLog::StableTo(uint64_t index, uint64_t term) {
  // Only if the entry is still the one that was handed out: a newer leader may have replaced it
  // in the meantime, and then the replacement is still unstable.
  if (index < offset_ || index - offset_ >= unstable_.size()) return;
  if (unstable_[index - offset_].term != term) return;
  unstable_.erase(unstable_.begin(),
                  unstable_.begin() + static_cast<ptrdiff_t>(index + 1 - offset_));
  offset_ = index + 1;
}

void RaftLog::StableSnapshotTo(uint64_t index) {
  if (unstable_snapshot_ && unstable_snapshot_->meta.index == index) unstable_snapshot_.reset();
}

}  // namespace tessera::raft::detail
