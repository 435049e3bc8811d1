// The TCP listener's poll thread: accepts and admits (or refuses) connections, hands
// readable ones to the workers, and sweeps for timeouts. See the top of tcp_listener.cc.
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "memserver/tcp_listener_impl.h"

namespace farmem::memserver::tcp_listener_internal {

namespace {

/// "host" of "host:port" or "[v6]:port".
std::string host_of(const std::string& peer) {
  const auto colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

// Whether a connection's first frame (its HELLO) has fully arrived, or it sent something the
// handshake rejects at once (a bad magic, an oversized frame), or closed: only then does a
// worker run its handshake, which therefore does not wait on a client that dribbles its
// HELLO (such a client costs only its slot, until kHelloTimeout). MSG_PEEK leaves the bytes
// for the handshake.
bool first_frame_ready(int fd) {
  proto::FrameHeader h{};
  const ssize_t n = ::recv(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
  if (n == 0) return true;  // EOF: the handshake reports it
  if (static_cast<std::size_t>(n) < sizeof h) return false;
  if (h.magic != proto::kMagic || h.length > proto::kMaxControlPayload) return true;
  int queued = 0;
  if (::ioctl(fd, FIONREAD, &queued) != 0) return true;
  return static_cast<std::size_t>(queued) >= sizeof h + h.length;
}
}  // namespace


void TcpListenerImpl::poll_loop() {
  epoll_event events[kMaxEvents];
  Clock::time_point next_sweep = Clock::now() + sweep_interval_;
  // Bounded: runs until the destructor signals wake_fd_; each round waits at most until the
  // next sweep.
  while (!stopping_.load()) {
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next_sweep - Clock::now());
    const int n = ::epoll_wait(epoll_fd_.get(), events, kMaxEvents,
                               static_cast<int>(std::max<std::int64_t>(0, wait.count())));
    if (n < 0 && errno != EINTR) {
      log_rejection(std::string("epoll_wait: ") + std::strerror(errno));
      std::this_thread::sleep_for(kAcceptBackoff);
    }
    for (int i = 0; i < n && !stopping_.load(); ++i) {
      const std::uint64_t id = events[i].data.u64;
      if (id == kListenId) accept_one();
      else if (id != kWakeId) on_readable(id);
    }
    const auto now = Clock::now();
    if (now >= next_sweep) {
      sweep(now);
      next_sweep = now + sweep_interval_;
    }
  }
}

void TcpListenerImpl::accept_one() {
  std::string peer;
  auto fd = net::accept_from(listen_fd_.get(), &peer);
  if (!fd.ok()) {
    log_rejection(fd.status().to_string());
    std::this_thread::sleep_for(kAcceptBackoff);
    return;
  }
  admit(std::move(fd).value(), peer);
}

void TcpListenerImpl::admit(net::UniqueFd fd, const std::string& peer) {
  const std::string host = host_of(peer);
  std::optional<Core::Refusal> refusal;
  std::string why;
  {
    MutexLock lock(mu_);
    const auto h = per_host_.find(host);
    const std::size_t from_host = h == per_host_.end() ? 0 : h->second;
    if (conns_.size() >= options_.max_connections) {
      refusal = Core::Refusal::kGlobalLimit;
      why = fmt::format("too many connections: this memserver serves at most {} "
                        "(--max-connections)", options_.max_connections);
    } else if (from_host >= options_.max_connections_per_host) {
      refusal = Core::Refusal::kPerHostLimit;
      why = fmt::format("too many connections from {}: at most {} per source address "
                        "(--max-connections-per-host)", host, options_.max_connections_per_host);
    } else {
      auto c = std::make_unique<Conn>();
      c->id = next_id_++;
      c->host = host;
      c->accepted = Clock::now();
      c->session = std::make_unique<TcpSession>(core_, fd.get(),
                                                (options_.tls ? "tls://" : "tcp://") + peer,
                                                options_.tls.get());
      c->fd = std::move(fd);
      if (Status st = arm_locked(*c, EPOLL_CTL_ADD); !st.ok()) {
        log().error("tcp listener: cannot watch {}: {}", peer, st.to_string());
        return;  // c goes: the socket closes
      }
      ++per_host_[host];
      conns_.emplace(c->id, std::move(c));
      return;
    }
  }
  refuse(fd.get(), peer, *refusal, why);
}

// Answers a connection refused at accept: one non-blocking send of the kError (a new
// socket's buffer is empty, so it fits), then the caller closes it.
void TcpListenerImpl::refuse(int fd, const std::string& peer, Core::Refusal why,
                             const std::string& message) {
  core_.count_error();
  core_.count_refusal(why);
  log_rejection("refusing " + peer + ": " + message);
  const auto bytes =
      proto::encode(proto::Message::error(StatusCode::kResourceExhausted, message, 0));
  const iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  (void)net::send_some(fd, {&iov, 1}, false, peer);
}

void TcpListenerImpl::on_readable(std::uint64_t id) {
  MutexLock lock(mu_);
  const auto it = conns_.find(id);
  // A connection already closed or taken off the epoll set by the sweep: a stale event.
  if (it == conns_.end() || it->second->state != State::kWaiting) return;
  Conn& c = *it->second;
  if (!c.opened && !first_frame_ready(c.fd.get())) {
    // Part of a HELLO: wait for the rest here (the sweep enforces kHelloTimeout).
    if (Status st = arm_locked(c, EPOLL_CTL_MOD); st.ok()) return;
  }
  enqueue_locked(c);
}

void TcpListenerImpl::sweep(Clock::time_point now) {
  std::size_t trimmed = 0;
  {
    MutexLock lock(mu_);
    for (auto& [id, c] : conns_) {
      if (c->close_why) continue;  // being closed already
      if (!c->opened) {
        if (now - c->accepted < kHelloTimeout) continue;
        if (c->state == State::kWaiting) {
          close_locked(*c, TimedOut("no handshake within " + seconds_text(
                                        std::chrono::duration_cast<std::chrono::milliseconds>(
                                            kHelloTimeout))),
                       std::nullopt);
        } else if (c->state == State::kRunning && !c->shut) {
          // Its handshake overran: wake the worker blocked in it; the session ends.
          ::shutdown(c->fd.get(), SHUT_RDWR);
          c->shut = true;
        }
        continue;  // a queued one is checked when a worker takes it
      }
      if (c->state != State::kWaiting) continue;  // checked at the end of its turn
      if (expire_locked(*c, now)) continue;
      const bool idle = !c->mid_frame && !c->wants_output;
      if (idle && !c->trimmed && now - c->parked_at >= kTrimAfter) {
        c->session->trim();
        c->trimmed = true;
        ++trimmed;
      }
    }
  }
  // The freed buffers lie between live allocations, where free() keeps them: give their
  // pages back to the kernel, or idle connections would still cost their buffers in RSS.
  if (trimmed > 0) ::malloc_trim(0);
  if (const std::uint64_t n = log_limit_.take_suppressed(now); n > 0) {
    log().warn("tcp listener: {} more rejection lines suppressed", n);
  }
}

}  // namespace farmem::memserver::tcp_listener_internal
