// The tcp backend: connect + HELLO, sending batches, and the leader/follower wait protocol.
// Receiving and reply dispatch live in tcp_receive.cc.
#include "transport/tcp/tcp_connection.h"

#include <poll.h>
#include <sys/stat.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "common/log.h"
#include "transport/tcp/tcp.h"

namespace farmem::transport {

namespace {

using net::Clock;

constexpr std::size_t kOpHeaderBytes = sizeof(proto::FrameHeader) + sizeof(proto::DataOp);
// HELLO travels before the connection object exists; its reply id is fixed, data ids follow.
constexpr std::uint64_t kHelloReqId = 1;
// A send that cannot move a single byte for this long means the memserver stopped reading
// (hung or wedged): the connection is declared broken instead of blocking post() forever.
constexpr auto kSendStallTimeout = std::chrono::seconds(30);
// While a send is blocked, how long one wait for send space (or replies) lasts before the
// thread re-checks whether it can take the leader role. Short: it bounds the extra latency
// of handing the reader role from a leaving waiter to a blocked sender.
constexpr auto kSendPollSlice = std::chrono::milliseconds(1);
// Followers re-check their state at least this often even without a notification, so a
// sleeping thread never depends on one wake-up alone.
constexpr auto kFollowerNap = std::chrono::milliseconds(100);
// Backstop on waiting for the leader to leave after the connection was shut down (it leaves
// within a poll slice; see quiesce_locked).
constexpr auto kQuiesceLimit = std::chrono::seconds(30);

Result<proto::Message> read_frame(net::Channel fd, net::Deadline deadline,
                                  const std::string& peer) {
  proto::FrameHeader h{};
  FARMEM_RETURN_IF_ERROR(net::read_full(fd, &h, sizeof h, deadline, peer));
  FARMEM_RETURN_IF_ERROR(proto::validate_header(h).with_context(peer));
  if (h.length > proto::kMaxControlPayload) {
    return ProtocolError(peer + ": handshake reply of " + std::to_string(h.length) + " bytes");
  }
  std::vector<std::byte> frame(sizeof h + h.length);
  std::memcpy(frame.data(), &h, sizeof h);
  FARMEM_RETURN_IF_ERROR(net::read_full(fd, frame.data() + sizeof h, h.length, deadline, peer));
  return proto::decode(frame);
}

Result<proto::HelloOk> say_hello(net::Channel fd, const ConnectOptions& options,
                                 const proto::Nonce& nonce, net::Deadline deadline,
                                 const std::string& peer) {
  const auto bytes = proto::encode(proto::make_hello(options.tenant, nonce, kHelloReqId));
  FARMEM_RETURN_IF_ERROR(net::write_full(fd, bytes.data(), bytes.size(), deadline, peer));
  FARMEM_ASSIGN_OR_RETURN(proto::Message reply, read_frame(fd, deadline, peer));
  if (reply.type == proto::MsgType::kError) return reply.error_status().with_context(peer);
  if (reply.type != proto::MsgType::kHelloOk) {
    return ProtocolError(peer + ": expected HELLO_OK, got " +
                         std::string(proto::to_string(reply.type)));
  }
  FARMEM_ASSIGN_OR_RETURN(proto::HelloOk ok, reply.as<proto::HelloOk>());
  log().debug("{}: session {}", peer, ok.session_id);
  return ok;
}

// A TLS handshake that got an answer which is not TLS: when it is a farmem frame (a plain
// memserver, or one that refused the connection before TLS could start), its error is the
// clearer one. `head` holds the bytes the handshake read; the rest of the frame is still
// in the socket.
Status explain_not_tls(Status tls_error, std::vector<std::byte> head, int fd,
                       net::Deadline deadline, const std::string& peer) {
  proto::FrameHeader h{};
  if (head.size() < sizeof h.magic || std::memcmp(head.data(), &proto::kMagic, sizeof h.magic) != 0) {
    return tls_error;
  }
  if (head.size() < sizeof h) {
    const std::size_t have = head.size();
    head.resize(sizeof h);
    if (!net::read_full(fd, head.data() + have, sizeof h - have, deadline, peer).ok()) return tls_error;
  }
  std::memcpy(&h, head.data(), sizeof h);
  if (!proto::validate_header(h).ok() || h.length > proto::kMaxControlPayload) return tls_error;
  const std::size_t total = sizeof h + h.length;
  if (head.size() < total) {
    const std::size_t have = head.size();
    head.resize(total);
    if (!net::read_full(fd, head.data() + have, total - have, deadline, peer).ok()) return tls_error;
  }
  auto reply = proto::decode({head.data(), total});
  if (!reply.ok() || reply->type != proto::MsgType::kError) return tls_error;
  const Status st = reply->error_status();
  return Status(st.code(), peer + ": the memserver answered without TLS: " + st.message());
}

// One client TLS context per configuration, made once: loading a trust store costs
// milliseconds, and a runtime connects to every memserver (and again on each resume). A
// changed file (a renewed certificate) makes a new one.
Result<std::shared_ptr<const net::TlsContext>> client_tls_context(const net::TlsClientConfig& c) {
  const auto stamp = [](const std::string& path) -> std::string {
    struct stat st{};
    if (path.empty() || ::stat(path.c_str(), &st) != 0) return path + "|-";
    return path + "|" + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec) + "|" + std::to_string(st.st_size);
  };
  const std::string key = stamp(c.ca_file) + "\n" + stamp(c.cert_file) + "\n" + stamp(c.key_file);
  static Mutex mu;
  static std::map<std::string, std::shared_ptr<const net::TlsContext>> cache;
  MutexLock lock(mu);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  FARMEM_ASSIGN_OR_RETURN(auto ctx, net::TlsContext::for_client(c));
  if (cache.size() >= 16) cache.clear();  // configurations come and go in tests only
  cache.emplace(key, ctx);
  return ctx;
}

}  // namespace

