// The verbs client's hot path (post, wait, CQ polling) and its control calls.
// See verbs_connection.h for the wr_id layout and the polling scheme.
#include <thread>

#include "common/log.h"
#include "transport/verbs/verbs_connection.h"

namespace farmem::transport::verbs {

using Clock = std::chrono::steady_clock;

namespace {
/// Spins between deadline checks. The hot path reads no clock at all: with some clock
/// sources (hpet, as in VMs) a read costs as much as a whole RDMA op. A deadline therefore
/// starts at the first check, kSpinsPerClockCheck spins (~0.05-1 ms) after the wait began.
constexpr std::uint32_t kSpinsPerClockCheck = 1024;

/// Deadline bookkeeping for spin loops: call tick() once per spin; true once expired.
class SpinDeadline {
 public:
  explicit SpinDeadline(std::chrono::nanoseconds timeout) : timeout_(timeout) {}
  bool tick() {
    if (++spins_ % kSpinsPerClockCheck != 0) return false;
    const auto now = Clock::now();
    if (deadline_ == Clock::time_point{}) deadline_ = now + timeout_;
    return now > deadline_;
  }
  std::uint32_t spins() const { return spins_; }

 private:
  const std::chrono::nanoseconds timeout_;
  Clock::time_point deadline_{};
  std::uint32_t spins_ = 0;
};
/// After this many fruitless spins a waiting call() starts to sleep a little: control
/// replies take a memserver round trip (mmap, registration) and are off the data path.
constexpr std::uint32_t kControlSpinsBeforeSleep = 4096;
constexpr std::chrono::microseconds kControlSleep{50};

Completion* completion_of(std::uint64_t wr_id) {
  return reinterpret_cast<Completion*>(wr_id & ~kFlagMask);
}
const char* op_name(std::uint64_t wr_id) {
  return (wr_id & kWriteBit) != 0 ? "RDMA WRITE" : "RDMA READ";
}
}  // namespace

// ------------------------------------------------------------------------------------------
// post
// ------------------------------------------------------------------------------------------

Status VerbsConnection::post(std::span<const Op> ops, Completion& done) {
  FARMEM_RETURN_IF_ERROR(validate_ops(ops, caps_));
  if (broken()) return broken_status();
  if (Status bad = check_leases_ ? leases_.check(ops) : Status::Ok(); !bad.ok()) {
    // Reported like the memserver reports it on the other backends: through the completion,
    // nothing of the batch performed, the connection intact.
    done.arm(1);
    done.finish_part(bad.with_context(peer_ + ": memserver"));
    return Status::Ok();
  }
  const auto chunks = static_cast<std::uint32_t>((ops.size() + kChunkOps - 1) / kChunkOps);
  done.arm(chunks);
  for (std::uint32_t i = 0; i < chunks; ++i) {
    const auto first = static_cast<std::size_t>(i) * kChunkOps;
    const auto chunk = ops.subspan(first, std::min<std::size_t>(kChunkOps, ops.size() - first));
    Status s = acquire_chunk_credit() ? post_chunk(chunk, done) : broken_status();
    if (!s.ok()) {
      // Chains already posted complete (or flush) on their own; the rest end here.
      for (std::uint32_t j = i; j < chunks; ++j) done.finish_part(s);
      return Status::Ok();
    }
  }
  return Status::Ok();
}

bool VerbsConnection::acquire_chunk_credit() {
  SpinDeadline deadline(kCreditWaitLimit);
  for (;;) {
    auto c = chunk_credits_.load(std::memory_order_relaxed);
    while (c > 0) {
      if (chunk_credits_.compare_exchange_weak(c, c - 1, std::memory_order_acquire)) return true;
    }
    if (broken()) return false;
    drive_progress();
    if (deadline.tick()) {
      mark_broken(TimedOut("send queue stayed full for " +
                           std::to_string(kCreditWaitLimit.count()) + " s"));
      return false;
    }
  }
}

Status VerbsConnection::post_chunk(std::span<const Op> ops, Completion& done) {
  ibv_send_wr wrs[kChunkOps];
  ibv_sge sges[kChunkOps];
  const auto base = reinterpret_cast<std::uint64_t>(&done);
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const bool write = op.kind == OpKind::kWrite;
    const bool last = i + 1 == ops.size();
    sges[i] = ibv_sge{reinterpret_cast<std::uint64_t>(op.local), op.length, op.lkey};
    ibv_send_wr& wr = wrs[i];
    wr = ibv_send_wr{};
    wr.wr_id = base | (write ? kWriteBit : 0) | (last ? kSignaledBit : 0);
    wr.next = last ? nullptr : &wrs[i + 1];
    wr.sg_list = &sges[i];
    wr.num_sge = 1;
    wr.opcode = write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
    wr.send_flags = (last ? IBV_SEND_SIGNALED : 0) |
                    (write && op.length <= shape_.max_inline ? IBV_SEND_INLINE : 0);
    wr.wr.rdma.remote_addr = op.remote_addr;
    wr.wr.rdma.rkey = op.rkey;
  }
  ibv_send_wr* bad = nullptr;
  if (int rc = ibv_post_send(qp_->qp, wrs, &bad); rc != 0) {
    chunk_credits_.fetch_add(1, std::memory_order_release);
    Status s = Unavailable(peer_ + ": ibv_post_send: " + ibv::errno_text(rc));
    mark_broken(s);
    return s;
  }
  return Status::Ok();
}

