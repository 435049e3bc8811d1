// One RDMA client of the memserver: its own protection domain (so its rkeys mean nothing to
// any other client), an RC QP, and the control channel (RECV request → Core::handle → SEND
// reply). Private to the RDMA listener; every method runs on the listener's event thread.
//
// When the connection ends without a BYE (a disconnect, a queue pair in error, the listener's
// handshake or idle timeout) the Core session is detached, not closed: it keeps its slabs for
// the lease grace, still registered in this connection's protection domain, which the
// session's registrar shares (the PD outlives this object). A later connection of the same
// client RESUMEs it: the Core re-registers the slabs in the new connection's PD (new rkeys,
// which the client reads with LIST_SLABS) and drops the old registrations and PD.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "memserver/core.h"
#include "transport/verbs/ibv.h"

namespace farmem::memserver {

/// Control requests a client can have in flight; its calls are serialized, so one would do,
/// the rest is slack. Each has a matching reply slot, and a request slot is re-posted only
/// once its reply was sent, so replies can never be overwritten or run out of slots.
inline constexpr std::uint32_t kServerControlSlots = 4;
/// One CQE per WR at most: every RECV and every (signaled) SEND.
inline constexpr int kServerCqDepth = 2 * kServerControlSlots;
/// Inline data asked of the QP: most replies (SLAB_INFO, FREE_OK) fit in 64 bytes.
inline constexpr std::uint32_t kServerInlineBytes = 64;
/// Largest control frame in either direction.
inline constexpr std::size_t kServerFrameBytes =
    sizeof(proto::FrameHeader) + proto::kMaxControlPayload;
/// Local ACK timeout exponent (4.096 us * 2^16 = 268 ms): replies to a vanished client fail
/// after about 2 s instead of 8.
inline constexpr std::uint8_t kServerAckTimeoutExp = 16;
/// RNR retries for replies: 7 = forever; clients always have their RECVs posted.
inline constexpr std::uint8_t kServerRnrRetryCount = 7;

/// A protection domain owned jointly by a connection and its session's registrar.
using SharedPd = std::shared_ptr<ibv_pd>;

/// Registers slabs with one connection's PD, and keeps that PD alive while it holds
/// registrations (a detached session's, after its connection is gone).
class PdSlabRegistrar final : public SlabRegistrar {
 public:
  explicit PdSlabRegistrar(SharedPd pd) : pd_(std::move(pd)) {}
  Result<std::uint32_t> register_slab(void* base, std::size_t bytes) override;
  void deregister_slab(void* base) override;

 private:
  const SharedPd pd_;  // declared first: outlives mrs_
  /// Guards mrs_ (Core calls in under its session lock, but from any thread).
  Mutex mu_;
  std::map<void*, ibv::Mr> mrs_ FARMEM_GUARDED_BY(mu_);
};

/// What a CONNECT_REQUEST asked for, copied out of its event before the event is acked.
struct ConnectRequest {
  std::string peer;
  std::uint8_t initiator_depth = 0;      ///< RDMA READs the client wants in flight
  std::uint8_t responder_resources = 0;  ///< RDMA READs the client serves
  std::vector<std::byte> private_data;
};

class RdmaSession {
 public:
  /// Owns `id` from now on (destroys it last).
  RdmaSession(Core& core, ibv::CmId id, std::string peer)
      : core_(core), peer_(std::move(peer)), id_(std::move(id)) {}
  /// Disconnects and detaches the Core session (kept for the lease grace; closed at once
  /// without one, or when it never authenticated), then destroys QP, control MR, CQ,
  /// channel and cm_id in that order; the PD goes with the last registration in it.
  ~RdmaSession();
  RdmaSession(const RdmaSession&) = delete;
  RdmaSession& operator=(const RdmaSession&) = delete;

  /// Opens the Core session (unauthenticated until the client's AUTH, a control message)
  /// and builds the session's verbs objects, then rdma_accept with HELLO_OK as private data
  /// (the memserver's nonce). On failure the caller rejects with the returned code and drops
  /// *this.
  Status accept(const proto::Hello& hello, const ConnectRequest& req);

  rdma_cm_id* cm_id() const { return id_.get(); }
  /// Whether the Core session passed AUTH (the listener closes one that does not in time).
  bool authenticated() const { return session_ && session_->authenticated(); }
  /// When the connect request was accepted, and when the client's last control request
  /// (a PING included) arrived: one-sided READ/WRITE never reaches this CPU, so control
  /// requests are the only sign of life the memserver sees.
  std::chrono::steady_clock::time_point accepted_at() const { return accepted_at_; }
  std::chrono::steady_clock::time_point last_request() const { return last_request_; }
  /// The completion channel fd to wait on (POLLIN: CQ events).
  int completion_fd() const { return comp_->fd; }
  const std::string& peer() const { return peer_; }

  /// Handles a readable completion channel: control requests are answered. False when the
  /// session failed and must be dropped.
  bool on_completion_event();
  /// Handles whatever the CQ holds now without waiting for an event (the listener calls it
  /// on a disconnect, so that a BYE that came just before is not lost). False as above.
  bool poll_requests();

 private:
  Status create_verbs_objects();
  Status post_recv(std::uint32_t slot);
  bool handle_wc(const ibv_wc& wc);
  /// Serves one decoded request; false when the connection must end (BYE, taken over).
  bool serve(std::uint32_t slot, const proto::Message& request);
  /// RESUME: this connection takes over the session named in `request`.
  proto::Message resume(const proto::Message& request);
  Status reply(std::uint32_t slot, const proto::Message& msg);
  std::byte* recv_slot(std::uint32_t slot) { return buf_.data() + slot * kServerFrameBytes; }
  std::byte* send_slot(std::uint32_t slot) {
    return buf_.data() + (kServerControlSlots + slot) * kServerFrameBytes;
  }

  Core& core_;
  const std::string peer_;
  std::uint32_t max_inline_ = 0;
  const std::chrono::steady_clock::time_point accepted_at_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_request_ = accepted_at_;
  std::uint64_t attachment_ = 0;  ///< session_'s attachment this connection serves

  // Declaration order is teardown order reversed: QP, Core session (slab MRs), control MR,
  // CQ, completion channel, PD, cm_id.
  ibv::CmId id_;
  SharedPd pd_;
  ibv::CompChannel comp_;
  ibv::Cq cq_;
  std::vector<std::byte> buf_;  // request slots, then reply slots
  ibv::Mr buf_mr_;
  std::shared_ptr<Session> session_;
  ibv::CmQp qp_;
};

}  // namespace farmem::memserver
