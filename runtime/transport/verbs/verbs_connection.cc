#include "transport/verbs/verbs_connection.h"

#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "transport/verbs/verbs.h"

namespace farmem::transport {
namespace verbs {

using Clock = std::chrono::steady_clock;

namespace {

/// Largest value of the u8 rd_atom fields of rdma_conn_param.
constexpr std::uint32_t kConnParamRdAtomMax = 255;
/// How long the cm watcher sleeps in poll() between checks of its stop flag (it is also
/// woken at once through an eventfd; this only bounds a missed wake-up).
constexpr int kWatcherPollMs = 1000;

Status reject_status(const rdma_cm_event& e, const std::string& peer) {
  const auto* data = static_cast<const std::byte*>(e.param.conn.private_data);
  proto::RejectData rd{};
  // rdma_cm pads reject private data (to 148 bytes on IB/RoCE): only the prefix is ours.
  if (data != nullptr && e.param.conn.private_data_len >= sizeof rd) {
    std::memcpy(&rd, data, sizeof rd);
  }
  if (rd.magic != proto::kMagic) {
    // Says strerror(ECONNREFUSED), like tcp: a resuming connection gives up on a memserver
    // that is not there (transport/resume/).
    return Unavailable(peer + ": " + std::strerror(ECONNREFUSED) + " (reject reason " +
                       std::to_string(e.status) + "): no farmem memserver listening there?");
  }
  const auto code = static_cast<StatusCode>(rd.status);
  switch (code) {
    case StatusCode::kPermissionDenied:
      return PermissionDenied(peer + ": memserver rejected the connection: not authorized");
    case StatusCode::kProtocolError:
      return ProtocolError(peer + ": memserver rejected the connection: protocol version "
                           "mismatch or malformed connect data (this client speaks version " +
                           std::to_string(proto::kVersion) + ")");
    default:
      if (rd.status == 0 || rd.status > static_cast<std::uint32_t>(kLastStatusCode)) {
        return ProtocolError(peer + ": memserver rejected the connection with unknown code " +
                             std::to_string(rd.status));
      }
      return Status(code, peer + ": memserver rejected the connection (" +
                              std::string(to_string(code)) + ")");
  }
}

/// Holds its PD: a registration made through a resuming connection outlives the
/// connection that made it (its PD is shared with the next one).
class VerbsRegistration final : public MemoryRegistration {
 public:
  VerbsRegistration(std::shared_ptr<ibv_pd> pd, ibv::Mr mr) : pd_(std::move(pd)), mr_(std::move(mr)) {}
  std::uint32_t lkey() const override { return mr_->lkey; }
  void* addr() const override { return mr_->addr; }
  std::size_t length() const override { return mr_->length; }

