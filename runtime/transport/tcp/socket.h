// TCP socket helpers shared by the tcp client backend and the memserver's TCP listener:
// an RAII fd, connect with a timeout, listen on host:port, and whole-buffer I/O bounded by
// deadlines (poll-based, so every wait can end). Errors are Status values naming the peer and
// carrying strerror. Every send uses MSG_NOSIGNAL: a vanished peer is an error, not SIGPIPE.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "farmem/status.h"

namespace farmem::net {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
/// "Wait as long as it takes" (still ends when the socket is shut down).
inline constexpr Deadline kNoDeadline = Deadline::max();

inline Deadline deadline_after(std::chrono::nanoseconds timeout) {
  const auto now = Clock::now();
  return timeout >= Deadline::max() - now ? kNoDeadline : now + timeout;
}

/// Owns one file descriptor; closes it when destroyed. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

class TlsSession;

/// A connected socket as the I/O calls below see it: plain, or with a TLS session on it
/// (tls.h), whose bytes the calls then encrypt and decrypt. An fd converts implicitly.
struct Channel {
  Channel(int f) : fd(f) {}  // NOLINT(google-explicit-constructor): a plain socket
  Channel(int f, TlsSession* t) : fd(f), tls(t) {}
  int fd;
  TlsSession* tls = nullptr;
};

/// A listening socket and the port it actually got (useful when asked for port 0).
struct Listening {
  UniqueFd fd;
  std::uint16_t port = 0;
};

/// Binds and listens on host:port (port 0: an ephemeral port, reported in Listening::port).
Result<Listening> listen_on(const std::string& host, std::uint16_t port);

/// Accepts one connection (blocking; the fd is returned in blocking mode with TCP_NODELAY).
/// `peer` receives "host:port" of the other end.
Result<UniqueFd> accept_from(int listen_fd, std::string* peer);

/// Connects to host:port within the deadline. The returned fd is non-blocking, has
/// TCP_NODELAY set (small request frames must not wait for Nagle) and is close-on-exec.
/// Errors name `peer` ("host:port" when empty).
Result<UniqueFd> connect_to(const std::string& host, std::uint16_t port, Deadline deadline,
                            std::string_view peer = {});

/// "host:port" of the socket's peer ("?" when unknown).
std::string peer_name(int fd);
/// "PEER: TEXT", or TEXT when the peer is unnamed: how this layer's errors name their peer.
std::string with_peer(std::string_view peer, std::string_view text);

Status set_nodelay(int fd);
Status set_blocking(int fd, bool blocking);

/// Waits until `events` (POLLIN/POLLOUT) are ready; returns the revents, or kTimedOut when
/// the deadline passes first. Error and hang-up conditions are reported as revents. With
/// TLS, POLLIN is ready at once when decrypted bytes wait in the session.
Result<short> wait_ready(Channel ch, short events, Deadline deadline, std::string_view peer);

/// Outcome of one non-blocking attempt.
struct IoResult {
  std::size_t bytes = 0;
  bool would_block = false;  ///< nothing could move now (EAGAIN)
  bool eof = false;          ///< receive only: the peer closed its write side
};

/// One recvmsg into `iov` (MSG_DONTWAIT unless `block`).
Result<IoResult> recv_some(Channel ch, std::span<const iovec> iov, bool block,
                           std::string_view peer);
/// One sendmsg of `iov` (at most IOV_MAX entries are used; MSG_DONTWAIT unless `block`).
Result<IoResult> send_some(Channel ch, std::span<const iovec> iov, bool block,
                           std::string_view peer);

/// Drops the first `n` bytes from an iovec array in place; returns the remaining entries.
std::span<iovec> advance_iov(std::span<iovec> iov, std::size_t n);

/// Reads exactly n bytes; kUnavailable when the peer closes first, kTimedOut at the deadline.
Status read_full(Channel ch, void* buf, std::size_t n, Deadline deadline, std::string_view peer);
/// Writes exactly n bytes.
Status write_full(Channel ch, const void* buf, std::size_t n, Deadline deadline,
                  std::string_view peer);
/// Writes every byte of `iov` (which is consumed in place), IOV_MAX entries per syscall.
Status writev_full(Channel ch, std::span<iovec> iov, Deadline deadline, std::string_view peer);

/// Like writev_full, but gives up only when no byte could be sent for `stall_timeout`: for
/// large transfers whose total duration is unknown but whose progress is not.
Status writev_unless_stalled(Channel ch, std::span<iovec> iov, std::chrono::nanoseconds stall_timeout,
                             std::string_view peer);

/// Reads and drops whatever arrives until the peer closes, an error, or `deadline`: lets a
/// peer read what was sent to it before the socket closes (closing with unread input
/// resets the connection, which may destroy the peer's unread data).
void drain(int fd, Deadline deadline);

/// A Status for a failed socket call: peer-gone errors map to kUnavailable, ETIMEDOUT to
/// kTimedOut, anything else to kIoError. "<peer>: <what>: <strerror>".
Status errno_status(int err, std::string_view what, std::string_view peer);

}  // namespace farmem::net
