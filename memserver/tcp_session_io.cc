// TcpSession's byte streams: receiving requests (into the read-ahead buffer, or straight into
// slab memory for WRITE bodies) and sending the queued replies. The framing and the request
// handling are in tcp_session.cc; the design is described in tcp_session.h.
#include "memserver/tcp_session.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"

namespace farmem::memserver {

using proto::FrameHeader;
using proto::MsgType;

// ---------------------------------------------------------------------------------------
// Input

Status TcpSession::fill(std::size_t want, net::Deadline deadline) {
  if (rx_begin_ + want > rx_cap_) {
    std::memmove(rx_.get(), peek(), avail());
    rx_end_ = avail();
    rx_begin_ = 0;
  }
  // Bounded: every round receives bytes, or ends with EOF, an error, the deadline or parking.
  while (avail() < want) {
    // No complete frame is left: send what is queued before waiting for more.
    FARMEM_RETURN_IF_ERROR(flush());
    const iovec iov{rx_.get() + rx_end_, rx_cap_ - rx_end_};
    FARMEM_ASSIGN_OR_RETURN(net::IoResult r, receive({&iov, 1}, deadline));
    if (r.eof) {
      eof_ = true;
      return Unavailable(peer_ + ": closed by the client");
    }
    if (r.would_block) {
      FARMEM_RETURN_IF_ERROR(await_input(deadline));
      continue;
    }
    rx_end_ += r.bytes;
    note_input(r.bytes);
  }
  return Status::Ok();
}

// One receive. In a turn that may linger and has time left it blocks, for at most linger_
// (the socket's SO_RCVTIMEO, set once): the common request-reply case then costs one recv,
// as a thread per client did. Otherwise it does not block. Queued replies go out first.
Result<net::IoResult> TcpSession::receive(std::span<const iovec> iov, net::Deadline deadline) {
  const bool linger = deadline == net::kNoDeadline && serving_ && linger_.count() > 0 &&
                      net::Clock::now() < turn_end_;
  if (linger) {
    FARMEM_RETURN_IF_ERROR(flush());
    if (rcv_timeout_ != linger_) {
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(linger_).count();
      const timeval tv{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
      if (::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
        return net::errno_status(errno, "setsockopt(SO_RCVTIMEO)", peer_);
      }
      rcv_timeout_ = linger_;
    }
  }
  return net::recv_some(channel(), iov, linger, peer_);
}

// After a receive found nothing: waits until `deadline` (the handshake); in a turn (the
// receive has lingered already, if it could) the session parks: it returns an error with
// parked_ set, which serve() turns into Outcome::kParked.
Status TcpSession::await_input(net::Deadline deadline) {
  if (deadline != net::kNoDeadline) {
    return net::wait_ready(channel(), POLLIN, deadline, peer_).status();
  }
  FARMEM_RETURN_IF_ERROR(flush());  // an input-parked session has no reply queued
  parked_ = true;
  return Unavailable(peer_ + ": parked until the client sends more");
}

void TcpSession::note_input(std::size_t bytes) {
  if (bytes == 0) return;
  last_input_ = net::Clock::now();
  if (frame_start_ == kNever) frame_start_ = last_input_;
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

// Receives the rest of body_ into dst (its next byte in slab memory). Bytes beyond the body
// land in rx_ as read-ahead of the next frames.
Status TcpSession::receive_body(std::byte* dst) {
  Body& b = *body_;
  const std::size_t n = b.total - b.done;
  std::size_t got = std::min(n, avail());
  std::memcpy(dst, peek(), got);
  consume(got);
  b.done += got;
  if (got < n) rx_begin_ = rx_end_ = 0;
  // Bounded by the client: every round receives bytes or ends with EOF, an error or parking.
  while (got < n) {
    const iovec iov[2] = {{dst + got, n - got}, {rx_.get() + rx_end_, rx_cap_ - rx_end_}};
    FARMEM_ASSIGN_OR_RETURN(net::IoResult r, receive(iov, net::kNoDeadline));
    if (r.eof) {
      eof_ = true;
      return truncated(&b.h, b.prefix + b.done, b.prefix + b.total);
    }
    if (r.would_block) {
      FARMEM_RETURN_IF_ERROR(await_input(net::kNoDeadline));
      continue;
    }
    note_input(r.bytes);
    const std::size_t to_dst = std::min(r.bytes, n - got);
    got += to_dst;
    b.done += to_dst;
    rx_end_ += r.bytes - to_dst;
  }
  return Status::Ok();
}

// Skips the rest of body_; rx_ serves as the sink.
Status TcpSession::skip_body() {
  Body& b = *body_;
  const std::size_t buffered = std::min(b.total - b.done, avail());
  consume(buffered);
  b.done += buffered;
  if (b.done < b.total) rx_begin_ = rx_end_ = 0;
  // Bounded by the frame length (validated) and the client.
  while (b.done < b.total) {
    const iovec iov{rx_.get(), std::min(b.total - b.done, rx_cap_)};
    FARMEM_ASSIGN_OR_RETURN(net::IoResult r, receive({&iov, 1}, net::kNoDeadline));
    if (r.eof) {
      eof_ = true;
      return truncated(&b.h, b.prefix + b.done, b.prefix + b.total);
    }
    if (r.would_block) {
      FARMEM_RETURN_IF_ERROR(await_input(net::kNoDeadline));
      continue;
    }
    note_input(r.bytes);
    b.done += r.bytes;
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

// Sends the queued replies. Outside a turn (handshake, the session's end) it blocks until
// they are out or the client takes no byte for kReplyStallTimeout. In a turn it never waits
// more than linger_: a client that does not take its replies parks the session with the
// rest in tx_left_ (parked_ set, an error returned), and the next turn sends them first.
Status TcpSession::flush() {
  if (!serving_) return flush_by(net::kNoDeadline);
  if (tx_left_.empty()) {
    if (pieces_.empty()) return Status::Ok();
    stage_output();
  }
  // Bounded: every round sends bytes, or waits at most until the linger ends and parks.
  while (!tx_left_.empty()) {
    FARMEM_ASSIGN_OR_RETURN(net::IoResult r, net::send_some(channel(), tx_left_, false, peer_));
    if (r.bytes > 0) {
      tx_left_ = net::advance_iov(tx_left_, r.bytes);
      output_progress_ = net::Clock::now();
      continue;
    }
    const net::Deadline until = std::min(net::deadline_after(linger_), turn_end_);
    if (net::Clock::now() < until) {
      auto ready = net::wait_ready(channel(), POLLOUT, until, peer_);
      if (ready.ok()) continue;
      if (ready.status().code() != StatusCode::kTimedOut) return ready.status();
    }
    parked_ = true;
    return Unavailable(peer_ + ": parked until the client reads its replies");
  }
  reset_output();
  return Status::Ok();
}

// Sends the queued replies (what is left of them) by `deadline`, or (kNoDeadline) giving up
// only when the client takes no byte for kReplyStallTimeout.
Status TcpSession::flush_by(net::Deadline deadline) {
  if (tx_left_.empty()) {
    if (pieces_.empty()) return Status::Ok();
    stage_output();
  }
  const Status st = deadline == net::kNoDeadline
                        ? net::writev_unless_stalled(channel(), tx_left_, kReplyStallTimeout, peer_)
                        : net::writev_full(channel(), tx_left_, deadline, peer_);
  reset_output();
  return st;
}

void TcpSession::stage_output() {
  tx_iov_.clear();
  for (const Piece& p : pieces_) {
    const std::byte* base = p.ext != nullptr ? p.ext : tx_bytes_.data() + p.off;
    tx_iov_.push_back({const_cast<std::byte*>(base), p.len});
  }
  tx_left_ = tx_iov_;
  output_progress_ = net::Clock::now();
}

void TcpSession::reset_output() {
  tx_left_ = {};
  pieces_.clear();
  tx_bytes_.clear();
  read_lo_ = UINTPTR_MAX;
  read_hi_ = 0;
}

}  // namespace farmem::memserver