 private:
  std::shared_ptr<ibv_pd> pd_;  // first: outlives mr_
  ibv::Mr mr_;
};

}  // namespace

// ------------------------------------------------------------------------------------------
// Setup and teardown
// ------------------------------------------------------------------------------------------

Result<std::unique_ptr<VerbsConnection>> VerbsConnection::open(const Endpoint& ep,
                                                               const ConnectOptions& options,
                                                               std::shared_ptr<VerbsPdShare> share) {
  const auto deadline = Clock::now() + options.connect_timeout;
  std::unique_ptr<VerbsConnection> c(new VerbsConnection(ep.to_string()));
  c->share_ = std::move(share);
  c->check_leases_ = options.check_leases;
  FARMEM_RETURN_IF_ERROR(c->resolve(ep, deadline));
  FARMEM_RETURN_IF_ERROR(c->create_resources());
  FARMEM_ASSIGN_OR_RETURN(proto::Nonce nonce, proto::random_nonce());
  FARMEM_ASSIGN_OR_RETURN(proto::HelloOk ok, c->establish(options, nonce, deadline));
  c->established_ = true;
  c->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (c->wake_fd_ < 0) return Internal("eventfd: " + ibv::errno_text(errno));
  c->watcher_ = std::thread([conn = c.get()] { conn->watch_cm_events(); });
  FARMEM_RETURN_IF_ERROR(finish_handshake(*c, options, ok, nonce));
  log().debug("{}: connected (QP {}, inline {} B)", c->peer_, c->qp_->qp->qp_num,
              c->shape_.max_inline);
  return c;
}

Status VerbsConnection::resolve(const Endpoint& ep, Clock::time_point deadline) {
  FARMEM_ASSIGN_OR_RETURN(channel_, ibv::create_event_channel());
  FARMEM_ASSIGN_OR_RETURN(id_, ibv::create_id(channel_.get(), this));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* ai = nullptr;
  const std::string port = std::to_string(ep.port);
  if (int rc = getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &ai); rc != 0) {
    return Unavailable(peer_ + ": cannot resolve host: " + gai_strerror(rc));
  }
  const int rc = rdma_resolve_addr(id_.get(), nullptr, ai->ai_addr, ibv::ms_until(deadline));
  const int err = errno;
  freeaddrinfo(ai);
  if (rc != 0) return Unavailable(peer_ + ": rdma_resolve_addr: " + ibv::errno_text(err));
  auto what = peer_ + ": address resolution";
  FARMEM_RETURN_IF_ERROR(ibv::expect_cm_event(channel_.get(), RDMA_CM_EVENT_ADDR_RESOLVED,
                                              std::chrono::milliseconds(ibv::ms_until(deadline)),
                                              what).status());
  std::uint8_t ack_timeout = kAckTimeoutExp;
  if (rdma_set_option(id_.get(), RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &ack_timeout,
                      sizeof ack_timeout) != 0) {
    log().debug("{}: cannot set the ACK timeout: {}", peer_, ibv::errno_text(errno));
  }
  if (rdma_resolve_route(id_.get(), ibv::ms_until(deadline)) != 0) {
    return Unavailable(peer_ + ": rdma_resolve_route: " + ibv::errno_text(errno));
  }
  what = peer_ + ": route resolution";
  return ibv::expect_cm_event(channel_.get(), RDMA_CM_EVENT_ROUTE_RESOLVED,
                              std::chrono::milliseconds(ibv::ms_until(deadline)), what)
      .status();
}

Status VerbsConnection::create_resources() {
  ibv_context* verbs = id_->verbs;
  if (share_) {
    MutexLock lock(share_->mu);
    if (share_->pd && share_->pd->context != verbs) {
      return Unavailable(peer_ + ": reconnected through another RDMA device than before; "
                         "memory registered for this memserver is not valid there");
    }
    if (!share_->pd) {
      FARMEM_ASSIGN_OR_RETURN(ibv::Pd pd, ibv::alloc_pd(verbs));
      share_->pd = std::shared_ptr<ibv_pd>(pd.release(), ibv::PdDeleter{});
    }
    pd_ = share_->pd;
  } else {
    FARMEM_ASSIGN_OR_RETURN(ibv::Pd pd, ibv::alloc_pd(verbs));
    pd_ = std::shared_ptr<ibv_pd>(pd.release(), ibv::PdDeleter{});
  }
  FARMEM_ASSIGN_OR_RETURN(cq_, ibv::create_cq(verbs, kCqDepth, nullptr));
  control_buf_.resize(kControlFrameBytes * (kRecvQueueDepth + 1));
  FARMEM_ASSIGN_OR_RETURN(control_mr_, ibv::reg_mr(pd_.get(), control_buf_.data(),
                                                   control_buf_.size(), IBV_ACCESS_LOCAL_WRITE));
  shape_ = ibv::QpShape{kSendQueueDepth, kRecvQueueDepth, kInlineBytes};
  FARMEM_ASSIGN_OR_RETURN(qp_, ibv::create_rc_qp(id_.get(), pd_.get(), cq_.get(), shape_));
  for (std::uint64_t slot = 0; slot < kRecvQueueDepth; ++slot) {
    FARMEM_RETURN_IF_ERROR(post_recv(slot));
  }
  FARMEM_ASSIGN_OR_RETURN(auto limits, ibv::query_limits(verbs, id_->port_num));
  caps_.name = "verbs";
  caps_.one_sided = true;
  caps_.pins_registered_memory = true;
  caps_.max_op_bytes = static_cast<std::uint32_t>(std::min(limits.max_msg_sz, kMaxOpBytesCap));
  caps_.max_batch_ops = kMaxBatchOps;
  return Status::Ok();
}

Result<proto::HelloOk> VerbsConnection::establish(const ConnectOptions& options,
                                                  const proto::Nonce& nonce,
                                                  Clock::time_point deadline) {
  FARMEM_ASSIGN_OR_RETURN(auto limits, ibv::query_limits(id_->verbs, id_->port_num));
  FARMEM_RETURN_IF_ERROR(validate_credentials(options));
  // Private data: ConnectData, our nonce, the tenant's name (at most 56 bytes: all an RC REQ
  // carries). No secret: that is proven later, over the connection (AUTH).
  const std::vector<std::byte> priv = proto::make_connect_data(options.tenant, nonce);
  rdma_conn_param param{};
  param.private_data = priv.data();
  param.private_data_len = static_cast<std::uint8_t>(priv.size());
  // Many RDMA READs in flight is what makes batched reads fast: ask for all the device has.
  param.initiator_depth =
      static_cast<std::uint8_t>(std::min(limits.max_qp_init_rd_atom, kConnParamRdAtomMax));
  param.responder_resources = 1;  // the memserver never reads from us
  param.retry_count = kRetryCount;
  param.rnr_retry_count = kRnrRetryCount;
  if (rdma_connect(id_.get(), &param) != 0) {
    return Unavailable(peer_ + ": rdma_connect: " + ibv::errno_text(errno));
  }
  auto ev = ibv::next_cm_event(channel_.get(), std::chrono::milliseconds(ibv::ms_until(deadline)));
  if (!ev.ok()) return ev.status().with_context(peer_ + ": connect");
  switch ((*ev)->event) {
    case RDMA_CM_EVENT_ESTABLISHED: {
      // The memserver's HELLO_OK rides in the accept's private data (zero-padded by rdma_cm).
      const auto& conn = (*ev)->param.conn;
      proto::HelloOk ok{};
      if (conn.private_data == nullptr || conn.private_data_len < sizeof ok) {
        return ProtocolError(peer_ + ": the memserver's accept carries " +
                             std::to_string(conn.private_data_len) +
                             " bytes of private data, not a HELLO_OK (an older memserver?)");
      }
      std::memcpy(&ok, conn.private_data, sizeof ok);
      return ok;
    }
    case RDMA_CM_EVENT_REJECTED:
      return reject_status(**ev, peer_);
    default:
      return Unavailable(peer_ + ": connect failed: " + rdma_event_str((*ev)->event) +
                         " (status " + std::to_string((*ev)->status) + ")");
  }
}

Status VerbsConnection::post_recv(std::uint64_t slot) {
  ibv_sge sge{reinterpret_cast<std::uint64_t>(control_buf_.data() + slot * kControlFrameBytes),
              static_cast<std::uint32_t>(kControlFrameBytes), control_mr_->lkey};
  ibv_recv_wr wr{};
  wr.wr_id = kControlBit | (slot << 3);
  wr.sg_list = &sge;
  wr.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  if (int rc = ibv_post_recv(qp_->qp, &wr, &bad); rc != 0) {
    return Internal(peer_ + ": ibv_post_recv: " + ibv::errno_text(rc));
  }
  return Status::Ok();
}

void VerbsConnection::watch_cm_events() {
  while (!stop_.load(std::memory_order_acquire)) {
    pollfd fds[2] = {{channel_->fd, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, kWatcherPollMs) <= 0 || (fds[0].revents & POLLIN) == 0) continue;
    auto ev = ibv::next_cm_event(channel_.get(), std::chrono::milliseconds(0));
    if (!ev.ok()) continue;
    const auto type = (*ev)->event;
    if (type == RDMA_CM_EVENT_DISCONNECTED || type == RDMA_CM_EVENT_DEVICE_REMOVAL) {
      mark_broken(Unavailable(peer_ + ": memserver " +
                              (type == RDMA_CM_EVENT_DISCONNECTED ? "disconnected"
                                                                  : "RDMA device removed")));
    } else {
      log().debug("{}: rdma_cm event {}", peer_, rdma_event_str(type));
    }
  }
}

VerbsConnection::~VerbsConnection() {
  if (watcher_.joinable()) {
    stop_.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    if (write(wake_fd_, &one, sizeof one) < 0) log().debug("{}: eventfd write failed", peer_);
    watcher_.join();
  }
  if (wake_fd_ >= 0) close(wake_fd_);
  say_bye();
  // Tells the memserver at once (DREQ); also moves the QP to error.
  if (qp_) rdma_disconnect(id_.get());
}

Result<std::unique_ptr<MemoryRegistration>> VerbsConnection::register_memory(void* addr,
                                                                             std::size_t length) {
  if (addr == nullptr || length == 0) return InvalidArgument("register_memory: empty range");
  // LOCAL_WRITE: RDMA READs land in this memory.
  auto mr = ibv::reg_mr(pd_.get(), addr, length, IBV_ACCESS_LOCAL_WRITE);
  if (!mr.ok()) return mr.status().with_context(peer_);
  return std::unique_ptr<MemoryRegistration>(new VerbsRegistration(pd_, std::move(mr).value()));
}

// ------------------------------------------------------------------------------------------
// Broken state
// ------------------------------------------------------------------------------------------

void VerbsConnection::mark_broken(const Status& cause) {
  {
    MutexLock lock(broken_mu_);
    if (broken_.load(std::memory_order_relaxed)) return;
    broken_cause_ = cause.message();
    broken_.store(true, std::memory_order_release);
  }
  log().warn("{}: connection broken: {}", peer_, cause.to_string());
  // Flushes whatever is still in flight, so every waiter completes instead of hanging.
  if (qp_) {
    if (Status s = ibv::move_qp_to_error(qp_->qp); !s.ok()) {
      log().debug("{}: {}", peer_, s.to_string());
    }
  }
}

Status VerbsConnection::broken_status() const {
  MutexLock lock(broken_mu_);
  return Unavailable(peer_ + ": connection broken: " + broken_cause_);
}

}  // namespace verbs

std::shared_ptr<VerbsPdShare> make_verbs_pd_share() {
  return std::make_shared<VerbsPdShare>();
}

Result<std::unique_ptr<Connection>> connect_verbs(const Endpoint& endpoint,
                                                  const ConnectOptions& options,
                                                  std::shared_ptr<VerbsPdShare> share) {
  auto c = verbs::VerbsConnection::open(endpoint, options, std::move(share));
  if (!c.ok()) return c.status();
  return std::unique_ptr<Connection>(std::move(c).value());
}

bool rdma_device_available() {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list == nullptr) return false;
  bool found = false;
  for (int i = 0; i < n && !found; ++i) {
    ibv_context* ctx = ibv_open_device(list[i]);
    if (ctx == nullptr) continue;
    ibv_device_attr dev{};
    if (ibv_query_device(ctx, &dev) == 0) {
      for (std::uint8_t p = 1; p <= dev.phys_port_cnt && !found; ++p) {
        ibv_port_attr port{};
        found = ibv_query_port(ctx, p, &port) == 0 && port.state == IBV_PORT_ACTIVE;
      }
    }
    ibv_close_device(ctx);
  }
  ibv_free_device_list(list);
  return found;
}

}  // namespace farmem::transport
