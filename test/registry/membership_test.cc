// Registry records and the pure membership logic of discovery (no etcd).
#include <gtest/gtest.h>

#include "registry/discovery.h"
#include "registry/record.h"

namespace farmem::test {
namespace {

using namespace std::chrono_literals;
using registry::Member;
using registry::Membership;

registry::MemserverRecord record(std::vector<std::string> urls, std::uint64_t ttl = 2) {
  registry::MemserverRecord r;
  r.version = "0.1.0";
  r.urls = std::move(urls);
  for (const auto& u : r.urls) r.transports.push_back(u.substr(0, u.find(':')));
  r.capacity_bytes = 64u << 20;
  r.free_bytes = 60u << 20;
  r.used_bytes = 4u << 20;
  r.ttl_s = ttl;
  return r;
}

Member member(const std::string& key, const std::string& url, std::uint64_t ttl = 2,
              std::int64_t lease = 1) {
  return Member{key, url, lease, record({url}, ttl)};
}

TEST(RegistryRecord, RoundTripsAndRefusesWhatItCannotRead) {
  auto r = record({"rdma://10.0.0.7:7471", "tcp://10.0.0.7:7472"}, 10);
  r.sessions = 3;
  r.slabs = 5;
  auto back = registry::parse_record(registry::to_json(r));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->urls, r.urls);
  EXPECT_EQ(back->transports, (std::vector<std::string>{"rdma", "tcp"}));
  EXPECT_EQ(back->free_bytes, r.free_bytes);
  EXPECT_EQ(back->sessions, 3u);
  EXPECT_EQ(back->slabs, 5u);
  EXPECT_EQ(back->ttl_s, 10u);
  for (const char* bad : {"", "not json", "[]", R"({"urls": ["tcp://h:1"]})",
                          R"({"format": 2, "urls": ["tcp://h:1"], "transports": ["tcp"]})",
                          R"({"format": 1, "urls": [], "transports": []})",
                          R"({"format": 1, "urls": ["tcp://h:1"], "transports": ["tcp"],
                              "free_bytes": -1})"}) {
    EXPECT_EQ(registry::parse_record(bad).status().code(), StatusCode::kProtocolError) << bad;
  }
}

TEST(RegistryRecord, ChoosesTheFirstPreferredTransportOffered) {
  const auto both = record({"rdma://h:1", "tcp://h:2"});
  EXPECT_EQ(*registry::choose_url(both, {"rdma", "tcp"}), "rdma://h:1");
  EXPECT_EQ(*registry::choose_url(both, {"tcp"}), "tcp://h:2");
  const auto tcp_only = record({"tcp://h:2"});
  EXPECT_EQ(*registry::choose_url(tcp_only, {"rdma", "tcp"}), "tcp://h:2");
  auto none = registry::choose_url(tcp_only, {"rdma"});
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("tcp://h:2"), std::string::npos);
}

TEST(RegistryMembership, JoinsAndLeavesFollowListings) {
  Membership m;
  auto t = registry::Clock::now();
  auto c = m.diff({member("/k/a", "tcp://a:1"), member("/k/b", "tcp://b:1")}, 5, t);
  ASSERT_EQ(c.join.size(), 2u);
  EXPECT_TRUE(c.leave.empty());
  for (const auto& j : c.join) m.joined(j);
  // Same listing: nothing to do, even though the records' numbers moved.
  auto moved = member("/k/a", "tcp://a:1");
  moved.record.free_bytes = 1;
  c = m.diff({moved, member("/k/b", "tcp://b:1")}, 6, t += 1s);
  EXPECT_TRUE(c.join.empty());
  EXPECT_TRUE(c.leave.empty());
  EXPECT_EQ(m.members().at("/k/a").record.free_bytes, 1u);
  // b's key went (its lease expired): it leaves.
  c = m.diff({member("/k/a", "tcp://a:1")}, 7, t += 1s);
  ASSERT_EQ(c.leave.size(), 1u);
  EXPECT_EQ(c.leave[0].url, "tcp://b:1");
  m.left(c.leave[0]);
  // a re-registered under the same key at a new address: leave the old, join the new.
  c = m.diff({member("/k/a", "tcp://a:2")}, 8, t += 1s);
  ASSERT_EQ(c.leave.size(), 1u);
  EXPECT_EQ(c.leave[0].url, "tcp://a:1");
  ASSERT_EQ(c.join.size(), 1u);
  EXPECT_EQ(c.join[0].url, "tcp://a:2");
  m.left(c.leave[0]);
  m.joined(c.join[0]);
  // Registered anew under the same key and URL (a new lease: a restarted process, or etcd
  // lost its data): joined again, so that a dead connection is replaced; nobody leaves.
  c = m.diff({member("/k/a", "tcp://a:2", 2, /*lease=*/7)}, 9, t += 1s);
  EXPECT_TRUE(c.leave.empty());
  ASSERT_EQ(c.join.size(), 1u);
  EXPECT_EQ(c.join[0].lease, 7);
  m.joined(c.join[0]);
  EXPECT_TRUE(m.diff({member("/k/a", "tcp://a:2", 2, 7)}, 10, t += 1s).join.empty());
}

TEST(RegistryMembership, LeavesWaitOneTtlAfterEtcdComesBackOrLosesItsData) {
  Membership m;
  auto t = registry::Clock::now();
  for (const auto& j : m.diff({member("/k/a", "tcp://a:1", 3)}, 50, t).join) m.joined(j);
  // etcd unreachable, then back with nothing listed yet: a is kept for its TTL (3 s).
  m.lost(t += 1s);
  auto c = m.diff({}, 60, t += 1s);
  EXPECT_TRUE(c.leave.empty());
  EXPECT_TRUE(m.in_grace(t));
  c = m.diff({}, 61, t += 2s);
  EXPECT_TRUE(c.leave.empty());
  c = m.diff({}, 62, t += 1500ms);  // past the grace and still unlisted: gone
  ASSERT_EQ(c.leave.size(), 1u);
  m.left(c.leave[0]);
  // A revision that went backwards (fresh data dir) starts a grace too.
  for (const auto& j : m.diff({member("/k/b", "tcp://b:1", 2)}, 70, t += 1s).join) m.joined(j);
  c = m.diff({}, 3, t += 1s);
  EXPECT_TRUE(c.leave.empty());
  EXPECT_TRUE(m.in_grace(t));
  c = m.diff({}, 4, t += 3s);
  EXPECT_EQ(c.leave.size(), 1u);
}

}  // namespace
}  // namespace farmem::test
