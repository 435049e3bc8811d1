// The TCP listener's insides, shared by tcp_listener.cc (construction, workers, what both
// threads do under the lock) and tcp_listener_poll.cc (the poll thread: accept, admit,
// readiness, the sweep). Private to those two files; the design is described at the top of
// tcp_listener.cc.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/log_rate_limiter.h"
#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "memserver/tcp_listener.h"
#include "memserver/tcp_session.h"
#include "transport/tcp/socket.h"

namespace farmem::memserver::tcp_listener_internal {

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

inline std::string seconds_text(std::chrono::milliseconds d) {
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

}  // namespace farmem::memserver::tcp_listener_internal
