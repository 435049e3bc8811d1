// etcd over https with client certificates: the etcd client, the runtime and the memserver
// against a real etcd on loopback started with --cert-file/--key-file/--trusted-ca-file
// --client-cert-auth, certificates made for the test (test/support/test_certs.h). Refusals are
// checked for their code and for naming the endpoint and curl's reason; options that cannot
// work (TLS files with plain http members) are refused before anything connects.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "farmem/runtime.h"
#include "registry/etcd_client.h"
#include "registry/record.h"
#include "test/support/etcd_process.h"
#include "test/support/memserver_process.h"
#include "test/support/test_certs.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using namespace std::chrono_literals;
using registry::EtcdClient;
using registry::EtcdOptions;
using registry::EtcdTls;

constexpr auto kCallTimeout = 5000ms;  // one etcd call; a TLS handshake on a loaded host

bool has(const Status& st, const std::string& text) {
  return st.message().find(text) != std::string::npos;
}

/// A new directory under the temp dir.
Result<std::string> make_temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "farmem-certs-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) return Internal("mkdtemp failed");
  return tmpl;
}

/// One https etcd that requires client certificates, shared by the suite (a start costs
/// seconds); each test uses keys of its own.
class EtcdTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = make_temp_dir();
    if (!dir.ok()) {
      setup_ = dir.status();
      return;
    }
    dir_ = *dir;
    auto certs = make_test_certs(dir_);
    if (!certs.ok()) {
      setup_ = certs.status();
      return;
    }
    certs_ = *certs;
    auto e = EtcdProcess::start(EtcdTlsSetup::from(certs_));
    if (!e.ok()) {
      setup_ = e.status();
      return;
    }
    etcd_ = std::move(e).value();
  }
  static void TearDownTestSuite() {
    etcd_.reset();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  void SetUp() override { ASSERT_TRUE(setup_.ok()) << setup_.to_string(); }

  /// The CA, the client certificate and its key: what etcd accepts.
  static EtcdTls good() { return {certs_.ca, certs_.client_cert, certs_.client_key}; }
  static EtcdOptions options(EtcdTls tls) { return {{etcd_->endpoint()}, kCallTimeout, tls}; }
  static std::string name() { return "https://127.0.0.1:" + std::to_string(etcd_->client_port()); }

  static inline std::string dir_;
  static inline TestCerts certs_;
  static inline std::unique_ptr<EtcdProcess> etcd_;
  static inline Status setup_;
};

TEST_F(EtcdTlsTest, PutAndRangeWorkOverHttpsWithAClientCertificate) {
  EtcdClient c(options(good()));
  EXPECT_EQ(c.endpoint(), name());
  ASSERT_TRUE(c.health().ok()) << c.health().to_string();
  auto rev = c.put("/tls-test/put/a", "over TLS");
  ASSERT_TRUE(rev.ok()) << rev.status().to_string();
  EXPECT_GT(*rev, 0);
  auto r = c.range("/tls-test/put/", /*prefix=*/true);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].key, "/tls-test/put/a");
  EXPECT_EQ(r->kvs[0].value, "over TLS");
  EXPECT_GE(r->revision, *rev);
}

TEST_F(EtcdTlsTest, AnotherCaIsRefusedNamingTheEndpointAndIsNotTriedElsewhere) {
  auto dead = free_loopback_port();  // a second member that would answer "refused"
  ASSERT_TRUE(dead.ok());
  EtcdOptions o = options({certs_.other_ca, certs_.client_cert, certs_.client_key});
  o.endpoints.push_back({"127.0.0.1", *dead, true});
  EtcdClient c(o);
  auto r = c.range("/tls-test/", true);
  ASSERT_FALSE(r.ok()) << "trusted etcd's certificate through an unrelated CA";
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied) << r.status().to_string();
  EXPECT_TRUE(has(r.status(), "etcd at " + name() + ": TLS refused")) << r.status().to_string();
  EXPECT_TRUE(has(r.status(), "SSL certificate problem")) << r.status().to_string();  // curl's
  // A configuration error, not a member down: the next member was not tried.
  EXPECT_FALSE(has(r.status(), std::to_string(*dead))) << r.status().to_string();
  EXPECT_EQ(c.endpoint(), name());

  // Without a CA file the system's store is used, which does not know the test CA either.
  EtcdClient system_store(options({"", certs_.client_cert, certs_.client_key}));
  EXPECT_EQ(system_store.health().code(), StatusCode::kPermissionDenied);
}

