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
// that process), txnid u64 (the pinned snapshot; 0 while the slot is claimed but pins nothing).
// Every access is atomic: every process with the database open maps the file shared.
//
// Invariants:
//  - A read-only Db publishes snapshot X and then finds X still the newest meta in the file
//    before it reads anything of X (Db::Open): the writer's transaction then in progress began
//    after X committed, and cannot reuse pages X reaches (only a later transaction frees them);
//    every later one sees the slot (a seq_cst fence on both sides) and keeps them.
//  - The writer frees a slot whose owner's process no longer exists (at open, and then at most
//    once a second), so a read-only process that was killed holds pages back only until then.
//
// Thread safety: Claim/Publish/Release belong to one read-only Db (its Open and destructor);
// AppendLive to the writer (under its write lock). Any number of processes share the file.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tessera/common/status.h"

namespace tessera::engine {

class SharedReaders {
 public:
  static constexpr size_t kSlots = 128;
  static constexpr uint64_t kBytes = kSlots * 16;

  static std::string PathFor(const std::string& db_path) { return db_path + "-readers"; }
  // Opens (creating) the table beside the database file `db_path`.
  static Result<std::unique_ptr<SharedReaders>> Open(const std::string& db_path);
  ~SharedReaders();  // releases this object's slot, if any
  SharedReaders(const SharedReaders&) = delete;
  SharedReaders& operator=(const SharedReaders&) = delete;

  // Read-only side. Claim: Busy when every slot is taken. Publish: pins `txnid` (the slot must
  // be claimed), then a full fence, so the caller's next reads of the metas come after it.
  Status Claim();
  void Publish(uint64_t txnid);

  // Writer side: appends every pinned snapshot to *live, first freeing the slots of processes
  // that no longer exist (when `check_owners`, or when a second has passed since the last check).
  void AppendLive(std::vector<uint64_t>* live, bool check_owners = false);

 private:
  SharedReaders(uint64_t* slots, std::string path) : slots_(slots), path_(std::move(path)) {}
  uint64_t* owner(size_t i) const { return slots_ + 2 * i; }
  uint64_t* txnid(size_t i) const { return slots_ + 2 * i + 1; }

  uint64_t* const slots_;  // the shared mapping, kBytes
  const std::string path_;
  size_t mine_ = kSlots;  // this object's slot, kSlots: none
  uint64_t my_owner_ = 0;
  std::chrono::steady_clock::time_point last_check_{};
};

}  // namespace tessera::engine
