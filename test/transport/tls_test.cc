// TLS for tcp (tls:// URLs, farmem-memserver --tls-cert/--tls-key/--tls-ca): data arrives
// intact in every size and from many threads on one connection; an eavesdropping proxy sees
// neither the data nor the secret; a wrong CA, a wrong name, a missing or foreign client
// certificate and a plain client are refused with errors that say which; a cut connection
// resumes over TLS. Certificates are made at test time (test/support/test_certs.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "farmem/farmem.h"
#include "memserver/server.h"
#include "test/support/memserver_process.h"
#include "test/support/tcp_proxy.h"
#include "test/support/test_certs.h"
#include "test/support/test_server.h"
#include "transport/connect.h"
#include "transport/tcp/tls.h"
#include "transport/transport.h"

namespace farmem::test {
namespace {

namespace fs = std::filesystem;
constexpr auto kTimeout = std::chrono::seconds(10);

class Tls : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("farmem-tls-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    auto c = make_test_certs(dir_.string());
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    certs_ = *c;
  }
  void TearDown() override {
    server_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  /// An in-process memserver serving TLS on `host`:0 (mutual TLS when `client_ca` is set).
  void start_server(const std::string& client_ca = "", const std::string& host = "127.0.0.1") {
    memserver::ServerOptions so;
    so.core.capacity_bytes = 64u << 20;
    so.core.token = kToken;
    so.core.lease_grace = std::chrono::seconds(30);  // as farmem-memserver's default: resumable
    so.tcp = memserver::ListenAddress{host, 0};
    auto ctx = net::TlsContext::for_server({certs_.server_cert, certs_.server_key, client_ca});
    ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
    so.tcp_options.tls = *ctx;
    auto s = memserver::Server::start(std::move(so));
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
    url_ = "tls://" + host + ":" + std::to_string(server_->tcp_port());
  }

  transport::ConnectOptions client(bool with_cert = false) const {
    transport::ConnectOptions co;
    co.token = kToken;
    co.tls.ca_file = certs_.ca;
    if (with_cert) {
      co.tls.cert_file = certs_.client_cert;
      co.tls.key_file = certs_.client_key;
    }
    co.connect_timeout = std::chrono::milliseconds(5000);
    return co;
  }

  fs::path dir_;
  TestCerts certs_;
  std::unique_ptr<memserver::Server> server_;
  std::string url_;
};

// Writes `len` bytes of a pattern seeded by `seed` at slab+off and reads them back.
void round_trip(transport::Connection& c, const proto::SlabInfo& slab, std::uint64_t off,
                std::uint32_t len, std::uint32_t seed) {
  std::vector<std::byte> out(len), in(len);
  for (std::uint32_t i = 0; i < len; ++i) out[i] = std::byte((i * 131 + seed) & 0xff);
  ASSERT_TRUE(c.execute({transport::OpKind::kWrite, len, out.data(), 0, slab.rkey,
                         slab.addr + off},
                        kTimeout)
                  .ok());
  ASSERT_TRUE(c.execute({transport::OpKind::kRead, len, in.data(), 0, slab.rkey, slab.addr + off},
                        kTimeout)
                  .ok());
  ASSERT_EQ(std::memcmp(out.data(), in.data(), len), 0) << len << " bytes at " << off;
}

TEST_F(Tls, BytesOfEverySizeArriveIntact) {
  start_server();
  auto c = transport::connect(url_, client());
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ((*c)->capabilities().name, "tls");
  auto slab = transport::alloc_slab(**c, 8u << 20, kTimeout);
  ASSERT_TRUE(slab.ok()) << slab.status().to_string();
  // Around the 16 KiB record: one byte, below, at and above it, several records, 1 MiB.
  std::uint32_t seed = 1;
  for (std::uint32_t len : {1u, 4095u, 4096u, 16383u, 16384u, 16385u, 65536u, 100001u, 1u << 20}) {
    round_trip(**c, *slab, (seed * 8191) % (4u << 20), len, seed);
    ++seed;
  }
}

// Four threads post batches on one connection: one receives (the leader) while others send,
// so the session's lock is what keeps OpenSSL's state whole.
TEST_F(Tls, ManyThreadsOnOneConnection) {
  start_server();
  auto c = transport::connect(url_, client());
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  auto slab = transport::alloc_slab(**c, 8u << 20, kTimeout);
  ASSERT_TRUE(slab.ok());
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      constexpr std::uint32_t kLen = 4096;
      constexpr int kBatch = 16;
      std::vector<std::byte> out(kLen * kBatch), in(kLen * kBatch);
      // Bounded: 40 rounds.
      for (int round = 0; round < 40; ++round) {
        std::vector<transport::Op> ops;
        for (int i = 0; i < kBatch; ++i) {
          std::byte* p = out.data() + i * kLen;
          std::memset(p, (t * 50 + round + i) & 0xff, kLen);
          const std::uint64_t at = slab->addr + ((t * kBatch + i) * std::uint64_t{kLen});
          ops.push_back({transport::OpKind::kWrite, kLen, p, 0, slab->rkey, at});
        }
        transport::Completion wdone;
        if (!(*c)->post(ops, wdone).ok() || !(*c)->wait(wdone, kTimeout).ok()) {
          ++failed;
          return;
        }
        for (int i = 0; i < kBatch; ++i) {
          ops[i].kind = transport::OpKind::kRead;
          ops[i].local = in.data() + i * kLen;
        }
        transport::Completion rdone;
        if (!(*c)->post(ops, rdone).ok() || !(*c)->wait(rdone, kTimeout).ok()) {
          ++failed;
          return;
        }
        if (std::memcmp(in.data(), out.data(), in.size()) != 0) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
}

// What crosses the network: the same runtime workload through a proxy, in clear over tcp://
// (the control: the proxy does see the data, so the check below can fail) and over tls://,
// where neither the data nor the secret appears.
TEST_F(Tls, AnEavesdropperSeesNoPlaintext) {
  // 64 distinctive bytes, written to far memory many times.
  std::string marker;
  for (int i = 0; i < 64; ++i) marker.push_back(static_cast<char>('A' + (i * 7) % 26));
  const auto run_through = [&](const std::string& scheme, std::uint16_t port) -> std::string {
    auto proxy = TcpProxy::start("127.0.0.1", port);
    EXPECT_TRUE(proxy.ok());
    if (!proxy.ok()) return {};
    RuntimeOptions o;
    o.servers = {scheme + "://127.0.0.1:" + std::to_string((*proxy)->port())};
    o.auth_token = kToken;
    if (scheme == "tls") o.tls_ca = certs_.ca;
    o.cache_budget_bytes = 1u << 20;
    o.slab_bytes = 4u << 20;
    {
      auto rt = Runtime::open(o);
      EXPECT_TRUE(rt.ok()) << rt.status().to_string();
      if (!rt.ok()) return {};
      auto range = (*rt)->allocate(1u << 20);
      EXPECT_TRUE(range.ok());
      auto buf = (*rt)->local_buffer().first(1u << 20);
      for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = std::byte(marker[i % marker.size()]);
      EXPECT_TRUE((*rt)->write(range->addr, buf).ok());
      std::memset(buf.data(), 0, buf.size());
      EXPECT_TRUE((*rt)->read(range->addr, buf).ok());
      EXPECT_EQ(std::memcmp(buf.data(), marker.data(), marker.size()), 0);
    }
    return (*proxy)->captured();
  };

  // The control: a plain memserver, whose traffic does show the marker.
  auto plain = tcp_server_of(64);
  ASSERT_NE(plain, nullptr);
  const std::string clear = run_through("tcp", static_cast<std::uint16_t>(std::stoi(
                                                   plain->url().substr(plain->url().rfind(':') + 1))));
  EXPECT_NE(clear.find(marker), std::string::npos) << "the control saw no plaintext";

  start_server();
  const std::string sealed = run_through("tls", server_->tcp_port());
  EXPECT_GT(sealed.size(), 2u << 20) << "the data went through the proxy";
  EXPECT_EQ(sealed.find(marker.substr(0, 16)), std::string::npos) << "plaintext on the wire";
  EXPECT_EQ(sealed.find(std::string(kToken).substr(0, 8)), std::string::npos);
  // Nor farmem's frame magic: not even the headers travel in clear.
  EXPECT_EQ(sealed.find("FMEM"), std::string::npos);
}

TEST_F(Tls, AServerCertificateFromAnotherCaIsRefused) {
  start_server();
  auto co = client();
  co.tls.ca_file = certs_.other_ca;
  auto c = transport::connect(url_, co);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kPermissionDenied) << c.status().to_string();
  EXPECT_NE(c.status().message().find("certificate was refused"), std::string::npos)
      << c.status().to_string();
  // The server counted a failed handshake, and serves the next client all the same.
  auto good = transport::connect(url_, client());
  EXPECT_TRUE(good.ok()) << good.status().to_string();
}

TEST_F(Tls, AServerCertificateForAnotherNameIsRefused) {
  // The certificate names 127.0.0.1 and localhost; the URL says 127.0.0.2.
  start_server("", "127.0.0.2");
  auto c = transport::connect(url_, client());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kPermissionDenied) << c.status().to_string();
  EXPECT_NE(c.status().message().find("mismatch"), std::string::npos) << c.status().to_string();
}

TEST_F(Tls, MutualTlsNeedsAClientCertificateFromTheServersCa) {
  start_server(certs_.ca);
  auto none = transport::connect(url_, client(/*with_cert=*/false));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kPermissionDenied) << none.status().to_string();
  EXPECT_NE(none.status().message().find("certificate"), std::string::npos)
      << none.status().to_string();