TEST_F(EtcdTlsTest, AClientWithoutACertificateIsRefusedWhenEtcdRequiresOne) {
  EtcdClient c(options({certs_.ca, "", ""}));
  // Several calls, each on a new connection: under TLS 1.3 the refusal reaches us either as
  // etcd's alert or as a dropped connection that beat it, by a race; the client then asks
  // over TLS 1.2, where etcd's alert is part of the handshake. Both are the same refusal.
  for (int i = 0; i < 8; ++i) {
    auto r = c.put("/tls-test/nocert", "x");
    ASSERT_FALSE(r.ok()) << "etcd --client-cert-auth served a client without a certificate";
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied) << r.status().to_string();
    EXPECT_TRUE(has(r.status(), "etcd at " + name() + ": TLS refused")) << r.status().to_string();
    EXPECT_TRUE(has(r.status(), "alert bad certificate")) << r.status().to_string();
  }
  // Nothing was written.
  EtcdClient good_client(options(good()));
  auto check = good_client.range("/tls-test/nocert", false);
  ASSERT_TRUE(check.ok()) << check.status().to_string();
  EXPECT_TRUE(check->kvs.empty());
}

TEST_F(EtcdTlsTest, PlainHttpToTheHttpsPortHintsAtHttps) {
  EtcdClient c({{{"127.0.0.1", etcd_->client_port()}}, kCallTimeout});
  auto r = c.range("/tls-test/", true);
  ASSERT_FALSE(r.ok());
  // etcd closes such a connection without a word, as a dying member could: not refused.
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_TRUE(has(r.status(), "if it serves https, write the member " + name()))
      << r.status().to_string();
}

TEST(EtcdTlsHost, ACertificateThatDoesNotNameTheHostIsRefused) {
  auto dir = make_temp_dir();
  ASSERT_TRUE(dir.ok()) << dir.status().to_string();
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{*dir};
  auto certs = make_test_certs(*dir, "IP:127.0.0.1");  // not DNS:localhost
  ASSERT_TRUE(certs.ok()) << certs.status().to_string();
  auto etcd = EtcdProcess::start(EtcdTlsSetup::from(*certs));
  ASSERT_TRUE(etcd.ok()) << etcd.status().to_string();
  const EtcdTls tls{certs->ca, certs->client_cert, certs->client_key};
  const std::uint16_t port = (*etcd)->client_port();

  // "localhost" reaches the same etcd, whose certificate chains to the CA but does not name it.
  EtcdClient by_name({{{"localhost", port, true}}, kCallTimeout, tls});
  auto r = by_name.range("/tls-test/", true);
  ASSERT_FALSE(r.ok()) << "accepted a certificate that does not name the host";
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied) << r.status().to_string();
  EXPECT_TRUE(has(r.status(), "etcd at https://localhost:" + std::to_string(port) +
                                  ": TLS refused"))
      << r.status().to_string();
  EXPECT_TRUE(has(r.status(), "'localhost'")) << r.status().to_string();  // curl names it

  EtcdClient by_address({{{"127.0.0.1", port, true}}, kCallTimeout, tls});
  EXPECT_TRUE(by_address.range("/tls-test/", true).ok());
}

