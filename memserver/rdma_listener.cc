#include "memserver/rdma_listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/log.h"
#include "memserver/rdma_session.h"

namespace farmem::memserver {

namespace {

/// Connect requests rdma_cm queues before we get to them.
constexpr int kListenBacklog = 64;
/// Upper bound on one sleep of the event thread; it is woken at once by cm events, CQ events
/// and the stop eventfd, so this only bounds a lost wake-up.
constexpr int kEventPollMs = 1000;

std::string peer_of(rdma_cm_id* id) {
  const sockaddr* sa = rdma_get_peer_addr(id);
  char host[INET6_ADDRSTRLEN] = "?";
  std::uint16_t port = 0;
  if (sa != nullptr && sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (sa != nullptr && sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  }
  return "rdma://" + std::string(host) + ":" + std::to_string(port);
}

sockaddr_storage to_storage(const sockaddr* sa, socklen_t len) {
  sockaddr_storage ss{};
  std::memcpy(&ss, sa, std::min<std::size_t>(len, sizeof ss));
  return ss;
}

bool is_wildcard(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(ss).sin_addr.s_addr == htonl(INADDR_ANY);
  }
  if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr;
    return std::memcmp(&a, &in6addr_any, sizeof a) == 0;
  }
  return false;
}

bool any_rdma_device() {
  int n = 0;
  ibv_context** devs = rdma_get_devices(&n);
  if (devs != nullptr) rdma_free_devices(devs);
  return n > 0;
}

void reject(rdma_cm_id* id, StatusCode code) {
  const proto::RejectData rd{proto::kMagic, static_cast<std::uint32_t>(code)};
  if (rdma_reject(id, &rd, sizeof rd) != 0) {
    log().debug("rdma_reject: {}", ibv::errno_text(errno));
  }
}

class RdmaListenerImpl final : public RdmaListener {
 public:
  RdmaListenerImpl(Core& core, RdmaListenerOptions options) : core_(core), options_(options) {}
  ~RdmaListenerImpl() override;

  Status start(const std::string& host, std::uint16_t port);
  std::uint16_t port() const override { return port_; }

 private:
  void run_event_thread();
  void wait_and_dispatch_on_event_thread();
  void on_cm_event_on_event_thread();
  void on_connect_request_on_event_thread(ibv::CmEvent ev);
  /// Disconnects clients past the handshake or idle timeout.
  void sweep_on_event_thread();

  Core& core_;
  const RdmaListenerOptions options_;
  std::uint16_t port_ = 0;
  ibv::EventChannel channel_;
  ibv::CmId listen_id_;
  int wake_fd_ = -1;  // eventfd: stops the event thread
  std::atomic<bool> stop_{false};
  /// Live and pending sessions by cm_id. Event thread only.
  std::unordered_map<rdma_cm_id*, std::unique_ptr<RdmaSession>> sessions_;
  std::thread thread_;
};

Status RdmaListenerImpl::start(const std::string& host, std::uint16_t port) {
  FARMEM_ASSIGN_OR_RETURN(channel_, ibv::create_event_channel());
  FARMEM_ASSIGN_OR_RETURN(listen_id_, ibv::create_id(channel_.get(), nullptr));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_flags = AI_PASSIVE;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* ai = nullptr;
  const std::string port_text = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &ai); rc != 0) {
    return InvalidArgument("cannot resolve '" + host + "': " + gai_strerror(rc));
  }
  const int rc = rdma_bind_addr(listen_id_.get(), ai->ai_addr);
  const int err = errno;
  const sockaddr_storage bound = to_storage(ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(ai);
  if (rc != 0) return Unavailable("rdma_bind_addr(" + host + "): " + ibv::errno_text(err));
  // A specific address binds to the device serving it; a wildcard binds to none and
  // accepts on every device, so it only needs some device to exist.
  if (listen_id_->verbs == nullptr && !(is_wildcard(bound) && any_rdma_device())) {
    return Unavailable("no RDMA device serves " + host + " (bind it to the IPv4 address of "
                       "an RDMA netdev, see `rdma link`)");
  }
  if (rdma_listen(listen_id_.get(), kListenBacklog) != 0) {
    return Unavailable("rdma_listen: " + ibv::errno_text(errno));
  }
  port_ = ntohs(rdma_get_src_port(listen_id_.get()));
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return Internal("eventfd: " + ibv::errno_text(errno));
  thread_ = std::thread([this] { run_event_thread(); });
  log().info("RDMA listener on {}:{} ({})", host, port_,
             listen_id_->verbs != nullptr ? ibv_get_device_name(listen_id_->verbs->device)
                                          : "every RDMA device");
  return Status::Ok();
}

RdmaListenerImpl::~RdmaListenerImpl() {
  if (thread_.joinable()) {
    stop_.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    if (write(wake_fd_, &one, sizeof one) < 0) log().debug("eventfd write failed");
    thread_.join();
  }
  if (wake_fd_ >= 0) close(wake_fd_);
}

void RdmaListenerImpl::run_event_thread() {
  while (!stop_.load(std::memory_order_acquire)) wait_and_dispatch_on_event_thread();
  // Every client is disconnected; their sessions close and their slabs return to the pool.
  const auto n = sessions_.size();
  sessions_.clear();
  if (n > 0) log().info("RDMA listener stopped: {} client(s) disconnected", n);
}

