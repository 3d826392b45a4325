// Status and Result<T>: errors as values across tiercache's public API.
//
// Every fallible call returns a Status (or a Result<T>, which is a T or a
// non-OK Status). No exception crosses the public API. Codes follow the
// canonical set used by abseil / gRPC, with the meanings tiercache gives them:
//
//   kOk                 success.
//   kInvalidArgument    the caller passed something that can never work
//                       (empty or oversized key, nonsense option).
//   kNotFound           the thing does not exist. Inside tiers a miss is NOT an
//                       error: tiers return Result<std::optional<V>>.
//   kDeadlineExceeded   the call's deadline passed before it completed.
//   kUnavailable        transient: a server is unreachable, a breaker is open,
//                       a failover is under way. Retrying with backoff may work.
//   kResourceExhausted  a bound was hit (value larger than the cache, queue full).
//   kFailedPrecondition the system is not in a state where the call can run.
//   kAborted            the operation was refused by a concurrency guard (e.g.
//                       a version-fenced fill lost to a newer version).
//   kDataLoss           stored bytes could not be decoded (corrupt payload).
//   kCancelled          the operation was cancelled (shutdown).
//   kInternal           a broken invariant or an unexpected server reply.
//
// Thread-safety: Status and Result are values; distinct objects may be used
// from distinct threads, a shared const object may be read concurrently.
// OK costs nothing: an OK Status holds no allocation.
#ifndef TIERCACHE_STATUS_H_
#define TIERCACHE_STATUS_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tiercache {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

// Returns the canonical name of `code`, e.g. "DEADLINE_EXCEEDED".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  // Creates an OK status.
  Status() noexcept = default;
  // REQUIRES: code != kOk, or message is empty.
  Status(StatusCode code, std::string_view message);

  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return Status(); }
  static Status Cancelled(std::string_view msg) { return {StatusCode::kCancelled, msg}; }
  static Status InvalidArgument(std::string_view msg) { return {StatusCode::kInvalidArgument, msg}; }
  static Status DeadlineExceeded(std::string_view msg) { return {StatusCode::kDeadlineExceeded, msg}; }
  static Status NotFound(std::string_view msg) { return {StatusCode::kNotFound, msg}; }
  static Status AlreadyExists(std::string_view msg) { return {StatusCode::kAlreadyExists, msg}; }
  static Status ResourceExhausted(std::string_view msg) { return {StatusCode::kResourceExhausted, msg}; }
  static Status FailedPrecondition(std::string_view msg) { return {StatusCode::kFailedPrecondition, msg}; }
  static Status Aborted(std::string_view msg) { return {StatusCode::kAborted, msg}; }
  static Status Internal(std::string_view msg) { return {StatusCode::kInternal, msg}; }
  static Status Unavailable(std::string_view msg) { return {StatusCode::kUnavailable, msg}; }
  static Status DataLoss(std::string_view msg) { return {StatusCode::kDataLoss, msg}; }

  bool ok() const noexcept { return rep_ == nullptr; }
  StatusCode code() const noexcept { return rep_ ? rep_->code : StatusCode::kOk; }
  // The message given at construction; empty for OK.
  std::string_view message() const noexcept;

  bool IsInvalidArgument() const noexcept { return code() == StatusCode::kInvalidArgument; }
  bool IsNotFound() const noexcept { return code() == StatusCode::kNotFound; }
  bool IsDeadlineExceeded() const noexcept { return code() == StatusCode::kDeadlineExceeded; }
  bool IsUnavailable() const noexcept { return code() == StatusCode::kUnavailable; }
  bool IsResourceExhausted() const noexcept { return code() == StatusCode::kResourceExhausted; }
  bool IsAborted() const noexcept { return code() == StatusCode::kAborted; }
  bool IsDataLoss() const noexcept { return code() == StatusCode::kDataLoss; }
  bool IsCancelled() const noexcept { return code() == StatusCode::kCancelled; }
  bool IsInternal() const noexcept { return code() == StatusCode::kInternal; }

  // "OK", or "<CODE_NAME>: <message>".
  std::string ToString() const;

  // Marks a status as deliberately ignored.
  void IgnoreError() const noexcept {}

  friend bool operator==(const Status& a, const Status& b) noexcept {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

// Result<T> holds either a value of type T or a non-OK Status.
//
// Constructing a Result from an OK Status is a programming error; it is turned
// into kInternal so that no Result ever claims success without a value.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(const T& value) : v_(value) {}                // NOLINT: implicit by design
  Result(T&& value) : v_(std::move(value)) {}          // NOLINT
  Result(Status status) : v_(Fix(std::move(status))) {}  // NOLINT

  bool ok() const noexcept { return v_.index() == 0; }
  // The error; Status::Ok() when a value is held.
  Status status() const { return ok() ? Status() : std::get<1>(v_); }

  // REQUIRES: ok().
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The value, or `fallback` when not ok().
  T value_or(T fallback) const& { return ok() ? value() : std::move(fallback); }

 private:
  static Status Fix(Status s) {
    if (s.ok()) return Status::Internal("Result constructed from an OK Status without a value");
    return s;
  }
  std::variant<T, Status> v_;
};

}  // namespace tiercache

// Evaluates `expr` (a Status); returns it from the enclosing function if not OK.
#define TIERCACHE_RETURN_IF_ERROR(expr)              \
  do {                                               \
    ::tiercache::Status tc_status_ = (expr);         \
    if (!tc_status_.ok()) return tc_status_;         \
  } while (0)

#endif  // TIERCACHE_STATUS_H_
