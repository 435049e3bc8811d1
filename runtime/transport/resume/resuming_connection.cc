#include "transport/resume/resuming_connection.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/log.h"
#include "common/mutex.h"
#include "common/thread_annotations.h"

namespace farmem::transport {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kBackoffFirst = std::chrono::milliseconds(10);
constexpr auto kBackoffMost = std::chrono::milliseconds(500);

/// The socket broke: the code a connection gives when it is no longer usable (see the
/// contract in transport.h).
bool broke(const Status& st) {
  return st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kTimedOut ||
         st.code() == StatusCode::kIoError;
}

/// Nothing listens at the address: the memserver is not there (tcp's ECONNREFUSED; verbs
/// words its reject by a non-memserver the same way).
bool refused(const Status& st) {
  return st.code() == StatusCode::kUnavailable &&
         st.message().find(std::strerror(ECONNREFUSED)) != std::string::npos;
}

class ResumingConnection final : public Connection {
 public:
  ResumingConnection(ConnectionFactory factory, ConnectOptions options,
                     std::unique_ptr<Connection> first, std::chrono::milliseconds heartbeat)
      : factory_(std::move(factory)),
        options_(std::move(options)),
        peer_(first->peer()),
        caps_(first->capabilities()),
        heartbeat_(heartbeat),
        inner_(std::move(first)) {
    set_ticket(inner_->ticket());
    if (heartbeat_.count() > 0) pinger_ = std::thread([this] { ping_loop(); });
  }
  ~ResumingConnection() override {
    if (pinger_.joinable()) {
      {
        MutexLock lock(stop_mu_);
        stop_ = true;
      }
      stop_cv_.notify_all();
      pinger_.join();
    }
  }

  const Capabilities& capabilities() const override { return caps_; }
  const std::string& peer() const override { return peer_; }

  Result<std::unique_ptr<MemoryRegistration>> register_memory(void* addr,
                                                              std::size_t length) override {
    // The factory's registrations outlive the connection that made them (see the header).
    const auto deadline = Clock::now() + options_.connect_timeout;
    FARMEM_ASSIGN_OR_RETURN(std::shared_ptr<Connection> conn, usable(deadline));
    return conn->register_memory(addr, length);
  }

  Status post(std::span<const Op> ops, Completion& done) override {
    const auto deadline = Clock::now() + options_.connect_timeout;
    FARMEM_ASSIGN_OR_RETURN(std::shared_ptr<Connection> conn, usable(deadline));
    Status st = post_rekeyed(*conn, ops, done);
    if (broke(st)) {
      FARMEM_ASSIGN_OR_RETURN(conn, reconnect(conn, deadline));
      st = post_rekeyed(*conn, ops, done);
    }
    if (!st.ok()) return st;
    MutexLock lock(mu_);
    in_flight_[&done] = InFlight{std::vector<Op>(ops.begin(), ops.end()), std::move(conn)};
    return Status::Ok();
  }

