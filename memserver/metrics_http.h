// farmem-memserver --metrics HOST:PORT: answers GET /metrics with the Prometheus text of
// memserver/metrics.h. A deliberately small HTTP/1.1 responder (Debian has no HTTP server
// library farmem may use): one thread, one connection at a time, every request read within
// a deadline and a size bound, "Connection: close" after each reply.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "farmem/status.h"
#include "memserver/server.h"

namespace farmem::memserver {

class MetricsServer {
 public:
  /// Renders the body of one GET /metrics; called on the server's thread.
  using Render = std::function<std::string()>;

  /// Listens on `address` (port 0: a free port, see port()) and serves until destroyed.
  static Result<std::unique_ptr<MetricsServer>> start(const ListenAddress& address,
                                                       Render render);
  virtual ~MetricsServer() = default;
  virtual std::uint16_t port() const = 0;
};

/// How one request is answered, apart from the socket: the status line's code and reason,
/// and the body. Pure, for tests: `request` is the bytes received up to the blank line.
struct HttpReply {
  int code = 200;
  std::string reason;
  std::string content_type;
  std::string body;
};
HttpReply answer_http(std::string_view request, const MetricsServer::Render& render);

}  // namespace farmem::memserver
