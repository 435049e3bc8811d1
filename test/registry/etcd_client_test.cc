// The etcd client (runtime/registry/etcd_client.h) against a real etcd on loopback, and its
// pure helpers (base64, registry URLs, prefix ranges) without one.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "registry/base64.h"
#include "registry/etcd_client.h"
#include "test/support/etcd_process.h"
#include "test/support/memserver_process.h"

namespace farmem::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using registry::EtcdClient;

TEST(EtcdBase64, RoundTripsEveryLengthAndRejectsGarbage) {
  EXPECT_EQ(registry::base64_encode(""), "");
  EXPECT_EQ(registry::base64_encode("f"), "Zg==");
  EXPECT_EQ(registry::base64_encode("fo"), "Zm8=");
  EXPECT_EQ(registry::base64_encode("foo"), "Zm9v");
  EXPECT_EQ(registry::base64_encode("/farmem/a"), "L2Zhcm1lbS9h");  // what etcd returned
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (std::size_t n = 0; n <= all.size(); n += 37) {
    auto back = registry::base64_decode(registry::base64_encode(all.substr(0, n)));
    ASSERT_TRUE(back.ok()) << n;
    EXPECT_EQ(*back, all.substr(0, n));
  }
  EXPECT_EQ(registry::base64_decode("Zg=").status().code(), StatusCode::kProtocolError);
  EXPECT_EQ(registry::base64_decode("Z!==").status().code(), StatusCode::kProtocolError);
  EXPECT_EQ(registry::base64_decode("Z=g=").status().code(), StatusCode::kProtocolError);
}

TEST(EtcdUrl, ParsesHostPortAndPrefix) {
  auto a = registry::parse_registry_url("etcd://127.0.0.1:2379");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->endpoints.at(0).host, "127.0.0.1");
  EXPECT_EQ(a->endpoints.at(0).port, 2379);
  EXPECT_EQ(a->prefix, registry::kDefaultPrefix);
  a = registry::parse_registry_url("etcd://etcd.lan:23790/rack7/farmem");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->endpoints.at(0).host, "etcd.lan");
  EXPECT_EQ(a->prefix, "/rack7/farmem/");
  a = registry::parse_registry_url("etcd://[::1]:2379/x/");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->endpoints.at(0).host, "::1");
  EXPECT_EQ(a->prefix, "/x/");
  for (const char* bad : {"http://127.0.0.1:2379", "etcd://127.0.0.1", "etcd://:2379",
                          "etcd://h:0", "etcd://h:70000", "etcd://h:12a", "etcd://[::1/x"}) {
    auto r = registry::parse_registry_url(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("etcd://HOST:PORT"), std::string::npos) << bad;
  }
}

TEST(EtcdUrl, PrefixRangeEndIsTheNextKeyAfterThePrefix) {
  EXPECT_EQ(registry::prefix_range_end("/a/"), "/a0");
  EXPECT_EQ(registry::prefix_range_end(std::string("a\xff", 2)), "b");
  EXPECT_EQ(registry::prefix_range_end(std::string("\xff\xff", 2)), std::string(1, '\0'));
  EXPECT_EQ(registry::prefix_range_end(""), std::string(1, '\0'));
}

TEST(EtcdClient, UnreachableEtcdIsAClearErrorWithinTheDeadline) {
  auto port = free_loopback_port();  // nothing listens there
  ASSERT_TRUE(port.ok());
  EtcdClient c({{{"127.0.0.1", *port}}, 1000ms});
  const auto t0 = Clock::now();
  auto r = c.range("/farmem/", true);
  EXPECT_LT(Clock::now() - t0, 3s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("etcd at 127.0.0.1:" + std::to_string(*port) +
                                      ": connection refused"),
            std::string::npos)
      << r.status().to_string();
}

class EtcdLive : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = EtcdProcess::start();
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    etcd_ = std::move(e).value();
    client_ = std::make_unique<EtcdClient>(
        registry::EtcdOptions{{{"127.0.0.1", etcd_->client_port()}}, 2000ms});
  }
  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<EtcdClient> client_;
};

