// The memserver's TCP listener: one poll thread and a small pool of workers, not a thread per
// client.
//
// Why this shape, and not a fully non-blocking state machine: TcpSession's fast path is
// blocking-style code that receives WRITE payloads straight into slab memory and sends READ
// replies straight from it (writev of slab iovecs); a state machine would have to split every
// one of those calls into resumable steps. Instead a session is served in *turns* on a worker
// and *parked* in between: its socket, (mid-frame) the part of a frame it received, and
// (when the client does not read) the replies it has yet to take. Parked sessions wait in one
// epoll set (EPOLLONESHOT, so exactly one worker owns a session at a time) for EPOLLIN, or
// EPOLLOUT when replies wait; the poll thread hands ready ones to the workers. A turn ends
// when the client has nothing more to say or take (after a short linger when no other
// connection waits), or after kTurnFrames frames or kTurnTime, so a busy client cannot starve
// the others when there are more busy clients than workers, and a client that stops reading
// holds no worker. Idle connections therefore cost no thread, and after kTrimAfter not even
// their 64 KiB receive buffer.
//
// The poll thread also sweeps all connections every sweep_interval_: it closes the ones past
// the handshake, idle or frame timeouts (a worker sends the kError and frees the slabs) and
// trims idle buffers. The handshake (TcpSession::open) still blocks its worker, within
// kHelloTimeout, but starts only once the whole HELLO frame is in the socket; at most half
// the workers run handshakes at once, so clients slow to answer a challenge cannot take
// every worker, and one that overruns is shut down by the sweep.
//
// Limits: max_connections in all, max_connections_per_host per source address; refusals and
// timeouts are counted in the Core (metrics) and logged at most kRejectionLogsPerSecond lines
// a second.
#include "memserver/tcp_listener.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/dcheck.h"
#include "common/log.h"
#include "memserver/tcp_listener_impl.h"