Result<std::unique_ptr<Connection>> connect_tcp(const Endpoint& endpoint,
                                                const ConnectOptions& options) {
  FARMEM_RETURN_IF_ERROR(validate_credentials(options));
  const bool use_tls = endpoint.scheme == "tls";
  const std::string peer = endpoint.to_string();
  const auto deadline = net::deadline_after(options.connect_timeout);
  FARMEM_ASSIGN_OR_RETURN(net::UniqueFd fd,
                          net::connect_to(endpoint.host, endpoint.port, deadline, peer));
  std::unique_ptr<net::TlsSession> tls;
  if (use_tls) {
    FARMEM_ASSIGN_OR_RETURN(auto ctx, client_tls_context(options.tls));
    std::vector<std::byte> head;
    auto s = net::TlsSession::connect(*ctx, fd.get(), endpoint.host, deadline, peer, &head);
    if (!s.ok()) return explain_not_tls(s.status(), std::move(head), fd.get(), deadline, peer);
    tls = std::move(s).value();
    log().debug("{}: {}", peer, tls->description());
  }
  FARMEM_ASSIGN_OR_RETURN(proto::Nonce nonce, proto::random_nonce());
  FARMEM_ASSIGN_OR_RETURN(proto::HelloOk ok,
                          say_hello({fd.get(), tls.get()}, options, nonce, deadline, peer));
  std::unique_ptr<Connection> conn(
      new TcpConnection(std::move(fd), std::move(tls), peer, kHelloReqId + 1));
  FARMEM_RETURN_IF_ERROR(finish_handshake(*conn, options, ok, nonce));
  return conn;
}

TcpConnection::TcpConnection(net::UniqueFd fd, std::unique_ptr<net::TlsSession> tls,
                             std::string peer, std::uint64_t first_req_id)
    : fd_(std::move(fd)),
      tls_(std::move(tls)),
      peer_(std::move(peer)),
      caps_{tls_ ? "tls" : "tcp", false, proto::kMaxDataPayload, kTcpMaxBatchOps, false},
      next_id_(first_req_id) {
  // Sized once: receive segments point into slot_hdrs_, so it must never reallocate.
  slot_hdrs_.resize(kMaxPredicted);
  plan_.reserve(kMaxPredicted);
  rx_iov_.reserve(kMaxRxSegments);
}

TcpConnection::~TcpConnection() {
  MutexLock send_lock(send_mu_);
  MutexLock lock(mu_);
  if (!broken_) {
    // BYE: a clean end, so the memserver closes the session now instead of keeping it for a
    // resume (its --lease-grace). Best effort: without it the grace runs out.
    const auto bye = proto::encode(proto::Message{proto::MsgType::kBye, next_id_++, StatusCode::kOk, {}});
    const iovec iov{const_cast<std::byte*>(bye.data()), bye.size()};
    (void)net::send_some(channel(), {&iov, 1}, false, peer_);
    if (tls_) tls_->notify_close();
    broken_ = true;
    broken_status_ = Unavailable(peer_ + ": connection closed by this client");
    ::shutdown(fd_.get(), SHUT_RDWR);
  }
  // Ops still pending when the connection dies are failed, not leaked.
  if (!leader_) fail_all_locked();
}