TEST_F(EtcdLive, PutRangeAndDeleteByPrefix) {
  ASSERT_TRUE(client_->health().ok());
  auto r1 = client_->put("/t/a", "one");
  ASSERT_TRUE(r1.ok()) << r1.status().to_string();
  auto r2 = client_->put("/t/b", std::string("t\0wo\xff", 5));  // any bytes
  ASSERT_TRUE(r2.ok()) << r2.status().to_string();
  EXPECT_GT(*r2, *r1);  // revisions grow
  ASSERT_TRUE(client_->put("/u/c", "other prefix").ok());

  auto all = client_->range("/t/", true);
  ASSERT_TRUE(all.ok()) << all.status().to_string();
  ASSERT_EQ(all->kvs.size(), 2u);
  EXPECT_EQ(all->kvs[0].key, "/t/a");
  EXPECT_EQ(all->kvs[0].value, "one");
  EXPECT_EQ(all->kvs[1].value, std::string("t\0wo\xff", 5));
  EXPECT_GE(all->revision, *r2);

  auto one = client_->range("/t/a", false);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->kvs.size(), 1u);
  auto none = client_->range("/nothing/", true);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->kvs.empty());

  auto gone = client_->delete_range("/t/", true);
  ASSERT_TRUE(gone.ok()) << gone.status().to_string();
  EXPECT_EQ(*gone, 2);
  EXPECT_TRUE(client_->range("/t/", true)->kvs.empty());
  EXPECT_EQ(client_->range("/u/", true)->kvs.size(), 1u);
}

TEST_F(EtcdLive, LeasedKeyExpiresUnlessKeptAliveAndGoesAtOnceOnRevoke) {
  // Two leases of 2 s: one kept alive, one left to expire.
  auto kept = client_->grant_lease(2s);
  auto left = client_->grant_lease(2s);
  ASSERT_TRUE(kept.ok()) << kept.status().to_string();
  ASSERT_TRUE(left.ok()) << left.status().to_string();
  ASSERT_TRUE(client_->put("/l/kept", "k", *kept).ok());
  ASSERT_TRUE(client_->put("/l/left", "l", *left).ok());
  const auto t0 = Clock::now();
  bool left_gone = false;
  while (Clock::now() - t0 < 8s && !left_gone) {  // 2 s TTL; etcd checks expiry every 500 ms
    auto ttl = client_->keep_alive(*kept);
    ASSERT_TRUE(ttl.ok()) << ttl.status().to_string();
    EXPECT_GT(*ttl, 0);
    left_gone = client_->range("/l/left", false)->kvs.empty();
    std::this_thread::sleep_for(300ms);
  }
  ASSERT_TRUE(left_gone) << "an unrenewed 2 s lease still held its key after 8 s";
  EXPECT_GE(Clock::now() - t0, 1500ms) << "the key went before its lease could expire";
  EXPECT_EQ(client_->range("/l/kept", false)->kvs.size(), 1u);
  // The expired lease cannot be renewed or used any more.
  EXPECT_EQ(client_->keep_alive(*left).status().code(), StatusCode::kNotFound);
  auto put = client_->put("/l/again", "x", *left);
  EXPECT_EQ(put.status().code(), StatusCode::kNotFound) << put.status().to_string();
  EXPECT_NE(put.status().message().find("lease not found"), std::string::npos);

  ASSERT_TRUE(client_->revoke_lease(*kept).ok());
  EXPECT_TRUE(client_->range("/l/kept", false)->kvs.empty());
  EXPECT_EQ(client_->revoke_lease(*kept).code(), StatusCode::kNotFound);
}

TEST_F(EtcdLive, CallsFailCleanlyWhileEtcdIsDownAndWorkAgainAfter) {
  ASSERT_TRUE(client_->put("/d/x", "1").ok());
  etcd_->kill_now();
  auto r = client_->range("/d/", true);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_EQ(client_->grant_lease(5s).status().code(), StatusCode::kUnavailable);
  ASSERT_TRUE(etcd_->restart(/*fresh_data=*/false).ok());
  auto back = client_->range("/d/", true);  // same client, new connection
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->kvs.size(), 1u);
}

}  // namespace
}  // namespace farmem::test