  Status wait(Completion& done, std::chrono::nanoseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    InFlight f;
    {
      MutexLock lock(mu_);
      auto it = in_flight_.find(&done);
      if (it == in_flight_.end()) return Internal(peer_ + ": wait() on a batch never posted");
      f = std::move(it->second);
      in_flight_.erase(it);
    }
    // Bounded by the deadline: every round waits, reconnects or gives up before it.
    for (;;) {
      const auto left = std::max(deadline - Clock::now(), Clock::duration::zero());
      Status st = f.conn->wait(done, left);
      if (!broke(st)) return st;
      if (Clock::now() >= deadline) return st;
      auto conn = reconnect(f.conn, deadline);
      if (!conn.ok()) return conn.status();
      f.conn = std::move(conn).value();
      // The batch is over on the old connection (wait returned): post it again, whole.
      if (Status again = post_rekeyed(*f.conn, f.ops, done); !again.ok()) {
        if (!broke(again)) return again;
        continue;  // broke at once: its wait reports it, and the loop reconnects
      }
      resent_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  Result<proto::Message> call(proto::Message request, std::chrono::nanoseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    FARMEM_ASSIGN_OR_RETURN(std::shared_ptr<Connection> conn, usable(deadline));
    const proto::MsgType type = request.type;
    std::uint64_t freed = 0;
    if (type == proto::MsgType::kFreeSlab) {
      if (auto f = request.as<proto::FreeSlab>(); f.ok()) freed = f->slab_id;
    }
    auto reply = conn->call(request, timeout);
    if (!reply.ok() && broke(reply.status()) && Clock::now() < deadline) {
      FARMEM_ASSIGN_OR_RETURN(conn, reconnect(conn, deadline));
      const auto left = std::max(deadline - Clock::now(), Clock::duration::zero());
      reply = conn->call(std::move(request), left);
    }
    if (reply.ok() && caps_.one_sided) note_grant(type, freed, *reply);
    return reply;
  }

 private:
  struct InFlight {
    std::vector<Op> ops;  ///< with the keys the caller gave (posts rewrite them)
    std::shared_ptr<Connection> conn;
  };
  /// A slab as it was granted to the caller, and the rkey it has now.
  struct Grant {
    std::uint64_t bytes = 0;
    std::uint32_t granted_rkey = 0;
    std::uint32_t rkey = 0;
  };

  /// Records slabs granted and freed (one-sided backends: their keys may change).
  void note_grant(proto::MsgType type, std::uint64_t freed, const proto::Message& reply) {
    MutexLock lock(mu_);
    if (type == proto::MsgType::kAllocSlab && reply.type == proto::MsgType::kSlabInfo) {
      if (auto info = reply.as<proto::SlabInfo>(); info.ok()) {
        grants_[info->addr] = Grant{info->bytes, info->rkey, info->rkey};
        slab_addr_[info->slab_id] = info->addr;
      }
    } else if (type == proto::MsgType::kFreeSlab && reply.type == proto::MsgType::kFreeOk) {
      if (auto it = slab_addr_.find(freed); it != slab_addr_.end()) {
        grants_.erase(it->second);
        slab_addr_.erase(it);
      }
    }
  }

  /// After a resume over a one-sided backend: the keys the session's slabs have now.
  Status learn_keys(Connection& conn, Clock::time_point deadline) {
    const auto left = std::max<Clock::duration>(deadline - Clock::now(), std::chrono::milliseconds(1));
    FARMEM_ASSIGN_OR_RETURN(auto slabs, list_slabs(conn, left));
    MutexLock lock(mu_);
    bool changed = false;
    for (const auto& s : slabs) {
      auto it = grants_.find(s.addr);
      if (it == grants_.end()) continue;  // leased by a call whose reply was lost
      it->second.rkey = s.rkey;
      changed |= s.rkey != it->second.granted_rkey;
    }
    rekeyed_ = rekeyed_ || changed;
    return Status::Ok();
  }

  /// Posts `ops` on `conn`, their rkeys rewritten to the slabs' keys now once a resume has
  /// changed them (the op's slab is found by address; a key that is not the one its slab
  /// was granted with is left alone, so the backend refuses it as before).
  Status post_rekeyed(Connection& conn, std::span<const Op> ops, Completion& done) {
    std::vector<Op> rekeyed;
    {
      MutexLock lock(mu_);
      if (!rekeyed_) return conn.post(ops, done);
      rekeyed.assign(ops.begin(), ops.end());
      for (Op& op : rekeyed) {
        auto it = grants_.upper_bound(op.remote_addr);
        if (it == grants_.begin()) continue;
        --it;
        const Grant& g = it->second;
        if (op.remote_addr - it->first < g.bytes && op.rkey == g.granted_rkey) op.rkey = g.rkey;
      }
    }
    return conn.post(rekeyed, done);
  }

  /// The current connection, or a new one when the last broke without being replaced.
  Result<std::shared_ptr<Connection>> usable(Clock::time_point deadline) {
    std::shared_ptr<Connection> conn;
    {
      MutexLock lock(mu_);
      if (!lost_.ok()) return lost_;
      conn = inner_;
    }
    if (conn) return conn;
    return reconnect(nullptr, deadline);
  }

  /// Replaces `broken` (unless another thread did already) by a connection that resumed the
  /// session; retries with backoff until `deadline`.
  Result<std::shared_ptr<Connection>> reconnect(const std::shared_ptr<Connection>& broken,
                                                Clock::time_point deadline)
      FARMEM_EXCLUDES(mu_) {
    MutexLock serial(reconnect_mu_);
    {
      MutexLock lock(mu_);
      if (!lost_.ok()) return lost_;
      if (inner_ && inner_ != broken) return inner_;  // someone else resumed it meanwhile
      inner_.reset();  // broken: the next caller reconnects too
    }
    if (options_.resume_window.count() > 0) {
      deadline = std::min(deadline, Clock::now() + options_.resume_window);
    }
    ConnectOptions o = options_;
    o.resume = ticket();
    auto backoff = kBackoffFirst;
    Status last = TimedOut(peer_ + ": could not reconnect and resume before the deadline");
    // Bounded by the deadline.
    while (Clock::now() < deadline) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      o.connect_timeout = std::max(std::chrono::milliseconds(1), std::min(options_.connect_timeout, left));
      o.control_timeout = o.connect_timeout;
      auto fresh = factory_(o);
      if (fresh.ok() && caps_.one_sided) {
        // The session's slabs were re-registered for the new connection: new keys.
        if (Status st = learn_keys(**fresh, deadline); !st.ok()) fresh = st;
      }
      if (fresh.ok()) {
        std::shared_ptr<Connection> conn = std::move(fresh).value();
        resumes_.fetch_add(1, std::memory_order_relaxed);
        log().info("{}: session {} resumed on a new connection", peer_, ticket().session_id);
        MutexLock lock(mu_);
        inner_ = conn;
        return conn;
      }
      last = fresh.status();
      if (refused(last) || last.code() == StatusCode::kNotFound ||
          last.code() == StatusCode::kPermissionDenied) {
        // Nobody listens (the memserver died), or it no longer has the session: its far
        // memory is gone, and trying again cannot bring it back.
        const Status gone = Unavailable(peer_ + ": session " + std::to_string(ticket().session_id) +
                                        " cannot be resumed: " + last.to_string());
        log().warn("{}", gone.to_string());
        MutexLock lock(mu_);
        lost_ = gone;
        return gone;
      }
      const auto nap = std::min<Clock::duration>(backoff, deadline - Clock::now());
      if (nap > Clock::duration::zero()) std::this_thread::sleep_for(nap);
      backoff = std::min(backoff * 2, kBackoffMost);
    }
    return last.code() == StatusCode::kTimedOut ? last : TimedOut(peer_ + ": " + last.to_string());
  }

  void ping_loop() {
    // Bounded: ends when the destructor sets stop_.
    UniqueLock lock(stop_mu_);
    while (!stop_) {
      lock.wait_for(stop_cv_, heartbeat_);
      if (stop_) break;
      lock.unlock();
      proto::Message ping;
      ping.type = proto::MsgType::kPing;
      // A memserver that does not answer within the op deadline broke the connection: the
      // call reconnects and resumes (or finds the session lost) before the next access.
      (void)call(std::move(ping), options_.control_timeout);
      lock.lock();
    }
  }

  const ConnectionFactory factory_;
  const ConnectOptions options_;
  const std::string peer_;
  const Capabilities caps_;
  const std::chrono::milliseconds heartbeat_;

  Mutex reconnect_mu_ FARMEM_ACQUIRED_BEFORE(mu_);  ///< one reconnection at a time
  Mutex mu_;
  std::shared_ptr<Connection> inner_ FARMEM_GUARDED_BY(mu_);  ///< null: broke, not replaced
  Status lost_ FARMEM_GUARDED_BY(mu_);                        ///< not ok: the session is gone
  std::unordered_map<Completion*, InFlight> in_flight_ FARMEM_GUARDED_BY(mu_);
  /// One-sided backends: the slabs granted through call(), by address, and by id (for
  /// FREE_SLAB); rekeyed_ once a resume gave any of them a new key.
  std::map<std::uint64_t, Grant> grants_ FARMEM_GUARDED_BY(mu_);
  std::unordered_map<std::uint64_t, std::uint64_t> slab_addr_ FARMEM_GUARDED_BY(mu_);
  bool rekeyed_ FARMEM_GUARDED_BY(mu_) = false;
  std::atomic<std::uint64_t> resumes_{0};
  std::atomic<std::uint64_t> resent_{0};

  Mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ FARMEM_GUARDED_BY(stop_mu_) = false;
  std::thread pinger_;  // last: starts once everything above exists
};

}  // namespace

Result<std::unique_ptr<Connection>> connect_resuming(ConnectionFactory factory,
                                                     const ConnectOptions& options,
                                                     std::chrono::milliseconds heartbeat) {
  FARMEM_ASSIGN_OR_RETURN(std::unique_ptr<Connection> first, factory(options));
  return std::unique_ptr<Connection>(
      new ResumingConnection(std::move(factory), options, std::move(first), heartbeat));
}

}  // namespace farmem::transport
