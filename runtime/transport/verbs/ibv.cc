#include "transport/verbs/ibv.h"

#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <cstring>

namespace farmem::ibv {

namespace {
// rdma_cm calls report errors through errno; verbs calls mostly return it. Both end here.
Status sys_error(std::string_view call, int err) {
  const StatusCode code = (err == ENODEV || err == ENOENT || err == ENXIO) ? StatusCode::kUnavailable
                          : (err == ENOMEM)                                ? StatusCode::kResourceExhausted
                                                                           : StatusCode::kInternal;
  std::string msg = std::string(call) + ": " + errno_text(err);
  if (err == ENOMEM) msg += " (is RLIMIT_MEMLOCK large enough? see ulimit -l)";
  return Status(code, std::move(msg));
}
}  // namespace

std::string errno_text(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

std::string wc_status_text(ibv_wc_status status) {
  return std::string(ibv_wc_status_str(status)) + " (wc status " +
         std::to_string(static_cast<int>(status)) + ")";
}

Status set_nonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return sys_error("fcntl(O_NONBLOCK)", errno);
  }
  return Status::Ok();
}

Result<EventChannel> create_event_channel() {
  EventChannel ch(rdma_create_event_channel());
  if (!ch) {
    const int err = errno;
    // No /dev/infiniband/rdma_cm: the kernel has no RDMA (or rdma_ucm is not loaded).
    return Unavailable("rdma_create_event_channel: " + errno_text(err) +
                       " (no RDMA support on this host?)");
  }
  FARMEM_RETURN_IF_ERROR(set_nonblocking(ch->fd));
  return ch;
}

Result<CmId> create_id(rdma_event_channel* channel, void* context) {
  rdma_cm_id* id = nullptr;
  if (rdma_create_id(channel, &id, context, RDMA_PS_TCP) != 0) {
    return sys_error("rdma_create_id", errno);
  }
  return CmId(id);
}

Result<Pd> alloc_pd(ibv_context* verbs) {
  Pd pd(ibv_alloc_pd(verbs));
  if (!pd) return sys_error("ibv_alloc_pd", errno);
  return pd;
}

Result<Cq> create_cq(ibv_context* verbs, int depth, ibv_comp_channel* channel) {
  Cq cq(ibv_create_cq(verbs, depth, nullptr, channel, 0));
  if (!cq) return sys_error("ibv_create_cq(" + std::to_string(depth) + ")", errno);
  return cq;
}

Result<CompChannel> create_comp_channel(ibv_context* verbs) {
  CompChannel ch(ibv_create_comp_channel(verbs));
  if (!ch) return sys_error("ibv_create_comp_channel", errno);
  FARMEM_RETURN_IF_ERROR(set_nonblocking(ch->fd));
  return ch;
}

Result<Mr> reg_mr(ibv_pd* pd, void* addr, std::size_t length, int access) {
  Mr mr(ibv_reg_mr(pd, addr, length, access));
  if (!mr) return sys_error("ibv_reg_mr(" + std::to_string(length) + " bytes)", errno);
  return mr;
}

Result<CmQp> create_rc_qp(rdma_cm_id* id, ibv_pd* pd, ibv_cq* cq, QpShape& shape) {
  ibv_qp_init_attr attr{};
  attr.send_cq = cq;
  attr.recv_cq = cq;
  attr.qp_type = IBV_QPT_RC;
  attr.sq_sig_all = 0;  // selective signalling: the poster chooses which WRs complete
  attr.cap.max_send_wr = shape.send_depth;
  attr.cap.max_recv_wr = shape.recv_depth;
  attr.cap.max_send_sge = 1;
  attr.cap.max_recv_sge = 1;
  attr.cap.max_inline_data = shape.max_inline;
  if (rdma_create_qp(id, pd, &attr) != 0) return sys_error("rdma_create_qp", errno);
  shape.send_depth = attr.cap.max_send_wr;
  shape.recv_depth = attr.cap.max_recv_wr;
  shape.max_inline = attr.cap.max_inline_data;
  return CmQp(id);
}

Status move_qp_to_error(ibv_qp* qp) {
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_ERR;
  const int rc = ibv_modify_qp(qp, &attr, IBV_QP_STATE);
  if (rc != 0) return sys_error("ibv_modify_qp(ERR)", rc);
  return Status::Ok();
}

Result<DeviceLimits> query_limits(ibv_context* verbs, std::uint8_t port_num) {
  ibv_device_attr dev{};
  if (int rc = ibv_query_device(verbs, &dev); rc != 0) return sys_error("ibv_query_device", rc);
  ibv_port_attr port{};
  if (int rc = ibv_query_port(verbs, port_num, &port); rc != 0) {
    return sys_error("ibv_query_port", rc);
  }
  DeviceLimits l;
  l.max_qp_rd_atom = static_cast<std::uint32_t>(dev.max_qp_rd_atom);
  l.max_qp_init_rd_atom = static_cast<std::uint32_t>(dev.max_qp_init_rd_atom);
  l.max_msg_sz = port.max_msg_sz;
  return l;
}

Result<CmEvent> next_cm_event(rdma_event_channel* channel, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    rdma_cm_event* e = nullptr;
    if (rdma_get_cm_event(channel, &e) == 0) return CmEvent(e);
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return sys_error("rdma_get_cm_event", errno);
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return TimedOut("no rdma_cm event within " +
                                           std::to_string(timeout.count()) + " ms");
    pollfd pfd{channel->fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      return sys_error("poll(rdma_cm channel)", errno);
    }
  }
}

Result<CmEvent> expect_cm_event(rdma_event_channel* channel, rdma_cm_event_type expected,
                                std::chrono::milliseconds timeout, std::string_view what) {
  auto ev = next_cm_event(channel, timeout);
  if (!ev.ok()) return ev.status().with_context(what);
  if ((*ev)->event != expected) {
    const int st = (*ev)->status;
    return Unavailable(std::string(what) + ": " + rdma_event_str((*ev)->event) +
                       (st < 0 ? " (" + errno_text(-st) + ")"
                               : " (status " + std::to_string(st) + ")"));
  }
  return ev;
}

int ms_until(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() < 1 ? 1 : static_cast<int>(left.count());
}

}  // namespace farmem::ibv
