// Server: the listener and the workers' epoll loops.
#include "kv/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace farmem::kv {

namespace {
// Events one epoll_wait returns: a round serves (and batches the gets of) at most these.
constexpr int kMaxEvents = 128;
// Bytes read from one connection in one round: enough for a pipeline, small enough that one
// client cannot keep a worker from its others (the rest is read next round).
constexpr std::size_t kReadPerRound = 1u << 20;
constexpr std::size_t kReadChunk = 64u << 10;
constexpr int kListenBacklog = 1024;
constexpr std::string_view kTooMany = "SERVER_ERROR Too many open connections\r\n";

Status errno_status(const std::string& what) {
  return Unavailable(what + ": " + std::strerror(errno));
}

void wake(int efd) {
  const std::uint64_t one = 1;
  (void)!::write(efd, &one, sizeof one);
}
}  // namespace

struct Conn {
  Conn(int f, Context& ctx, Counters& c) : fd(f), session(ctx, c) {}
  int fd;
  std::string in, out;
  std::size_t out_off = 0;  ///< bytes of `out` already sent
  bool closing = false;     ///< close once `out` is sent (or cannot be)
  bool eof = false;         ///< the peer closed its side
  bool want_write = false;  ///< registered for EPOLLOUT (the socket was full)
  bool ready = false;       ///< in this round's list
  Session session;
};

struct Server::Worker {
  Server* server = nullptr;
  int ep = -1, efd = -1;
  std::thread thread;
  std::mutex mu;                 ///< guards `incoming`
  std::vector<int> incoming;     ///< accepted sockets not yet adopted
  Counters counters;
  std::unordered_map<int, std::unique_ptr<Conn>> conns;  ///< this thread's only
  std::atomic<std::uint64_t> rounds{0}, batched{0};

  void loop();
  void adopt();
  void read_some(Conn& c);
  void flush(Conn& c);
  void serve(Conn& c);
  void close_conn(Conn& c);
};

Server::Server(Context& ctx, ServerOptions options) : ctx_(ctx), options_(std::move(options)) {}

Result<std::unique_ptr<Server>> Server::start(Context& ctx, ServerOptions options) {
  if (options.threads == 0 || options.threads > 1024) {
    return InvalidArgument("threads must be 1..1024");
  }
  std::unique_ptr<Server> s(new Server(ctx, std::move(options)));
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, s->options_.listen.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(s->options_.port);
    len = sizeof *v4;
  } else if (::inet_pton(AF_INET6, s->options_.listen.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(s->options_.port);
    len = sizeof *v6;
  } else {
    return InvalidArgument("listen address '" + s->options_.listen +
                           "' is not an IPv4 or IPv6 address");
  }
  s->listen_fd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->listen_fd_ < 0) return errno_status("socket");
  const int on = 1;
  (void)::setsockopt(s->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  const std::string where = s->options_.listen + ":" + std::to_string(s->options_.port);
  if (::bind(s->listen_fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return errno_status("bind " + where);
  }
  if (::listen(s->listen_fd_, kListenBacklog) != 0) return errno_status("listen " + where);
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  (void)::getsockname(s->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &blen);
  s->port_ = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                              : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  s->stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->stop_fd_ < 0) return errno_status("eventfd");
  for (std::uint32_t i = 0; i < s->options_.threads; ++i) {
    auto w = std::make_unique<Worker>();
    w->server = s.get();
    w->ep = ::epoll_create1(EPOLL_CLOEXEC);
    w->efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->ep < 0 || w->efd < 0) return errno_status("epoll/eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the wake-up eventfd
    if (::epoll_ctl(w->ep, EPOLL_CTL_ADD, w->efd, &ev) != 0) return errno_status("epoll_ctl");
    s->workers_.push_back(std::move(w));
  }
  for (auto& w : s->workers_) w->thread = std::thread([wp = w.get()] { wp->loop(); });
  s->listener_ = std::thread([sp = s.get()] { sp->listen_loop(); });
  return s;
}

