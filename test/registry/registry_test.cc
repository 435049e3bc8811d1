// Membership through etcd, end to end: a real etcd on loopback, farmem-memserver processes
// registering with --registry, and runtimes that know only the registry.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "farmem/runtime.h"
#include "registry/etcd_client.h"
#include "registry/record.h"
#include "test/support/etcd_process.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"
#include "transport/connect.h"

namespace farmem::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kTtlSeconds = 2;  // short, so that a dead memserver leaves quickly
constexpr std::uint64_t kSlab = 4u << 20;
constexpr auto kPoll = 200ms;  // the runtimes' registry_interval
// etcd checks lease expiry every 500 ms and a loaded 2-core host adds scheduling delay.
constexpr auto kExpirySlack = 3s;

class RegistryCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = EtcdProcess::start();
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    etcd_ = std::move(e).value();
    etcd_client_ = std::make_unique<registry::EtcdClient>(
        registry::EtcdOptions{{{"127.0.0.1", etcd_->client_port()}}, 2000ms});
    for (auto& m : memservers_) {
      ASSERT_TRUE(m.start("tcp", {"--registry", etcd_->registry_url(), "--registry-ttl",
                                  std::to_string(kTtlSeconds)})
                      .ok());
    }
  }

  /// The registry's records by URL (empty when etcd does not answer).
  std::map<std::string, registry::MemserverRecord> registered() {
    std::map<std::string, registry::MemserverRecord> out;
    auto r = etcd_client_->range(std::string(registry::kDefaultPrefix), true);
    if (!r.ok()) return out;
    for (const auto& kv : r->kvs) {
      auto rec = registry::parse_record(kv.value);
      if (rec.ok() && !rec->urls.empty()) out[rec->urls.front()] = *rec;
    }
    return out;
  }

  RuntimeOptions registry_only() const {
    RuntimeOptions o;  // no servers: only what the registry lists
    o.registry = etcd_->registry_url();
    o.auth_token = kToken;
    o.slab_bytes = kSlab;
    o.registry_interval = kPoll;
    o.connect_timeout = 2000ms;
    o.op_timeout = 2000ms;
    return o;
  }

  static bool lists(const Runtime& rt, const std::string& url) {
    const auto m = rt.registry_stats().members;
    return std::any_of(m.begin(), m.end(), [&](const RegistryMember& x) { return x.url == url; });
  }

  /// Slabs `url` has leased now, asked over a connection of its own.
  static Result<std::uint64_t> slabs_on(const std::string& url) {
    transport::ConnectOptions co;
    co.token = kToken;
    FARMEM_ASSIGN_OR_RETURN(auto conn, transport::connect(url, co));
    FARMEM_ASSIGN_OR_RETURN(auto st, transport::server_stats(*conn, std::chrono::seconds(5)));
    return st.slabs;
  }

  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<registry::EtcdClient> etcd_client_;
  MemserverProcess memservers_[2];
};

