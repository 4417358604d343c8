// The commit log: how a sync commit becomes durable without flushing the data file.
//
// A sync commit normally flushes every page it dirtied (one fdatasync of the data file, which
// writes each of those scattered pages). When every commit since the last flush of the data file
// is in this log, a sync commit instead appends its operations here as one record and flushes this
// small sequential file. Opening the database replays the records newer than the meta it chose,
// then flushes the data file (a checkpoint) and starts the log again from offset 0.
//
// File `<db path>-log`: records, each 8-byte aligned:
//   magic u32 | crc u32 (CRC32C of the rest of the header and the payload) | payload bytes u32 |
//   pad u32 | db_id u64 | era u64 | txnid u64 | payload (the encoded operations), zero-padded.
// The file grows in zero-filled steps so a record's fdatasync does not have to persist a new size.
//
// Invariants:
//  - The records after a checkpoint carry the txnid of that checkpoint as their era and consecutive
//    txnids starting right after it; a checkpoint makes every record before it redundant, and the
//    next record overwrites offset 0. Records left over from an older era hold txnids no larger
//    than the checkpoint, so reading stops (or skips them) without confusing eras.
//  - A record is appended only when its transaction's base is the last logged or flushed commit,
//    so the records always extend the durable meta without a gap.
//  - db_id ties the log to its data file (Meta::db_id); a record of another file is never replayed.
//
// Thread safety: none (not copyable or movable); the Db calls it under its writer lock (and at
// open, before sharing).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "side_files.h"
#include "tessera/common/status.h"

namespace tessera::engine {

class CommitLog {
 public:
  static constexpr uint64_t kMaxRecordBytes = uint64_t{8} << 20;  // larger commits flush the file
  static constexpr uint64_t kMaxLogBytes = uint64_t{64} << 20;    // then a checkpoint is due

  struct Record {
    uint64_t txnid = 0;
    uint64_t offset = 0;
    std::string payload;
  };

  // The log file of the database at `db_path` (see side_files.h).
  static std::string PathFor(const std::string& db_path) { return SideFileBase(db_path) + "-log"; }

  // Reads the records of `db_id` from the start of the file (an absent file has none). Stops at the
  // first record that is missing, torn, of another database or out of sequence; Corruption when a
  // damaged record is followed by an intact one of the same era (or, when the very first record is
  // damaged, by any record newer than `after_txnid`, the meta being opened): acknowledged commits
  // would be lost. The error names the offset.
  static Result<std::vector<Record>> ReadAll(const std::string& path, uint64_t db_id,
                                             uint64_t after_txnid);

  // A log for appending at `path`; the file is opened (created if missing) by the first append,
  // which goes to offset 0.
  // Opens the log at `path` when there is one (so that Remove knows it), else creates it at the
  // first Append.
  explicit CommitLog(std::string path);
  CommitLog(const CommitLog&) = delete;
  CommitLog& operator=(const CommitLog&) = delete;
  ~CommitLog();

  // Whether a record of `payload_bytes` fits before a checkpoint is due.
  bool Fits(uint64_t payload_bytes) const;
  // Writes one record and makes it durable (fdatasync).
  Status Append(uint64_t db_id, uint64_t era, uint64_t txnid, std::string_view payload);
  // After a checkpoint: the next record starts the file again.
  void Reset() { offset_ = 0; }
  // Removes the log's file, but only while its name still reaches the file this object has
  // open: a relative path after a chdir, or a renamed directory, may name another database's
  // live log by then.
  void Remove();
  uint64_t offset() const { return offset_; }

 private:
  int fd_ = -1;
  std::string path_;
  uint64_t size_ = 0;    // bytes the file holds (zero-filled beyond what was written)
  uint64_t offset_ = 0;  // where the next record goes
};

// The encoding of a transaction's operations in a record's payload.
namespace logop {
enum Kind : uint8_t { kPut = 1, kDelete = 2, kCreateTree = 3, kDropTree = 4 };
void Append(std::string* out, Kind kind, std::string_view tree, std::string_view key = {},
            std::string_view value = {});
struct Op {
  Kind kind;
  std::string_view tree, key, value;
};
// Decodes every op of a payload; Corruption naming the byte when the payload is malformed.
Result<std::vector<Op>> Decode(std::string_view payload);
}  // namespace logop

}  // namespace tessera::engine
