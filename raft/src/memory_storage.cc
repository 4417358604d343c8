#include <string>

#include "tessera/raft/storage.h"

namespace tessera::raft {

MemoryStorage::MemoryStorage() : entries_(1) {}

Result<InitialState> MemoryStorage::LoadInitialState() {
  return InitialState{hard_state_, snapshot_.meta.voters};
}

Result<uint64_t> MemoryStorage::FirstIndex() { return entries_[0].index + 1; }

Result<uint64_t> MemoryStorage::LastIndex() { return entries_[0].index + entries_.size() - 1; }

Result<uint64_t> MemoryStorage::Term(uint64_t index) {
  const uint64_t offset = entries_[0].index;
  if (index < offset)
    return Status::NotFound("raft log: entry " + std::to_string(index) + " is compacted");
  if (index - offset >= entries_.size()) {
    return Status::Unavailable("raft log: entry " + std::to_string(index) + " is past the end");
  }
  return entries_[index - offset].term;
}

Result<std::vector<Entry>> MemoryStorage::Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) {
  const uint64_t offset = entries_[0].index;
  if (lo <= offset)
    return Status::NotFound("raft log: entry " + std::to_string(lo) + " is compacted");
  if (hi > offset + entries_.size()) {
    return Status::Unavailable("raft log: entry " + std::to_string(hi - 1) + " is past the end");
  }
  std::vector<Entry> out;
  uint64_t bytes = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const Entry& e = entries_[i - offset];
    bytes += e.data.size();
    if (!out.empty() && bytes > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

Result<Snapshot> MemoryStorage::GetSnapshot() { return snapshot_; }

Status MemoryStorage::CheckSave(const std::vector<Entry>& entries, const Snapshot* snapshot) const {
  if (snapshot != nullptr && !snapshot->empty() && snapshot->meta.index <= snapshot_.meta.index) {
    return Status::InvalidArgument("raft storage: snapshot at " +
                                   std::to_string(snapshot->meta.index) + " is not newer than " +
                                   std::to_string(snapshot_.meta.index));
  }
  uint64_t offset = entries_[0].index;
  uint64_t last = offset + entries_.size() - 1;
  if (snapshot != nullptr && !snapshot->empty()) offset = last = snapshot->meta.index;
  if (!entries.empty()) {
    for (size_t i = 1; i < entries.size(); ++i) {
      if (entries[i].index != entries[i - 1].index + 1) {
        return Status::InvalidArgument("raft storage: entries to append are not contiguous");
      }
    }
    if (entries[0].index > last + 1) {
      return Status::InvalidArgument("raft storage: append at " + std::to_string(entries[0].index) +
                                     " leaves a gap after " + std::to_string(last));
    }
  }
  return Status::Ok();
}

Status MemoryStorage::Save(const HardState* hard_state, const std::vector<Entry>& entries,
                           const Snapshot* snapshot) {
  // Validate everything first so that a rejected Save changes nothing, like a failed LMDB txn.
  if (Status s = CheckSave(entries, snapshot); !s.ok()) return s;
  const uint64_t offset =
      snapshot != nullptr && !snapshot->empty() ? snapshot->meta.index : entries_[0].index;
  if (snapshot != nullptr && !snapshot->empty()) {
    snapshot_ = *snapshot;
    entries_.assign(1, Entry{snapshot->meta.term, snapshot->meta.index, EntryType::kNormal, {}});
  }
  if (!entries.empty()) {
    size_t skip = 0;  // entries already compacted are committed and identical; drop them
    while (skip < entries.size() && entries[skip].index <= offset) ++skip;
    if (skip < entries.size()) {
      entries_.resize(entries[skip].index - offset);  // removes the conflicting suffix
      entries_.insert(entries_.end(), entries.begin() + static_cast<ptrdiff_t>(skip),
                      entries.end());
    }
  }
  if (hard_state != nullptr) hard_state_ = *hard_state;
  return Status::Ok();
}

Status MemoryStorage::CreateSnapshot(const Snapshot& snapshot) {
  if (snapshot.meta.index <= snapshot_.meta.index) {
    return Status::InvalidArgument("raft storage: snapshot at " +
                                   std::to_string(snapshot.meta.index) + " is not newer than " +
                                   std::to_string(snapshot_.meta.index));
  }
  auto term = Term(snapshot.meta.index);
  if (!term.ok()) return term.status().WithContext("raft storage: creating a snapshot");
  if (*term != snapshot.meta.term) {
    return Status::InvalidArgument(
        "raft storage: snapshot term " + std::to_string(snapshot.meta.term) + " but entry " +
        std::to_string(snapshot.meta.index) + " has term " + std::to_string(*term));
  }
  snapshot_ = snapshot;
  return Status::Ok();
}

Status MemoryStorage::Compact(uint64_t index) {
  const uint64_t offset = entries_[0].index;
  if (index <= offset) return Status::Ok();  // already compacted
  if (index > snapshot_.meta.index) {
    return Status::InvalidArgument("raft storage: compacting to " + std::to_string(index) +
                                   " would discard entries after the snapshot at " +
                                   std::to_string(snapshot_.meta.index));
  }
  if (index - offset >= entries_.size()) {
    return Status::InvalidArgument("raft storage: compacting to " + std::to_string(index) +
                                   " past the last entry");
  }
  const Entry point{entries_[index - offset].term, index, EntryType::kNormal, {}};
  entries_.erase(entries_.begin(), entries_.begin() + static_cast<ptrdiff_t>(index - offset));
  entries_[0] = point;
  return Status::Ok();
}

}  // namespace tessera::raft
