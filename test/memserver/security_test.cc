// Strangers stay out: the secret never crosses the wire, a memserver without credentials does
// not start, and tenants (--tenants FILE) get their quotas, caps and nobody else's memory.
// Everything runs against the real farmem-memserver binary or a TCP listener on loopback.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "farmem/farmem.h"
#include "test/support/memserver_process.h"
#include "test/support/tcp_proxy.h"
#include "test/support/test_server.h"
#include "transport/connect.h"
#include "transport/transport.h"

namespace farmem::test {
namespace {

namespace fs = std::filesystem;
constexpr auto kTimeout = std::chrono::seconds(10);

std::uint16_t port_of(const std::string& url) {
  return static_cast<std::uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
}

Result<std::unique_ptr<transport::Connection>> connect_as(const std::string& url,
                                                          const std::string& tenant,
                                                          const std::string& secret) {
  transport::ConnectOptions co;
  co.token = secret;
  co.tenant = tenant;
  return transport::connect(url, co);
}

// A runtime's whole life through a proxy: connect, lease, write and read far memory. The
// proxy sees every byte, and not one run of the secret's bytes.
TEST(Security, TheSecretNeverCrossesTheWire) {
  auto server = tcp_server_of(64);
  ASSERT_NE(server, nullptr);
  auto proxy = TcpProxy::start("127.0.0.1", port_of(server->url()));
  ASSERT_TRUE(proxy.ok()) << proxy.status().to_string();
  {
    RuntimeOptions o;
    o.servers = {(*proxy)->url()};
    o.auth_token = kToken;
    o.cache_budget_bytes = 1u << 20;
    o.slab_bytes = 4u << 20;
    auto rt = Runtime::open(o);
    ASSERT_TRUE(rt.ok()) << rt.status().to_string();
    far_vector<std::uint64_t> v(**rt);
    const std::size_t n = 1u << 18;  // 2 MiB: twice the cache
    ASSERT_TRUE(v.append(n, [](std::size_t i) { return std::uint64_t{i * 7}; }).ok());
    ASSERT_TRUE((*rt)->flush().ok());
    std::uint64_t sum = 0;
    ASSERT_TRUE(v.for_each([&](std::size_t, const std::uint64_t& x) { sum += x; }).ok());
    EXPECT_EQ(sum, 7 * (std::uint64_t{n} * (n - 1) / 2));
  }
  const std::string seen = (*proxy)->captured();
  EXPECT_FALSE((*proxy)->truncated());
  EXPECT_GT(seen.size(), 2u << 20) << "the data went through the proxy";
  EXPECT_EQ(seen.find(kToken), std::string::npos) << "the token crossed the wire";
  // Not even a long piece of it.
  EXPECT_EQ(seen.find(std::string(kToken).substr(0, 8)), std::string::npos);
}

TEST(Security, AMemserverWithoutCredentialsRefusesToStartUnlessInsecure) {
  auto refused = run_program({FARMEM_MEMSERVER_BIN, "--tcp", "127.0.0.1:0"});
  ASSERT_TRUE(refused.ok()) << refused.status().to_string();
  EXPECT_EQ(refused->exit_code, 2);

  MemserverProcess open;
  ASSERT_TRUE(open.start({"--tcp", "127.0.0.1:0", "--insecure", "--capacity", "16M",
                          "--log-level", "error"},
                         {"tcp"})
                  .ok());
  const std::string url = "tcp://127.0.0.1:" + std::to_string(open.port("tcp"));
  // A client without a secret is served; a client with one refuses a memserver that cannot
  // prove it holds it.
  auto anyone = connect_as(url, "", "");
  ASSERT_TRUE(anyone.ok()) << anyone.status().to_string();
  EXPECT_TRUE(transport::alloc_slab(**anyone, 4096, kTimeout).ok());
  auto careful = connect_as(url, "", kToken);
  ASSERT_FALSE(careful.ok());
  EXPECT_EQ(careful.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(careful.status().message().find("--insecure"), std::string::npos)
      << careful.status().to_string();
}

class TenantsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("farmem-tenants-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    file_ = dir_ / "tenants.json";
    std::ofstream(file_) << R"({"tenants": [
      {"name": "kv", "secret": "kv-secret-1", "quota": "8M", "max_connections": 2},
      {"name": "graph", "secret": "graph-secret-2"}]})";
    fs::permissions(file_, fs::perms::owner_read | fs::perms::owner_write);
  }
  void TearDown() override { fs::remove_all(dir_); }
  Status start() {
    FARMEM_RETURN_IF_ERROR(server_.start({"--tcp", "127.0.0.1:0", "--tenants", file_.string(),
                                          "--capacity", "64M", "--chunk", "2M", "--log-level",
                                          "error"},
                                         {"tcp"}));
    url_ = "tcp://127.0.0.1:" + std::to_string(server_.port("tcp"));
    return Status::Ok();
  }
  fs::path dir_, file_;
  MemserverProcess server_;
  std::string url_;
};

