// The verbs client backend: one RC queue pair per Connection.
//
// Data path (no helper thread): post() turns a batch into chains of RDMA READ/WRITE work
// requests, kChunkOps per chain, only the last one signaled; wait() busy-polls the CQ on the
// waiting thread. Whoever holds poll_mu_ polls for everyone and completes other threads'
// Completions; the rest spin on their own Completion.
//
// wr_id layout of a data WR: the Completion's address (8-byte aligned) with its low bits
// reused as flags; control WRs carry kControlBit and a slot number instead of an address.
//
//   63                                                    3     2        1        0
//   +------------------------------------------------------+--------+--------+--------+
//   |               Completion* (bits 3..63)                |control | write  |signaled|
//   +------------------------------------------------------+--------+--------+--------+
//
// Control path: call() sends a frame (transport/proto/wire.h) with SEND and polls for the
// reply in pre-posted RECV buffers, on the same QP and CQ. A small thread watches the rdma_cm
// channel and breaks the connection (QP to error: everything in flight flushes) on DISCONNECTED.
#pragma once

#include <atomic>
#include <memory>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "transport/lease_table.h"
#include "transport/transport.h"
#include "transport/verbs/ibv.h"

namespace farmem::transport {
/// See verbs.h: the protection domain that successive connections of one resuming
/// connection share.
struct VerbsPdShare {
  /// Guards pd (set by the first connection that opens).
  Mutex mu;
  std::shared_ptr<ibv_pd> pd FARMEM_GUARDED_BY(mu);
};
}  // namespace farmem::transport

namespace farmem::transport::verbs {

/// Work requests per chain; only the last is signaled. 16 amortizes a CQE over many ops and
/// still returns send-queue space in small steps.
inline constexpr std::uint32_t kChunkOps = 16;
/// Chains in flight at once; the send queue is sized so these can never overflow it
/// (64 x 16 = 1024 WRs, enough to keep a NIC's read pipeline full).
inline constexpr std::uint32_t kMaxChunksInFlight = 64;
/// call() is serialized and waits for its SEND to complete: one slot suffices.
inline constexpr std::uint32_t kControlSendSlots = 1;
inline constexpr std::uint32_t kSendQueueDepth = kChunkOps * kMaxChunksInFlight + kControlSendSlots;
/// Pre-posted RECVs for control replies: one call is in flight at a time; the rest is slack
/// for a reply that arrives late after a timed-out call.
inline constexpr std::uint32_t kRecvQueueDepth = 4;
/// Every WR yields at most one CQE (unsignaled ones too, when they fail or flush), so a CQ this
/// deep cannot overrun.
inline constexpr int kCqDepth = static_cast<int>(kSendQueueDepth + kRecvQueueDepth);
/// Inline data asked of the QP: covers every control request and small WRITEs; 64 bytes is
/// granted by all common RC devices (the device may grant more; we use what it grants).
inline constexpr std::uint32_t kInlineBytes = 64;
/// Largest span post() accepts; larger batches are cut by the caller. Chains make any size
/// work; this bounds how long one post() can hold the send queue.
inline constexpr std::uint32_t kMaxBatchOps = 16384;
/// Cap on one op, whatever the port allows (rxe says 2 GiB): keeps Op::length math in u32.
inline constexpr std::uint64_t kMaxOpBytesCap = 1ull << 30;
/// CQEs taken per ibv_poll_cq call.
inline constexpr int kPollBatch = 16;
/// Largest control frame: header + the biggest control payload.
inline constexpr std::size_t kControlFrameBytes =
    sizeof(proto::FrameHeader) + proto::kMaxControlPayload;
/// Local ACK timeout exponent (4.096 us * 2^16 = 268 ms) and transport retries (7 = the
/// maximum): a peer that vanished without a DREQ is detected in about 2 s.
inline constexpr std::uint8_t kAckTimeoutExp = 16;
inline constexpr std::uint8_t kRetryCount = 7;
/// RNR retries: 7 = retry forever; replies land in RECVs that are always re-posted, and
/// call() has its own deadline.
inline constexpr std::uint8_t kRnrRetryCount = 7;
/// Bound on waiting for send-queue space inside post(): chains complete or flush long before
/// (retries end after ~2 s), so hitting this means the device stopped answering.
inline constexpr std::chrono::seconds kCreditWaitLimit{60};
/// How long a clean close waits for its BYE to be acknowledged before it disconnects
/// anyway (the memserver then keeps the session for its lease grace).
inline constexpr std::chrono::milliseconds kByeWait{200};
/// Backstop on waiting for a timed-out batch to flush once the QP is in error (flushes are
/// generated at once; this only bounds a device that stopped answering).
inline constexpr std::chrono::seconds kDrainLimit{30};

inline constexpr std::uint64_t kSignaledBit = 1;
inline constexpr std::uint64_t kWriteBit = 2;
inline constexpr std::uint64_t kControlBit = 4;
inline constexpr std::uint64_t kFlagMask = 7;
/// Control slot number of the SEND buffer (RECV slots are 0..kRecvQueueDepth-1).
inline constexpr std::uint64_t kSendSlot = kRecvQueueDepth;
static_assert(alignof(Completion) > kFlagMask, "wr_id flags need 3 free low bits");

class VerbsConnection final : public Connection {
 public:
  /// With `share`, the connection's PD is the shared one (allocated by the first
  /// connection, on its device); kUnavailable when this connection came up on another
  /// device.
  static Result<std::unique_ptr<VerbsConnection>> open(const Endpoint& endpoint,
                                                       const ConnectOptions& options,
                                                       std::shared_ptr<VerbsPdShare> share = {});
  ~VerbsConnection() override;

