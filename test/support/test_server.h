// A memserver for tests, reachable through one backend ("local", "tcp" or "verbs"), and the
// RDMA environment checks that make verbs cases skip natively but fail in the rxe VM.
#pragma once

#include <memory>
#include <gtest/gtest.h>

#include <string>

#include "memserver/server.h"
#include "transport/transport.h"

namespace farmem::test {

inline constexpr const char* kToken = "test-token-0123456789";

class TestServer {
 public:
  /// Starts a memserver serving `backend` ("local": no listener; "tcp", "fault": 127.0.0.1:0;
  /// "verbs": rdma_cm on the first RDMA device's IPv4 address, port 0).
  static Result<std::unique_ptr<TestServer>> start(const std::string& backend,
                                                   memserver::CoreOptions options = {},
                                                   memserver::RdmaListenerOptions rdma = {});
  ~TestServer();

  /// A new client session (token defaults to the server's).
  Result<std::unique_ptr<transport::Connection>> connect() const;
  Result<std::unique_ptr<transport::Connection>> connect(const std::string& token) const;
  /// A client that posts whatever it is given (no lease check on one-sided backends): what a
  /// hostile or buggy non-farmem client would send, to test the memserver's own protection.
  Result<std::unique_ptr<transport::Connection>> connect_unchecked() const;

  memserver::Core& core() { return server_ ? server_->core() : *local_core_; }
  const std::string& url() const { return url_; }
  const std::string& backend() const { return backend_; }

 private:
  std::string backend_;
  std::string url_;
  std::unique_ptr<memserver::Server> server_;
  std::shared_ptr<memserver::Core> local_core_;  // backend "local" only
};

/// A TCP memserver of `mib` MiB on loopback, or null after a test failure saying why.
inline std::unique_ptr<TestServer> tcp_server_of(std::uint64_t mib) {
  memserver::CoreOptions co;
  co.capacity_bytes = mib << 20;
  auto s = TestServer::start("tcp", co);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

/// Names a backend-parameterised test instance "Local", "Tcp" or "Verbs" (so that
/// --gtest_filter='*Verbs*' picks exactly the RDMA instances).
struct BackendName {
  std::string operator()(const ::testing::TestParamInfo<std::string>& info) const {
    std::string n = info.param;
    if (!n.empty()) n[0] = static_cast<char>(n[0] - 'a' + 'A');
    return n;
  }
};

/// The IPv4 address of the netdev under the first RDMA device ("" when none).
std::string rdma_test_address();
/// True when tests must not skip RDMA cases (FARMEM_REQUIRE_RDMA=1, set in the rxe VM).
bool rdma_required();

}  // namespace farmem::test

/// In a test body: skips natively when there is no RDMA device, fails when RDMA is required.
#define FARMEM_REQUIRE_RDMA_OR_SKIP()                                                      \
  do {                                                                                     \
    if (::farmem::test::rdma_test_address().empty()) {                                    \
      if (::farmem::test::rdma_required()) {                                               \
        FAIL() << "FARMEM_REQUIRE_RDMA=1 but no RDMA device with an IPv4 address";         \
      }                                                                                    \
      GTEST_SKIP() << "no RDMA device here; the verbs cases run in the soft-RoCE VM: "     \
                      "./ci/rxe-vm -- build/test/farmem_tests --gtest_filter='*Verbs*'";   \
    }                                                                                      \
  } while (0)