  auto with = transport::connect(url_, client(/*with_cert=*/true));
  ASSERT_TRUE(with.ok()) << with.status().to_string();
  auto slab = transport::alloc_slab(**with, 1u << 20, kTimeout);
  ASSERT_TRUE(slab.ok());
  round_trip(**with, *slab, 0, 8192, 7);

  // A server that trusts only another CA refuses the same certificate.
  server_.reset();
  start_server(certs_.other_ca);
  auto foreign = transport::connect(url_, client(/*with_cert=*/true));
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.status().code(), StatusCode::kPermissionDenied) << foreign.status().to_string();
  EXPECT_NE(foreign.status().message().find("refused by the peer"), std::string::npos)
      << foreign.status().to_string();
}

// A mismatch of schemes is named in both directions, not reported as a broken connection.
TEST_F(Tls, PlainAndTlsClientsAreToldWhichTheServerSpeaks) {
  start_server();
  const std::string plain_url = "tcp://127.0.0.1:" + std::to_string(server_->tcp_port());
  auto plain = transport::connect(plain_url, client());
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.status().message().find("accepts TLS only"), std::string::npos)
      << plain.status().to_string();

  auto plain_server = tcp_server_of(16);
  ASSERT_NE(plain_server, nullptr);
  const std::string tls_url = "tls" + plain_server->url().substr(3);
  auto tls = transport::connect(tls_url, client());
  ASSERT_FALSE(tls.ok());
  EXPECT_NE(tls.status().message().find("serves plain tcp://"), std::string::npos)
      << tls.status().to_string();
}

