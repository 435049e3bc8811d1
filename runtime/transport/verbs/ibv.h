// RAII handles and small helpers over libibverbs and librdmacm, shared by the verbs client
// backend and the memserver's RDMA listener.
//
// Every verbs object is a unique_ptr with a deleter, so a holder's member order decides the
// teardown order. Owners declare, in this order, and so destroy in reverse:
//
//   EventChannel → CmId → Pd → CompChannel → Cq → Mr(s) → CmQp
//
// i.e. the QP goes first, then the MRs and CQ, then the PD, then the cm_id and its channel.
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "farmem/status.h"

namespace farmem::ibv {

struct EventChannelDeleter {
  void operator()(rdma_event_channel* c) const { rdma_destroy_event_channel(c); }
};
struct CmIdDeleter {
  void operator()(rdma_cm_id* id) const { rdma_destroy_id(id); }
};
/// Owns the QP that rdma_create_qp attached to a cm_id (not the cm_id itself).
struct CmQpDeleter {
  void operator()(rdma_cm_id* id) const { rdma_destroy_qp(id); }
};
struct PdDeleter {
  void operator()(ibv_pd* pd) const { ibv_dealloc_pd(pd); }
};
struct CqDeleter {
  void operator()(ibv_cq* cq) const { ibv_destroy_cq(cq); }
};
struct CompChannelDeleter {
  void operator()(ibv_comp_channel* c) const { ibv_destroy_comp_channel(c); }
};
struct MrDeleter {
  void operator()(ibv_mr* mr) const { ibv_dereg_mr(mr); }
};
/// Acknowledges a cm event; rdma_destroy_id waits for every retrieved event to be acked.
struct CmEventDeleter {
  void operator()(rdma_cm_event* e) const { rdma_ack_cm_event(e); }
};

using EventChannel = std::unique_ptr<rdma_event_channel, EventChannelDeleter>;
using CmId = std::unique_ptr<rdma_cm_id, CmIdDeleter>;
using CmQp = std::unique_ptr<rdma_cm_id, CmQpDeleter>;
using Pd = std::unique_ptr<ibv_pd, PdDeleter>;
using Cq = std::unique_ptr<ibv_cq, CqDeleter>;
using CompChannel = std::unique_ptr<ibv_comp_channel, CompChannelDeleter>;
using Mr = std::unique_ptr<ibv_mr, MrDeleter>;
using CmEvent = std::unique_ptr<rdma_cm_event, CmEventDeleter>;

/// "Connection refused (errno 111)".
std::string errno_text(int err);
/// "remote access error (wc status 10)".
std::string wc_status_text(ibv_wc_status status);

// ---- creation (each fails with a Status naming the call and errno) ----

/// A non-blocking event channel (its fd is waited on with poll()).
Result<EventChannel> create_event_channel();
Result<CmId> create_id(rdma_event_channel* channel, void* context);
Result<Pd> alloc_pd(ibv_context* verbs);
/// A CQ of at least `depth` entries; `channel` may be null (a polled CQ).
Result<Cq> create_cq(ibv_context* verbs, int depth, ibv_comp_channel* channel);
/// A non-blocking completion channel.
Result<CompChannel> create_comp_channel(ibv_context* verbs);
Result<Mr> reg_mr(ibv_pd* pd, void* addr, std::size_t length, int access);

/// Queue sizes of an RC QP whose send and receive sides share `cq`.
struct QpShape {
  std::uint32_t send_depth = 0;
  std::uint32_t recv_depth = 0;
  std::uint32_t max_inline = 0;
};
/// Creates the RC QP of `id` on `pd` (rdma_create_qp); `shape` receives what the device
/// actually granted (max_inline may come back larger than asked). Unsignaled sends by default.
Result<CmQp> create_rc_qp(rdma_cm_id* id, ibv_pd* pd, ibv_cq* cq, QpShape& shape);

// ---- QP state changes ----

/// Moves a QP to the error state: every outstanding work request completes with
/// IBV_WC_WR_FLUSH_ERR at once. Used when a peer is gone or a wait timed out.
Status move_qp_to_error(ibv_qp* qp);

// ---- device facts ----

struct DeviceLimits {
  std::uint32_t max_qp_rd_atom = 0;       ///< RDMA READs a QP serves at once (responder)
  std::uint32_t max_qp_init_rd_atom = 0;  ///< RDMA READs a QP issues at once (initiator)
  std::uint64_t max_msg_sz = 0;           ///< largest message of the port
};
Result<DeviceLimits> query_limits(ibv_context* verbs, std::uint8_t port_num);

// ---- cm events ----

/// Waits up to `timeout` for the next event on `channel` (poll on its fd).
/// kTimedOut when none arrives; kInternal on a system error.
Result<CmEvent> next_cm_event(rdma_event_channel* channel, std::chrono::milliseconds timeout);
/// Waits for the next event and fails unless it is of type `expected`. The failure names
/// the event actually received (and its status), prefixed with `what`.
Result<CmEvent> expect_cm_event(rdma_event_channel* channel, rdma_cm_event_type expected,
                                std::chrono::milliseconds timeout, std::string_view what);
/// Makes a fd non-blocking.
Status set_nonblocking(int fd);

/// Milliseconds left until `deadline`, at least 1 (rdma_cm rejects a 0 timeout).
int ms_until(std::chrono::steady_clock::time_point deadline);

}  // namespace farmem::ibv