Server::~Server() {
  stop();
  for (auto& w : workers_) {
    if (w->ep >= 0) ::close(w->ep);
    if (w->efd >= 0) ::close(w->efd);
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void Server::stop() {
  if (stopping_.exchange(true)) {
    return;
  }
  if (stop_fd_ >= 0) wake(stop_fd_);
  if (listener_.joinable()) listener_.join();
  for (auto& w : workers_) {
    if (w->efd >= 0) wake(w->efd);
    if (w->thread.joinable()) w->thread.join();
    for (auto& [fd, c] : w->conns) ::close(fd);
    w->conns.clear();
    std::lock_guard lock(w->mu);
    for (int fd : w->incoming) ::close(fd);
    w->incoming.clear();
  }
}

void Server::listen_loop() {
  std::uint32_t next = 0;
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  while (!stopping_.load()) {
    if (::poll(fds, 2, -1) < 0) continue;  // EINTR
    if (fds[1].revents != 0) return;
    for (;;) {  // bounded by the backlog: accept4 says EAGAIN once it is empty
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) break;  // EAGAIN, or an aborted connection, or out of fds: poll again
      if (curr_.load() >= options_.max_connections) {
        rejected_.fetch_add(1);  // counted before the client can read why: stats agree with it
        (void)!::send(fd, kTooMany.data(), kTooMany.size(), MSG_NOSIGNAL);
        ::close(fd);
        continue;
      }
      const int on = 1;
      (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
      curr_.fetch_add(1);
      total_.fetch_add(1);
      Worker& w = *workers_[next++ % workers_.size()];
      {
        std::lock_guard lock(w.mu);
        w.incoming.push_back(fd);
      }
      wake(w.efd);
    }
  }
}

ServerFigures Server::figures() const {
  ServerFigures f;
  f.curr_connections = curr_.load();
  f.total_connections = total_.load();
  f.rejected_connections = rejected_.load();
  for (const auto& w : workers_) {
    f.rounds += w->rounds.load(std::memory_order_relaxed);
    f.batched_rounds += w->batched.load(std::memory_order_relaxed);
  }
  return f;
}

void Server::sum_counters(Counters& t) const {
  for (const auto& w : workers_) {
    const Counters& c = w->counters;
    auto add = [](std::atomic<std::uint64_t>& to, const std::atomic<std::uint64_t>& from) {
      to.store(to.load(std::memory_order_relaxed) + from.load(std::memory_order_relaxed),
               std::memory_order_relaxed);
    };
    add(t.cmd_get, c.cmd_get), add(t.cmd_set, c.cmd_set), add(t.cmd_flush, c.cmd_flush);
    add(t.cmd_touch, c.cmd_touch), add(t.get_hits, c.get_hits), add(t.get_misses, c.get_misses);
    add(t.delete_hits, c.delete_hits), add(t.delete_misses, c.delete_misses);
    add(t.incr_hits, c.incr_hits), add(t.incr_misses, c.incr_misses);
    add(t.decr_hits, c.decr_hits), add(t.decr_misses, c.decr_misses);
    add(t.cas_hits, c.cas_hits), add(t.cas_misses, c.cas_misses);
    add(t.cas_badval, c.cas_badval), add(t.touch_hits, c.touch_hits);
    add(t.touch_misses, c.touch_misses), add(t.bytes_read, c.bytes_read);
    add(t.bytes_written, c.bytes_written), add(t.protocol_errors, c.protocol_errors);
  }
}

void Server::reset_counters() {
  // Each field is reset with a plain store: a worker's increment racing with it may survive.
  for (auto& w : workers_) {
    Counters& c = w->counters;
    for (auto* f : {&c.cmd_get, &c.cmd_set, &c.cmd_flush, &c.cmd_touch, &c.get_hits,
                    &c.get_misses, &c.delete_hits, &c.delete_misses, &c.incr_hits,
                    &c.incr_misses, &c.decr_hits, &c.decr_misses, &c.cas_hits, &c.cas_misses,
                    &c.cas_badval, &c.touch_hits, &c.touch_misses, &c.bytes_read,
                    &c.bytes_written, &c.protocol_errors}) {
      f->store(0, std::memory_order_relaxed);
    }
  }
  total_.store(curr_.load());
  rejected_.store(0);
}

// ---- a worker ----

void Server::Worker::loop() {
  epoll_event evs[kMaxEvents];
  std::vector<Conn*> ready;
  std::vector<std::string_view> keys;
  while (!server->stopping_.load()) {
    const int n = ::epoll_wait(ep, evs, kMaxEvents, -1);
    if (n < 0) continue;  // EINTR
    ready.clear();
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<Conn*>(evs[i].data.ptr);
      if (c == nullptr) {
        adopt();
        continue;
      }
      if (evs[i].events & EPOLLOUT) flush(*c);
      if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) read_some(*c);
      if (!c->ready) {
        c->ready = true;
        ready.push_back(c);
      }
    }
    if (ready.empty()) continue;
    rounds.fetch_add(1, std::memory_order_relaxed);
    // The gets of every ready connection, fetched together (see server.h).
    keys.clear();
    for (Conn* c : ready) {
      if (!c->closing && c->out_off == c->out.size()) Session::collect_get_keys(c->in, keys);
    }
    if (keys.size() > 1) {
      server->ctx_.store->prefetch(keys);
      batched.fetch_add(1, std::memory_order_relaxed);
    }
    for (Conn* c : ready) {
      c->ready = false;
      serve(*c);
    }
  }
}