TEST_F(Tls, BadClientConfigurationIsAClearError) {
  auto co = client();
  co.tls.cert_file = certs_.client_cert;  // no key
  start_server();
  auto c = transport::connect(url_, co);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << c.status().to_string();

  co = client();
  co.tls.ca_file = (dir_ / "missing.pem").string();
  c = transport::connect(url_, co);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << c.status().to_string();
  EXPECT_NE(c.status().message().find("missing.pem"), std::string::npos);

  // TLS options with no tls:// memserver would encrypt nothing: Runtime::open says so.
  RuntimeOptions o;
  o.servers = {"tcp://127.0.0.1:1"};
  o.tls_ca = certs_.ca;
  auto rt = Runtime::open(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), StatusCode::kInvalidArgument) << rt.status().to_string();
}

// Session resume works over TLS: a proxy cuts the connection mid-run; the runtime reconnects
// (a new TLS handshake), resumes, and every far byte is there.
TEST_F(Tls, ACutConnectionResumesOverTls) {
  start_server();
  auto proxy = TcpProxy::start("127.0.0.1", server_->tcp_port());
  ASSERT_TRUE(proxy.ok());
  RuntimeOptions o;
  o.servers = {"tls://127.0.0.1:" + std::to_string((*proxy)->port())};
  o.auth_token = kToken;
  o.tls_ca = certs_.ca;
  o.cache_budget_bytes = 1u << 20;
  o.slab_bytes = 4u << 20;
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  auto range = (*rt)->allocate(1u << 20);
  ASSERT_TRUE(range.ok());
  auto buf = (*rt)->local_buffer().first(1u << 20);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = std::byte((i * 13) & 0xff);
  ASSERT_TRUE((*rt)->write(range->addr, buf).ok());
  const auto before = (*proxy)->accepted();
  (*proxy)->cut();
  std::memset(buf.data(), 0, buf.size());
  const Status st = (*rt)->read(range->addr, buf);
  ASSERT_TRUE(st.ok()) << st.to_string();
  for (std::size_t i = 0; i < buf.size(); ++i) {
    ASSERT_EQ(buf[i], std::byte((i * 13) & 0xff)) << "byte " << i;
  }
  EXPECT_GT((*proxy)->accepted(), before) << "the runtime reconnected";
}

