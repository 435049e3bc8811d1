// A raw TCP client of the memserver for protocol tests: frames written byte by byte, replies
// read back, the handshake done the way a client does it (Raw::hello, the one place tests
// say HELLO by hand). Optionally bound to a source address first (another loopback address,
// to play a second host).
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "test/support/test_server.h"
#include "transport/proto/auth.h"
#include "transport/proto/wire.h"
#include "transport/tcp/socket.h"

namespace farmem::test {

class Raw {
 public:
  static constexpr auto kTimeout = std::chrono::seconds(5);

  /// Connects to 127.0.0.1:port, from `source` (an IPv4 address) when it is not empty.
  explicit Raw(std::uint16_t port, const std::string& source = "") {
    if (source.empty()) {
      auto fd = net::connect_to("127.0.0.1", port, net::deadline_after(kTimeout));
      EXPECT_TRUE(fd.ok()) << fd.status().to_string();
      if (fd.ok()) fd_ = std::move(fd).value();
    } else {
      connect_from(port, source);
    }
  }
  void send_bytes(const void* p, std::size_t n) {
    ASSERT_TRUE(net::write_full(fd_.get(), p, n, net::deadline_after(kTimeout), "raw").ok());
  }
  void send_frame(proto::MsgType type, std::uint64_t req_id, const std::vector<std::byte>& payload,
                  std::uint16_t version = proto::kVersion, std::uint32_t magic = proto::kMagic) {
    auto h = proto::make_header(type, req_id, static_cast<std::uint32_t>(payload.size()));
    h.version = version;
    h.magic = magic;
    send_bytes(&h, sizeof h);
    if (!payload.empty()) send_bytes(payload.data(), payload.size());
  }
  template <typename T>
  void send_body(proto::MsgType type, std::uint64_t req_id, const T& body) {
    std::vector<std::byte> p(sizeof body);
    std::memcpy(p.data(), &body, sizeof body);
    send_frame(type, req_id, p);
  }
  Result<proto::Message> read_frame(std::chrono::nanoseconds timeout = kTimeout) {
    const auto deadline = net::deadline_after(timeout);
    proto::FrameHeader h{};
    FARMEM_RETURN_IF_ERROR(net::read_full(fd_.get(), &h, sizeof h, deadline, "raw"));
    std::vector<std::byte> frame(sizeof h + h.length);
    std::memcpy(frame.data(), &h, sizeof h);
    FARMEM_RETURN_IF_ERROR(net::read_full(fd_.get(), frame.data() + sizeof h, h.length,
                                          deadline, "raw"));
    return proto::decode(frame);
  }
  /// HELLO (req 1) with a fresh nonce; the HELLO_OK that came back.
  proto::HelloOk hello_only(const std::string& tenant = "") {
    nonce_ = *proto::random_nonce();
    send_frame(proto::MsgType::kHello, 1, proto::make_hello(tenant, nonce_, 1).payload);
    auto reply = read_frame();
    EXPECT_TRUE(reply.ok()) << reply.status().to_string();
    if (!reply.ok()) return {};
    EXPECT_EQ(reply->type, proto::MsgType::kHelloOk);
    auto ok = reply->as<proto::HelloOk>();
    return ok.ok() ? *ok : proto::HelloOk{};
  }
  /// The AUTH a client holding `secret` sends after `ok`.
  proto::AuthProof proof(const proto::HelloOk& ok, const std::string& secret,
                         const std::string& tenant = "") const {
    return proto::AuthProof{*proto::auth_proof(secret, proto::AuthRole::kClient, tenant, nonce_,
                                               ok.server_nonce, ok.session_id)};
  }
  /// The whole handshake: HELLO, AUTH (req 2), AUTH_OK.
  void hello(const std::string& secret = kToken) {
    const proto::HelloOk ok = hello_only();
    ASSERT_NE(ok.flags & proto::kHelloAuthRequired, 0u);
    send_body(proto::MsgType::kAuth, 2, proof(ok, secret));
    auto reply = read_frame();
    ASSERT_TRUE(reply.ok()) << reply.status().to_string();
    ASSERT_EQ(reply->type, proto::MsgType::kAuthOk)
        << std::string(reinterpret_cast<const char*>(reply->payload.data()), reply->payload.size());
  }
  /// The server closed the connection (EOF or reset), rather than going silent.
  bool closed_by_server() {
    std::byte b;
    const Status st = net::read_full(fd_.get(), &b, 1, net::deadline_after(kTimeout), "raw");
    return st.code() == StatusCode::kUnavailable;
  }
  int fd() const { return fd_.get(); }

 private:
  void connect_from(std::uint16_t port, const std::string& source) {
    net::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in from{};
    from.sin_family = AF_INET;
    ASSERT_EQ(::inet_pton(AF_INET, source.c_str(), &from.sin_addr), 1) << source;
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&from), sizeof from), 0)
        << source << ": " << std::strerror(errno);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to), 0)
        << std::strerror(errno);
    fd_ = std::move(fd);
  }

  net::UniqueFd fd_;
  proto::Nonce nonce_{};
};

inline std::string text_of(const proto::Message& m) {
  return std::string(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
}

}  // namespace farmem::test

/// An error frame with this code, request id and a message containing `needle`.
#define EXPECT_ERROR_FRAME(result, code, req, needle)                              \
  do {                                                                             \
    auto&& r_ = (result);                                                          \
    ASSERT_TRUE(r_.ok()) << r_.status().to_string();                               \
    EXPECT_EQ(r_->type, ::farmem::proto::MsgType::kError);                         \
    EXPECT_EQ(r_->status, (code)) << ::farmem::test::text_of(*r_);                 \
    EXPECT_EQ(r_->req_id, std::uint64_t{req});                                     \
    EXPECT_NE(::farmem::test::text_of(*r_).find(needle), std::string::npos)        \
        << ::farmem::test::text_of(*r_);                                           \
  } while (0)