namespace farmem::memserver {

namespace tcp_listener_internal {

Clock::duration sweep_interval_for(const TcpListenerOptions& o) {
  Clock::duration shortest = kHelloTimeout;
  if (o.idle_timeout.count() > 0) shortest = std::min<Clock::duration>(shortest, o.idle_timeout);
  if (o.frame_timeout.count() > 0) shortest = std::min<Clock::duration>(shortest, o.frame_timeout);
  return std::clamp<Clock::duration>(shortest / 10, kMinSweepInterval, kMaxSweepInterval);
}

TcpListenerImpl::TcpListenerImpl(Core& core, net::Listening listening, net::UniqueFd wake,
                                 net::UniqueFd epoll, const TcpListenerOptions& options)
    : core_(core),
      options_(options),
      max_handshakes_(std::max<std::size_t>(1, options.workers / 2)),
      sweep_interval_(sweep_interval_for(options)),
      listen_fd_(std::move(listening.fd)),
      port_(listening.port),
      wake_fd_(std::move(wake)),
      epoll_fd_(std::move(epoll)) {
  for (std::size_t i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { work(); });
  poller_ = std::thread([this] { poll_loop(); });
}

TcpListenerImpl::~TcpListenerImpl() {
  stopping_.store(true);
  const std::uint64_t one = 1;
  if (::write(wake_fd_.get(), &one, sizeof one) != sizeof one) {
    log().error("tcp listener: cannot wake the poll thread: {}", std::strerror(errno));
  }
  poller_.join();
  {
    MutexLock lock(mu_);
    // Wakes every worker blocked on a client; they end those sessions and exit.
    for (auto& [id, c] : conns_) ::shutdown(c->fd.get(), SHUT_RDWR);
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  std::map<std::uint64_t, std::unique_ptr<Conn>> rest;
  {
    MutexLock lock(mu_);
    rest.swap(conns_);
  }
  rest.clear();  // closes their Core sessions: every slab returns to the pool
  log().info("tcp listener on port {} stopped", port_);
}
// ---------------------------------------------------------------------------------------
// Workers

void TcpListenerImpl::work() {
  // Bounded: each round serves one turn; ends once stopping_.
  for (;;) {
    Conn* c = nullptr;
    std::optional<Status> close_why;
    bool handshake = false;
    {
      UniqueLock lock(mu_);
      // Bounded: every wake-up either finds a connection or stopping_.
      while (!stopping_.load() && (c = pop_locked()) == nullptr) lock.wait(work_cv_);
      if (c == nullptr) return;
      c->state = State::kRunning;
      close_why = c->close_why;
      handshake = !c->opened && !close_why;
      if (handshake) ++handshakes_running_;
    }
    TcpSession::Outcome outcome = take_turn(*c, close_why, handshake);
    // Bounded: another turn only while no other connection waits for a worker.
    while (end_turn(c, outcome, handshake)) {
      handshake = false;
      outcome = take_turn(*c, std::nullopt, false);
    }
  }
}

// Closing connections first (they free slabs), then handshakes up to max_handshakes_, then
// sessions in the order they became readable.
Conn* TcpListenerImpl::pop_locked() {
  Conn* c = nullptr;
  if (!handshake_queue_.empty() && handshakes_running_ < max_handshakes_) {
    c = handshake_queue_.front();
    handshake_queue_.pop_front();
  } else if (!serve_queue_.empty()) {
    c = serve_queue_.front();
    serve_queue_.pop_front();
  }
  if (c != nullptr) queued_.store(handshake_queue_.size() + serve_queue_.size());
  return c;
}

// Runs on a worker, without mu_: the connection is kRunning, so its session is this
// thread's.
TcpSession::Outcome TcpListenerImpl::take_turn(Conn& c, const std::optional<Status>& close_why,
                                               bool handshake) {
  TcpSession& s = *c.session;
  if (close_why) {
    s.close_for(*close_why);
    return TcpSession::Outcome::kEnded;
  }
  if (handshake) {
    // c.accepted is written once, before the connection was published: no lock needed.
    if (Clock::now() - c.accepted >= kHelloTimeout) {
      s.close_for(TimedOut("no handshake within the handshake timeout"));
      return TcpSession::Outcome::kEnded;
    }
    if (!s.open().ok()) return TcpSession::Outcome::kEnded;
  }
  const auto linger = queued_.load() == 0 ? Clock::duration(kLinger) : Clock::duration::zero();
  return s.serve({kTurnFrames, kTurnTime, linger});
}

// Puts the connection back (parked, queued, or gone). True: nobody else waits for a worker
// and it used up its turn with more to do, so the caller gives it another turn at once (no
// hand-off through the queue, which would wake a second worker for nothing).
bool TcpListenerImpl::end_turn(Conn* c, TcpSession::Outcome outcome, bool handshake) {
  std::unique_ptr<Conn> gone;
  {
    MutexLock lock(mu_);
    FARMEM_DCHECK(c->state == State::kRunning);
    if (handshake) {
      FARMEM_DCHECK_GT(handshakes_running_, 0u);
      --handshakes_running_;
      if (outcome != TcpSession::Outcome::kEnded) c->opened = true;
      if (!handshake_queue_.empty()) work_cv_.notify_one();  // a handshake slot is free
    }
    const auto now = Clock::now();
    if (outcome == TcpSession::Outcome::kEnded || stopping_.load()) {
      gone = remove_locked(*c);
    } else {
      c->wants_output = c->session->wants_output();
      c->output_progress = c->session->output_progress();
      c->mid_frame = c->session->mid_frame();
      c->frame_started = c->session->frame_started();
      c->last_input = c->session->last_input();
      if (!expire_locked(*c, now)) {
        if (outcome == TcpSession::Outcome::kYield && handshake_queue_.empty() &&
            serve_queue_.empty()) {
          return true;  // still kRunning: this worker goes on with it
        }
        if (outcome == TcpSession::Outcome::kYield) {
          enqueue_locked(*c);
        } else if (Status st = arm_locked(*c, EPOLL_CTL_MOD); st.ok()) {
          c->state = State::kWaiting;
          c->parked_at = now;
          c->trimmed = false;
        } else {
          log().error("tcp listener: cannot park {}: {}", c->host, st.to_string());
          gone = remove_locked(*c);
        }
      }
    }
  }
  // Outside the lock: closing a Core session unmaps its slabs.
  gone.reset();
  return false;
}

// ---------------------------------------------------------------------------------------
// Shared, under mu_

// Closes an opened connection (parked, or just back from its turn) that is past a timeout;
// true when it did.
bool TcpListenerImpl::expire_locked(Conn& c, Clock::time_point now) {
  if (c.wants_output) {
    // The client's input waits behind its replies: only their stall counts.
    if (now - c.output_progress < kReplyStallTimeout) return false;
    close_locked(c, TimedOut("took no reply byte for " +
                             seconds_text(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 kReplyStallTimeout))),
                 std::nullopt);
    return true;
  }
  if (c.mid_frame) {
    if (options_.frame_timeout.count() == 0 || now - c.frame_started < options_.frame_timeout) {
      return false;
    }
    close_locked(c, TimedOut("frame not finished within " + seconds_text(options_.frame_timeout) +
                             " (--frame-timeout): closing the connection"),
                 Core::Refusal::kFrameTimeout);
    return true;
  }
  if (options_.idle_timeout.count() == 0 || now - c.last_input < options_.idle_timeout) {
    return false;
  }
  close_locked(c, TimedOut("no request for " + seconds_text(options_.idle_timeout) +
                           " (--idle-timeout): closing the connection"),
               Core::Refusal::kIdleTimeout);
  return true;
}

// Hands the connection to a worker that only sends `why` and ends it.
void TcpListenerImpl::close_locked(Conn& c, Status why, std::optional<Core::Refusal> count) {
  if (count) {
    core_.count_error();
    core_.count_refusal(*count);
  }
  log_rejection("closing " + c.session->peer() + ": " + why.message());
  if (c.state == State::kWaiting) {
    // Off the epoll set, so no event can queue it a second time.
    (void)::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  }
  c.close_why = std::move(why);
  enqueue_locked(c);
}

void TcpListenerImpl::enqueue_locked(Conn& c) {
  c.state = State::kQueued;
  if (!c.opened && !c.close_why) {
    handshake_queue_.push_back(&c);
  } else {
    serve_queue_.push_back(&c);
  }
  queued_.store(handshake_queue_.size() + serve_queue_.size());
  work_cv_.notify_one();
}

Status TcpListenerImpl::arm_locked(const Conn& c, int op) {
  epoll_event ev{};
  ev.events = (c.wants_output ? EPOLLOUT : EPOLLIN) | EPOLLONESHOT;
  ev.data.u64 = c.id;
  if (::epoll_ctl(epoll_fd_.get(), op, c.fd.get(), &ev) != 0) {
    return net::errno_status(errno, "epoll_ctl", c.host);
  }
  return Status::Ok();
}

std::unique_ptr<Conn> TcpListenerImpl::remove_locked(Conn& c) {
  const auto h = per_host_.find(c.host);
  FARMEM_DCHECK(h != per_host_.end() && h->second > 0);
  if (h != per_host_.end() && --h->second == 0) per_host_.erase(h);
  auto node = conns_.extract(c.id);
  FARMEM_DCHECK(!node.empty());
  return node.empty() ? nullptr : std::move(node.mapped());
}

void TcpListenerImpl::log_rejection(const std::string& line) {
  const auto v = log_limit_.admit(Clock::now());
  if (v.suppressed > 0) log().warn("tcp listener: {} more rejection lines suppressed", v.suppressed);
  if (v.log) log().warn("tcp listener: {}", line);
}

}  // namespace tcp_listener_internal

using tcp_listener_internal::TcpListenerImpl;
using tcp_listener_internal::kListenId;
using tcp_listener_internal::kWakeId;

Result<std::unique_ptr<TcpListener>> TcpListener::start(Core& core, const std::string& host,
                                                        std::uint16_t port,
                                                        const TcpListenerOptions& options) {
  TcpListenerOptions o = options;
  if (o.max_connections == 0) return InvalidArgument("max_connections must be at least 1");
  if (o.max_connections_per_host == 0) {
    o.max_connections_per_host = std::max<std::size_t>(1, o.max_connections / 4);
  }
  o.max_connections_per_host = std::min(o.max_connections_per_host, o.max_connections);
  if (o.workers == 0) o.workers = std::max<std::size_t>(8, 2 * std::thread::hardware_concurrency());
  o.workers = std::min(o.workers, kMaxTcpWorkers);

  FARMEM_ASSIGN_OR_RETURN(net::Listening listening, net::listen_on(host, port));
  // Non-blocking: a connection reset between epoll's report and accept() must not block the
  // poll thread.
  FARMEM_RETURN_IF_ERROR(net::set_blocking(listening.fd.get(), false));
  net::UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return net::errno_status(errno, "eventfd", "tcp listener");
  net::UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return net::errno_status(errno, "epoll_create1", "tcp listener");
  for (const auto& [fd, id] : {std::pair{listening.fd.get(), kListenId},
                               std::pair{wake.get(), kWakeId}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return net::errno_status(errno, "epoll_ctl", "tcp listener");
    }
  }
  const std::uint16_t actual = listening.port;
  auto listener = std::make_unique<TcpListenerImpl>(core, std::move(listening), std::move(wake),
                                                    std::move(epoll), o);
  log().info("serving TCP clients on {}:{} ({} workers, at most {} connections, {} per host)",
             host, actual, o.workers, o.max_connections, o.max_connections_per_host);
  return std::unique_ptr<TcpListener>(std::move(listener));
}

}  // namespace farmem::memserver