Result<std::unique_ptr<MemoryRegistration>> TcpConnection::register_memory(void* addr,
                                                                           std::size_t length) {
  // The socket reads and writes user memory directly; there is nothing to pin or key.
  return plain_registration(addr, length);
}

// ---------------------------------------------------------------------------------------
// Sending

void TcpConnection::encode_batch_locked(std::span<const Op> ops, std::uint64_t first_id) {
  tx_hdrs_.resize(ops.size() * kOpHeaderBytes);
  tx_iov_.clear();
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const bool write = op.kind == OpKind::kWrite;
    std::byte* h = tx_hdrs_.data() + i * kOpHeaderBytes;
    const auto fh = proto::make_header(write ? proto::MsgType::kWrite : proto::MsgType::kRead,
                                       first_id + i,
                                       sizeof(proto::DataOp) + (write ? op.length : 0));
    const proto::DataOp dop{op.remote_addr, op.rkey, op.length};
    std::memcpy(h, &fh, sizeof fh);
    std::memcpy(h + sizeof fh, &dop, sizeof dop);
    // Headers of consecutive reads are contiguous in tx_hdrs_: one iovec covers them all.
    if (!tx_iov_.empty() && static_cast<std::byte*>(tx_iov_.back().iov_base) +
                                    tx_iov_.back().iov_len == h) {
      tx_iov_.back().iov_len += kOpHeaderBytes;
    } else {
      tx_iov_.push_back({h, kOpHeaderBytes});
    }
    if (write) tx_iov_.push_back({op.local, op.length});
  }
}

Status TcpConnection::post(std::span<const Op> ops, Completion& done) {
  FARMEM_RETURN_IF_ERROR(validate_ops(ops, caps_));
  MutexLock send_lock(send_mu_);
  encode_batch_locked(ops, next_id_);
  {
    MutexLock lock(mu_);
    if (broken_) return broken_status_;
    done.arm(static_cast<std::uint32_t>(ops.size()));
    for (std::size_t i = 0; i < ops.size(); ++i) {
      const Op& op = ops[i];
      ring_.push(Pending{next_id_ + i, op.kind == OpKind::kRead ? Kind::kRead : Kind::kWrite,
                         op.length, static_cast<std::byte*>(op.local), &done, nullptr});
    }
  }
  next_id_ += ops.size();
  const Status st = send_all_locked(tx_iov_);
  if (!st.ok()) {
    // Part of the batch may be on the wire: report through the completion, not the return.
    MutexLock lock(mu_);
    break_locked(st, /*as_leader=*/false);
  }
  return Status::Ok();
}

Status TcpConnection::send_all_locked(std::span<iovec> iov) {
  auto last_progress = Clock::now();
  // Bounded: every round sends bytes, or waits at most kSendPollSlice, and the loop gives up
  // after kSendStallTimeout without progress.
  while (!iov.empty()) {
    FARMEM_ASSIGN_OR_RETURN(net::IoResult r, net::send_some(channel(), iov, false, peer_));
    if (r.bytes > 0) {
      iov = net::advance_iov(iov, r.bytes);
      last_progress = Clock::now();
      continue;
    }
    if (Clock::now() - last_progress > kSendStallTimeout) {
      return TimedOut(peer_ + ": send stalled for " +
                      std::to_string(kSendStallTimeout.count()) + " s");
    }
    FARMEM_RETURN_IF_ERROR(progress_while_send_blocked());
  }
  return Status::Ok();
}

