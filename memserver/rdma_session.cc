#include "memserver/rdma_session.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace farmem::memserver {

namespace {
/// wr_id of a control WR: the slot, plus this bit for the reply SENDs.
constexpr std::uint64_t kSendFlag = 1ull << 32;
/// Largest value of the u8 rd_atom fields of rdma_conn_param.
constexpr std::uint32_t kConnParamRdAtomMax = 255;
}  // namespace

// ------------------------------------------------------------------------------------------
// PdSlabRegistrar
// ------------------------------------------------------------------------------------------

Result<std::uint32_t> PdSlabRegistrar::register_slab(void* base, std::size_t bytes) {
  // The client reads and writes the slab; LOCAL_WRITE is required with REMOTE_WRITE.
  constexpr int kAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
  auto mr = ibv::reg_mr(pd_.get(), base, bytes, kAccess);
  if (!mr.ok()) return mr.status();
  const std::uint32_t rkey = (*mr)->rkey;
  MutexLock lock(mu_);
  mrs_[base] = std::move(mr).value();
  return rkey;
}

void PdSlabRegistrar::deregister_slab(void* base) {
  MutexLock lock(mu_);
  mrs_.erase(base);
}

// ------------------------------------------------------------------------------------------
// Setup and teardown
// ------------------------------------------------------------------------------------------

RdmaSession::~RdmaSession() {
  // Stops the client's access first: DREQ to the client, our QP to error.
  if (qp_) rdma_disconnect(id_.get());
  qp_.reset();
  // Nothing when the session ended (BYE) or another connection took it over.
  if (session_) core_.detach_session(*session_, attachment_);
}

Status RdmaSession::accept(const proto::Hello& hello, const ConnectRequest& req) {
  ibv_context* verbs = id_->verbs;
  FARMEM_ASSIGN_OR_RETURN(ibv::Pd pd, ibv::alloc_pd(verbs));
  pd_ = SharedPd(pd.release(), ibv::PdDeleter{});
  FARMEM_ASSIGN_OR_RETURN(session_, core_.open_session(hello, peer_,
                                                       std::make_unique<PdSlabRegistrar>(pd_)));
  attachment_ = session_->attachment();
  FARMEM_RETURN_IF_ERROR(create_verbs_objects());
  FARMEM_ASSIGN_OR_RETURN(auto limits, ibv::query_limits(verbs, id_->port_num));

  std::uint8_t ack_timeout = kServerAckTimeoutExp;
  if (rdma_set_option(id_.get(), RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &ack_timeout,
                      sizeof ack_timeout) != 0) {
    log().debug("{}: cannot set the ACK timeout: {}", peer_, ibv::errno_text(errno));
  }
  const proto::HelloOk ok = core_.hello_reply(*session_);
  rdma_conn_param param{};
  param.private_data = &ok;
  param.private_data_len = sizeof ok;
  // Serve as many concurrent RDMA READs as the client asks and the device allows: the
  // client's read bandwidth depends on it.
  param.responder_resources = static_cast<std::uint8_t>(
      std::min({std::uint32_t{req.initiator_depth}, limits.max_qp_rd_atom, kConnParamRdAtomMax}));
  param.initiator_depth = static_cast<std::uint8_t>(std::min(
      {std::uint32_t{req.responder_resources}, limits.max_qp_init_rd_atom, kConnParamRdAtomMax}));
  param.rnr_retry_count = kServerRnrRetryCount;
  if (rdma_accept(id_.get(), &param) != 0) {
    return Internal("rdma_accept: " + ibv::errno_text(errno));
  }
  log().debug("{}: accepted (session {}, {} RDMA READs in flight)", peer_, session_->id(),
              static_cast<unsigned>(param.responder_resources));
  return Status::Ok();
}

Status RdmaSession::create_verbs_objects() {
  ibv_context* verbs = id_->verbs;
  FARMEM_ASSIGN_OR_RETURN(comp_, ibv::create_comp_channel(verbs));
  FARMEM_ASSIGN_OR_RETURN(cq_, ibv::create_cq(verbs, kServerCqDepth, comp_.get()));
  buf_.resize(2 * kServerControlSlots * kServerFrameBytes);
  FARMEM_ASSIGN_OR_RETURN(buf_mr_, ibv::reg_mr(pd_.get(), buf_.data(), buf_.size(),
                                               IBV_ACCESS_LOCAL_WRITE));
  ibv::QpShape shape{kServerControlSlots, kServerControlSlots, kServerInlineBytes};
  FARMEM_ASSIGN_OR_RETURN(qp_, ibv::create_rc_qp(id_.get(), pd_.get(), cq_.get(), shape));
  max_inline_ = shape.max_inline;
  for (std::uint32_t slot = 0; slot < kServerControlSlots; ++slot) {
    FARMEM_RETURN_IF_ERROR(post_recv(slot));
  }
  if (int rc = ibv_req_notify_cq(cq_.get(), 0); rc != 0) {
    return Internal("ibv_req_notify_cq: " + ibv::errno_text(rc));
  }
  return Status::Ok();
}

Status RdmaSession::post_recv(std::uint32_t slot) {
  ibv_sge sge{reinterpret_cast<std::uint64_t>(recv_slot(slot)),
              static_cast<std::uint32_t>(kServerFrameBytes), buf_mr_->lkey};
  ibv_recv_wr wr{};
  wr.wr_id = slot;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  if (int rc = ibv_post_recv(qp_->qp, &wr, &bad); rc != 0) {
    return Internal("ibv_post_recv: " + ibv::errno_text(rc));
  }
  return Status::Ok();
}