TEST_F(TenantsTest, AFileOthersCanReadIsRefused) {
  fs::permissions(file_, fs::perms::group_read | fs::perms::others_read, fs::perm_options::add);
  auto r = run_program({FARMEM_MEMSERVER_BIN, "--tcp", "127.0.0.1:0", "--tenants", file_.string()});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 2);
}

TEST_F(TenantsTest, WrongSecretsQuotaAndCapAreClearErrors) {
  ASSERT_TRUE(start().ok());
  for (auto [tenant, secret] : {std::pair{"kv", "graph-secret-2"}, std::pair{"nobody", "x"},
                                std::pair{"", "kv-secret-1"}}) {
    auto c = connect_as(url_, tenant, secret);
    ASSERT_FALSE(c.ok()) << tenant;
    EXPECT_EQ(c.status().code(), StatusCode::kPermissionDenied) << c.status().to_string();
    EXPECT_NE(c.status().message().find("authentication failed"), std::string::npos)
        << c.status().to_string();
  }
  auto a = connect_as(url_, "kv", "kv-secret-1");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_TRUE(transport::alloc_slab(**a, 6u << 20, kTimeout).ok());
  auto over = transport::alloc_slab(**a, 4u << 20, kTimeout);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("quota of tenant 'kv'"), std::string::npos)
      << over.status().to_string();
  auto b = connect_as(url_, "kv", "kv-secret-1");
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  auto third = connect_as(url_, "kv", "kv-secret-1");
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted) << third.status().to_string();
  EXPECT_NE(third.status().message().find("cap"), std::string::npos) << third.status().to_string();
  // Another tenant is not held back by kv's limits.
  auto g = connect_as(url_, "graph", "graph-secret-2");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_TRUE(transport::alloc_slab(**g, 16u << 20, kTimeout).ok());
}

TEST_F(TenantsTest, ATenantCannotReachAnotherTenantsMemoryAndTheBystanderIsIntact) {
  ASSERT_TRUE(start().ok());
  auto victim = connect_as(url_, "graph", "graph-secret-2");
  ASSERT_TRUE(victim.ok()) << victim.status().to_string();
  auto slab = transport::alloc_slab(**victim, 2u << 20, kTimeout);
  ASSERT_TRUE(slab.ok());
  std::vector<std::byte> pattern(4096), back(4096);
  for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = std::byte(i * 13 + 1);
  auto vreg = (*victim)->register_memory(pattern.data(), pattern.size());
  ASSERT_TRUE(vreg.ok());
  transport::Op w{transport::OpKind::kWrite, 4096, pattern.data(), (*vreg)->lkey(), slab->rkey,
                  slab->addr};
  ASSERT_TRUE((*victim)->execute(w, kTimeout).ok());

  // The thief knows the victim's address, key and slab id (as if it guessed them all).
  transport::ConnectOptions co;
  co.token = "kv-secret-1";
  co.tenant = "kv";
  co.check_leases = false;
  auto thief = transport::connect(url_, co);
  ASSERT_TRUE(thief.ok()) << thief.status().to_string();
  std::vector<std::byte> loot(4096, std::byte{0});
  auto treg = (*thief)->register_memory(loot.data(), loot.size());
  ASSERT_TRUE(treg.ok());
  transport::Op r{transport::OpKind::kRead, 4096, loot.data(), (*treg)->lkey(), slab->rkey,
                  slab->addr};
  EXPECT_FALSE((*thief)->execute(r, kTimeout).ok());
  // A failed read leaves its buffer unspecified (the tcp client may have received the error
  // text into it), but none of the victim's bytes.
  EXPECT_EQ(std::search(loot.begin(), loot.end(), pattern.begin(), pattern.begin() + 32),
            loot.end());
  auto scribble = std::vector<std::byte>(4096, std::byte{0xee});
  auto sreg = (*thief)->register_memory(scribble.data(), scribble.size());
  ASSERT_TRUE(sreg.ok());
  transport::Op x{transport::OpKind::kWrite, 4096, scribble.data(), (*sreg)->lkey(), slab->rkey,
                  slab->addr};
  EXPECT_FALSE((*thief)->execute(x, kTimeout).ok());
  EXPECT_EQ(transport::free_slab(**thief, slab->slab_id, kTimeout).code(), StatusCode::kNotFound);
  // Its own list shows none of the victim's sessions.
  auto seen = transport::list_sessions(**thief, kTimeout);
  ASSERT_TRUE(seen.ok()) << seen.status().to_string();
  ASSERT_EQ(seen->size(), 1u);

  auto breg = (*victim)->register_memory(back.data(), back.size());
  ASSERT_TRUE(breg.ok());
  transport::Op rb{transport::OpKind::kRead, 4096, back.data(), (*breg)->lkey(), slab->rkey,
                   slab->addr};
  ASSERT_TRUE((*victim)->execute(rb, kTimeout).ok());
  EXPECT_EQ(back, pattern);
}

}  // namespace
}  // namespace farmem::test