Status TcpConnection::progress_while_send_blocked() {
  bool lead = false;
  {
    MutexLock lock(mu_);
    if (broken_) return broken_status_;
    lead = try_lead_locked();
  }
  const auto slice = Clock::now() + kSendPollSlice;
  if (!lead) {
    // Someone else is reading replies; just wait for send space.
    auto ev = net::wait_ready(channel(), POLLOUT, slice, peer_);
    return ev.ok() || ev.status().code() == StatusCode::kTimedOut ? Status::Ok() : ev.status();
  }
  Status st;
  auto ev = net::wait_ready(channel(), POLLIN | POLLOUT, slice, peer_);
  if (!ev.ok()) {
    if (ev.status().code() != StatusCode::kTimedOut) st = ev.status();
  } else if ((*ev & (POLLIN | POLLERR | POLLHUP)) != 0) {
    st = pump_as_leader(Clock::now(), /*poll_first=*/false);
  }
  MutexLock lock(mu_);
  stop_leading_locked(st);
  return broken_ ? broken_status_ : Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Leader/follower

bool TcpConnection::try_lead_locked() {
  if (leader_) return false;
  leader_ = true;
  rx_hot_ = false;
  return true;
}

void TcpConnection::stop_leading_locked(const Status& st) {
  if (!st.ok() && st.code() != StatusCode::kTimedOut) break_locked(st, /*as_leader=*/true);
  if (broken_) fail_all_locked();
  leader_ = false;
  cv_.notify_all();
}

Status TcpConnection::lead_until(Completion& done, net::Deadline deadline) {
  Status st;
  // Bounded by the deadline: each pump moves bytes, or waits at most until the deadline.
  while (!done.done() && st.ok()) {
    st = pump_as_leader(deadline, /*poll_first=*/!rx_hot_);
  }
  return st;
}

Status TcpConnection::wait(Completion& done, std::chrono::nanoseconds timeout) {
  const auto deadline = net::deadline_after(timeout);
  UniqueLock lock(mu_);
  // Bounded by the deadline: each round completes, times out, leads until done/deadline, or
  // sleeps at most kFollowerNap.
  while (!done.done()) {
    if (Clock::now() >= deadline) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
      const Status why = TimedOut(peer_ + ": no reply within " + std::to_string(ms) + " ms");
      break_locked(why, /*as_leader=*/false);
      quiesce_locked(lock, done);
      return why;
    }
    if (try_lead_locked()) {
      lock.unlock();
      const Status st = lead_until(done, deadline);
      lock.lock();
      stop_leading_locked(st);
      continue;
    }
    ++waiters_;
    lock.wait_until(cv_, std::min(deadline, Clock::now() + kFollowerNap));
    --waiters_;
  }
  return done.status();
}

void TcpConnection::quiesce_locked(UniqueLock& lock, Completion& done) {
  // The connection is broken; a leader still receiving may write into this batch's buffers
  // and will finish `done` once its receive returns (shutdown() wakes it at once). Only then
  // may the caller free either. Bounded by kQuiesceLimit as a backstop: a leader leaves
  // within one poll slice of shutdown().
  const auto limit = Clock::now() + kQuiesceLimit;
  while (!done.done() && leader_ && Clock::now() < limit) {
    lock.wait_until(cv_, std::min(limit, Clock::now() + kFollowerNap));
  }
  if (!done.done() && !leader_) fail_all_locked();
  if (!done.done()) {
    log().critical("{}: a receive did not end {} s after shutdown; a timed-out batch may "
                   "still be written", peer_, kQuiesceLimit.count());
  }
}

void TcpConnection::break_locked(const Status& why, bool as_leader) {
  if (!broken_) {
    broken_ = true;
    std::string_view reason = why.message();
    // Socket errors already name the peer; say it once.
    if (reason.starts_with(peer_ + ": ")) reason.remove_prefix(peer_.size() + 2);
    broken_status_ = Unavailable(peer_ + ": connection lost: " + std::string(reason));
    log().warn("{}", broken_status_.message());
    // Wakes a leader blocked in poll/recv; the fd itself stays open until destruction.
    ::shutdown(fd_.get(), SHUT_RDWR);
  }
  // Only the leader may retire entries while a receive may target their buffers.
  if (as_leader || !leader_) fail_all_locked();
}

void TcpConnection::fail_all_locked() {
  for (Pending& e : ring_.take_all()) {
    if (e.done != nullptr) e.done->finish_part(broken_status_);
  }
  cur_ = RxFrame{};
  cv_.notify_all();
}

// ---------------------------------------------------------------------------------------
// Control calls

Result<proto::Message> TcpConnection::call(proto::Message request,
                                           std::chrono::nanoseconds timeout) {
  if (request.payload.size() > proto::kMaxControlPayload) {
    return InvalidArgument("control payload of " + std::to_string(request.payload.size()) +
                           " bytes exceeds " + std::to_string(proto::kMaxControlPayload));
  }
  auto slot = std::make_shared<ControlSlot>();
  {
    MutexLock send_lock(send_mu_);
    request.req_id = next_id_;
    auto bytes = proto::encode(request);
    {
      MutexLock lock(mu_);
      if (broken_) return broken_status_;
      slot->done.arm(1);
      ring_.push(Pending{next_id_, Kind::kControl, 0, nullptr, &slot->done, slot});
    }
    ++next_id_;
    iovec iov{bytes.data(), bytes.size()};
    const Status st = send_all_locked({&iov, 1});
    if (!st.ok()) {
      MutexLock lock(mu_);
      break_locked(st, /*as_leader=*/false);
    }
  }
  FARMEM_RETURN_IF_ERROR(wait(slot->done, timeout));
  if (slot->reply.type == proto::MsgType::kError) {
    return slot->reply.error_status().with_context(peer_);
  }
  return std::move(slot->reply);
}

}  // namespace farmem::transport