// ------------------------------------------------------------------------------------------
// Completions
// ------------------------------------------------------------------------------------------

void VerbsConnection::drive_progress() {
  if (poll_mu_.try_lock()) {
    const int n = poll_cq_locked();
    poll_mu_.unlock();
    if (n > 0) return;
  }
  std::this_thread::yield();
}

int VerbsConnection::poll_cq_locked() {
  ibv_wc wcs[kPollBatch];
  const int n = ibv_poll_cq(cq_.get(), kPollBatch, wcs);
  if (n < 0) {
    mark_broken(Internal("ibv_poll_cq failed"));
    return 0;
  }
  for (int i = 0; i < n; ++i) {
    if ((wcs[i].wr_id & kControlBit) != 0) {
      handle_control_wc_locked(wcs[i]);
    } else {
      handle_data_wc_locked(wcs[i]);
    }
  }
  return n;
}

Status VerbsConnection::wc_error(const ibv_wc& wc) const {
  if (wc.status == IBV_WC_WR_FLUSH_ERR) {
    MutexLock lock(broken_mu_);
    return Unavailable(peer_ + ": " + op_name(wc.wr_id) + " not executed: connection broken" +
                       (broken_cause_.empty() ? "" : ": " + broken_cause_));
  }
  const bool peer_gone = wc.status == IBV_WC_RETRY_EXC_ERR || wc.status == IBV_WC_RNR_RETRY_EXC_ERR;
  return Status(peer_gone ? StatusCode::kUnavailable : StatusCode::kIoError,
                peer_ + ": " + op_name(wc.wr_id) + " failed: " + ibv::wc_status_text(wc.status));
}

void VerbsConnection::handle_data_wc_locked(const ibv_wc& wc) {
  Completion* c = completion_of(wc.wr_id);
  const bool signaled = (wc.wr_id & kSignaledBit) != 0;
  if (wc.status == IBV_WC_SUCCESS) {
    // Only signaled WRs complete successfully with a CQE.
    chunk_credits_.fetch_add(1, std::memory_order_release);
    if (chain_errors_.empty()) return c->finish_part_ok();
    auto it = chain_errors_.find(c);
    if (it == chain_errors_.end()) return c->finish_part_ok();
    Status s = std::move(it->second);
    chain_errors_.erase(it);
    return c->finish_part(s);
  }
  Status s = wc_error(wc);
  if (wc.status != IBV_WC_WR_FLUSH_ERR) mark_broken(s);  // the QP is in error now anyway
  if (!signaled) {
    // The chain's signaled WR comes back after this one (flushed): report there, once.
    chain_errors_.try_emplace(c, std::move(s));
    return;
  }
  chunk_credits_.fetch_add(1, std::memory_order_release);
  if (auto it = chain_errors_.find(c); it != chain_errors_.end()) {
    s = std::move(it->second);
    chain_errors_.erase(it);
  }
  c->finish_part(s);  // `c` may be gone after this: nothing touches it again
}

void VerbsConnection::handle_control_wc_locked(const ibv_wc& wc) {
  const std::uint64_t slot = wc.wr_id >> 3;
  if (slot == kSendSlot) {
    if (wc.status != IBV_WC_SUCCESS) mark_broken(wc_error(wc));
    send_done_.store(true, std::memory_order_release);
    return;
  }
  if (wc.status != IBV_WC_SUCCESS) {
    if (wc.status != IBV_WC_WR_FLUSH_ERR) mark_broken(wc_error(wc));
    return;
  }
  const auto* frame = control_buf_.data() + slot * kControlFrameBytes;
  auto msg = proto::decode(std::span<const std::byte>(frame, wc.byte_len));
  if (Status s = post_recv(slot); !s.ok()) mark_broken(s);
  if (!msg.ok()) {
    log().warn("{}: bad control frame from memserver: {}", peer_, msg.status().to_string());
    return;
  }
  MutexLock lock(reply_mu_);
  if (msg->req_id != awaited_req_id_) {
    log().debug("{}: dropping a stale reply (req_id {})", peer_, msg->req_id);
    return;
  }
  reply_ = std::move(msg).value();
  awaited_req_id_ = 0;
  reply_ready_.store(true, std::memory_order_release);
}

// ------------------------------------------------------------------------------------------
// wait
// ------------------------------------------------------------------------------------------