void Server::Worker::adopt() {
  std::uint64_t drained;
  (void)!::read(efd, &drained, sizeof drained);
  std::vector<int> fds;
  {
    std::lock_guard lock(mu);
    fds.swap(incoming);
  }
  for (int fd : fds) {
    auto c = std::make_unique<Conn>(fd, server->ctx_, counters);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c.get();
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      server->curr_.fetch_sub(1);
      continue;
    }
    conns.emplace(fd, std::move(c));
  }
}

void Server::Worker::read_some(Conn& c) {
  std::size_t got = 0;
  while (got < kReadPerRound && !c.eof) {
    const std::size_t at = c.in.size();
    c.in.resize(at + kReadChunk);
    const ssize_t r = ::read(c.fd, c.in.data() + at, kReadChunk);
    c.in.resize(at + (r > 0 ? static_cast<std::size_t>(r) : 0));
    if (r > 0) {
      got += static_cast<std::size_t>(r);
      continue;
    }
    if (r == 0) c.eof = true;
    else if (errno != EAGAIN && errno != EINTR) c.eof = c.closing = true;
    if (r < 0 && errno == EINTR) continue;
    break;
  }
  counters.add(counters.bytes_read, got);
}

void Server::Worker::flush(Conn& c) {
  while (c.out_off < c.out.size()) {
    const ssize_t w = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off,
                             MSG_NOSIGNAL);
    if (w > 0) {
      c.out_off += static_cast<std::size_t>(w);
      counters.add(counters.bytes_written, static_cast<std::uint64_t>(w));
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) break;
    c.closing = true;  // the peer is gone: nothing more can be sent
    c.out.clear();
    c.out_off = 0;
    return;
  }
  if (c.out_off == c.out.size()) {
    c.out.clear();
    c.out_off = 0;
  }
  const bool want = !c.out.empty();
  if (want != c.want_write) {  // wait for room, not for requests, while replies back up
    epoll_event ev{};
    ev.events = want ? EPOLLOUT : (EPOLLIN | EPOLLRDHUP);
    ev.data.ptr = &c;
    (void)::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
    c.want_write = want;
  }
}

void Server::Worker::serve(Conn& c) {
  // Bounded: each pass consumes input or stops.
  while (!c.closing && c.out.empty() && !c.in.empty()) {
    bool close = false;
    const std::size_t used = c.session.process(c.in, c.out, &close);
    c.in.erase(0, used);
    if (close) c.closing = true;
    flush(c);
    if (used == 0) break;
  }
  if (!c.out.empty() && !c.closing) return;  // the rest when the socket has room
  if (c.closing || c.eof) {
    flush(c);  // best effort: a quit's reply, an error line
    close_conn(c);
  }
}

void Server::Worker::close_conn(Conn& c) {
  const int fd = c.fd;
  (void)::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  server->curr_.fetch_sub(1);
  conns.erase(fd);  // destroys c
}

}  // namespace farmem::kv