  const Capabilities& capabilities() const override { return caps_; }
  const std::string& peer() const override { return peer_; }
  Result<std::unique_ptr<MemoryRegistration>> register_memory(void* addr,
                                                              std::size_t length) override;
  Status post(std::span<const Op> ops, Completion& done) override;
  Status wait(Completion& done, std::chrono::nanoseconds timeout) override;
  Result<proto::Message> call(proto::Message request, std::chrono::nanoseconds timeout) override;

 private:
  explicit VerbsConnection(std::string peer) : peer_(std::move(peer)) {}

  // ---- setup (verbs_connection.cc) ----
  Status resolve(const Endpoint& ep, std::chrono::steady_clock::time_point deadline);
  Status create_resources();
  /// rdma_connect with our connect data; the memserver's HELLO_OK from its accept.
  Result<proto::HelloOk> establish(const ConnectOptions& options, const proto::Nonce& nonce,
                                   std::chrono::steady_clock::time_point deadline);
  Status post_recv(std::uint64_t slot);
  void watch_cm_events();
  /// Posts `request` as a SEND from the control slot.
  Status send_control_locked(const proto::Message& request) FARMEM_REQUIRES(call_mu_);
  /// BYE, so the memserver ends the session now rather than keep it for a resume: on a
  /// clean close only (a broken connection's session is left for its resume).
  void say_bye();

  // ---- data path ----
  bool acquire_chunk_credit();
  Status post_chunk(std::span<const Op> ops, Completion& done);
  /// Polls the CQ once. Returns the CQEs handled.
  int poll_cq_locked() FARMEM_REQUIRES(poll_mu_);
  void handle_data_wc_locked(const ibv_wc& wc) FARMEM_REQUIRES(poll_mu_);
  void handle_control_wc_locked(const ibv_wc& wc) FARMEM_REQUIRES(poll_mu_);
  /// One pass of progress for a thread that is waiting on something: polls if nobody else
  /// does, otherwise yields.
  void drive_progress();
  /// After a timeout broke the connection: polls until `done` has flushed, so that nothing
  /// touches it or its buffers once wait() returns.
  void drain(Completion& done);
  Status wc_error(const ibv_wc& wc) const;

  // ---- broken state ----
  void mark_broken(const Status& cause);
  bool broken() const { return broken_.load(std::memory_order_acquire); }
  Status broken_status() const;

  const std::string peer_;  // "rdma://host:port"
  Capabilities caps_;
  ibv::QpShape shape_;

  // Declaration order is teardown order reversed (see ibv.h): QP, MR, CQ, PD, id, channel.
  // The PD is shared with this connection's registrations (and, through a VerbsPdShare,
  // with the connections before and after it): it goes with the last of them.
  std::shared_ptr<VerbsPdShare> share_;
  ibv::EventChannel channel_;
  ibv::CmId id_;
  std::shared_ptr<ibv_pd> pd_;
  ibv::Cq cq_;
  std::vector<std::byte> control_buf_;  // RECV slots, then the SEND slot
  ibv::Mr control_mr_;
  ibv::CmQp qp_;

  /// Chains that may still be posted before the send queue could overflow.
  std::atomic<std::int32_t> chunk_credits_{kMaxChunksInFlight};
  /// Held by the one thread polling the CQ (try_lock: others spin on their Completion).
  /// Taken before reply_mu_ and broken_mu_ (a CQE may carry a reply or break the connection).
  Mutex poll_mu_ FARMEM_ACQUIRED_BEFORE(reply_mu_, broken_mu_);
  /// First error of a chain seen on an unsignaled WR, reported when its signaled WR
  /// (flushed after it) comes back.
  std::unordered_map<Completion*, Status> chain_errors_ FARMEM_GUARDED_BY(poll_mu_);

  /// Slabs leased on this connection: ops are checked against them before posting.
  LeaseTable leases_;
  bool check_leases_ = true;  ///< ConnectOptions::check_leases

  /// Serializes call(): one control request in flight; guards next_req_id_. Taken first (a
  /// call polls the CQ while it waits).
  Mutex call_mu_ FARMEM_ACQUIRED_BEFORE(poll_mu_, reply_mu_);
  /// Guards awaited_req_id_ and reply_ (written by the poller, read by call()).
  Mutex reply_mu_;
  std::uint64_t next_req_id_ FARMEM_GUARDED_BY(call_mu_) = 1;
  std::uint64_t awaited_req_id_ FARMEM_GUARDED_BY(reply_mu_) = 0;
  proto::Message reply_ FARMEM_GUARDED_BY(reply_mu_);
  std::atomic<bool> reply_ready_{false};
  std::atomic<bool> send_done_{false};

  bool established_ = false;  ///< the memserver accepted (set in open(), before sharing)
  std::atomic<bool> broken_{false};
  /// Guards broken_cause_ (set once, by whoever breaks the connection first). A leaf.
  mutable Mutex broken_mu_;
  std::string broken_cause_ FARMEM_GUARDED_BY(broken_mu_);

  int wake_fd_ = -1;  // eventfd that stops watcher_
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace farmem::transport::verbs
