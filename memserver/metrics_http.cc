#include "memserver/metrics_http.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "common/log.h"
#include "transport/tcp/socket.h"

namespace farmem::memserver {

namespace {

// A scraper's request is a few hundred bytes; 8 KiB leaves room for long headers and bounds
// what one connection can make the server hold.
constexpr std::size_t kMaxRequestBytes = 8192;
// A client gets this long to send its request and take the reply; the one thread serves no
// one else meanwhile, so it is short (Prometheus scrapes time out at 10 s by default).
constexpr auto kClientDeadline = std::chrono::seconds(2);
// After a failed accept (e.g. out of fds) the thread pauses so a persistent error does not
// spin a core.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(10);
// After replying, unread request bytes are drained for at most this long before closing, so
// that the close does not reset the connection under a reply the client has yet to read.
constexpr auto kLingerTime = std::chrono::milliseconds(200);
// The Prometheus text exposition format's content type.
constexpr const char* kPrometheusType = "text/plain; version=0.0.4; charset=utf-8";

class MetricsServerImpl final : public MetricsServer {
 public:
  MetricsServerImpl(net::Listening listening, net::UniqueFd wake, Render render)
      : listen_fd_(std::move(listening.fd)),
        port_(listening.port),
        wake_fd_(std::move(wake)),
        render_(std::move(render)),
        thread_([this] { serve_loop(); }) {}
  ~MetricsServerImpl() override;
  std::uint16_t port() const override { return port_; }

 private:
  void serve_loop();
  void serve_one(int fd, const std::string& peer);

  const net::UniqueFd listen_fd_;
  const std::uint16_t port_;
  const net::UniqueFd wake_fd_;  ///< eventfd: written once to stop the thread
  const Render render_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: starts once everything above exists
};

MetricsServerImpl::~MetricsServerImpl() {
  stopping_.store(true);
  const std::uint64_t one = 1;
  if (::write(wake_fd_.get(), &one, sizeof one) != sizeof one) {
    log().error("metrics: cannot wake the server thread: {}", std::strerror(errno));
  }
  thread_.join();  // a client being served holds it at most kClientDeadline
}

void MetricsServerImpl::serve_loop() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    const int rc = ::poll(fds, 2, -1);
    if (stopping_.load()) break;
    if (rc <= 0 || (fds[0].revents & POLLIN) == 0) continue;
    std::string peer;
    auto fd = net::accept_from(listen_fd_.get(), &peer);
    if (!fd.ok()) {
      log().warn("metrics: {}", fd.status().to_string());
      std::this_thread::sleep_for(kAcceptBackoff);
      continue;
    }
    serve_one(fd->get(), peer);
  }
}

// Reads up to the blank line ending the headers (a body, if any, is ignored), answers, and
// closes: a scrape is one request per connection.
void MetricsServerImpl::serve_one(int fd, const std::string& peer) {
  const auto deadline = net::deadline_after(kClientDeadline);
  std::string request;
  char buf[1024];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() <= kMaxRequestBytes) {
    auto ready = net::wait_ready(fd, POLLIN, deadline, peer);
    if (!ready.ok()) {
      log().debug("metrics: {}", ready.status().to_string());
      return;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return;  // the client gave up before finishing its request
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      log().debug("metrics: {}: recv: {}", peer, std::strerror(errno));
      return;
    }
    request.append(buf, static_cast<std::size_t>(n));
  }
  const HttpReply r =
      request.size() > kMaxRequestBytes
          ? HttpReply{431, "Request Header Fields Too Large", "text/plain", "request too large\n"}
          : answer_http(request, render_);
  std::string out = "HTTP/1.1 " + std::to_string(r.code) + " " + r.reason +
                    "\r\nContent-Type: " + r.content_type +
                    "\r\nContent-Length: " + std::to_string(r.body.size()) +
                    "\r\nConnection: close\r\n\r\n";
  out += r.body;
  const Status st = net::write_full(fd, out.data(), out.size(), deadline, peer);
  if (!st.ok()) {
    log().debug("metrics: {}", st.to_string());
    return;
  }
  // Lingering close: say we are done, then read until the client closes too (or a short
  // bound passes), so unread bytes of an oversized request do not turn the close into a reset.
  ::shutdown(fd, SHUT_WR);
  const auto linger_end = net::deadline_after(kLingerTime);
  std::size_t drained = 0;
  while (drained < 4 * kMaxRequestBytes) {  // bounded by bytes and by the linger deadline
    if (!net::wait_ready(fd, POLLIN, linger_end, peer).ok()) return;
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) return;
    if (n > 0) drained += static_cast<std::size_t>(n);
  }
}

}  // namespace

HttpReply answer_http(std::string_view request, const MetricsServer::Render& render) {
  const auto line_end = request.find("\r\n");
  const std::string_view line = request.substr(0, line_end);
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (line_end == std::string_view::npos || sp2 == std::string_view::npos ||
      line.substr(sp2 + 1).rfind("HTTP/1.", 0) != 0) {
    return {400, "Bad Request", "text/plain", "not an HTTP/1.x request\n"};
  }
  const std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));  // scrapers may add parameters; none are used
  if (target != "/metrics") return {404, "Not Found", "text/plain", "only /metrics is here\n"};
  if (method != "GET") return {405, "Method Not Allowed", "text/plain", "use GET\n"};
  return {200, "OK", kPrometheusType, render()};
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const ListenAddress& address,
                                                            Render render) {
  auto listening = net::listen_on(address.host, address.port);
  if (!listening.ok()) return listening.status().with_context("metrics endpoint");
  // Non-blocking, so a client that vanished between poll and accept cannot stall the thread.
  FARMEM_RETURN_IF_ERROR(net::set_blocking(listening->fd.get(), false));
  net::UniqueFd wake(::eventfd(0, EFD_CLOEXEC));
  if (!wake.valid()) return IoError(std::string("metrics: eventfd: ") + std::strerror(errno));
  return std::unique_ptr<MetricsServer>(
      new MetricsServerImpl(std::move(listening).value(), std::move(wake), std::move(render)));
}

}  // namespace farmem::memserver
