// One client connection to the server: a nonblocking socket and its two buffers, plus the
// requests sent on it and not yet answered (replies come back in that order). Owned and used
// by one worker thread only, so nothing here is locked.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "bench/kvload/options.h"
#include "bench/kvload/protocol.h"
#include "farmem/status.h"

namespace farmem::kvload {

class Connection {
 public:
  /// Connects to host:port, waiting at most `timeout` (a refused or unreachable server is
  /// kUnavailable, no answer kTimedOut). The socket is nonblocking with TCP_NODELAY.
  static Result<std::unique_ptr<Connection>> open(const std::string& host, std::uint16_t port,
                                                  std::chrono::milliseconds timeout);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const { return fd_; }
  /// Requests are appended here, then flush() sends them.
  std::string& out() { return out_; }
  /// Sends what the socket takes; kUnavailable when the peer is gone.
  Status flush();
  bool has_unsent() const { return sent_ < out_.size(); }
  /// Reads everything available; kUnavailable on EOF or a reset.
  Status read_available();
  std::string_view in() const { return std::string_view(in_).substr(read_); }
  void consume(std::size_t n);

  struct Pending {
    OpKind op;
    Phase phase;              ///< the phase it was issued in
    std::uint32_t opaque;
    std::uint64_t key;        ///< key index
    std::uint64_t issued_ns;  ///< steady-clock ns when it was queued
  };
  std::deque<Pending>& pending() { return pending_; }
  std::uint32_t next_opaque() { return opaque_++; }
  bool out_armed = false;     ///< EPOLLOUT is in this connection's epoll interest

  // The keys this connection sets during the load: [load_next, load_end).
  std::uint64_t load_next = 0, load_end = 0;

 private:
  explicit Connection(int fd) : fd_(fd) {}
  int fd_;
  std::string out_, in_;
  std::size_t sent_ = 0, read_ = 0;
  std::deque<Pending> pending_;
  std::uint32_t opaque_ = 0;
};

}  // namespace farmem::kvload
