// farmem-kv's network side: one listener thread and -t worker threads, each running its own
// epoll loop over the connections it was handed (memcached's own model: a connection stays
// on one thread, so its state needs no lock).
//
// Why threads with epoll loops and not oneTBB tasks: a worker blocks in epoll_wait and, on a
// page miss, inside the page cache; TBB's task arena assumes tasks that compute and return,
// and a blocked task would hold one of its few threads. What a task pool would buy (many
// misses in flight) comes instead from batching: every round, a worker gathers the gets of
// all its ready connections (multi-gets and pipelines alike), asks the page cache to fetch
// all their items at once (Store::prefetch, one far batch in flight per item), and only then
// answers them in order.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kv/protocol.h"

namespace farmem::kv {

struct ServerOptions {
  std::string listen = "127.0.0.1";  ///< address to listen on (IPv4 or IPv6 literal)
  std::uint16_t port = 11211;        ///< 0: any free port (see Server::port())
  std::uint32_t threads = 4;         ///< worker threads
  std::uint32_t max_connections = 1024;  ///< more are refused with a SERVER_ERROR line
};

/// What the server counts besides the commands.
struct ServerFigures {
  std::uint64_t curr_connections = 0;
  std::uint64_t total_connections = 0;
  std::uint64_t rejected_connections = 0;
  std::uint64_t rounds = 0;          ///< epoll rounds that served requests
  std::uint64_t batched_rounds = 0;  ///< of those, rounds whose gets were prefetched together
};

class Server {
 public:
  /// Binds, listens and starts the threads. Errors: a bad address, a port in use.
  static Result<std::unique_ptr<Server>> start(Context& ctx, ServerOptions options);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Closes the listener and every connection, joins the threads. Idempotent.
  void stop();
  std::uint16_t port() const { return port_; }
  const ServerOptions& options() const { return options_; }
  ServerFigures figures() const;
  /// The workers' command counters summed (one Counters' worth of plain values).
  void sum_counters(Counters& total) const;
  void reset_counters();

  struct Worker;

 private:
  Server(Context& ctx, ServerOptions options);
  void listen_loop();

  Context& ctx_;
  const ServerOptions options_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  ///< eventfd: wakes the listener to stop
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::vector<std::unique_ptr<Worker>> workers_;
  std::thread listener_;
  std::atomic<std::uint64_t> curr_{0}, total_{0}, rejected_{0};
};

}  // namespace farmem::kv
