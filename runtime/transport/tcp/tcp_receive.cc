// The tcp backend's receive side, run by whichever thread holds the leader role: plans one
// scatter receive over the replies it expects next, reads, and dispatches completions.
// See tcp_connection.h for the protocol between leader and followers.
#include <poll.h>

#include <algorithm>
#include <cstring>

#include "transport/tcp/tcp_connection.h"

namespace farmem::transport {

namespace {

constexpr std::size_t kHeaderBytes = sizeof(proto::FrameHeader);
// First size of the pending ring: covers a typical prefetch window without growing; a power
// of two, as the ring's index masking requires.
constexpr std::size_t kInitialRingSlots = 64;

StatusCode code_from_wire(std::uint32_t status) {
  // An out-of-range code from a newer or broken server still reads as an error.
  if (status == 0 || status > static_cast<std::uint32_t>(kLastStatusCode)) {
    return StatusCode::kInternal;
  }
  return static_cast<StatusCode>(status);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// PendingRing

void TcpConnection::PendingRing::push(Pending p) {
  if (size_ == slots_.size()) {
    // Doubling keeps growth rare; the ring settles at the deepest pipeline seen.
    std::vector<Pending> bigger(std::max(kInitialRingSlots, slots_.size() * 2));
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = std::move(at(i));
    slots_ = std::move(bigger);
    head_ = 0;
  }
  at(size_) = std::move(p);
  ++size_;
}

TcpConnection::Pending* TcpConnection::PendingRing::find(std::uint64_t id) {
  if (size_ == 0) return nullptr;
  const std::uint64_t first = at(0).id;
  if (id < first || id - first >= size_) return nullptr;
  Pending& e = at(id - first);
  return e.done != nullptr ? &e : nullptr;
}

void TcpConnection::PendingRing::pop_finished() {
  while (size_ > 0 && at(0).done == nullptr) {
    at(0).control.reset();
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
  }
}

std::vector<TcpConnection::Pending> TcpConnection::PendingRing::take_all() {
  std::vector<Pending> out;
  for (std::size_t i = 0; i < size_; ++i) {
    if (at(i).done != nullptr) out.push_back(std::move(at(i)));
    at(i) = Pending{};
  }
  head_ = 0;
  size_ = 0;
  return out;
}

// ---------------------------------------------------------------------------------------
// Receiving

bool TcpConnection::matches(const Predicted& p, const proto::FrameHeader& h) {
  if (h.magic != proto::kMagic || h.version != proto::kVersion || h.req_id != p.id ||
      h.status != 0) {
    return false;
  }
  const auto type = static_cast<proto::MsgType>(h.type);
  if (p.kind == Kind::kRead) return type == proto::MsgType::kReadData && h.length == p.length;
  if (p.kind == Kind::kWrite) return type == proto::MsgType::kWriteOk && h.length == 0;
  return false;  // control replies have unknown sizes: always parsed the slow way
}

Status TcpConnection::pump_as_leader(net::Deadline deadline, bool poll_first) {
  {
    MutexLock lock(mu_);
    if (broken_) return broken_status_;
    plan_receive_locked();
  }
  if (poll_first) {
    FARMEM_RETURN_IF_ERROR(net::wait_ready(channel(), POLLIN, deadline, peer_).status());
  }
  FARMEM_ASSIGN_OR_RETURN(net::IoResult r, net::recv_some(channel(), rx_iov_, false, peer_));
  if (r.eof) return Unavailable(peer_ + ": the memserver closed the connection");
  if (r.would_block) {
    rx_hot_ = false;
    return Status::Ok();
  }
  rx_hot_ = true;
  MutexLock lock(mu_);
  finished_ = 0;
  const Status st = absorb_locked(r.bytes);
  if (finished_ > 0 && waiters_ > 0) cv_.notify_all();
  return st;
}

void TcpConnection::plan_push(void* base, std::size_t len) { rx_iov_.push_back({base, len}); }

void TcpConnection::plan_receive_locked() {
  rx_iov_.clear();
  plan_.clear();
  auto* hdr = reinterpret_cast<std::byte*>(&cur_.hdr);
  if (cur_.hdr_got > 0 && cur_.hdr_got < kHeaderBytes) {
    // Rare: a receive ended inside a header. Finish it before predicting again.
    plan_push(hdr + cur_.hdr_got, kHeaderBytes - cur_.hdr_got);
    return;
  }
  std::size_t pos = 0;
  if (cur_.hdr_got == kHeaderBytes) {
    plan_push(cur_.dst + cur_.got, cur_.len - cur_.got);
    const std::uint64_t first = ring_.size() > 0 ? ring_.at(0).id : 0;
    pos = cur_.hdr.req_id >= first ? cur_.hdr.req_id - first + 1 : ring_.size();
  }
  for (; pos < ring_.size() && plan_.size() < kMaxPredicted; ++pos) {
    const Pending& e = ring_.at(pos);
    if (e.done == nullptr) continue;
    plan_.push_back({e.id, e.kind, e.length, e.local, rx_iov_.size()});
    plan_push(&slot_hdrs_[plan_.size() - 1], kHeaderBytes);
    if (e.kind == Kind::kRead) plan_push(e.local, e.length);
    if (e.kind == Kind::kControl || rx_iov_.size() + 2 > kMaxRxSegments) break;
  }
  // Nothing expected: still read a header, to notice EOF or a stray frame.
  if (rx_iov_.empty()) plan_push(hdr, kHeaderBytes);
}

Status TcpConnection::absorb_locked(std::size_t n) {
  std::size_t left = n;
  if (cur_.hdr_got > 0 || plan_.empty()) {  // segment 0 continues the current frame
    const std::size_t take = std::min(left, rx_iov_[0].iov_len);
    left -= take;
    FARMEM_RETURN_IF_ERROR(advance_current_locked(take));
  }
  for (std::size_t j = 0; j < plan_.size() && left > 0; ++j) {
    const Predicted& p = plan_[j];
    const std::size_t h = std::min(left, kHeaderBytes);
    left -= h;
    std::memcpy(&cur_.hdr, &slot_hdrs_[j], h);
    cur_.hdr_got = h;
    if (h < kHeaderBytes) break;
    if (!matches(p, cur_.hdr)) {
      // The bytes after this header landed in buffers meant for other frames: move them
      // aside before anything is completed, then parse them in order.
      spill_locked(p.first_seg + 1, left);
      FARMEM_RETURN_IF_ERROR(on_header_locked());
      return consume_spill_locked();
    }
    cur_.dst = p.local;
    cur_.len = p.kind == Kind::kRead ? p.length : 0;
    cur_.got = std::min(left, cur_.len);
    left -= cur_.got;
    if (cur_.got == cur_.len) FARMEM_RETURN_IF_ERROR(finish_current_locked());
  }
  return Status::Ok();
}

Status TcpConnection::advance_current_locked(std::size_t n) {
  if (cur_.hdr_got < kHeaderBytes) {
    cur_.hdr_got += n;
    return cur_.hdr_got == kHeaderBytes ? on_header_locked() : Status::Ok();
  }
  cur_.got += n;
  return cur_.got == cur_.len ? finish_current_locked() : Status::Ok();
}

Status TcpConnection::on_header_locked() {
  const proto::FrameHeader& h = cur_.hdr;
  FARMEM_RETURN_IF_ERROR(proto::validate_header(h));
  const auto type = static_cast<proto::MsgType>(h.type);
  Pending* e = ring_.find(h.req_id);
  cur_.len = h.length;
  cur_.got = 0;
  if (type == proto::MsgType::kError) {
    err_buf_.resize(h.length);
    cur_.dst = err_buf_.data();
  } else if (e == nullptr) {
    return ProtocolError(std::string(proto::to_string(type)) + " reply for unknown request " +
                         std::to_string(h.req_id));
  } else if (e->kind == Kind::kControl) {
    e->control->reply.payload.resize(h.length);
    cur_.dst = e->control->reply.payload.data();
  } else if ((type == proto::MsgType::kReadData && e->kind == Kind::kRead &&
              h.length == e->length) ||
             (type == proto::MsgType::kWriteOk && e->kind == Kind::kWrite && h.length == 0)) {
    cur_.dst = e->local;
  } else {
    return ProtocolError("unexpected " + std::string(proto::to_string(type)) + " reply of " +
                         std::to_string(h.length) + " bytes to request " +
                         std::to_string(h.req_id));
  }
  return cur_.len == 0 ? finish_current_locked() : Status::Ok();
}

Status TcpConnection::finish_current_locked() {
  const proto::FrameHeader h = cur_.hdr;
  const std::size_t len = cur_.len;
  cur_ = RxFrame{};
  const auto type = static_cast<proto::MsgType>(h.type);
  const auto text = [&] { return std::string(reinterpret_cast<const char*>(err_buf_.data()), len); };
  Pending* e = ring_.find(h.req_id);
  if (e == nullptr) {
    // Only an ERROR for no request gets here: the server gave up on the whole stream.
    return Status(code_from_wire(h.status), "memserver: " + text());
  }
  if (e->kind == Kind::kControl) {
    proto::Message& reply = e->control->reply;
    reply.type = type;
    reply.req_id = h.req_id;
    reply.status = static_cast<StatusCode>(h.status);
    if (type == proto::MsgType::kError) reply.payload.assign(err_buf_.begin(), err_buf_.begin() + len);
    e->done->finish_part_ok();
  } else if (type == proto::MsgType::kError) {
    e->done->finish_part(Status(code_from_wire(h.status), peer_ + ": memserver: " + text()));
  } else {
    e->done->finish_part_ok();
  }
  e->done = nullptr;
  e->control.reset();
  ring_.pop_finished();
  ++finished_;
  return Status::Ok();
}

void TcpConnection::spill_locked(std::size_t first_seg, std::size_t n) {
  spill_.resize(n);
  std::size_t off = 0;
  for (std::size_t s = first_seg; off < n && s < rx_iov_.size(); ++s) {
    const std::size_t take = std::min(n - off, rx_iov_[s].iov_len);
    std::memcpy(spill_.data() + off, rx_iov_[s].iov_base, take);
    off += take;
  }
}

Status TcpConnection::consume_spill_locked() {
  std::size_t off = 0;
  Status st;
  // Bounded: every round consumes at least one byte (a frame whose payload is complete is
  // finished at once, so a current frame always still wants bytes).
  while (off < spill_.size() && st.ok()) {
    const std::size_t rest = spill_.size() - off;
    std::size_t take = 0;
    if (cur_.hdr_got < kHeaderBytes) {
      take = std::min(rest, kHeaderBytes - cur_.hdr_got);
      std::memcpy(reinterpret_cast<std::byte*>(&cur_.hdr) + cur_.hdr_got, spill_.data() + off,
                  take);
    } else {
      take = std::min(rest, cur_.len - cur_.got);
      std::memcpy(cur_.dst + cur_.got, spill_.data() + off, take);
    }
    off += take;
    st = advance_current_locked(take);
  }
  spill_.clear();
  return st;
}

}  // namespace farmem::transport
