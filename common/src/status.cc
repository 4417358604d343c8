#include "tessera/common/status.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tessera/common/errors.h"

namespace tessera {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "ok";
    case StatusCode::kNotFound:
      return "not_found";
    case StatusCode::kCorruption:
      return "corruption";
    case StatusCode::kIoError:
      return "io_error";
    case StatusCode::kInvalidArgument:
      return "invalid_argument";
    case StatusCode::kNoSpace:
      return "no_space";
    case StatusCode::kUnavailable:
      return "unavailable";
    case StatusCode::kBusy:
      return "busy";
    case StatusCode::kInternal:
      return "internal";
  }
  return "unknown";
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  Status s(code_, std::string(context) + ": " + message_);
  s.c_code_ = c_code_;
  return s;
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string out(StatusCodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status ErrnoStatus(int err, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return Status::NoSpace(std::move(msg));
    case ENOENT:
      return Status::NotFound(std::move(msg));
    case EINVAL:
      return Status::InvalidArgument(std::move(msg));
    case EAGAIN:
    case EBUSY:
      return Status::Busy(std::move(msg));
    case ENOMEM:
      // Out of address space or memory: the region or a mapping could not grow.
      return Status::NoSpace(std::move(msg));
    default:
      return Status::IoError(std::move(msg));
  }
}

Status PwriteAll(int fd, const void* data, size_t len, uint64_t offset, std::string_view what) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    ssize_t w = ::pwrite(fd, p, len, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, what);
    }
    p += w;
    offset += static_cast<uint64_t>(w);
    len -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

int ToCError(const Status& status) {
  if (status.ok()) return TESSERA_OK;
  if (status.c_code()) return *status.c_code();
  switch (status.code()) {
    case StatusCode::kOk:
      return TESSERA_OK;
    case StatusCode::kNotFound:
      return TESSERA_NOTFOUND;
    case StatusCode::kCorruption:
      return TESSERA_CORRUPTION;
    case StatusCode::kIoError:
      return TESSERA_IO_ERROR;
    case StatusCode::kInvalidArgument:
      return TESSERA_INVALID_ARGUMENT;
    case StatusCode::kNoSpace:
      return TESSERA_NO_SPACE;
    case StatusCode::kUnavailable:
      return TESSERA_UNAVAILABLE;
    case StatusCode::kBusy:
      return TESSERA_BUSY;
    case StatusCode::kInternal:
      return TESSERA_INTERNAL;
  }
  return TESSERA_INTERNAL;
}

namespace detail {

void AssertFail(const char* cond, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "tessera: invariant violated at %s:%d: %s%s%s\n", file, line, cond,
               msg.empty() ? "" : ": ", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace detail
}  // namespace tessera

extern "C" const char* tessera_strerror(int code) {
  switch (code) {
    case TESSERA_OK:
      return "success";
    case TESSERA_NOTFOUND:
      return "not found";
    case TESSERA_CORRUPTION:
      return "stored data is corrupt (checksum or structure check failed)";
    case TESSERA_IO_ERROR:
      return "I/O error reported by the operating system";
    case TESSERA_INVALID_ARGUMENT:
      return "invalid argument";
    case TESSERA_NO_SPACE:
      return "no space left (disk full or address-space reservation exhausted)";
    case TESSERA_UNAVAILABLE:
      return "a remote node is unavailable";
    case TESSERA_BUSY:
      return "resource busy (locked by another process or writer)";
    case TESSERA_INTERNAL:
      return "internal error";
    case TESSERA_NULL_HANDLE:
      return "NULL handle or pointer argument";
    case TESSERA_BAD_PAGE_SIZE:
      return "page size must be a power of two between 4096 and 65536";
    case TESSERA_PAGE_NOT_ALLOCATED:
      return "page was never allocated";
    case TESSERA_PAGE_ALREADY_FREE:
      return "page is already free";
    case TESSERA_OUT_OF_BOUNDS:
      return "offset plus length runs past the end of the page or buffer";
    case TESSERA_READ_ONLY:
      return "write attempted through a read-only handle or transaction";
    case TESSERA_KEY_TOO_LARGE:
      return "key is empty or longer than the maximum key size";
    case TESSERA_VALUE_TOO_LARGE:
      return "value is longer than the maximum value size";
    case TESSERA_BAD_OPTIONS:
      return "options string could not be parsed";
    case TESSERA_TOO_MANY_ERASURES:
      return "more shards erased than the code can rebuild";
    case TESSERA_FATAL:
      return "an earlier write to disk (a flush or a commit-log append) failed; writes are "
             "refused until the database is reopened";
    case TESSERA_TXN_FINISHED:
      return "transaction already finished";
    case TESSERA_BAD_SCHEME:
      return "unknown erasure-code scheme (expected xor, rs or rs-cauchy)";
    case TESSERA_BAD_SHARD_COUNT:
      return "shard counts out of range (k >= 1, m >= 1, k + m <= 255; xor needs m = 1)";
    case TESSERA_BAD_LENGTH:
      return "shard length must be at least 1 byte";
    case TESSERA_BAD_SHARD_INDEX:
      return "shard index out of range";
    case TESSERA_DUPLICATE_ERASURE:
      return "the same shard is listed twice as erased";
    default:
      return "unknown error code";
  }
}
