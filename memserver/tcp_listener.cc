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

#include <malloc.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "common/dcheck.h"
#include "common/log.h"
#include "common/log_rate_limiter.h"
#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "memserver/tcp_session.h"
#include "transport/tcp/socket.h"

namespace farmem::memserver {

namespace {

using Clock = net::Clock;
using namespace std::chrono_literals;

// epoll data of the two fixed fds; connections are numbered from kFirstConnId.
constexpr std::uint64_t kListenId = 0;
constexpr std::uint64_t kWakeId = 1;
constexpr std::uint64_t kFirstConnId = 2;
// Events taken per epoll_wait: enough that a burst of wake-ups costs few calls.
constexpr int kMaxEvents = 256;
// A turn yields after this many frames or this long, whichever comes first: 2 ms keeps a
// queued client's wait short next to a network round trip; 1024 frames is one full reply
// batch (TcpSession flushes at 1024 pieces anyway).
constexpr std::size_t kTurnFrames = 1024;
constexpr auto kTurnTime = 2ms;
// With no other connection waiting, a worker waits this long for a client's next request
// before parking it: a client in a request-reply loop answers within a round trip, and
// parking costs two epoll_ctl calls and a thread hand-off per request.
constexpr auto kLinger = 1ms;
// An idle connection's buffers are freed once it has been parked this long (not at once: a
// client pausing between bursts would reallocate them every time).
constexpr auto kTrimAfter = 1s;
// After a failed accept (e.g. out of fds) the listener pauses before retrying, so a
// persistent error does not spin a core.
constexpr auto kAcceptBackoff = 10ms;
// Rejection lines logged a second at most; the rest are counted in one "suppressed" line.
constexpr std::uint32_t kRejectionLogsPerSecond = 10;
// The sweep runs at a tenth of the shortest timeout, within these bounds: timeouts fire at
// most 10% late, and 2,000 connections cost a few microseconds a second to scan.
constexpr auto kMinSweepInterval = 10ms;
constexpr auto kMaxSweepInterval = 1000ms;

enum class State : std::uint8_t {
  kWaiting,  ///< parked in the epoll set (armed, EPOLLONESHOT)
  kQueued,   ///< readable (or being closed), waiting for a worker
  kRunning,  ///< a worker holds it
};

/// One connection. Every field is guarded by the listener's mu_ (not annotated: a Conn
/// cannot name its listener's lock), except `session`, which belongs to the worker running
/// the connection (state kRunning) and otherwise to whoever holds mu_.
struct Conn {
  std::uint64_t id = 0;
  net::UniqueFd fd;  // declared before session: destroyed after it
  std::string host;  ///< source address: the per-host limit's key
  Clock::time_point accepted;
  std::unique_ptr<TcpSession> session;
  State state = State::kWaiting;
  bool opened = false;       ///< handshake done
  bool shut = false;         ///< the sweep shut the socket down (handshake overran)
  bool trimmed = false;      ///< buffers freed while parked
  std::optional<Status> close_why;  ///< set: the next turn only closes it, sending this
  // Copied from the session at the end of each turn, for the sweep.
  bool wants_output = false;  ///< parked on a client that does not read its replies
  Clock::time_point output_progress;
  bool mid_frame = false;
  Clock::time_point frame_started;
  Clock::time_point last_input;
  Clock::time_point parked_at;
};

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

std::string seconds_text(std::chrono::milliseconds d) {
  return fmt::format("{:g} s", static_cast<double>(d.count()) / 1000.0);
}

class TcpListenerImpl final : public TcpListener {
 public:
  TcpListenerImpl(Core& core, net::Listening listening, net::UniqueFd wake, net::UniqueFd epoll,
                  const TcpListenerOptions& options);
  ~TcpListenerImpl() override;

  std::uint16_t port() const override { return port_; }

 private:
  // ---- the poll thread ----
  void poll_loop();
  void accept_one();
  void admit(net::UniqueFd fd, const std::string& peer);
  void refuse(int fd, const std::string& peer, Core::Refusal why, const std::string& message);
  void on_readable(std::uint64_t id) FARMEM_EXCLUDES(mu_);
  void sweep(Clock::time_point now) FARMEM_EXCLUDES(mu_);

  // ---- workers ----
  void work();
  Conn* pop_locked() FARMEM_REQUIRES(mu_);
  TcpSession::Outcome take_turn(Conn& c, const std::optional<Status>& close_why,
                                bool handshake);
  bool end_turn(Conn* c, TcpSession::Outcome outcome, bool handshake) FARMEM_EXCLUDES(mu_);

  // ---- either, under mu_ ----
  bool expire_locked(Conn& c, Clock::time_point now) FARMEM_REQUIRES(mu_);
  void close_locked(Conn& c, Status why, std::optional<Core::Refusal> count)
      FARMEM_REQUIRES(mu_);
  void enqueue_locked(Conn& c) FARMEM_REQUIRES(mu_);
  Status arm_locked(const Conn& c, int op) FARMEM_REQUIRES(mu_);
  std::unique_ptr<Conn> remove_locked(Conn& c) FARMEM_REQUIRES(mu_);
  void log_rejection(const std::string& line);

  Core& core_;
  const TcpListenerOptions options_;  ///< resolved: per-host and workers are not 0
  const std::size_t max_handshakes_;  ///< workers that may run a handshake at once
  const Clock::duration sweep_interval_;
  const net::UniqueFd listen_fd_;
  const std::uint16_t port_;
  const net::UniqueFd wake_fd_;   ///< eventfd: written once to stop the poll thread
  const net::UniqueFd epoll_fd_;  ///< the listen fd, wake_fd_ and every parked connection
  std::atomic<bool> stopping_{false};
  /// Connections waiting for a worker (both queues): a worker lingers only when it is 0.
  std::atomic<std::size_t> queued_{0};
  LogRateLimiter log_limit_{kRejectionLogsPerSecond};

  /// Guards the connection table, the per-host counts, the queues and every Conn's fields.
  /// Never held across a socket wait: workers take it only to pick and to put back a
  /// connection, the poll thread to admit, wake and sweep.
  Mutex mu_;
  std::condition_variable work_cv_;  ///< a connection was queued, or stopping_
  std::map<std::uint64_t, std::unique_ptr<Conn>> conns_ FARMEM_GUARDED_BY(mu_);
  std::map<std::string, std::size_t> per_host_ FARMEM_GUARDED_BY(mu_);
  std::deque<Conn*> handshake_queue_ FARMEM_GUARDED_BY(mu_);  ///< readable, not opened
  std::deque<Conn*> serve_queue_ FARMEM_GUARDED_BY(mu_);      ///< readable, or to close
  std::size_t handshakes_running_ FARMEM_GUARDED_BY(mu_) = 0;
  std::uint64_t next_id_ FARMEM_GUARDED_BY(mu_) = kFirstConnId;

  std::vector<std::thread> workers_;  // last: they start once everything above exists
  std::thread poller_;
};

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
// The poll thread

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
      c->session = std::make_unique<TcpSession>(core_, fd.get(), "tcp://" + peer);
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

}  // namespace

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