/// A readable file, removed at the end of the test: the option checks only open the files.
class ReadableFile {
 public:
  ReadableFile() {
    path_ = (std::filesystem::temp_directory_path() / "farmem-tls-file-XXXXXX").string();
    const int fd = mkstemp(path_.data());
    if (fd >= 0) close(fd);
  }
  ~ReadableFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(EtcdTlsOptions, FilesWithPlainHttpEndpointsAndHalfAPairAreRefused) {
  const ReadableFile file;
  const std::string& f = file.path();
  const std::vector<registry::EtcdEndpoint> http{{"127.0.0.1", 2379}};
  const std::vector<registry::EtcdEndpoint> https{{"127.0.0.1", 2379, true}};
  const EtcdTls ca_only{f, "", ""};  // a file that exists: only the scheme is wrong
  Status st = registry::check_etcd_tls(http, ca_only);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(has(st, "no etcd endpoint is https")) << st.to_string();
  EXPECT_TRUE(registry::check_etcd_tls(https, ca_only).ok());
  EXPECT_TRUE(registry::check_etcd_tls(http, {}).ok());

  st = registry::check_etcd_tls({https[0], http[0]}, {});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(has(st, "mix http and https")) << st.to_string();
  st = registry::check_etcd_tls(https, {"", f, ""});
  EXPECT_TRUE(has(st, "client certificate is given without its key")) << st.to_string();
  st = registry::check_etcd_tls(https, {"", "", f});
  EXPECT_TRUE(has(st, "client key is given without its certificate")) << st.to_string();
  st = registry::check_etcd_tls(https, {"/nonexistent/ca.pem", "", ""});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(has(st, "'/nonexistent/ca.pem' cannot be read: no such file")) << st.to_string();

  // A client given such options refuses every call instead of connecting without TLS.
  auto port = free_loopback_port();
  ASSERT_TRUE(port.ok());
  EtcdClient c({{{"127.0.0.1", *port}}, 1000ms, ca_only});
  EXPECT_EQ(c.range("/x", true).status().code(), StatusCode::kInvalidArgument);

  // The runtime says which options.
  RuntimeOptions o;
  o.registry = "etcd://127.0.0.1:" + std::to_string(*port);
  o.etcd_ca = f;
  auto rt = Runtime::open(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(has(rt.status(), "RuntimeOptions.etcd_ca/etcd_cert/etcd_key: "))
      << rt.status().to_string();
  o.registry.clear();
  rt = Runtime::open(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_TRUE(has(rt.status(), "registry is empty")) << rt.status().to_string();
}

TEST(EtcdTlsOptions, MemserverRefusesTlsFilesWithAPlainHttpRegistry) {
  const ReadableFile file;
  auto port = free_loopback_port();
  ASSERT_TRUE(port.ok());
  // 2>&1: the refusal goes to stderr.
  auto r = run_program({"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", FARMEM_MEMSERVER_BIN, "--tcp",
                        "127.0.0.1:0", "--token", kToken, "--registry",
                        "etcd://127.0.0.1:" + std::to_string(*port), "--etcd-ca", file.path()});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->exit_code, 2) << r->out;
  EXPECT_NE(r->out.find("--etcd-ca, --etcd-cert, --etcd-key: invalid argument: "),
            std::string::npos)
      << r->out;
  EXPECT_EQ(r->out.find("listening"), std::string::npos) << r->out;

  r = run_program({"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", FARMEM_MEMSERVER_BIN, "--tcp",
                   "127.0.0.1:0", "--token", kToken, "--etcd-cert", file.path()});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_NE(r->exit_code, 0) << r->out;
  EXPECT_NE(r->out.find("--registry"), std::string::npos) << r->out;
}

TEST_F(EtcdTlsTest, MemserverRegistersOverHttpsAndARuntimeFindsItThere) {
  const std::string url = etcd_->registry_url() + "/tls-e2e/";
  MemserverProcess m;
  ASSERT_TRUE(m.start("tcp", {"--registry", url, "--registry-ttl", "2", "--etcd-ca", certs_.ca,
                              "--etcd-cert", certs_.client_cert, "--etcd-key",
                              certs_.client_key})
                  .ok());
  // Registered before it printed "listening".
  EtcdClient c(options(good()));
  auto r = c.range("/tls-e2e/", true);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->kvs.size(), 1u);
  auto rec = registry::parse_record(r->kvs[0].value);
  ASSERT_TRUE(rec.ok()) << rec.status().to_string();
  EXPECT_EQ(rec->urls, std::vector<std::string>{m.url()});

  RuntimeOptions o;
  o.registry = url;
  o.etcd_ca = certs_.ca;
  o.etcd_cert = certs_.client_cert;
  o.etcd_key = certs_.client_key;
  o.auth_token = kToken;
  o.slab_bytes = 4u << 20;
  o.registry_transports = {"tcp"};
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  const auto members = (*rt)->registry_stats().members;
  ASSERT_EQ(members.size(), 1u);
  EXPECT_EQ(members[0].url, m.url());
  auto slab = (*rt)->allocate(4u << 20);
  EXPECT_TRUE(slab.ok()) << slab.status().to_string();

  // Without its client certificate the runtime does not open.
  o.etcd_cert.clear();
  o.etcd_key.clear();
  auto refused = Runtime::open(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied) << refused.status().to_string();
  EXPECT_TRUE(has(refused.status(), "RuntimeOptions.registry")) << refused.status().to_string();
  EXPECT_TRUE(has(refused.status(), "TLS refused")) << refused.status().to_string();
}

TEST_F(EtcdTlsTest, MemserverThatEtcdRefusesExitsSayingWhy) {
  auto r = run_program({"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", FARMEM_MEMSERVER_BIN, "--tcp",
                        "127.0.0.1:0", "--token", kToken, "--registry", etcd_->registry_url(),
                        "--etcd-ca", certs_.other_ca, "--etcd-cert", certs_.client_cert,
                        "--etcd-key", certs_.client_key});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->exit_code, 2) << r->out;
  EXPECT_NE(r->out.find("etcd at " + name() + ": TLS refused"), std::string::npos) << r->out;
  EXPECT_EQ(r->out.find("listening"), std::string::npos) << r->out;
}

}  // namespace
}  // namespace farmem::test
