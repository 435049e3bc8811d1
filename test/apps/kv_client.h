// A blocking loopback client for farmem-kv's tests: raw bytes out, replies read against a
// deadline (never a sleep), and the binary protocol's framing.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdint>
#include <string>
#include <string_view>

namespace farmem::kv::test {

/// A shell command's exit code (-1: it did not exit) and its stdout.
struct ToolRun {
  int rc = -1;
  std::string out;
};
inline ToolRun run_command(const std::string& cmd) {
  ToolRun r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class KvClient {
 public:
  static constexpr auto kDeadline = std::chrono::seconds(20);

  explicit KvClient(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
    const int on = 1;
    if (fd_ >= 0) (void)::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  }
  ~KvClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  KvClient(const KvClient&) = delete;
  KvClient& operator=(const KvClient&) = delete;

  bool connected() const { return fd_ >= 0; }

  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  /// Reads until `buf_` holds `n` bytes (or the deadline / EOF); returns and removes them.
  std::string read_exact(std::size_t n) {
    fill([&] { return buf_.size() >= n; });
    std::string out = buf_.substr(0, std::min(n, buf_.size()));
    buf_.erase(0, out.size());
    return out;
  }
  /// Everything up to and including the first occurrence of `end` (or what came before the
  /// deadline / EOF).
  std::string read_until(std::string_view end) {
    fill([&] { return buf_.find(end) != std::string::npos; });
    const std::size_t at = buf_.find(end);
    const std::size_t n = at == std::string::npos ? buf_.size() : at + end.size();
    std::string out = buf_.substr(0, n);
    buf_.erase(0, n);
    return out;
  }
  std::string line() { return read_until("\r\n"); }
  /// A command and its one-line reply.
  std::string cmd(std::string_view c) {
    send(c);
    return line();
  }
  /// True when the server closed the connection (EOF before the deadline).
  bool closed_by_peer() {
    fill([] { return false; });
    return eof_;
  }

  /// A binary request frame.
  static std::string frame(std::uint8_t op, std::string_view key, std::string_view extras = {},
                           std::string_view value = {}, std::uint64_t cas = 0,
                           std::uint32_t opaque = 0) {
    std::string f;
    f += static_cast<char>(0x80);
    f += static_cast<char>(op);
    put(f, key.size(), 2);
    f += static_cast<char>(extras.size());
    f += '\0';
    put(f, 0, 2);
    put(f, extras.size() + key.size() + value.size(), 4);
    put(f, opaque, 4);
    put(f, cas, 8);
    f += extras;
    f += key;
    f += value;
    return f;
  }
  static void put(std::string& s, std::uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  static std::uint64_t get(std::string_view s, std::size_t at, int bytes) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = v << 8 | static_cast<std::uint8_t>(s[at + i]);
    return v;
  }

  struct Response {
    bool ok = false;  ///< a whole frame arrived
    std::uint8_t magic = 0, op = 0;
    std::uint16_t status = 0;
    std::uint32_t opaque = 0;
    std::uint64_t cas = 0;
    std::string extras, key, value;
  };
  Response response() {
    Response r;
    const std::string h = read_exact(24);
    if (h.size() < 24) return r;
    r.magic = static_cast<std::uint8_t>(h[0]);
    r.op = static_cast<std::uint8_t>(h[1]);
    const auto keylen = get(h, 2, 2), extlen = get(h, 4, 1), body = get(h, 8, 4);
    r.status = static_cast<std::uint16_t>(get(h, 6, 2));
    r.opaque = static_cast<std::uint32_t>(get(h, 12, 4));
    r.cas = get(h, 16, 8);
    const std::string b = read_exact(body);
    if (b.size() < body) return r;
    r.extras = b.substr(0, extlen);
    r.key = b.substr(extlen, keylen);
    r.value = b.substr(extlen + keylen);
    r.ok = true;
    return r;
  }

 private:
  template <typename Done>
  void fill(Done done) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    char tmp[64 * 1024];
    while (!done() && !eof_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) {
        eof_ = true;
        return;
      }
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }

  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
};

}  // namespace farmem::kv::test