void RdmaListenerImpl::wait_and_dispatch_on_event_thread() {
  std::vector<pollfd> fds;
  std::vector<rdma_cm_id*> owners;  // owners[i] is the session of fds[i + 2]
  fds.reserve(sessions_.size() + 2);
  fds.push_back({channel_->fd, POLLIN, 0});
  fds.push_back({wake_fd_, POLLIN, 0});
  for (const auto& [id, s] : sessions_) {
    if (s->completion_fd() < 0) continue;
    fds.push_back({s->completion_fd(), POLLIN, 0});
    owners.push_back(id);
  }
  if (poll(fds.data(), fds.size(), kEventPollMs) <= 0) {
    // Nothing happened for a while: exactly when clients overstay their timeouts.
    sweep_on_event_thread();
    return;
  }
  for (std::size_t i = 0; i < owners.size(); ++i) {
    if ((fds[i + 2].revents & POLLIN) == 0) continue;
    auto it = sessions_.find(owners[i]);
    if (it != sessions_.end() && !it->second->on_completion_event()) {
      // E.g. the client's access error moved both QPs to error: that client is done.
      log().info("{}: queue pair in error; dropping the client", it->second->peer());
      sessions_.erase(it);
    }
  }
  if ((fds[0].revents & POLLIN) != 0) on_cm_event_on_event_thread();
  sweep_on_event_thread();
}

void RdmaListenerImpl::sweep_on_event_thread() {
  const auto now = std::chrono::steady_clock::now();
  const auto seconds = [](std::chrono::milliseconds d) {
    return std::to_string(static_cast<double>(d.count()) / 1000) + " s";
  };
  for (auto it = sessions_.begin(); it != sessions_.end();) {  // bounded: one pass
    RdmaSession& s = *it->second;
    if (!s.authenticated() && now - s.accepted_at() >= options_.handshake_timeout) {
      log().warn("{}: no AUTH within {}: disconnecting", s.peer(),
                 seconds(options_.handshake_timeout));
      it = sessions_.erase(it);
    } else if (s.authenticated() && options_.idle_timeout.count() > 0 &&
               now - s.last_request() >= options_.idle_timeout) {
      log().warn("{}: no request for {} (--idle-timeout): disconnecting; its session is kept "
                 "for the lease grace", s.peer(), seconds(options_.idle_timeout));
      core_.count_refusal(Core::Refusal::kRdmaIdleTimeout);
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

void RdmaListenerImpl::on_cm_event_on_event_thread() {
  auto ev = ibv::next_cm_event(channel_.get(), std::chrono::milliseconds(0));
  if (!ev.ok()) return;
  const rdma_cm_event_type type = (*ev)->event;
  rdma_cm_id* id = (*ev)->id;
  if (type == RDMA_CM_EVENT_CONNECT_REQUEST) return on_connect_request_on_event_thread(std::move(*ev));
  ev->reset();  // ack before destroying the id: rdma_destroy_id waits for acks
  auto it = sessions_.find(id);
  switch (type) {
    case RDMA_CM_EVENT_ESTABLISHED:
      if (it != sessions_.end()) log().debug("{}: established", it->second->peer());
      break;
    case RDMA_CM_EVENT_DISCONNECTED:
    case RDMA_CM_EVENT_CONNECT_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_REJECTED:
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
      if (it != sessions_.end()) {
        log().info("{}: {}", it->second->peer(), rdma_event_str(type));
        // A BYE may have arrived just before the disconnect: serve it, then let go.
        (void)it->second->poll_requests();
        sessions_.erase(it);  // detaches the Core session (or it ended with the BYE)
      } else if (type == RDMA_CM_EVENT_DEVICE_REMOVAL) {
        log().error("RDMA device removed under the listener");
      }
      break;
    default:
      log().debug("rdma_cm event {}", rdma_event_str(type));
  }
}

void RdmaListenerImpl::on_connect_request_on_event_thread(ibv::CmEvent ev) {
  ConnectRequest req;
  rdma_cm_id* const raw = ev->id;
  req.peer = peer_of(ev->id);
  req.initiator_depth = ev->param.conn.initiator_depth;
  req.responder_resources = ev->param.conn.responder_resources;
  const auto* pd = static_cast<const std::byte*>(ev->param.conn.private_data);
  if (pd != nullptr) req.private_data.assign(pd, pd + ev->param.conn.private_data_len);
  ibv::CmId id(ev->id);
  ev.reset();

  // Private data arrives zero-padded (56 bytes on IB/RoCE): tenant_len says what is ours.
  const auto hello = proto::parse_connect_data(req.private_data);
  if (!hello.ok()) {
    log().warn("{}: rejected: {}", req.peer, hello.status().message());
    core_.count_error();
    return reject(id.get(), StatusCode::kProtocolError);
  }
  auto session = std::make_unique<RdmaSession>(core_, std::move(id), req.peer);
  if (Status s = session->accept(*hello, req); !s.ok()) {
    log().warn("{}: rejected: {}", req.peer, s.to_string());
    return reject(session->cm_id(), s.code());
  }
  sessions_.emplace(raw, std::move(session));
}

}  // namespace

Result<std::unique_ptr<RdmaListener>> RdmaListener::start(Core& core, const std::string& host,
                                                          std::uint16_t port,
                                                          RdmaListenerOptions options) {
  auto l = std::make_unique<RdmaListenerImpl>(core, options);
  FARMEM_RETURN_IF_ERROR(l->start(host, port));
  return std::unique_ptr<RdmaListener>(std::move(l));
}

}  // namespace farmem::memserver
