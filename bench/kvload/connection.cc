#include "bench/kvload/connection.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace farmem::kvload {

namespace {

// Bytes read from the socket per recv (replies of a deep pipeline arrive together).
constexpr std::size_t kReadChunk = 64 * 1024;

std::string where(const std::string& host, std::uint16_t port) {
  return host + ":" + std::to_string(port);
}

// A failed send or recv: a reset or a broken pipe is the server going away, said so.
std::string gone(const char* call, int err) {
  const std::string what = std::string(call) + ": " + std::strerror(err);
  if (err == ECONNRESET || err == EPIPE) return "the server closed the connection (" + what + ")";
  return what;
}

// Waits for a nonblocking connect to finish; returns 0 or the errno it failed with.
int wait_connected(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLOUT, 0};
  const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (n == 0) return ETIMEDOUT;
  if (n < 0) return errno;
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

}  // namespace

Result<std::unique_ptr<Connection>> Connection::open(const std::string& host,
                                                     std::uint16_t port,
                                                     std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string svc = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), svc.c_str(), &hints, &res); rc != 0) {
    return InvalidArgument("cannot resolve " + host + ": " + ::gai_strerror(rc));
  }
  const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::freeaddrinfo(res);
    return Internal(std::string("socket: ") + std::strerror(errno));
  }
  int err = ::connect(fd, res->ai_addr, res->ai_addrlen) == 0 ? 0 : errno;
  ::freeaddrinfo(res);
  if (err == EINPROGRESS) err = wait_connected(fd, timeout);
  if (err != 0) {
    ::close(fd);
    const std::string msg = "cannot connect to " + where(host, port) + ": " + std::strerror(err);
    return err == ETIMEDOUT ? TimedOut(msg) : Unavailable(msg);
  }
  const int on = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  return std::unique_ptr<Connection>(new Connection(fd));
}

Connection::~Connection() { ::close(fd_); }

Status Connection::flush() {
  while (sent_ < out_.size()) {
    const ssize_t n = ::send(fd_, out_.data() + sent_, out_.size() - sent_, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Unavailable(gone("send", n < 0 ? errno : EPIPE));
    sent_ += static_cast<std::size_t>(n);
  }
  if (sent_ == out_.size()) {
    out_.clear();
    sent_ = 0;
  }
  return Status::Ok();
}

Status Connection::read_available() {
  for (;;) {
    const std::size_t at = in_.size();
    in_.resize(at + kReadChunk);
    const ssize_t n = ::recv(fd_, in_.data() + at, kReadChunk, 0);
    in_.resize(at + static_cast<std::size_t>(n > 0 ? n : 0));
    if (n > 0) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Status::Ok();
    if (n < 0 && errno == EINTR) continue;
    return Unavailable(n == 0 ? std::string("the server closed the connection")
                              : gone("recv", errno));
  }
}

void Connection::consume(std::size_t n) {
  read_ += n;
  if (read_ == in_.size()) {
    in_.clear();
    read_ = 0;
  } else if (read_ > kReadChunk) {
    in_.erase(0, read_);
    read_ = 0;
  }
}

}  // namespace farmem::kvload
