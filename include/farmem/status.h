// farmem/status.h: the one error type of farmem's control paths.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace farmem {

/// What went wrong, coarse enough to branch on.
enum class StatusCode : std::uint8_t {
  kOk = 0,
  kInvalidArgument,    ///< the caller passed something malformed or out of range
  kNotFound,           ///< no such slab, session or object
  kPermissionDenied,   ///< wrong token, or a resource owned by someone else
  kResourceExhausted,  ///< a pool or queue is full
  kOutOfRange,         ///< an access outside the bounds of a slab or allocation
  kUnavailable,        ///< the peer is gone (disconnected, dead, refused)
  kTimedOut,           ///< no answer within the deadline
  kProtocolError,      ///< malformed, truncated or unknown message, version mismatch
  kIoError,            ///< the transport reported a failed operation
  kInternal,           ///< a bug or an unexpected system error
  /// every copy of some far memory is lost (RuntimeOptions::replicas: all the memservers
  /// holding its copies died); its reads and writes fail with this, never stale data
  kDataLoss,
};

/// The highest code: codes read off the wire above it are a newer or broken peer's.
inline constexpr StatusCode kLastStatusCode = StatusCode::kDataLoss;

/// Human-readable name of a code ("timed out", ...).
std::string_view to_string(StatusCode code);

/// A code plus a message. Cheap when ok (no allocation).
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "timed out: read of 4096 bytes from rdma://h:1 after 1000 ms"
  std::string to_string() const;

  /// Returns a copy whose message is prefixed with `context: `.
  Status with_context(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status PermissionDenied(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status OutOfRange(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status TimedOut(std::string m) { return {StatusCode::kTimedOut, std::move(m)}; }
inline Status ProtocolError(std::string m) { return {StatusCode::kProtocolError, std::move(m)}; }
inline Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }

/// Thrown by Result::value() (and `*`, `->`) when the Result holds an error: a program that
/// did not check ok() first learns which error it ignored (what() is Status::to_string()),
/// like std::expected's bad_expected_access. Uncaught, it terminates with that text.
class BadResultAccess : public std::logic_error {
 public:
  explicit BadResultAccess(Status status)
      : std::logic_error("farmem::Result::value() on an error: " + status.to_string()),
        status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

/// Either a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  /// The error; Status::Ok() when a value is held.
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

  /// The value; throws BadResultAccess (carrying the error) when there is none.
  T& value() & {
    check();
    return *std::get_if<T>(&v_);
  }
  const T& value() const& {
    check();
    return *std::get_if<T>(&v_);
  }
  T&& value() && {
    check();
    return std::move(*std::get_if<T>(&v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void check() const {
    if (!ok()) [[unlikely]] throw BadResultAccess(std::get<Status>(v_));
  }

  std::variant<T, Status> v_;
};

}  // namespace farmem

/// Returns early from the enclosing function when `expr` yields a non-ok Status.
#define FARMEM_RETURN_IF_ERROR(expr)         \
  do {                                       \
    ::farmem::Status farmem_st_ = (expr);    \
    if (!farmem_st_.ok()) return farmem_st_; \
  } while (0)

#define FARMEM_CONCAT_INNER_(a, b) a##b
#define FARMEM_CONCAT_(a, b) FARMEM_CONCAT_INNER_(a, b)
#define FARMEM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

/// `FARMEM_ASSIGN_OR_RETURN(auto x, f());` unwraps a Result or returns its Status.
#define FARMEM_ASSIGN_OR_RETURN(lhs, expr) \
  FARMEM_ASSIGN_OR_RETURN_IMPL_(FARMEM_CONCAT_(farmem_res_, __LINE__), lhs, expr)
