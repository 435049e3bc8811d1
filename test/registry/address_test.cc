// Registry URLs with several etcd members (runtime/registry/address.h), without etcd.
#include <gtest/gtest.h>

#include <string>

#include "registry/address.h"

namespace farmem::test {
namespace {

using registry::parse_registry_url;

TEST(EtcdUrl, ParsesEveryMemberOfAClusterInOrder) {
  auto a = parse_registry_url("etcd://10.0.0.5:2379,10.0.0.6:2379,etcd3.lan:23790");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_EQ(a->endpoints.size(), 3u);
  EXPECT_EQ(a->endpoints[0].host, "10.0.0.5");
  EXPECT_EQ(a->endpoints[1].host, "10.0.0.6");
  EXPECT_EQ(a->endpoints[1].port, 2379);
  EXPECT_EQ(a->endpoints[2].host, "etcd3.lan");
  EXPECT_EQ(a->endpoints[2].port, 23790);
  EXPECT_EQ(a->prefix, registry::kDefaultPrefix);

  a = parse_registry_url("etcd://[::1]:2379,127.0.0.1:2380,[fe80::2]:2381/rack7/farmem");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_EQ(a->endpoints.size(), 3u);
  EXPECT_EQ(a->endpoints[0].host, "::1");
  EXPECT_EQ(registry::to_string(a->endpoints[0]), "[::1]:2379");
  EXPECT_EQ(registry::to_string(a->endpoints[1]), "127.0.0.1:2380");
  EXPECT_EQ(a->endpoints[2].host, "fe80::2");
  EXPECT_EQ(a->prefix, "/rack7/farmem/");

  // The same host on other ports is another member (several etcds on one test host).
  a = parse_registry_url("etcd://h:1,h:2/");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->endpoints.size(), 2u);
  EXPECT_EQ(a->prefix, registry::kDefaultPrefix);

  std::string many = "etcd://";
  for (int i = 1; i <= 16; ++i) many += (i == 1 ? "" : ",") + std::string("h:") + std::to_string(i);
  a = parse_registry_url(many);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->endpoints.size(), registry::kMaxEndpoints);
}

TEST(EtcdUrl, MembersWrittenHttpsUseTlsAndHttpOrBareOnesDoNot) {
  auto a = parse_registry_url("etcd://https://10.0.0.5:2379,https://[::1]:2380/rack7");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_EQ(a->endpoints.size(), 2u);
  EXPECT_TRUE(a->endpoints[0].tls);
  EXPECT_EQ(a->endpoints[0].host, "10.0.0.5");
  EXPECT_EQ(a->endpoints[0].port, 2379);
  EXPECT_TRUE(a->endpoints[1].tls);
  EXPECT_EQ(a->endpoints[1].host, "::1");
  EXPECT_EQ(registry::to_string(a->endpoints[1]), "https://[::1]:2380");
  EXPECT_EQ(a->prefix, "/rack7/");

  a = parse_registry_url("etcd://http://h1:2379,h2:2379");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_EQ(a->endpoints.size(), 2u);
  EXPECT_FALSE(a->endpoints[0].tls);
  EXPECT_FALSE(a->endpoints[1].tls);
  EXPECT_EQ(registry::to_string(a->endpoints[0]), "h1:2379");
  EXPECT_EQ(a->prefix, registry::kDefaultPrefix);

  a = parse_registry_url("etcd://https://h:1/");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_TRUE(a->endpoints.at(0).tls);
  EXPECT_EQ(a->prefix, registry::kDefaultPrefix);
}

TEST(EtcdUrl, RefusesBadMemberListsSayingWhy) {
  std::string seventeen = "etcd://";
  for (int i = 1; i <= 17; ++i) {
    seventeen += (i == 1 ? "" : ",") + std::string("h:") + std::to_string(i);
  }
  const std::pair<std::string, std::string> cases[] = {
      {"etcd://a:1,,b:2", "member 2 is empty"},
      {"etcd://a:1,", "member 2 is empty"},
      {"etcd://,a:1", "member 1 is empty"},
      {"etcd:///farmem", "member 1 is empty"},
      {"etcd://a:1,b", "member 2 'b': no port"},
      {"etcd://a:1,:2", "member 2 ':2': no host"},
      {"etcd://a:1,b:0", "member 2 'b:0': port '0' is not in 1..65535"},
      {"etcd://a:1,b:65536/x", "port '65536' is not in 1..65535"},
      {"etcd://a:1,b:2x", "port '2x' is not in 1..65535"},
      {"etcd://a:1,b:", "port '' is not in 1..65535"},
      {"etcd://a:1,[::1:2", "an IPv6 host needs [ADDR]:PORT"},
      {"etcd://a:1,b:2,a:1", "a:1 is listed twice"},
      {"etcd://ETCD1:2379,etcd1:2379", "is listed twice"},
      {"etcd://[::1]:5,[::1]:5", "[::1]:5 is listed twice"},
      {seventeen, "more than 16 etcd endpoints"},
      {"etcd:/a:1,b:2", "not an etcd:// URL"},
      {"etcd://https://a:1,b:2", "member 2 'b:2' and member 1 mix http and https"},
      {"etcd://a:1,https://b:2", "mix http and https"},
      {"etcd://https://", "member 1 'https://' has no HOST:PORT"},
      {"etcd://https://a:1,https:///x", "member 2 'https://' has no HOST:PORT"},
      {"etcd://https://a:1,https://a:1", "https://a:1 is listed twice"},
      {"etcd://https://a", "no port"},
  };
  for (const auto& [url, why] : cases) {
    auto r = parse_registry_url(url);
    ASSERT_FALSE(r.ok()) << url << " parsed";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << url;
    EXPECT_NE(r.status().message().find(why), std::string::npos)
        << url << ": " << r.status().to_string();
    EXPECT_NE(r.status().message().find("etcd://HOST:PORT[,HOST:PORT...][/PREFIX]"),
              std::string::npos)
        << url << ": " << r.status().to_string();
  }
}

}  // namespace
}  // namespace farmem::test
