// SharedReaders: the table in `<db path>-readers` through which each read-only Db, in any
// process, tells the file's writer which snapshot it reads, so that the writer does not reuse
// that snapshot's pages while the read-only Db is open.
//
// A read-only Db keeps the snapshot it opened for as long as it is open, and takes no lock; its
// writer may be another process. Without this table the writer reused the snapshot's pages once
// two flushes had passed, and the reader met them mid-rewrite: a value of another key, returned
// as a success, or a Corruption error for a database that was fine.
//
// File: kSlots slots of 16 bytes, zero when free: owner u64 (pid << 32 | a number unique in
// that process, for diagnostics), txnid u64 (the pinned snapshot; 0 while the slot is claimed
// but pins nothing). Every access is atomic: every process with the database open maps the file
// shared. A read-only Db holds an open-file-description lock (F_OFD_SETLK) on byte i of the
// file while it owns slot i; the kernel drops it when the process dies, whatever its pid
// namespace, and a reused pid cannot hold it.
//
// Invariants:
//  - A read-only Db copies both metas, publishes the newest valid one's txnid X, and copies them
//    again; only if the copies are the same does it open X, from those copies (Db::Open). The
//    writer's transaction then in progress began after X committed and cannot reuse pages X
//    reaches (only a later transaction frees them); every later one sees the slot (a seq_cst
//    fence on both sides) and keeps them. An open that falls back to an older meta (X does not
//    validate) is refused while a writer holds the file's lock: that meta's pages had no pin.
//  - A slot is owned only while its byte is locked: a claimer locks the byte first, then writes
//    the slot; a releaser clears the slot, then unlocks. A pin whose byte nobody locks was left
//    by a process that died: the writer does not count it (it probes the lock at every look),
//    and the next claimer of the slot overwrites it. Only owners write slots.
//
// Thread safety: Claim/Publish and the destructor belong to one read-only Db (its Open and
// close); AppendLive to the writer (under its write lock). Any number of processes share the
// file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "side_files.h"
#include "tessera/common/status.h"

namespace tessera::engine {

class SharedReaders {
 public:
  static constexpr size_t kSlots = 128;
  static constexpr uint64_t kBytes = kSlots * 16;

  // See side_files.h.
  static std::string PathFor(const std::string& db_path) {
    return SideFileBase(db_path) + "-readers";
  }
  // Opens (creating) the table beside the database file `db_path`. A writer that may not write
  // it (another user made it) maps it read-only: it still sees every pin, and frees no slot.
  static Result<std::unique_ptr<SharedReaders>> Open(const std::string& db_path, bool writer);
  ~SharedReaders();  // releases this object's slot, if any
  SharedReaders(const SharedReaders&) = delete;
  SharedReaders& operator=(const SharedReaders&) = delete;

  // Read-only side. Claim: Busy when every slot is taken. Publish: pins `txnid` (the slot must
  // be claimed), then a full fence, so the caller's next reads of the metas come after it.
  Status Claim();
  void Publish(uint64_t txnid);

  // Writer side: appends every snapshot pinned by a live read-only Db to *live.
  void AppendLive(std::vector<uint64_t>* live) const;

 private:
  SharedReaders(uint64_t* slots, int fd, bool writable, std::string path)
      : slots_(slots), fd_(fd), writable_(writable), path_(std::move(path)) {}
  uint64_t* owner(size_t i) const { return slots_ + 2 * i; }
  uint64_t* txnid(size_t i) const { return slots_ + 2 * i + 1; }
  bool Lock(size_t i) const;      // takes byte i's lock (F_OFD_SETLK), false if held
  bool Orphaned(size_t i) const;  // its byte is locked by nobody
  void Clear(size_t i);

  uint64_t* const slots_;  // the shared mapping, kBytes
  const int fd_;           // kept open: the OFD lock on this Db's slot lives with it
  const bool writable_;
  const std::string path_;
  size_t mine_ = kSlots;  // this object's slot, kSlots: none
};

}  // namespace tessera::engine