TEST_F(RegistryCluster, TwoMemserversRegisterAndARuntimeWithOnlyTheRegistryUsesBoth) {
  // Registered before they print "listening".
  const auto recs = registered();
  ASSERT_EQ(recs.size(), 2u);
  for (const auto& m : memservers_) {
    ASSERT_TRUE(recs.contains(m.url())) << m.url();
    const auto& r = recs.at(m.url());
    EXPECT_EQ(r.transports, std::vector<std::string>{"tcp"});
    EXPECT_EQ(r.capacity_bytes, 64u << 20);
    EXPECT_EQ(r.free_bytes, 64u << 20);
    EXPECT_EQ(r.ttl_s, static_cast<std::uint64_t>(kTtlSeconds));
    EXPECT_FALSE(r.version.empty());
  }

  auto rt = Runtime::open(registry_only());
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  const RegistryStats rs = (*rt)->registry_stats();
  EXPECT_TRUE(rs.enabled);
  ASSERT_EQ(rs.members.size(), 2u) << rs.last_error;
  EXPECT_EQ((*rt)->transports(), (std::vector<std::string>{"tcp", "tcp"}));  // no "local"

  // Eight slabs, placed by free room over the two: both get some, and the data is right.
  std::vector<FarRange> ranges;
  auto buf = (*rt)->local_buffer();
  for (int i = 0; i < 8; ++i) {
    auto r = (*rt)->allocate(kSlab);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    std::fill(buf.begin(), buf.begin() + 4096, std::byte(i + 1));
    ASSERT_TRUE((*rt)->write(r->addr, buf.first(4096)).ok());
    ranges.push_back(*r);
  }
  for (int i = 0; i < 8; ++i) {
    std::fill(buf.begin(), buf.begin() + 4096, std::byte{0});
    ASSERT_TRUE((*rt)->read(ranges[i].addr, buf.first(4096)).ok());
    EXPECT_EQ(buf[4095], std::byte(i + 1));
  }
  std::uint64_t total = 0;
  for (const auto& m : memservers_) {
    auto n = slabs_on(m.url());
    ASSERT_TRUE(n.ok()) << n.status().to_string();
    EXPECT_GT(*n, 0u) << m.url() << " got no slab";
    total += *n;
  }
  EXPECT_EQ(total, 8u);
  // The records follow: the memservers publish what they lent within a refresh or two.
  EXPECT_TRUE(wait_until([&] {
    std::uint64_t used = 0;
    for (const auto& [url, r] : registered()) used += r.used_bytes;
    return used == 8 * kSlab;
  }, 5s));
}

TEST_F(RegistryCluster, KilledMemserverLeavesWithinItsTtlAndGetsNoNewSlabs) {
  auto rt = Runtime::open(registry_only());
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  ASSERT_EQ((*rt)->registry_stats().members.size(), 2u);
  const std::string alive = memservers_[0].url(), dead = memservers_[1].url();

  ASSERT_TRUE(memservers_[1].signal(SIGKILL).ok());
  ASSERT_NE(memservers_[1].reap(), -1);
  const auto killed = Clock::now();
  ASSERT_TRUE(wait_until([&] { return !registered().contains(dead); },
                         std::chrono::seconds(kTtlSeconds) + kExpirySlack))
      << dead << " still registered " << kTtlSeconds << " s after it died (+ slack)";
  const auto gone_after = Clock::now() - killed;
  EXPECT_TRUE(registered().contains(alive));
  // Not before its lease could expire (the last renewal was at most a refresh earlier).
  EXPECT_GE(gone_after, std::chrono::seconds(kTtlSeconds) - 1s);
  // The runtime sees it leave within one more poll, and closes it to new slabs.
  ASSERT_TRUE(wait_until([&] { return !lists(**rt, dead); }, kPoll * 10))
      << (*rt)->registry_stats().last_error;
  EXPECT_TRUE(lists(**rt, alive));

  auto before = slabs_on(alive);
  ASSERT_TRUE(before.ok()) << before.status().to_string();
  for (int i = 0; i < 6; ++i) {
    auto r = (*rt)->allocate(kSlab);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }
  auto after = slabs_on(alive);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after - *before, 6u) << "every new slab goes to the live memserver";
  EXPECT_EQ((*rt)->stats().slabs, *after);
}

