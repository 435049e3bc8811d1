#include "memserver/tcp_session.h"

#include <poll.h>

#include <algorithm>
#include <cstring>

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
// A client that connects must say HELLO promptly; a silent one must not pin a thread.
constexpr auto kHelloTimeout = std::chrono::seconds(10);
// A client that stops reading its replies for this long is dropped rather than holding a
// server thread forever.
constexpr auto kReplyStallTimeout = std::chrono::seconds(30);

bool is_control(MsgType t) {
  return t == MsgType::kHello || t == MsgType::kAllocSlab || t == MsgType::kFreeSlab ||
         t == MsgType::kStats || t == MsgType::kSetLabel || t == MsgType::kListSessions ||
         t == MsgType::kAuth || t == MsgType::kResume || t == MsgType::kPing ||
         t == MsgType::kBye;
}

}  // namespace

TcpSession::TcpSession(Core& core, int fd, std::string peer)
    : core_(core), fd_(fd), peer_(std::move(peer)), rx_(kRxBufferBytes) {
  pieces_.reserve(kMaxTxPieces);
  tx_iov_.reserve(kMaxTxPieces);
}

TcpSession::~TcpSession() {
  if (session_) core_.detach_session(*session_, attachment_);
}

void TcpSession::run() {
  Status st = handshake();
  // Bounded by the client: every round consumes a frame or ends the session.
  while (st.ok()) st = serve_one();
  // Deliver what is queued (often the kError that explains why the session ends).
  const Status last = flush();
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
  // HELLO, then (when the memserver has secrets) AUTH: both within one deadline, so a client
  // that connects and says nothing, or never answers the challenge, does not hold a thread.
  const auto deadline = net::deadline_after(kHelloTimeout);
  FARMEM_RETURN_IF_ERROR(need(nullptr, kHeaderBytes, deadline));
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
    return reject_body(h, h.length, ProtocolError("READ frame of " + std::to_string(h.length) +
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
    return reject_body(h, h.length, ProtocolError("WRITE frame of " + std::to_string(h.length) +
                                                  " bytes is shorter than its DataOp"));
  }
  FARMEM_RETURN_IF_ERROR(need(&h, kDataOpFrame, net::kNoDeadline));
  proto::DataOp op;
  std::memcpy(&op, peek() + kHeaderBytes, sizeof op);
  consume(kDataOpFrame);
  const std::size_t payload = h.length - sizeof(proto::DataOp);
  if (op.length != payload || payload == 0) {
    return reject_body(h, payload, ProtocolError("WRITE announces " + std::to_string(op.length) +
                                                 " bytes but carries " + std::to_string(payload)));
  }
  if (overlaps_queued_reads(op.addr, payload)) FARMEM_RETURN_IF_ERROR(flush());
  Status rx;
  // Receiving under the session's shared lock is safe: only this thread frees its slabs.
  const Status st = session_->access_as(attachment_, op.addr, op.rkey, payload, [&](std::byte* dst) {
    rx = receive_into(h, dst, payload);
  });
  if (!st.ok()) return reject_body(h, payload, st);
  FARMEM_RETURN_IF_ERROR(rx);
  core_.count_bytes_served(payload);
  queue_header(MsgType::kWriteOk, h.req_id, 0);
  return pieces_.size() + 1 > kMaxTxPieces ? flush() : Status::Ok();
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
  return reject_body(h, h.length, ProtocolError(name));
}

// Skips the rest of a frame (its header already consumed) that the session will not act on
// and answers with `why`; the stream stays in sync, so the session goes on.
Status TcpSession::reject_body(const FrameHeader& h, std::size_t body, const Status& why) {
  FARMEM_RETURN_IF_ERROR(discard(h, body));
  queue_error(h.req_id, why);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Input

Status TcpSession::fill(std::size_t want, net::Deadline deadline) {
  if (rx_begin_ + want > rx_.size()) {
    std::memmove(rx_.data(), peek(), avail());
    rx_end_ = avail();
    rx_begin_ = 0;
  }
  // Bounded: every round receives bytes, or ends with EOF, an error or the deadline.
  while (avail() < want) {
    // No complete frame is left: send what is queued before blocking for more.
    FARMEM_RETURN_IF_ERROR(flush());
    const bool block = deadline == net::kNoDeadline;
    if (!block) FARMEM_RETURN_IF_ERROR(net::wait_ready(fd_, POLLIN, deadline, peer_).status());
    const iovec iov{rx_.data() + rx_end_, rx_.size() - rx_end_};
    FARMEM_ASSIGN_OR_RETURN(net::IoResult r, net::recv_some(fd_, {&iov, 1}, block, peer_));
    if (r.eof) {
      eof_ = true;
      return Unavailable(peer_ + ": closed by the client");
    }
    rx_end_ += r.bytes;
  }
  return Status::Ok();
}

// Makes n bytes of the current frame available; a frame cut short by EOF is answered.
Status TcpSession::need(const FrameHeader* h, std::size_t n, net::Deadline deadline) {
  if (avail() >= n) return Status::Ok();
  const Status st = fill(n, deadline);
  if (st.ok() || !eof_ || (avail() == 0 && h == nullptr)) return st;
  return truncated(h, avail(), n);
}

Status TcpSession::truncated(const FrameHeader* h, std::size_t got, std::size_t want) {
  const std::string what = h == nullptr ? "frame header"
                                        : std::string(proto::to_string(MsgType(h->type))) + " frame";
  const Status st = ProtocolError("truncated frame: the connection ended after " +
                                  std::to_string(got) + " of " + std::to_string(want) +
                                  " bytes of a " + what);
  queue_error(h == nullptr ? 0 : h->req_id, st);
  return st;
}

Status TcpSession::receive_into(const FrameHeader& h, std::byte* dst, std::size_t n) {
  std::size_t got = std::min(n, avail());
  std::memcpy(dst, peek(), got);
  consume(got);
  if (got < n) rx_begin_ = rx_end_ = 0;
  // Bounded by the client: every round receives bytes or ends with EOF or an error. Bytes
  // beyond the payload land in rx_ as read-ahead of the next frames.
  while (got < n) {
    const iovec iov[2] = {{dst + got, n - got}, {rx_.data() + rx_end_, rx_.size() - rx_end_}};
    FARMEM_ASSIGN_OR_RETURN(net::IoResult r, net::recv_some(fd_, iov, true, peer_));
    if (r.eof) {
      eof_ = true;
      return truncated(&h, kDataOpFrame + got, kDataOpFrame + n);
    }
    const std::size_t to_dst = std::min(r.bytes, n - got);
    got += to_dst;
    rx_end_ += r.bytes - to_dst;
  }
  return Status::Ok();
}

Status TcpSession::discard(const FrameHeader& h, std::size_t n) {
  std::size_t done = std::min(n, avail());
  consume(done);
  if (done < n) rx_begin_ = rx_end_ = 0;
  // Bounded by the frame length (validated) and the client; rx_ serves as the sink.
  while (done < n) {
    const iovec iov{rx_.data(), std::min(n - done, rx_.size())};
    FARMEM_ASSIGN_OR_RETURN(net::IoResult r, net::recv_some(fd_, {&iov, 1}, true, peer_));
    if (r.eof) {
      eof_ = true;
      return truncated(&h, kHeaderBytes + done, kHeaderBytes + n);
    }
    done += r.bytes;
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Output

void TcpSession::queue_bytes(const void* p, std::size_t n) {
  const std::size_t off = tx_bytes_.size();
  tx_bytes_.resize(off + n);
  std::memcpy(tx_bytes_.data() + off, p, n);
  // Adjacent buffered pieces merge: a run of small replies costs one iovec.
  if (!pieces_.empty() && pieces_.back().ext == nullptr &&
      pieces_.back().off + pieces_.back().len == off) {
    pieces_.back().len += n;
  } else {
    pieces_.push_back({nullptr, off, n});
  }
}

void TcpSession::queue_header(MsgType type, std::uint64_t req_id, std::uint32_t length) {
  const FrameHeader h = proto::make_header(type, req_id, length);
  queue_bytes(&h, sizeof h);
}

void TcpSession::queue_message(const proto::Message& m) {
  const auto bytes = proto::encode(m);
  queue_bytes(bytes.data(), bytes.size());
}

void TcpSession::queue_slab(const std::byte* p, std::size_t n) {
  pieces_.push_back({p, 0, n});
  read_lo_ = std::min(read_lo_, reinterpret_cast<std::uintptr_t>(p));
  read_hi_ = std::max(read_hi_, reinterpret_cast<std::uintptr_t>(p) + n);
}

void TcpSession::queue_error(std::uint64_t req_id, const Status& st, bool count) {
  if (count) core_.count_error();
  log().warn("{}: request {} rejected: {}", peer_, req_id, st.to_string());
  queue_message(proto::Message::error(st.code(), st.message(), req_id));
}

bool TcpSession::overlaps_queued_reads(std::uint64_t addr, std::uint64_t len) const {
  return addr < read_hi_ && read_lo_ < addr + len;
}

Status TcpSession::flush() {
  if (pieces_.empty()) return Status::Ok();
  tx_iov_.clear();
  for (const Piece& p : pieces_) {
    const std::byte* base = p.ext != nullptr ? p.ext : tx_bytes_.data() + p.off;
    tx_iov_.push_back({const_cast<std::byte*>(base), p.len});
  }
  const Status st = net::writev_unless_stalled(fd_, tx_iov_, kReplyStallTimeout, peer_);
  pieces_.clear();
  tx_bytes_.clear();
  read_lo_ = UINTPTR_MAX;
  read_hi_ = 0;
  return st;
}

}  // namespace farmem::memserver
