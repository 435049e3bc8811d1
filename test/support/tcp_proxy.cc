#include "test/support/tcp_proxy.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace farmem::test {

Result<std::unique_ptr<TcpProxy>> TcpProxy::start(const std::string& host, std::uint16_t port,
                                                  std::size_t keep_bytes) {
  FARMEM_ASSIGN_OR_RETURN(net::Listening l, net::listen_on("127.0.0.1", 0));
  return std::unique_ptr<TcpProxy>(new TcpProxy(std::move(l), host, port, keep_bytes));
}

TcpProxy::TcpProxy(net::Listening listening, std::string host, std::uint16_t port,
                   std::size_t keep)
    : host_(std::move(host)),
      target_port_(port),
      keep_(keep),
      listen_fd_(std::move(listening.fd)),
      port_(listening.port),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  acceptor_ = std::thread([this] { accept_loop(); });
}

TcpProxy::~TcpProxy() {
  stop_.store(true);
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof one);
  acceptor_.join();
  cut();
  // Joined without mu_: a relay may still be keeping its last bytes (keep() takes mu_). The
  // acceptor is gone, so pairs_ no longer changes.
  for (Pair& p : pairs_) {
    p.up.join();
    p.down.join();
  }
}

void TcpProxy::accept_loop() {
  // Bounded: ends when the destructor wakes it.
  while (!stop_.load()) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, 1000) <= 0 || (fds[0].revents & POLLIN) == 0) continue;
    auto client = net::accept_from(listen_fd_.get(), nullptr);
    if (!client.ok()) continue;
    auto server = net::connect_to(host_, target_port_, net::deadline_after(std::chrono::seconds(5)));
    if (!server.ok() || !net::set_blocking(server->get(), true).ok()) continue;  // client sees EOF
    accepted_.fetch_add(1);
    std::lock_guard lock(mu_);
    Pair& p = pairs_.emplace_back();
    p.client = std::move(client).value();
    p.server = std::move(server).value();
    const int c = p.client.get(), s = p.server.get();
    p.up = std::thread([this, c, s] { relay(c, s); });
    p.down = std::thread([this, c, s] { relay(s, c); });
  }
}

void TcpProxy::relay(int from, int to) {
  char buf[64 << 10];
  // Bounded by the peers: ends at EOF, an error, or cut().
  for (;;) {
    const ssize_t n = ::recv(from, buf, sizeof buf, 0);
    if (n <= 0) break;
    keep(buf, static_cast<std::size_t>(n));
    if (!net::write_full(to, buf, static_cast<std::size_t>(n),
                         net::deadline_after(std::chrono::seconds(30)), "proxy")
             .ok()) {
      break;
    }
  }
  // Pass the end on: the other side sees EOF (or the cut) as the real peer would.
  ::shutdown(to, SHUT_WR);
  ::shutdown(from, SHUT_RD);
}

void TcpProxy::keep(const char* p, std::size_t n) {
  const std::uint64_t before = relayed_.fetch_add(n);
  if (before >= keep_) return;
  std::lock_guard lock(mu_);
  kept_.append(p, std::min<std::size_t>(n, keep_ - before));
}

std::string TcpProxy::captured() const {
  std::lock_guard lock(mu_);
  return kept_;
}

void TcpProxy::cut() {
  std::lock_guard lock(mu_);
  for (Pair& p : pairs_) {
    ::shutdown(p.client.get(), SHUT_RDWR);
    ::shutdown(p.server.get(), SHUT_RDWR);
  }
}

}  // namespace farmem::test