TEST_F(RegistryCluster, UnregisteredMemserverIsClosedToNewSlabsAndReaddedWhenItReturns) {
  // The registry decides, not a failed call: a memserver whose lease is revoked while it is
  // stopped (so it cannot re-register) is closed at the next poll, and placement does not
  // even ask it for its free room (that call would wait out op_timeout on a stopped process).
  auto o = registry_only();
  o.op_timeout = 5000ms;  // what asking the stopped memserver would cost each allocation
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  ASSERT_EQ((*rt)->registry_stats().members.size(), 2u);
  const std::string kept = memservers_[0].url(), dropped = memservers_[1].url();
  ASSERT_TRUE(memservers_[1].signal(SIGSTOP).ok());
  auto r = etcd_client_->range(std::string(registry::kDefaultPrefix), true);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  bool revoked = false;
  for (const auto& kv : r->kvs) {
    auto rec = registry::parse_record(kv.value);
    if (rec.ok() && rec->urls.front() == dropped) {
      ASSERT_TRUE(etcd_client_->revoke_lease(kv.lease).ok());
      revoked = true;
    }
  }
  ASSERT_TRUE(revoked);
  ASSERT_TRUE(wait_until([&] { return !lists(**rt, dropped); }, kPoll * 10));

  auto before = slabs_on(kept);
  ASSERT_TRUE(before.ok()) << before.status().to_string();
  const auto t0 = Clock::now();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE((*rt)->allocate(kSlab).ok());
  EXPECT_LT(Clock::now() - t0, 3000ms)
      << "placement waited on the stopped memserver: it was not closed to new slabs";
  auto after = slabs_on(kept);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after - *before, 4u);

  // Resumed, it finds its lease gone, registers anew, and the runtime takes it back.
  ASSERT_TRUE(memservers_[1].signal(SIGCONT).ok());
  ASSERT_TRUE(wait_until([&] { return lists(**rt, dropped); }, 10s))
      << (*rt)->registry_stats().last_error;
  auto on_dropped = slabs_on(dropped);
  ASSERT_TRUE(on_dropped.ok()) << on_dropped.status().to_string();
  EXPECT_EQ(*on_dropped, 0u) << "it got slabs while it was out of the registry";
}

TEST_F(RegistryCluster, MemserverRestartedUnderTheSameUrlWithinItsTtlIsReconnected) {
  // Killed and started again on the same port before its old key expired: the key never
  // goes, but the new process registers with a new lease, and the runtime replaces its dead
  // connection (Runtime::add_server reconnects) and places slabs there again.
  auto rt = Runtime::open(registry_only());
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  ASSERT_EQ((*rt)->registry_stats().members.size(), 2u);
  const std::string url = memservers_[1].url();
  const auto port = static_cast<std::uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
  ASSERT_TRUE(memservers_[1].signal(SIGKILL).ok());
  ASSERT_NE(memservers_[1].reap(), -1);
  MemserverProcess again;
  ASSERT_TRUE(again.start("tcp", {"--registry", etcd_->registry_url(), "--registry-ttl",
                                  std::to_string(kTtlSeconds)}, port).ok());
  ASSERT_EQ(again.url(), url);
  // The new process is a new session: slabs it holds can only come from a reconnection.
  ASSERT_TRUE(wait_until([&] {
    for (int i = 0; i < 2; ++i) {
      if (!(*rt)->allocate(kSlab).ok()) return false;
    }
    auto n = slabs_on(url);
    return n.ok() && *n > 0;
  }, 10s)) << "no slab on the restarted memserver; " << (*rt)->registry_stats().last_error;
  EXPECT_TRUE(lists(**rt, url));
}

TEST_F(RegistryCluster, EtcdRestartedWithFreshDataGetsTheRegistrationsBack) {
  auto rt = Runtime::open(registry_only());
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  ASSERT_EQ((*rt)->registry_stats().members.size(), 2u);
  etcd_->kill_now();
  std::this_thread::sleep_for(std::chrono::seconds(kTtlSeconds));  // an outage longer than the TTL
  ASSERT_TRUE(etcd_->restart(/*fresh_data=*/true).ok());
  // Nothing is left in a fresh etcd: what comes back, the memservers wrote again.
  ASSERT_TRUE(wait_until([&] { return registered().size() == 2; }, 10s))
      << registered().size() << " of 2 registrations back after 10 s";
  for (const auto& m : memservers_) EXPECT_TRUE(registered().contains(m.url()));
  // The runtime kept both through the outage and still has them.
  const RegistryStats rs = (*rt)->registry_stats();
  EXPECT_GT(rs.failed_polls, 0u) << "the runtime did not notice the outage";
  EXPECT_EQ(rs.members.size(), 2u);
  ASSERT_TRUE(wait_until([&] { return (*rt)->registry_stats().polls > rs.polls + 2; }, 5s));
  EXPECT_EQ((*rt)->registry_stats().members.size(), 2u);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE((*rt)->allocate(kSlab).ok());
}

