// Status and Result<T>: the one error style of every Tessera library.
//
// Invariants: a Status is either ok (code kOk, empty message) or carries a non-ok code and a
// message that says what failed and where. A Result<T> holds exactly one of a value or a non-ok
// Status; constructing a Result from an ok Status is a programming error and is caught by
// TESSERA_ASSERT. An optional C error code refines the coarse code for the C APIs (see errors.h).
//
// Thread safety: plain values; distinct objects may be used from distinct threads freely, one
// object needs external synchronisation like any std::string.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "tessera/common/assert.h"

namespace tessera {

enum class StatusCode : uint8_t {
  kOk = 0,
  kNotFound,
  kCorruption,
  kIoError,
  kInvalidArgument,
  kNoSpace,
  kUnavailable,
  kBusy,
  kInternal,
};

// Short lowercase name of a code, e.g. "io_error".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;

  static Status Ok() { return Status(); }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {StatusCode::kCorruption, std::move(msg)}; }
  static Status IoError(std::string msg) { return {StatusCode::kIoError, std::move(msg)}; }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status NoSpace(std::string msg) { return {StatusCode::kNoSpace, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status Busy(std::string msg) { return {StatusCode::kBusy, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  bool IsNotFound() const { return code_ == StatusCode::kNotFound; }
  bool IsCorruption() const { return code_ == StatusCode::kCorruption; }
  bool IsIoError() const { return code_ == StatusCode::kIoError; }
  bool IsInvalidArgument() const { return code_ == StatusCode::kInvalidArgument; }
  bool IsNoSpace() const { return code_ == StatusCode::kNoSpace; }
  bool IsUnavailable() const { return code_ == StatusCode::kUnavailable; }
  bool IsBusy() const { return code_ == StatusCode::kBusy; }
  bool IsInternal() const { return code_ == StatusCode::kInternal; }

  // Refines the coarse code with one of the negative TESSERA_* codes of errors.h, so a C API can
  // report e.g. "page already free" rather than just "invalid argument".
  Status&& WithCCode(int c_code) && {
    c_code_ = c_code;
    return std::move(*this);
  }
  std::optional<int> c_code() const { return c_code_; }

  // Prepends context: "opening db: " + message.
  Status WithContext(std::string_view context) const;

  // "io_error: <message>", or "ok".
  std::string ToString() const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  Status(StatusCode code, std::string msg) : code_(code), message_(std::move(msg)) {}

  StatusCode code_ = StatusCode::kOk;
  std::optional<int> c_code_;
  std::string message_;
};

// Converts an errno value into a Status. The one place errno is interpreted: ENOSPC, EDQUOT and
// EFBIG become kNoSpace, ENOENT kNotFound, EINVAL kInvalidArgument, EAGAIN/EWOULDBLOCK/EBUSY kBusy,
// anything else kIoError. `what` says what was being done, e.g. "fallocate /data/db".
Status ErrnoStatus(int err, std::string_view what);

// Writes all `len` bytes at `offset` of `fd`, resuming short writes and EINTR; a failure is
// ErrnoStatus(errno, what).
Status PwriteAll(int fd, const void* data, size_t len, uint64_t offset, std::string_view what);

template <typename T>
class [[nodiscard]] Result {
 public:
  // NOLINTNEXTLINE(google-explicit-constructor): a Result is built implicitly from its value.
  Result(T value) : v_(std::move(value)) {}
  // NOLINTNEXTLINE(google-explicit-constructor): ... or from the error that prevented it.
  Result(Status status) : v_(std::move(status)) {
    TESSERA_ASSERT(!std::get<Status>(v_).ok(), "Result built from an ok Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }

  T& value() & {
    TESSERA_ASSERT(ok(), "Result::value() on error: ", std::get<Status>(v_).ToString());
    return std::get<T>(v_);
  }
  const T& value() const& {
    TESSERA_ASSERT(ok(), "Result::value() on error: ", std::get<Status>(v_).ToString());
    return std::get<T>(v_);
  }
  T&& value() && {
    TESSERA_ASSERT(ok(), "Result::value() on error: ", std::get<Status>(v_).ToString());
    return std::get<T>(std::move(v_));
  }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace tessera

#define TESSERA_CONCAT_INNER_(a, b) a##b
#define TESSERA_CONCAT_(a, b) TESSERA_CONCAT_INNER_(a, b)

// Returns the Status of `expr` from the enclosing function if it is not ok.
#define TESSERA_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::tessera::Status tessera_status_ = (expr);        \
    if (!tessera_status_.ok()) return tessera_status_; \
  } while (0)

// `lhs = value of expr`, or returns its Status from the enclosing function.
#define TESSERA_ASSIGN_OR_RETURN(lhs, expr)                     \
  auto TESSERA_CONCAT_(tessera_result_, __LINE__) = (expr);     \
  if (!TESSERA_CONCAT_(tessera_result_, __LINE__).ok())         \
    return TESSERA_CONCAT_(tessera_result_, __LINE__).status(); \
  lhs = std::move(TESSERA_CONCAT_(tessera_result_, __LINE__)).value()
