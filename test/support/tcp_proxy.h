// A loopback TCP proxy for tests: relays every connection made to it to one target, keeps
// a copy of the bytes that crossed it (what an eavesdropper on the network sees), and can cut
// every relayed connection at once (a dropped link). One thread per direction of each
// connection: a relay never waits on the other direction, so it cannot deadlock the peers.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "farmem/status.h"
#include "transport/tcp/socket.h"

namespace farmem::test {

class TcpProxy {
 public:
  /// Listens on 127.0.0.1 (a free port) and relays to host:port. At most `keep_bytes` of the
  /// traffic are kept (captured() says whether any was dropped).
  static Result<std::unique_ptr<TcpProxy>> start(const std::string& host, std::uint16_t port,
                                                 std::size_t keep_bytes = 64u << 20);
  ~TcpProxy();  // cuts every connection, stops accepting, joins every thread
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  std::uint16_t port() const { return port_; }
  std::string url() const { return "tcp://127.0.0.1:" + std::to_string(port_); }

  /// Every byte relayed so far, both directions in arrival order per chunk.
  std::string captured() const;
  /// Bytes relayed in all (kept or not).
  std::uint64_t relayed() const { return relayed_.load(); }
  bool truncated() const { return relayed() > keep_; }
  /// Connections accepted so far.
  std::uint64_t accepted() const { return accepted_.load(); }
  /// Shuts both ends of every open relayed connection down (new ones are still accepted).
  void cut();

 private:
  struct Pair {
    net::UniqueFd client;
    net::UniqueFd server;
    std::thread up, down;
  };
  TcpProxy(net::Listening listening, std::string host, std::uint16_t port, std::size_t keep);
  void accept_loop();
  void relay(int from, int to);
  void keep(const char* p, std::size_t n);

  const std::string host_;
  const std::uint16_t target_port_;
  const std::size_t keep_;
  net::UniqueFd listen_fd_;
  std::uint16_t port_ = 0;
  net::UniqueFd wake_fd_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> relayed_{0};
  std::atomic<std::uint64_t> accepted_{0};
  mutable std::mutex mu_;  // guards pairs_ and kept_
  std::list<Pair> pairs_;
  std::string kept_;
  std::thread acceptor_;
};

}  // namespace farmem::test
