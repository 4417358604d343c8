// Conversions between generated Thrift types and orchestrator types, and TesseraError helpers.
// Internal to orchestrator/.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ManagerService.h"
#include "WorkerService.h"
#include "tessera/orchestrator/cluster.h"
#include "tessera_types.h"

namespace tessera::orchestrator {

namespace gen = ::tessera::rpc::gen;

ShardMap FromGen(const gen::ShardMap& m);
gen::ShardMap ToGen(const ShardMap& m);
NodeInfo FromGen(const gen::NodeInfo& n);
ClusterStatus FromGen(const gen::ClusterStatus& s);

[[noreturn]] void Throw(gen::ErrorCode::type code, const std::string& message,
                        const std::string& node);

// A Status for a TesseraError received from `node`.
Status FromError(const gen::TesseraError& e);

// Unpacks a PageRun of `count` pages of `page_size` bytes into `out` (count * page_size bytes,
// absent pages left as they are: callers pass zeroed buffers). false when the run is malformed.
bool UnpackRun(const gen::PageRun& run, size_t count, size_t page_size, uint8_t* out);

// The pages of a PageRun where they lie in it, without copying: entry i points at page i, or is
// null for an absent (all-zero) page. false when the run is malformed.
bool RunPages(const gen::PageRun& run, size_t count, size_t page_size,
              std::vector<const uint8_t*>* out);
// The same for a run given as its `present` bytes and its `size` bytes of pages at `pages`.
bool RunPages(std::string_view present, const uint8_t* pages, size_t size, size_t count,
              size_t page_size, std::vector<const uint8_t*>* out);
// The pages (page_size bytes at each pointer) back to back: a PageRun's `pages`.
std::string ConcatPages(std::span<const uint8_t* const> pages, size_t page_size);

// Keeps freed buffers of up to 32 MiB in the allocator's heap (process-wide, idempotent). A
// rebuild answers and reads page runs of 4 MiB per call; with glibc's defaults each such buffer
// is a fresh mmap, so every call paid a page fault per 4 KiB and an munmap: about a third of a
// survivor's CPU during a rebuild. Servers call it at start.
void KeepLargeBuffersInHeap();

// Replaces `path` with `content` atomically and durably (temp file, fsync, rename, fsync of the
// directory).
Status WriteFileDurably(const std::string& path, const std::string& content);
// Test failpoints: with TESSERA_FAILPOINT=name:ARG, ARG; otherwise "".
std::string FailpointArg(const char* name);

// Creates `dir` if needed and holds an exclusive lock on DIR/lock until destroyed: one process
// per data directory (Busy when another holds it).
class DataDirLock {
 public:
  static Result<DataDirLock> Acquire(const std::string& dir);
  DataDirLock(DataDirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DataDirLock& operator=(DataDirLock&&) = delete;
  ~DataDirLock();

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace tessera::orchestrator
