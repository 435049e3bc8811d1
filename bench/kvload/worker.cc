#include "bench/kvload/worker.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>

namespace farmem::kvload {

namespace {

// epoll events taken per wait.
constexpr int kMaxEvents = 64;
// Poll periods (ms): they bound how late a worker sees a phase change or a reply's deadline,
// not how fast it answers a socket.
constexpr int kPollBusyMs = 20;
constexpr int kPollIdleMs = 5;

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

// At most 80 bytes of what the server sent, unprintable bytes as '?', for an error message.
std::string printable(std::string_view s) {
  std::string out(s.substr(0, 80));
  for (char& ch : out) {
    if (!std::isprint(static_cast<unsigned char>(ch))) ch = '?';
  }
  return out;
}

}  // namespace

Shared::Shared(const LoadOptions& o, std::uint32_t run_id)
    : opt(o), keys(o.dist, o.keys, o.zipf_theta), codec(run_id, o.value_min, o.value_max),
      issued(new std::atomic<std::uint64_t>[o.keys]) {
  for (std::uint64_t i = 0; i < o.keys; ++i) issued[i].store(0, std::memory_order_relaxed);
}

void Shared::fail(const Status& st) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = st;
  }
  abort.store(true);
}

Status Shared::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void OpStats::merge(const OpStats& o) {
  gets += o.gets;
  sets += o.sets;
  hits += o.hits;
  misses += o.misses;
  errors += o.errors;
  wrong += o.wrong;
  get_ns.merge(o.get_ns);
  set_ns.merge(o.set_ns);
  if (first_error.empty()) first_error = o.first_error;
}

Worker::Worker(Shared& shared, unsigned index, unsigned conn_first, unsigned conn_count)
    : s_(shared), conn_first_(conn_first), conn_count_(conn_count),
      rng_(shared.opt.seed * 0x9e3779b97f4a7c15ull + index) {}

Worker::~Worker() {
  if (ep_ >= 0) ::close(ep_);
}

void Worker::run() {
  if (Status st = body(); !st.ok()) s_.fail(st);
}

Status Worker::body() {
  if (Status st = connect_all(); !st.ok()) return st;
  if (s_.opt.load) {
    const std::uint64_t n = s_.opt.keys, all = s_.opt.connections;
    for (unsigned i = 0; i < conns_.size(); ++i) {
      const std::uint64_t g = conn_first_ + i;
      conns_[i]->load_next = n * g / all;
      conns_[i]->load_end = n * (g + 1) / all;
    }
    if (Status st = pump_until(Mode::kLoad, [&] { return idle(); }, kPollBusyMs); !st.ok()) {
      return st;
    }
  }
  s_.loaded.fetch_add(1);
  if (Status st = pump_until(Mode::kDrain, [&] { return s_.phase.load() != Phase::kLoad; },
                             kPollIdleMs);
      !st.ok()) {
    return st;
  }
  if (Status st = pump_until(Mode::kRun, [&] { return s_.phase.load() == Phase::kDrain; },
                             kPollBusyMs);
      !st.ok()) {
    return st;
  }
  return pump_until(Mode::kDrain, [&] { return idle(); }, kPollBusyMs);
}

Status Worker::connect_all() {
  ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) return Internal(std::string("epoll_create1: ") + std::strerror(errno));
  const auto timeout = std::chrono::milliseconds(static_cast<long>(s_.opt.timeout_s * 1000));
  for (unsigned i = 0; i < conn_count_ && !s_.abort.load(); ++i) {
    auto c = Connection::open(s_.opt.host, s_.opt.port, timeout);
    if (!c.ok()) return c.status();
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c->get();
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, (*c)->fd(), &ev) != 0) {
      return Internal(std::string("epoll_ctl: ") + std::strerror(errno));
    }
    conns_.push_back(std::move(*c));
  }
  return Status::Ok();
}

Status Worker::pump_until(Mode mode, const std::function<bool()>& done, int poll_ms) {
  mode_ = mode;
  for (auto& c : conns_) {
    if (Status st = refill(*c); !st.ok()) return st;
  }
  while (!done()) {
    if (s_.abort.load()) return Status::Ok();  // another worker failed; it reported why
    if (Status st = pump(poll_ms); !st.ok()) return st;
  }
  return Status::Ok();
}

bool Worker::idle() const {
  for (const auto& c : conns_) {
    if (!c->pending().empty() || c->load_next < c->load_end) return false;
  }
  return true;
}

Status Worker::pump(int timeout_ms) {
  epoll_event evs[kMaxEvents];
  const int n = ::epoll_wait(ep_, evs, kMaxEvents, timeout_ms);
  if (n < 0 && errno != EINTR) return Internal(std::string("epoll_wait: ") + std::strerror(errno));
  for (int i = 0; i < n; ++i) {
    auto& c = *static_cast<Connection*>(evs[i].data.ptr);
    if (evs[i].events & EPOLLOUT) {
      if (Status st = c.flush(); !st.ok()) return st;
      if (Status st = arm(c); !st.ok()) return st;
    }
    if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      if (Status st = on_readable(c); !st.ok()) return st;
    }
  }
  return check_deadlines();
}

