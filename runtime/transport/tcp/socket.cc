#include "transport/tcp/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "transport/tcp/tls.h"

namespace farmem::net {

namespace {

// Pending connections the kernel queues before accept(); clients connect in bursts when a
// compute node starts many threads, 128 is the traditional SOMAXCONN and plenty for that.
constexpr int kListenBacklog = 128;

std::string sockaddr_text(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  std::uint16_t port = 0;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "?";
}

struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const { freeaddrinfo(ai); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

Result<AddrInfoPtr> resolve(const std::string& host, std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    return Unavailable("cannot resolve '" + host + "': " + gai_strerror(rc));
  }
  return AddrInfoPtr(res);
}

Status connect_one(const addrinfo* ai, Deadline deadline, std::string_view target,
                   UniqueFd* out) {
  UniqueFd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                     ai->ai_protocol));
  if (!fd.valid()) return errno_status(errno, "socket", target);
  if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return errno_status(errno, "connect", target);
    auto ready = wait_ready(fd.get(), POLLOUT, deadline, target);
    if (!ready.ok()) {
      if (ready.status().code() != StatusCode::kTimedOut) return ready.status();
      return TimedOut(with_peer(target, "connect: no answer before the deadline"));
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return errno_status(err, "connect", target);
  }
  FARMEM_RETURN_IF_ERROR(set_nodelay(fd.get()));
  *out = std::move(fd);
  return Status::Ok();
}

// Sends every byte of iov by `deadline`; a non-zero `renew` pushes the deadline to now + renew
// whenever bytes move (a stall timeout rather than a total one).
Status send_iov(Channel ch, std::span<iovec> iov, Deadline deadline, std::chrono::nanoseconds renew,
                std::string_view peer) {
  while (!iov.empty() && iov.front().iov_len == 0) iov = iov.subspan(1);
  // Bounded by the deadline: every round moves bytes or waits at most until then.
  while (!iov.empty()) {
    FARMEM_ASSIGN_OR_RETURN(IoResult r, send_some(ch, iov, false, peer));
    if (r.bytes > 0) {
      iov = advance_iov(iov, r.bytes);
      if (renew.count() > 0) deadline = deadline_after(renew);
      continue;
    }
    FARMEM_ASSIGN_OR_RETURN(short ev, wait_ready(ch, POLLOUT, deadline, peer));
    if ((ev & (POLLERR | POLLHUP)) != 0 && (ev & POLLOUT) == 0) {
      return Unavailable(with_peer(peer, "connection closed while sending"));
    }
  }
  return Status::Ok();
}

}  // namespace

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Status errno_status(int err, std::string_view what, std::string_view peer) {
  const std::string text = with_peer(peer, std::string(what) + ": " + std::strerror(err));
  switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
    case ENOTCONN:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ESHUTDOWN:
      return Unavailable(text);
    case ETIMEDOUT:
      return TimedOut(text);
    default:
      return IoError(text);
  }
}

Status set_nodelay(int fd) {
  const int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
    return errno_status(errno, "setsockopt(TCP_NODELAY)", "");
  }
  return Status::Ok();
}

Status set_blocking(int fd, bool blocking) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return errno_status(errno, "fcntl(F_GETFL)", "");
  const int want = blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK);
  if (want != flags && fcntl(fd, F_SETFL, want) != 0) {
    return errno_status(errno, "fcntl(F_SETFL)", "");
  }
  return Status::Ok();
}

std::string with_peer(std::string_view peer, std::string_view text) {
  if (peer.empty()) return std::string(text);
  return std::string(peer) + ": " + std::string(text);
}

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return sockaddr_text(reinterpret_cast<const sockaddr*>(&ss));
}

Result<Listening> listen_on(const std::string& host, std::uint16_t port) {
  FARMEM_ASSIGN_OR_RETURN(AddrInfoPtr ai, resolve(host, port, /*passive=*/true));
  const std::string where = host + ":" + std::to_string(port);
  UniqueFd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
  if (!fd.valid()) return errno_status(errno, "socket", where);
  // A restarted memserver must be able to rebind its port while old connections linger in
  // TIME_WAIT.
  const int one = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    return errno_status(errno, "setsockopt(SO_REUSEADDR)", where);
  }
  if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) return errno_status(errno, "bind", where);
  if (listen(fd.get(), kListenBacklog) != 0) return errno_status(errno, "listen", where);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return errno_status(errno, "getsockname", where);
  }
  const auto* sa = reinterpret_cast<const sockaddr*>(&ss);
  const std::uint16_t actual = sa->sa_family == AF_INET6
                                   ? ntohs(reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port)
                                   : ntohs(reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
  return Listening{std::move(fd), actual};
}

Result<UniqueFd> accept_from(int listen_fd, std::string* peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  UniqueFd fd(accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC));
  if (!fd.valid()) return errno_status(errno, "accept", "");
  if (peer != nullptr) *peer = sockaddr_text(reinterpret_cast<const sockaddr*>(&ss));
  FARMEM_RETURN_IF_ERROR(set_nodelay(fd.get()));
  return fd;
}