TEST_F(RegistryCluster, CleanShutdownRemovesTheKeyAtOnce) {
  ASSERT_EQ(registered().size(), 2u);
  ASSERT_TRUE(memservers_[0].signal(SIGTERM).ok());
  const int status = memservers_[0].reap();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const auto left = registered();  // right away, well inside the TTL
  EXPECT_EQ(left.size(), 1u);
  EXPECT_FALSE(left.contains(memservers_[0].url()));
}

TEST(RegistryRuntime, MemserverThatJoinsLaterIsAddedWhileTheRuntimeRuns) {
  auto e = EtcdProcess::start();
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  RuntimeOptions o;
  o.registry = (*e)->registry_url();
  o.auth_token = kToken;
  o.slab_bytes = kSlab;
  o.registry_interval = kPoll;
  auto rt = Runtime::open(o);  // nobody registered yet: opens with no memserver
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  EXPECT_TRUE((*rt)->registry_stats().members.empty());
  auto none = (*rt)->allocate(kSlab);
  EXPECT_EQ(none.status().code(), StatusCode::kResourceExhausted) << "allocated with no memserver";

  MemserverProcess m;
  ASSERT_TRUE(m.start("tcp", {"--registry", (*e)->registry_url()}).ok());
  const auto t0 = Clock::now();
  ASSERT_TRUE(wait_until([&] { return (*rt)->registry_stats().members.size() == 1; }, 5s))
      << (*rt)->registry_stats().last_error;
  EXPECT_LT(Clock::now() - t0, 3s) << "joined much later than its next poll";
  EXPECT_EQ((*rt)->registry_stats().members[0].url, m.url());
  auto r = (*rt)->allocate(kSlab);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*rt)->transports(), std::vector<std::string>{"tcp"});
}

TEST(RegistryRuntime, OpenWithAnUnreachableEtcdIsAClearError) {
  auto port = free_loopback_port();  // nothing listens there
  ASSERT_TRUE(port.ok());
  RuntimeOptions o;
  o.registry = "etcd://127.0.0.1:" + std::to_string(*port);
  o.connect_timeout = 1000ms;
  const auto t0 = Clock::now();
  auto rt = Runtime::open(o);
  EXPECT_LT(Clock::now() - t0, 5s);
  ASSERT_FALSE(rt.ok()) << "opened without its registry";
  EXPECT_EQ(rt.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(rt.status().message().find("RuntimeOptions.registry"), std::string::npos)
      << rt.status().to_string();
  EXPECT_NE(rt.status().message().find("connection refused"), std::string::npos)
      << rt.status().to_string();

  o.registry = "etcd:/127.0.0.1:2379";
  rt = Runtime::open(o);
  EXPECT_EQ(rt.status().code(), StatusCode::kInvalidArgument);
  o.registry = "etcd://127.0.0.1:2379";
  o.registry_transports = {"infiniband"};
  EXPECT_EQ(Runtime::open(o).status().code(), StatusCode::kInvalidArgument);
}

TEST(RegistryMemserver, RefusesToPublishAWildcardAddress) {
  auto e = EtcdProcess::start();
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  MemserverProcess m;
  // Listens on 127.0.0.1 but would advertise 0.0.0.0: refused before it listens.
  EXPECT_FALSE(m.start("tcp", {"--registry", (*e)->registry_url(), "--advertise", "0.0.0.0"}).ok());
  const int status = m.reap();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status;
  registry::EtcdClient c({{{"127.0.0.1", (*e)->client_port()}}, 2000ms});
  auto r = c.range(std::string(registry::kDefaultPrefix), true);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->kvs.empty());
}

}  // namespace
}  // namespace farmem::test