Status Worker::on_readable(Connection& c) {
  const std::string where = s_.opt.host + ":" + std::to_string(s_.opt.port);
  const Status read = c.read_available();  // replies that came before an EOF still count
  while (!c.pending().empty()) {
    const Connection::Pending& p = c.pending().front();
    key_ = s_.opt.key_prefix;
    char digits[24];
    key_.append(digits, std::to_chars(digits, digits + sizeof digits, p.key).ptr);
    const Reply r = parse_reply(s_.opt.protocol, p.op, key_, p.opaque, c.in());
    if (r.kind == Reply::Kind::kNeedMore) break;
    if (r.kind == Reply::Kind::kBroken) {
      return ProtocolError(where + ": a reply kvload cannot follow: \"" + printable(r.value) +
                           "\"");
    }
    if (Status st = complete(c, r); !st.ok()) return st;
    c.consume(r.used);
  }
  if (!read.ok()) return read.with_context(where);
  if (c.pending().empty() && !c.in().empty()) {
    return ProtocolError(where + ": bytes nobody asked for: \"" + printable(c.in()) + "\"");
  }
  return refill(c);
}

Status Worker::complete(Connection& c, const Reply& r) {
  const Connection::Pending p = c.pending().front();
  c.pending().pop_front();
  const std::uint64_t now = now_ns();
  OpStats& st = p.phase == Phase::kLoad ? load : p.phase == Phase::kMeasure ? measured : warmup;
  (p.op == OpKind::kGet ? st.get_ns : st.set_ns).record(now - p.issued_ns);
  ++(p.op == OpKind::kGet ? st.gets : st.sets);
  switch (r.kind) {
    case Reply::Kind::kHit:
      ++st.hits;
      if (s_.codec.check(p.key, s_.issued[p.key].load(), r.value) != ValueCodec::Verdict::kOk) {
        ++st.wrong;
      }
      break;
    case Reply::Kind::kMiss: ++st.misses; break;
    case Reply::Kind::kError:
      ++st.errors;
      if (st.first_error.empty()) st.first_error = printable(r.value);
      break;
    default: break;
  }
  if (p.phase == Phase::kMeasure) last_measured_ns.store(now, std::memory_order_relaxed);
  completed.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

Status Worker::refill(Connection& c) {
  while (c.pending().size() < s_.opt.pipeline) {
    if (mode_ == Mode::kLoad) {
      if (c.load_next >= c.load_end) break;
      issue(c, OpKind::kSet, c.load_next++, Phase::kLoad);
      continue;
    }
    if (mode_ != Mode::kRun) break;
    const Phase phase = s_.phase.load(std::memory_order_relaxed);
    if (phase == Phase::kDrain) break;
    if (phase == Phase::kMeasure && s_.opt.ops > 0 && s_.ops_left.fetch_sub(1) <= 0) break;
    const bool get = rng_.unit() < s_.opt.read_ratio;
    issue(c, get ? OpKind::kGet : OpKind::kSet, s_.keys.next(rng_), phase);
  }
  if (Status st = c.flush(); !st.ok()) return st;
  return arm(c);
}

void Worker::issue(Connection& c, OpKind op, std::uint64_t key, Phase phase) {
  key_ = s_.opt.key_prefix;
  char digits[24];
  key_.append(digits, std::to_chars(digits, digits + sizeof digits, key).ptr);
  const std::uint32_t opaque = c.next_opaque();
  if (op == OpKind::kGet) {
    encode_get(s_.opt.protocol, key_, opaque, c.out());
  } else {
    s_.codec.make(key, s_.issued[key].fetch_add(1), value_);
    encode_set(s_.opt.protocol, key_, value_, opaque, c.out());
  }
  c.pending().push_back({op, phase, opaque, key, now_ns()});
}

Status Worker::arm(Connection& c) {
  const bool want = c.has_unsent();
  if (want == c.out_armed) return Status::Ok();
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u);
  ev.data.ptr = &c;
  if (::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd(), &ev) != 0) {
    return Internal(std::string("epoll_ctl: ") + std::strerror(errno));
  }
  c.out_armed = want;
  return Status::Ok();
}

Status Worker::check_deadlines() {
  const std::uint64_t now = now_ns();
  const auto limit = static_cast<std::uint64_t>(s_.opt.timeout_s * 1e9);
  for (const auto& c : conns_) {
    if (!c->pending().empty() && now - c->pending().front().issued_ns > limit) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", s_.opt.timeout_s);
      return TimedOut(s_.opt.host + ":" + std::to_string(s_.opt.port) + ": no reply within " +
                      secs + " s (--timeout)");
    }
  }
  return Status::Ok();
}

}  // namespace farmem::kvload