Result<UniqueFd> connect_to(const std::string& host, std::uint16_t port, Deadline deadline,
                            std::string_view peer) {
  const std::string target = peer.empty() ? host + ":" + std::to_string(port) : std::string(peer);
  auto ai = resolve(host, port, /*passive=*/false);
  if (!ai.ok()) return Status(ai.status().code(), with_peer(target, ai.status().message()));
  Status last = Unavailable(with_peer(target, "no address"));
  for (const addrinfo* a = ai->get(); a != nullptr; a = a->ai_next) {
    UniqueFd fd;
    last = connect_one(a, deadline, target, &fd);
    if (last.ok()) return fd;
  }
  return last;
}

Result<short> wait_ready(Channel ch, short events, Deadline deadline, std::string_view peer) {
  if (ch.tls != nullptr && (events & POLLIN) != 0 && ch.tls->input_buffered()) return POLLIN;
  pollfd p{ch.fd, events, 0};
  // Bounded: each round either returns or shortens the time left until the deadline.
  for (;;) {
    timespec ts{};
    const timespec* tsp = nullptr;
    if (deadline != kNoDeadline) {
      const auto left = std::max(deadline - Clock::now(), Clock::duration::zero());
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      ts.tv_sec = static_cast<time_t>(ns / 1000000000);
      ts.tv_nsec = static_cast<long>(ns % 1000000000);
      tsp = &ts;
    }
    const int rc = ppoll(&p, 1, tsp, nullptr);
    if (rc > 0) return p.revents;
    if (rc == 0) return TimedOut(with_peer(peer, "no progress before the deadline"));
    if (errno != EINTR) return errno_status(errno, "poll", peer);
  }
}

Result<IoResult> recv_some(Channel ch, std::span<const iovec> iov, bool block,
                           std::string_view peer) {
  if (ch.tls != nullptr) return ch.tls->recv_some(iov, block, peer);
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov.data());
  msg.msg_iovlen = std::min<std::size_t>(iov.size(), IOV_MAX);
  for (;;) {
    const ssize_t n = recvmsg(ch.fd, &msg, block ? 0 : MSG_DONTWAIT);
    if (n > 0) return IoResult{static_cast<std::size_t>(n), false, false};
    if (n == 0) return IoResult{0, false, true};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoResult{0, true, false};
    return errno_status(errno, "recv", peer);
  }
}

Result<IoResult> send_some(Channel ch, std::span<const iovec> iov, bool block,
                           std::string_view peer) {
  if (ch.tls != nullptr) return ch.tls->send_some(iov, block, peer);
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov.data());
  msg.msg_iovlen = std::min<std::size_t>(iov.size(), IOV_MAX);
  const int flags = MSG_NOSIGNAL | (block ? 0 : MSG_DONTWAIT);
  for (;;) {
    const ssize_t n = sendmsg(ch.fd, &msg, flags);
    if (n >= 0) return IoResult{static_cast<std::size_t>(n), false, false};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoResult{0, true, false};
    return errno_status(errno, "send", peer);
  }
}

void drain(int fd, Deadline deadline) {
  char sink[4096];
  // Bounded by the deadline: every round reads bytes, or waits at most until then.
  for (;;) {
    const ssize_t n = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n > 0) continue;
    if (n == 0) return;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return;
    if (!wait_ready(fd, POLLIN, deadline, "").ok()) return;
  }
}

std::span<iovec> advance_iov(std::span<iovec> iov, std::size_t n) {
  std::size_t i = 0;
  while (i < iov.size() && n >= iov[i].iov_len) n -= iov[i++].iov_len;
  iov = iov.subspan(i);
  if (!iov.empty() && n > 0) {
    iov[0].iov_base = static_cast<std::byte*>(iov[0].iov_base) + n;
    iov[0].iov_len -= n;
  }
  return iov;
}

Status read_full(Channel ch, void* buf, std::size_t n, Deadline deadline, std::string_view peer) {
  auto* p = static_cast<std::byte*>(buf);
  std::size_t got = 0;
  // Bounded by the deadline: every round moves bytes or waits at most until then.
  while (got < n) {
    const iovec iov{p + got, n - got};
    FARMEM_ASSIGN_OR_RETURN(IoResult r, recv_some(ch, {&iov, 1}, false, peer));
    if (r.eof) {
      return Unavailable(with_peer(peer, "connection closed by peer after " +
                                             std::to_string(got) + " of " + std::to_string(n) +
                                             " bytes"));
    }
    got += r.bytes;
    if (r.would_block) FARMEM_RETURN_IF_ERROR(wait_ready(ch, POLLIN, deadline, peer).status());
  }
  return Status::Ok();
}

Status write_full(Channel ch, const void* buf, std::size_t n, Deadline deadline,
                  std::string_view peer) {
  iovec iov{const_cast<void*>(buf), n};
  return writev_full(ch, {&iov, 1}, deadline, peer);
}

Status writev_full(Channel ch, std::span<iovec> iov, Deadline deadline, std::string_view peer) {
  return send_iov(ch, iov, deadline, Clock::duration::zero(), peer);
}

Status writev_unless_stalled(Channel ch, std::span<iovec> iov, std::chrono::nanoseconds stall_timeout,
                             std::string_view peer) {
  return send_iov(ch, iov, deadline_after(stall_timeout), stall_timeout, peer);
}

}  // namespace farmem::net
