#include "memserver/tcp_session.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cstring>

#include "common/dcheck.h"
#include "common/log.h"

namespace farmem::memserver {

namespace {

using proto::FrameHeader;
using proto::MsgType;

constexpr std::size_t kHeaderBytes = sizeof(FrameHeader);
constexpr std::size_t kDataOpFrame = kHeaderBytes + sizeof(proto::DataOp);
// Request read-ahead: 64 KiB holds ~1600 pipelined READ requests (one recv for a large
// batch) and any whole control frame, while staying small per client.
constexpr std::size_t kRxBufferBytes = 64 << 10;
static_assert(kRxBufferBytes >= kHeaderBytes + proto::kMaxControlPayload,
              "a whole control frame must fit the receive buffer");
// Reply pieces queued before a forced flush: IOV_MAX, the most one writev takes.
constexpr std::size_t kMaxTxPieces = 1024;
// A session closed by the listener (a timeout) gets its kError only if it can be written this
// fast: the client may have stopped reading, and a worker must not wait on it.
constexpr auto kFarewellTimeout = std::chrono::milliseconds(100);
// A session that ends gets this long to take its last replies (often the kError that says
// why): its worker waits meanwhile, so not the whole kReplyStallTimeout, which a client could
// otherwise claim by asking for large READs and then sending garbage without reading.
constexpr auto kLastRepliesTimeout = std::chrono::seconds(1);
// A client refused in the TLS handshake gets this long to read the alert (see start_tls).
constexpr auto kFarewellAfterTlsRefusal = std::chrono::milliseconds(500);
// The first byte of a TLS connection (a handshake record's content type).
constexpr std::uint8_t kTlsHandshakeRecord = 0x16;

bool is_control(MsgType t) {
  return t == MsgType::kHello || t == MsgType::kAllocSlab || t == MsgType::kFreeSlab ||
         t == MsgType::kStats || t == MsgType::kSetLabel || t == MsgType::kListSessions ||
         t == MsgType::kAuth || t == MsgType::kResume || t == MsgType::kPing ||
         t == MsgType::kBye || t == MsgType::kListSlabs;
}

}  // namespace

TcpSession::TcpSession(Core& core, int fd, std::string peer, const net::TlsContext* tls)
    : core_(core), fd_(fd), peer_(std::move(peer)), tls_context_(tls) {}

TcpSession::~TcpSession() {
  if (session_) core_.detach_session(*session_, attachment_);
  if (tls_) tls_->notify_close();
}

void TcpSession::ensure_buffers() {
  if (!rx_) {
    rx_ = std::make_unique_for_overwrite<std::byte[]>(kRxBufferBytes);
    rx_cap_ = kRxBufferBytes;
  }
  pieces_.reserve(kMaxTxPieces);
  tx_iov_.reserve(kMaxTxPieces);
}

void TcpSession::trim() {
  FARMEM_DCHECK(!mid_frame() && avail() == 0 && pieces_.empty() && !wants_output());
  if (mid_frame() || avail() != 0 || !pieces_.empty() || wants_output()) return;
  rx_.reset();
  rx_cap_ = 0;
  rx_begin_ = rx_end_ = 0;
  std::vector<Piece>().swap(pieces_);
  std::vector<std::byte>().swap(tx_bytes_);
  std::vector<iovec>().swap(tx_iov_);
  if (tls_) tls_->trim();
}

Status TcpSession::open() {
  ensure_buffers();  // not before: a connection that never speaks costs no buffer
  const Status st = handshake();
  if (!st.ok()) {
    finish(st);
    return st;
  }
  begin_frame();
  return st;
}

// A frame is done: the next one started when its first bytes arrived (already buffered: by
// the last receive), or starts with the next receive.
void TcpSession::begin_frame() { frame_start_ = avail() > 0 ? last_input_ : kNever; }

TcpSession::Outcome TcpSession::serve(const Turn& turn) {
  FARMEM_DCHECK(session_ != nullptr);
  ensure_buffers();
  parked_ = false;
  serving_ = true;
  linger_ = turn.linger;
  turn_end_ = net::deadline_after(turn.max_time);
  Status st = flush();  // the replies a parked turn left, first
  if (st.ok() && body_) {
    st = continue_body();
    if (st.ok()) begin_frame();
  }
  std::size_t frames = 0;
  // Bounded by the turn: at most max_frames frames, and no new frame after turn_end_.
  while (st.ok()) {
    if (frames >= turn.max_frames || net::Clock::now() >= turn_end_) {
      st = flush();
      if (st.ok()) {
        serving_ = false;
        return Outcome::kYield;
      }
      break;
    }
    st = serve_one();
    if (st.ok()) begin_frame();
    ++frames;
  }
  serving_ = false;
  if (parked_) return Outcome::kParked;
  finish(st);
  return Outcome::kEnded;
}

void TcpSession::close_for(const Status& why) {
  FARMEM_DCHECK(!serving_);
  if (wants_output() || !pieces_.empty()) {
    // Replies are half sent: a kError now would land inside one. Just close.
    log().debug("{}: closed: {} (replies pending)", peer_, why.to_string());
    if (session_) {
      core_.detach_session(*session_, attachment_);  // kept for the lease grace
      session_.reset();
    }
    return;
  }
  std::uint64_t req_id = 0;
  if (body_) {
    req_id = body_->h.req_id;
  } else if (avail() >= kHeaderBytes) {
    FrameHeader h;
    std::memcpy(&h, peek(), sizeof h);
    req_id = h.req_id;
  }
  // Not queue_error(): the listener counts these and logs them at a bounded rate.
  queue_message(proto::Message::error(why.code(), why.message(), req_id));
  const Status st = flush_by(net::deadline_after(kFarewellTimeout));
  log().debug("{}: closed: {} (kError {})", peer_, why.to_string(),
              st.ok() ? "sent" : "not sent: " + st.to_string());
  if (session_) {
    core_.detach_session(*session_, attachment_);  // kept for the lease grace
    session_.reset();
  }
}

// The end of a session: delivers what is queued (often the kError that explains why it
// ends) and returns its slabs.
void TcpSession::finish(const Status& st) {
  const Status last = flush_by(net::deadline_after(kLastRepliesTimeout));
  if (eof_ && st.code() == StatusCode::kUnavailable) {
    log().debug("{}: disconnected", peer_);
  } else {
    log().info("{}: session ends: {}", peer_, st.to_string());
  }
  if (!last.ok()) log().debug("{}: final flush: {}", peer_, last.to_string());
  if (session_) {
    // Kept for the lease grace: the client may come back and RESUME it.
    core_.detach_session(*session_, attachment_);
    session_.reset();
  }
}

Status TcpSession::handshake() {
  // TLS (when configured), HELLO, then (when the memserver has secrets) AUTH: all within one
  // deadline, so a client that connects and says nothing, or never answers the challenge,
  // does not hold a thread.
  const auto deadline = net::deadline_after(kHelloTimeout);
  if (tls_context_ != nullptr) FARMEM_RETURN_IF_ERROR(start_tls(deadline));
  FARMEM_RETURN_IF_ERROR(need(nullptr, kHeaderBytes, deadline));
  if (tls_context_ == nullptr && static_cast<std::uint8_t>(*peek()) == kTlsHandshakeRecord) {
    // Told in farmem's own framing, which the client's TLS code reads back for its error.
    const Status st = ProtocolError(
        "this memserver serves plain tcp:// (no --tls-cert); the client started TLS");
    queue_error(0, st);
    return st;
  }
  FrameHeader h;
  std::memcpy(&h, peek(), sizeof h);
  if (Status st = proto::check_hello_header(h); !st.ok()) {
    queue_error(h.req_id, st);
    return st;
  }
  FARMEM_RETURN_IF_ERROR(need(&h, kHeaderBytes + h.length, deadline));
  auto hello = proto::parse_hello(h.version, {peek() + kHeaderBytes, h.length});
  if (!hello.ok()) {
    consume(kHeaderBytes + h.length);
    queue_error(h.req_id, hello.status());
    return hello.status();
  }
  auto session = core_.open_session(*hello, peer_);
  consume(kHeaderBytes + h.length);
  if (!session.ok()) {
    queue_error(h.req_id, session.status(), /*count=*/false);  // the Core counted it
    return session.status();
  }
  session_ = std::move(session).value();
  attachment_ = session_->attachment();
  auto reply = proto::Message::of(MsgType::kHelloOk, core_.hello_reply(*session_));
  reply.req_id = h.req_id;
  queue_message(reply);
  if (session_->authenticated()) return Status::Ok();  // --insecure

  FARMEM_RETURN_IF_ERROR(need(nullptr, kHeaderBytes, deadline));  // flushes HELLO_OK first
  std::memcpy(&h, peek(), sizeof h);
  Status st = proto::validate_header(h);
  if (st.ok() && (static_cast<MsgType>(h.type) != MsgType::kAuth ||
                  h.length != sizeof(proto::AuthProof))) {
    st = PermissionDenied("expected AUTH (" + std::to_string(sizeof(proto::AuthProof)) +
                          " bytes) after HELLO_OK, got " +
                          std::string(proto::to_string(MsgType(h.type))) + " of " +
                          std::to_string(h.length) + " bytes");
  }
  if (!st.ok()) {
    queue_error(h.req_id, st);
    return st;
  }
  FARMEM_RETURN_IF_ERROR(need(&h, kHeaderBytes + h.length, deadline));
  auto auth = proto::decode({peek(), kHeaderBytes + h.length});
  consume(kHeaderBytes + h.length);
  if (!auth.ok()) {
    queue_error(h.req_id, auth.status());
    return auth.status();
  }
  const proto::Message answer = core_.handle(*session_, *auth);  // the Core counts refusals
  queue_message(answer);
  if (answer.type == MsgType::kError) return answer.error_status();
  return Status::Ok();
}

// The TLS handshake. A farmem client that speaks plain TCP to this TLS listener is told so
// in its own protocol (one kError frame in clear, which says nothing secret) instead of
// failing on bytes it cannot read.
Status TcpSession::start_tls(net::Deadline deadline) {
  FARMEM_RETURN_IF_ERROR(net::wait_ready(fd_, POLLIN, deadline, peer_).status());
  std::uint8_t first = 0;
  const ssize_t n = ::recv(fd_, &first, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) {
    eof_ = true;
    return Unavailable(peer_ + ": closed by the client");
  }
  if (n == 1 && first == static_cast<std::uint8_t>(proto::kMagic & 0xff)) {
    const Status st = PermissionDenied(
        "this memserver accepts TLS only: connect with a tls:// URL (and its CA)");
    queue_error(0, st);
    return st;
  }
  if (n == 1 && first != kTlsHandshakeRecord) {
    core_.count_error();
    return ProtocolError(peer_ + ": sent neither TLS nor farmem's HELLO");
  }
  auto tls = net::TlsSession::accept(*tls_context_, fd_, deadline, peer_);
  if (!tls.ok()) {
    core_.count_error();
    log().warn("{}: {}", peer_, tls.status().to_string());
    // In TLS 1.3 the client finishes its handshake before this side has judged its
    // certificate, and sends HELLO at once: closing now would reset the connection and
    // could destroy the alert that says why. Read (and drop) what the client sends until it
    // closes, for a short while, so that the alert reaches it.
    ::shutdown(fd_, SHUT_WR);
    net::drain(fd_, std::min(deadline, net::deadline_after(kFarewellAfterTlsRefusal)));
    eof_ = true;
    return tls.status();
  }
  tls_ = std::move(tls).value();
  log().debug("{}: {}", peer_, tls_->description());
  return Status::Ok();
}

Status TcpSession::serve_one() {
  FARMEM_RETURN_IF_ERROR(need(nullptr, kHeaderBytes, net::kNoDeadline));
  FrameHeader h;
  std::memcpy(&h, peek(), sizeof h);
  if (Status v = proto::validate_header(h); !v.ok()) {
    // Bad magic, wrong version or an oversized frame: the stream cannot be resynchronized.
    queue_error(h.req_id, v);
    return v;
  }
  const auto type = static_cast<MsgType>(h.type);
  if (type == MsgType::kRead) return serve_read(h);
  if (type == MsgType::kWrite) return serve_write(h);
  if (is_control(type)) return serve_control(h);
  return serve_unknown(h);
}

Status TcpSession::serve_read(const FrameHeader& h) {
  if (h.length != sizeof(proto::DataOp)) {
    consume(kHeaderBytes);
    return reject_body(h, kHeaderBytes, h.length,
                       ProtocolError("READ frame of " + std::to_string(h.length) +
                                                  " bytes; it carries a 16-byte DataOp"));
  }
  FARMEM_RETURN_IF_ERROR(need(&h, kDataOpFrame, net::kNoDeadline));
  proto::DataOp op;
  std::memcpy(&op, peek() + kHeaderBytes, sizeof op);
  consume(kDataOpFrame);
  if (op.length == 0 || op.length > proto::kMaxDataPayload) {
    queue_error(h.req_id, InvalidArgument("READ of " + std::to_string(op.length) +
                                          " bytes; must be 1.." +
                                          std::to_string(proto::kMaxDataPayload)));
    return Status::Ok();
  }
  const std::byte* src = nullptr;
  const Status st = session_->access_as(attachment_, op.addr, op.rkey, op.length,
                                        [&](std::byte* p) { src = p; });
  if (!st.ok()) {
    queue_error(h.req_id, st);
    return Status::Ok();
  }
  core_.count_bytes_served(op.length);
  queue_header(MsgType::kReadData, h.req_id, op.length);
  queue_slab(src, op.length);
  return pieces_.size() + 2 > kMaxTxPieces ? flush() : Status::Ok();
}

Status TcpSession::serve_write(const FrameHeader& h) {
  if (h.length < sizeof(proto::DataOp)) {
    consume(kHeaderBytes);
    return reject_body(h, kHeaderBytes, h.length,
                       ProtocolError("WRITE frame of " + std::to_string(h.length) +
                                                  " bytes is shorter than its DataOp"));
  }
  FARMEM_RETURN_IF_ERROR(need(&h, kDataOpFrame, net::kNoDeadline));
  proto::DataOp op;
  std::memcpy(&op, peek() + kHeaderBytes, sizeof op);
  consume(kDataOpFrame);
  const std::size_t payload = h.length - sizeof(proto::DataOp);
  if (op.length != payload || payload == 0) {
    return reject_body(h, kDataOpFrame, payload,
                       ProtocolError("WRITE announces " + std::to_string(op.length) +
                                     " bytes but carries " + std::to_string(payload)));
  }
  body_ = Body{h, kDataOpFrame, op.addr, op.rkey, payload, 0, std::nullopt};
  return continue_body();
}

// Receives (the rest of) body_ into slab memory, or skips it and answers its error. May
// park with part of it received; the next turn starts here again.
Status TcpSession::continue_body() {
  FARMEM_DCHECK(body_.has_value());
  Body& b = *body_;
  // Before the payload overwrites slab bytes that queued READ replies still have to send. A
  // flush that parks leaves body_ as it is: the next turn comes back here.
  if (!b.reject && b.done == 0 && overlaps_queued_reads(b.addr, b.total)) {
    FARMEM_RETURN_IF_ERROR(flush());
  }
  if (!b.reject) {
    Status rx;
    // Receiving under the session's shared lock is safe: only this thread frees its slabs.
    // The slab cannot go while the session is parked mid-body either (same thread).
    const Status st = session_->access_as(attachment_, b.addr + b.done, b.rkey, b.total - b.done,
                                          [&](std::byte* dst) { rx = receive_body(dst); });
    if (st.ok()) {
      FARMEM_RETURN_IF_ERROR(rx);
      core_.count_bytes_served(b.total);
      const std::uint64_t req_id = b.h.req_id;
      body_.reset();
      queue_header(MsgType::kWriteOk, req_id, 0);
      return pieces_.size() + 1 > kMaxTxPieces ? flush() : Status::Ok();
    }
    b.reject = st;
  }
  FARMEM_RETURN_IF_ERROR(skip_body());
  const std::uint64_t req_id = b.h.req_id;
  const Status why = *b.reject;
  body_.reset();
  queue_error(req_id, why);
  return Status::Ok();
}

Status TcpSession::serve_control(const FrameHeader& h) {
  // Control requests may free slabs that queued READ replies point into.
  FARMEM_RETURN_IF_ERROR(flush());
  FARMEM_RETURN_IF_ERROR(need(&h, kHeaderBytes + h.length, net::kNoDeadline));
  auto request = proto::decode({peek(), kHeaderBytes + h.length});
  consume(kHeaderBytes + h.length);
  if (!request.ok()) {
    queue_error(h.req_id, request.status());
    return Status::Ok();
  }
  if (request->type == MsgType::kResume) return resume(*request);
  if (request->type == MsgType::kBye) {
    // A clean end: no grace to wait out.
    if (session_->attachment() == attachment_) core_.close_session(*session_);
    session_.reset();
    eof_ = true;
    return Unavailable(peer_ + ": the client said goodbye");
  }
  if (session_->attachment() != attachment_) {
    // Another connection RESUMEd this session: this one may do nothing more.
    const Status gone = Unavailable("session taken over by another connection");
    queue_error(h.req_id, gone);
    return gone;
  }
  queue_message(core_.handle(*session_, *request));  // the Core counts its own errors
  return Status::Ok();
}

Status TcpSession::resume(const proto::Message& request) {
  auto body = request.as<proto::ResumeRequest>();
  if (!body.ok()) {
    queue_error(request.req_id, body.status());
    return Status::Ok();
  }
  auto old = core_.resume_session(*session_, *body);
  if (!old.ok()) {
    queue_error(request.req_id, old.status());
    return Status::Ok();
  }
  // resume_session closed the session this connection opened; it serves the old one now.
  session_ = std::move(old).value();
  attachment_ = session_->attachment();
  const proto::ResumeOk ok{session_->id(), static_cast<std::uint32_t>(session_->slab_count()), 0};
  auto reply = proto::Message::of(MsgType::kResumeOk, ok);
  reply.req_id = request.req_id;
  queue_message(reply);
  return Status::Ok();
}

Status TcpSession::serve_unknown(const FrameHeader& h) {
  const auto type = static_cast<MsgType>(h.type);
  const std::string name = proto::to_string(type) == "UNKNOWN"
                               ? "unknown message type " + std::to_string(h.type)
                               : std::string(proto::to_string(type)) + " is not a request";
  consume(kHeaderBytes);
  return reject_body(h, kHeaderBytes, h.length, ProtocolError(name));
}

// Skips the rest of a frame (its first `prefix` bytes already consumed) that the session
// will not act on and answers with `why`; the stream stays in sync, so the session goes on.
Status TcpSession::reject_body(const FrameHeader& h, std::size_t prefix, std::size_t body,
                               const Status& why) {
  body_ = Body{h, prefix, 0, 0, body, 0, why};
  return continue_body();
}

}  // namespace farmem::memserver