// The real binary: flags, the listening line, a runtime through it, and flag mistakes.
TEST_F(Tls, TheMemserverBinaryServesTls) {
  MemserverProcess ms;
  ASSERT_TRUE(ms.start({"--tcp", "127.0.0.1:0", "--token", kToken, "--capacity", "32M",
                        "--tls-cert", certs_.server_cert, "--tls-key", certs_.server_key,
                        "--tls-ca", certs_.ca, "--log-level", "error"},
                       {"tls"})
                  .ok());
  RuntimeOptions o;
  o.servers = {"tls://127.0.0.1:" + std::to_string(ms.port("tls"))};
  o.auth_token = kToken;
  o.tls_ca = certs_.ca;
  o.tls_cert = certs_.client_cert;
  o.tls_key = certs_.client_key;
  o.cache_budget_bytes = 1u << 20;
  o.slab_bytes = 4u << 20;
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  far_vector<std::uint64_t> v(**rt);
  ASSERT_TRUE(v.append(1u << 17, [](std::size_t i) { return std::uint64_t{i * 3}; }).ok());
  ASSERT_TRUE((*rt)->flush().ok());
  std::uint64_t sum = 0;
  ASSERT_TRUE(v.for_each([&](std::size_t, const std::uint64_t& x) { sum += x; }).ok());
  const std::uint64_t n = 1u << 17;
  EXPECT_EQ(sum, 3 * (n * (n - 1) / 2));

  // --tls-cert without --tls-key, a key that is not the certificate's, --tls-cert without
  // --tcp: each stops the memserver with exit 2 and a message.
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--tcp", "127.0.0.1:0", "--insecure", "--tls-cert", certs_.server_cert},
           {"--tcp", "127.0.0.1:0", "--insecure", "--tls-cert", certs_.server_cert, "--tls-key",
            certs_.client_key},
           {"--rdma", "127.0.0.1:0", "--insecure", "--tls-cert", certs_.server_cert,
            "--tls-key", certs_.server_key}}) {
    std::vector<std::string> argv{FARMEM_MEMSERVER_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run_program(argv);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->exit_code, 2) << args[args.size() - 1];
  }
}

}  // namespace
}  // namespace farmem::test
