// The memserver's TCP listener: one accept thread, one thread per client (TcpSession).
// Sessions block in their own socket calls; the destructor ends them all by shutting their
// sockets down, which wakes every such call.
#include "memserver/tcp_listener.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <thread>

#include "common/log.h"
#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "memserver/tcp_session.h"
#include "transport/tcp/socket.h"

namespace farmem::memserver {

namespace {

// Clients served at once: each costs a thread and a 64 KiB buffer; far beyond the compute
// nodes one memserver serves, low enough that a connection flood cannot exhaust the host.
constexpr std::size_t kMaxClients = 1024;
// The accept thread wakes at least this often to join finished client threads.
constexpr int kReapIntervalMs = 1000;
// After a failed accept (e.g. out of fds) the listener pauses before retrying, so a
// persistent error does not spin a core.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(10);
// How long a rejected client gets to receive its "too many clients" error.
constexpr auto kRejectTimeout = std::chrono::milliseconds(100);

class TcpListenerImpl final : public TcpListener {
 public:
  TcpListenerImpl(Core& core, net::Listening listening, net::UniqueFd wake)
      : core_(core),
        listen_fd_(std::move(listening.fd)),
        port_(listening.port),
        wake_fd_(std::move(wake)),
        acceptor_([this] { accept_loop(); }) {}
  ~TcpListenerImpl() override;

  std::uint16_t port() const override { return port_; }

 private:
  struct Client {
    net::UniqueFd fd;  ///< closed by the client thread when it ends (under mu_)
    std::thread thread;
    bool finished = false;
  };

  void accept_loop();
  void admit(net::UniqueFd fd, const std::string& peer);
  void serve(Client* client, int fd, std::string peer);
  void reap_locked() FARMEM_REQUIRES(mu_);

  Core& core_;
  const net::UniqueFd listen_fd_;
  const std::uint16_t port_;
  const net::UniqueFd wake_fd_;  ///< eventfd: written once to stop the accept thread
  std::atomic<bool> stopping_{false};
  /// Guards clients_ and every Client's fd and finished flag (those are not annotated: a
  /// Client cannot name its listener's lock).
  Mutex mu_;
  /// A list: client threads hold pointers to their node.
  std::list<Client> clients_ FARMEM_GUARDED_BY(mu_);
  std::thread acceptor_;       // last: starts once everything above exists
};

TcpListenerImpl::~TcpListenerImpl() {
  stopping_.store(true);
  const std::uint64_t one = 1;
  if (::write(wake_fd_.get(), &one, sizeof one) != sizeof one) {
    log().error("tcp listener: cannot wake the accept thread: {}", std::strerror(errno));
  }
  acceptor_.join();
  {
    MutexLock lock(mu_);
    for (Client& c : clients_) {
      if (c.fd.valid()) ::shutdown(c.fd.get(), SHUT_RDWR);
    }
  }
  // No lock: the accept thread is gone, so the list no longer changes shape, and client
  // threads need mu_ to finish.
  for (Client& c : clients_) c.thread.join();
  log().info("tcp listener on port {} stopped", port_);
}

void TcpListenerImpl::accept_loop() {
  // Bounded: runs until the destructor signals wake_fd_; each round waits at most
  // kReapIntervalMs.
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    const int rc = ::poll(fds, 2, kReapIntervalMs);
    if (stopping_.load()) break;
    {
      MutexLock lock(mu_);
      reap_locked();
    }
    if (rc <= 0 || (fds[0].revents & POLLIN) == 0) continue;
    std::string peer;
    auto fd = net::accept_from(listen_fd_.get(), &peer);
    if (!fd.ok()) {
      log().warn("tcp listener: {}", fd.status().to_string());
      std::this_thread::sleep_for(kAcceptBackoff);
      continue;
    }
    admit(std::move(fd).value(), peer);
  }
}

void TcpListenerImpl::admit(net::UniqueFd fd, const std::string& peer) {
  MutexLock lock(mu_);
  if (clients_.size() >= kMaxClients) {
    core_.count_error();
    log().warn("tcp listener: rejecting {}: {} clients already", peer, kMaxClients);
    const auto bytes = proto::encode(proto::Message::error(
        StatusCode::kResourceExhausted, "too many clients on this memserver", 0));
    (void)net::write_full(fd.get(), bytes.data(), bytes.size(),
                          net::deadline_after(kRejectTimeout), peer);
    return;
  }
  Client& c = clients_.emplace_back();
  const int raw = fd.get();
  c.fd = std::move(fd);
  c.thread = std::thread([this, client = &c, raw, peer] { serve(client, raw, "tcp://" + peer); });
}

void TcpListenerImpl::serve(Client* client, int fd, std::string peer) {
  {
    TcpSession session(core_, fd, std::move(peer));
    session.run();
  }
  MutexLock lock(mu_);
  // Closing under mu_ means the destructor never shuts down a reused fd number.
  client->fd.reset();
  client->finished = true;
}

void TcpListenerImpl::reap_locked() {
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (it->finished) {
      // The thread has left serve()'s critical section: joining is immediate.
      it->thread.join();
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace

Result<std::unique_ptr<TcpListener>> TcpListener::start(Core& core, const std::string& host,
                                                        std::uint16_t port) {
  FARMEM_ASSIGN_OR_RETURN(net::Listening listening, net::listen_on(host, port));
  net::UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return net::errno_status(errno, "eventfd", "tcp listener");
  const std::uint16_t actual = listening.port;
  auto listener = std::make_unique<TcpListenerImpl>(core, std::move(listening), std::move(wake));
  log().info("serving TCP clients on {}:{}", host, actual);
  return std::unique_ptr<TcpListener>(std::move(listener));
}

}  // namespace farmem::memserver