Status VerbsConnection::wait(Completion& done, std::chrono::nanoseconds timeout) {
  SpinDeadline deadline(timeout);
  while (!done.done()) {
    if (poll_mu_.try_lock()) {
      poll_cq_locked();
      poll_mu_.unlock();
    } else {
      std::this_thread::yield();
    }
    if (deadline.tick() && !done.done()) {
      Status s = TimedOut(peer_ + ": batch not complete after " +
                          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             timeout).count()) + " ms");
      mark_broken(s);  // QP to error: every WR still in flight flushes
      drain(done);
      return s;
    }
  }
  return done.status();
}

void VerbsConnection::drain(Completion& done) {
  // Until the batch's flush CQEs are polled, the device may still DMA into its buffers and
  // the poller would finish `done`: the caller may free neither before. Flushes arrive at
  // once on a QP in error; kDrainLimit is only a backstop.
  SpinDeadline deadline(kDrainLimit);
  while (!done.done()) {
    drive_progress();
    if (deadline.tick()) {
      log().critical("{}: batch not flushed {} s after the QP went to error", peer_,
                     kDrainLimit.count());
      return;
    }
  }
}

// ------------------------------------------------------------------------------------------
// call
// ------------------------------------------------------------------------------------------

Status VerbsConnection::send_control_locked(const proto::Message& request) {
  const auto frame = proto::encode(request);
  if (frame.size() > kControlFrameBytes) {
    return InvalidArgument("control request of " + std::to_string(frame.size()) + " bytes");
  }
  std::byte* buf = control_buf_.data() + kSendSlot * kControlFrameBytes;
  std::memcpy(buf, frame.data(), frame.size());
  send_done_.store(false, std::memory_order_relaxed);

  ibv_sge sge{reinterpret_cast<std::uint64_t>(buf), static_cast<std::uint32_t>(frame.size()),
              control_mr_->lkey};
  ibv_send_wr wr{};
  wr.wr_id = kControlBit | (kSendSlot << 3);
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = IBV_SEND_SIGNALED | (frame.size() <= shape_.max_inline ? IBV_SEND_INLINE : 0);
  ibv_send_wr* bad = nullptr;
  if (int rc = ibv_post_send(qp_->qp, &wr, &bad); rc != 0) {
    Status s = Unavailable(peer_ + ": ibv_post_send(SEND): " + ibv::errno_text(rc));
    mark_broken(s);
    return s;
  }
  return Status::Ok();
}

void VerbsConnection::say_bye() {
  MutexLock call_lock(call_mu_);
  if (broken() || !qp_ || !established_) return;  // nothing to say on a QP never connected
  proto::Message bye;
  bye.type = proto::MsgType::kBye;
  bye.req_id = next_req_id_++;
  if (!send_control_locked(bye).ok()) return;
  // Until the memserver's NIC acknowledged it: a disconnect right after could flush it.
  SpinDeadline deadline(kByeWait);
  while (!send_done_.load(std::memory_order_acquire) && !broken()) {
    drive_progress();
    if (deadline.spins() > kControlSpinsBeforeSleep) std::this_thread::sleep_for(kControlSleep);
    if (deadline.tick()) return;
  }
}

Result<proto::Message> VerbsConnection::call(proto::Message request,
                                             std::chrono::nanoseconds timeout) {
  if (!proto::is_request(request.type)) {
    return InvalidArgument("not a control request: " + std::string(proto::to_string(request.type)));
  }
  MutexLock call_lock(call_mu_);
  if (broken()) return broken_status();
  const proto::MsgType request_type = request.type;
  std::uint64_t freed_slab = 0;
  if (request_type == proto::MsgType::kFreeSlab) {
    if (auto f = request.as<proto::FreeSlab>(); f.ok()) freed_slab = f->slab_id;
  }
  {
    MutexLock lock(reply_mu_);
    request.req_id = next_req_id_++;
    awaited_req_id_ = request.req_id;
  }
  reply_ready_.store(false, std::memory_order_relaxed);
  FARMEM_RETURN_IF_ERROR(send_control_locked(request));

  SpinDeadline deadline(timeout);
  for (;;) {
    if (reply_ready_.load(std::memory_order_acquire) &&
        send_done_.load(std::memory_order_acquire)) {
      break;
    }
    if (broken()) return broken_status();
    drive_progress();
    if (deadline.spins() > kControlSpinsBeforeSleep) std::this_thread::sleep_for(kControlSleep);
    if (deadline.tick()) {
      Status s = TimedOut(peer_ + ": no reply to " + std::string(proto::to_string(request.type)) +
                          " within " +
                          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             timeout).count()) + " ms");
      mark_broken(s);
      return s;
    }
  }
  MutexLock lock(reply_mu_);
  proto::Message reply = std::move(reply_);
  if (Status s = reply.error_status(); !s.ok()) return s.with_context(peer_);
  leases_.observe(request_type, freed_slab, reply);
  return reply;
}

}  // namespace farmem::transport::verbs