// ------------------------------------------------------------------------------------------
// Control messages
// ------------------------------------------------------------------------------------------

bool RdmaSession::on_completion_event() {
  ibv_cq* cq = nullptr;
  void* ctx = nullptr;
  if (ibv_get_cq_event(comp_.get(), &cq, &ctx) != 0) return true;  // spurious wake-up
  ibv_ack_cq_events(cq, 1);
  // Re-arm first, then drain: a CQE that lands after the drain raises a new event.
  if (ibv_req_notify_cq(cq_.get(), 0) != 0) return false;
  return poll_requests();
}

bool RdmaSession::poll_requests() {
  if (!cq_) return false;
  ibv_wc wcs[kServerCqDepth];
  for (int n; (n = ibv_poll_cq(cq_.get(), kServerCqDepth, wcs)) != 0;) {
    if (n < 0) return false;
    for (int i = 0; i < n; ++i) {
      if (!handle_wc(wcs[i])) return false;
    }
  }
  return true;
}

bool RdmaSession::handle_wc(const ibv_wc& wc) {
  const auto slot = static_cast<std::uint32_t>(wc.wr_id & (kSendFlag - 1));
  if (wc.status != IBV_WC_SUCCESS) {
    // Flushes follow a disconnect, whose cm event tears the session down; others are fatal.
    if (wc.status != IBV_WC_WR_FLUSH_ERR) {
      log().warn("{}: control {} failed: {}", peer_, (wc.wr_id & kSendFlag) ? "SEND" : "RECV",
                 ibv::wc_status_text(wc.status));
    }
    return false;
  }
  if ((wc.wr_id & kSendFlag) != 0) {
    // The reply of this slot is out: the slot may take the next request.
    if (Status s = post_recv(slot); !s.ok()) {
      log().warn("{}: {}", peer_, s.to_string());
      return false;
    }
    return true;
  }
  auto request = proto::decode(std::span<const std::byte>(recv_slot(slot), wc.byte_len));
  if (!request.ok()) {
    core_.count_error();
    const auto reply =
        proto::Message::error(request.status().code(), request.status().message(), 0);
    if (Status s = this->reply(slot, reply); !s.ok()) {
      log().warn("{}: {}", peer_, s.to_string());
      return false;
    }
    return true;
  }
  return serve(slot, *request);
}

bool RdmaSession::serve(std::uint32_t slot, const proto::Message& request) {
  if (!session_) return false;
  last_request_ = std::chrono::steady_clock::now();
  proto::Message reply;
  bool keep = true;
  if (request.type == proto::MsgType::kBye) {
    // A clean end: no grace to wait out, and no reply.
    if (session_->attachment() == attachment_) core_.close_session(*session_);
    session_.reset();
    return false;
  }
  if (session_->attachment() != attachment_) {
    // Another connection RESUMEd this session: this one may do nothing more.
    reply = proto::Message::error(StatusCode::kUnavailable,
                                  "session taken over by another connection", request.req_id);
    keep = false;
  } else if (request.type == proto::MsgType::kResume) {
    reply = resume(request);
  } else {
    reply = core_.handle(*session_, request);  // the Core counts its own errors
  }
  if (Status s = this->reply(slot, reply); !s.ok()) {
    log().warn("{}: {}", peer_, s.to_string());
    return false;
  }
  return keep;
}

proto::Message RdmaSession::resume(const proto::Message& request) {
  auto body = request.as<proto::ResumeRequest>();
  if (!body.ok()) {
    core_.count_error();
    return proto::Message::error(body.status().code(), body.status().message(), request.req_id);
  }
  auto old = core_.resume_session(*session_, *body);
  if (!old.ok()) {
    core_.count_error();
    return proto::Message::error(old.status().code(), old.status().message(), request.req_id);
  }
  // resume_session closed the session this connection opened and moved the old one's slab
  // registrations into this connection's PD: this connection serves it now.
  session_ = std::move(old).value();
  attachment_ = session_->attachment();
  const proto::ResumeOk ok{session_->id(), static_cast<std::uint32_t>(session_->slab_count()), 0};
  auto reply = proto::Message::of(proto::MsgType::kResumeOk, ok);
  reply.req_id = request.req_id;
  return reply;
}

Status RdmaSession::reply(std::uint32_t slot, const proto::Message& msg) {
  const auto frame = proto::encode(msg);
  if (frame.size() > kServerFrameBytes) return Internal("reply frame too large");
  std::memcpy(send_slot(slot), frame.data(), frame.size());
  ibv_sge sge{reinterpret_cast<std::uint64_t>(send_slot(slot)),
              static_cast<std::uint32_t>(frame.size()), buf_mr_->lkey};
  ibv_send_wr wr{};
  wr.wr_id = kSendFlag | slot;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = IBV_SEND_SIGNALED | (frame.size() <= max_inline_ ? IBV_SEND_INLINE : 0);
  ibv_send_wr* bad = nullptr;
  if (int rc = ibv_post_send(qp_->qp, &wr, &bad); rc != 0) {
    return Internal("ibv_post_send(reply): " + ibv::errno_text(rc));
  }
  return Status::Ok();
}

}  // namespace farmem::memserver
