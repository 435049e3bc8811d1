// RDMA sessions that survive stalls and drops, and RDMA clients that vanish or never log in:
// the memserver disconnects a client that does not AUTH within the handshake timeout and one
// that sends no control request (PING) for the idle timeout; a resuming verbs connection
// that was cut reconnects, RESUMEs its session and finds its far memory intact under the
// keys it was given (the memserver re-registered the slabs: new rkeys, remapped by the
// client); a memserver stopped past op_timeout is resumed once it runs again; a session past
// its grace is a clear error. Every suite name contains "Verbs": natively these skip, in the
// soft-RoCE VM (FARMEM_REQUIRE_RDMA=1) they must run.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include "farmem/farmem.h"
#include "test/support/http_get.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"
#include "transport/connect.h"
#include "transport/verbs/ibv.h"

namespace farmem::test {
namespace {

using transport::Connection;
using transport::Op;
using transport::OpKind;
using Clock = std::chrono::steady_clock;

constexpr auto kTimeout = std::chrono::seconds(10);
constexpr std::uint64_t kChunk = 1u << 20;
constexpr std::size_t kLocalBytes = 1u << 20;

memserver::CoreOptions core_options(std::chrono::milliseconds grace) {
  memserver::CoreOptions o;
  o.chunk_bytes = kChunk;
  o.capacity_bytes = 16 * kChunk;
  o.lease_grace = grace;
  return o;
}

std::unique_ptr<TestServer> verbs_server(std::chrono::milliseconds grace,
                                         memserver::RdmaListenerOptions rdma) {
  auto s = TestServer::start("verbs", core_options(grace), rdma);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

/// A connection, a registered local buffer, and its slabs as they were granted.
struct Client {
  std::unique_ptr<Connection> conn;
  std::vector<std::byte> local = std::vector<std::byte>(kLocalBytes);
  std::unique_ptr<transport::MemoryRegistration> reg;
  std::vector<proto::SlabInfo> slabs;

  static std::unique_ptr<Client> make(const TestServer& server, bool resume,
                                      std::chrono::milliseconds heartbeat) {
    transport::ConnectOptions co;
    co.token = kToken;
    co.resume_on_break = resume;
    co.heartbeat = heartbeat;
    co.connect_timeout = std::chrono::seconds(5);
    auto c = std::make_unique<Client>();
    auto conn = transport::connect(server.url(), co);
    EXPECT_TRUE(conn.ok()) << conn.status().to_string();
    if (!conn.ok()) return nullptr;
    c->conn = std::move(conn).value();
    auto reg = c->conn->register_memory(c->local.data(), c->local.size());
    EXPECT_TRUE(reg.ok()) << reg.status().to_string();
    if (!reg.ok()) return nullptr;
    c->reg = std::move(reg).value();
    return c;
  }
  Status alloc() {
    auto s = transport::alloc_slab(*conn, kChunk, kTimeout);
    if (s.ok()) slabs.push_back(*s);
    return s.status();
  }
  /// Writes slab i whole with the pattern of `seed` (through the local buffer).
  Status write(std::size_t i, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (auto& b : local) b = std::byte(rng());
    return conn->execute(Op{OpKind::kWrite, static_cast<std::uint32_t>(kLocalBytes), local.data(),
                            reg->lkey(), slabs[i].rkey, slabs[i].addr},
                         kTimeout);
  }
  /// Reads slab i whole; `*intact` says whether it holds the pattern of `seed`.
  Status read(std::size_t i, std::uint64_t seed, bool* intact) {
    std::memset(local.data(), 0, local.size());
    FARMEM_RETURN_IF_ERROR(conn->execute(Op{OpKind::kRead, static_cast<std::uint32_t>(kLocalBytes),
                                            local.data(), reg->lkey(), slabs[i].rkey,
                                            slabs[i].addr},
                                         kTimeout));
    std::mt19937_64 rng(seed);
    *intact = true;
    for (const auto& b : local) *intact &= b == std::byte(rng());
    return Status::Ok();
  }
};

/// An rdma_cm client that connects with well-formed connect data and then says nothing (no
/// AUTH): what a stuck or hostile client does to hold a queue pair.
struct SilentRawClient {
  ibv::EventChannel channel;
  ibv::CmId id;
  ibv::Pd pd;
  ibv::Cq cq;
  ibv::CmQp qp;

  static Result<std::unique_ptr<SilentRawClient>> connect(const std::string& url) {
    auto c = std::make_unique<SilentRawClient>();
    FARMEM_ASSIGN_OR_RETURN(auto ep, transport::parse_endpoint(url));
    FARMEM_ASSIGN_OR_RETURN(c->channel, ibv::create_event_channel());
    FARMEM_ASSIGN_OR_RETURN(c->id, ibv::create_id(c->channel.get(), nullptr));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(ep.port);
    if (inet_pton(AF_INET, ep.host.c_str(), &sin.sin_addr) != 1) return InvalidArgument(ep.host);
    const std::chrono::milliseconds wait(5000);
    if (rdma_resolve_addr(c->id.get(), nullptr, reinterpret_cast<sockaddr*>(&sin), 5000) != 0) {
      return Internal("rdma_resolve_addr");
    }
    FARMEM_RETURN_IF_ERROR(
        ibv::expect_cm_event(c->channel.get(), RDMA_CM_EVENT_ADDR_RESOLVED, wait, "addr").status());
    if (rdma_resolve_route(c->id.get(), 5000) != 0) return Internal("rdma_resolve_route");
    FARMEM_RETURN_IF_ERROR(
        ibv::expect_cm_event(c->channel.get(), RDMA_CM_EVENT_ROUTE_RESOLVED, wait, "route").status());
    FARMEM_ASSIGN_OR_RETURN(c->pd, ibv::alloc_pd(c->id->verbs));
    FARMEM_ASSIGN_OR_RETURN(c->cq, ibv::create_cq(c->id->verbs, 8, nullptr));
    ibv::QpShape shape{4, 4, 0};
    FARMEM_ASSIGN_OR_RETURN(c->qp, ibv::create_rc_qp(c->id.get(), c->pd.get(), c->cq.get(), shape));
    FARMEM_ASSIGN_OR_RETURN(auto nonce, proto::random_nonce());
    const auto priv = proto::make_connect_data("", nonce);
    rdma_conn_param param{};
    param.private_data = priv.data();
    param.private_data_len = static_cast<std::uint8_t>(priv.size());
    param.initiator_depth = 1;
    param.responder_resources = 1;
    param.retry_count = 7;
    param.rnr_retry_count = 7;
    if (rdma_connect(c->id.get(), &param) != 0) return Internal("rdma_connect");
    FARMEM_RETURN_IF_ERROR(
        ibv::expect_cm_event(c->channel.get(), RDMA_CM_EVENT_ESTABLISHED, wait, "connect").status());
    return c;
  }
};

TEST(VerbsHandshake, AClientThatNeverAuthenticatesIsDisconnectedAndAnHonestOneIsServed) {
  FARMEM_REQUIRE_RDMA_OR_SKIP();
  memserver::RdmaListenerOptions rdma;
  rdma.handshake_timeout = std::chrono::seconds(1);
  auto server = verbs_server(std::chrono::milliseconds(0), rdma);
  ASSERT_NE(server, nullptr);
  auto honest = Client::make(*server, /*resume=*/false, std::chrono::milliseconds(0));
  ASSERT_NE(honest, nullptr);
  ASSERT_TRUE(honest->alloc().ok());
  ASSERT_TRUE(honest->write(0, 7).ok());

  const auto connected = Clock::now();
  auto silent = SilentRawClient::connect(server->url());
  ASSERT_TRUE(silent.ok()) << silent.status().to_string();
  EXPECT_EQ(server->core().stats().sessions, 2u);
  // The memserver disconnects it: a DREQ arrives within the timeout plus a sweep period.
  auto ev = ibv::next_cm_event((*silent)->channel.get(), std::chrono::seconds(10));
  ASSERT_TRUE(ev.ok()) << "the silent client was not disconnected: " << ev.status().to_string();
  EXPECT_EQ((*ev)->event, RDMA_CM_EVENT_DISCONNECTED) << rdma_event_str((*ev)->event);
  const auto after = Clock::now() - connected;
  EXPECT_GE(after, std::chrono::milliseconds(900)) << "disconnected before its timeout";
  EXPECT_LE(after, std::chrono::seconds(5));
  ev->reset();
  EXPECT_TRUE(eventually([&] { return server->core().stats().sessions == 1; }));

  // The honest client was served throughout and still is.
  bool intact = false;
  ASSERT_TRUE(honest->read(0, 7, &intact).ok());
  EXPECT_TRUE(intact);
  EXPECT_TRUE(honest->alloc().ok());
}

TEST(VerbsHeartbeat, ASilentClientIsCutAndDetachedAPingingOneIsKept) {
  FARMEM_REQUIRE_RDMA_OR_SKIP();
  memserver::RdmaListenerOptions rdma;
  rdma.idle_timeout = std::chrono::seconds(1);
  auto server = verbs_server(std::chrono::hours(1), rdma);
  ASSERT_NE(server, nullptr);
  auto pinging = Client::make(*server, /*resume=*/true, std::chrono::milliseconds(200));
  auto silent = Client::make(*server, /*resume=*/false, std::chrono::milliseconds(0));
  ASSERT_NE(pinging, nullptr);
  ASSERT_NE(silent, nullptr);
  ASSERT_TRUE(pinging->alloc().ok());
  ASSERT_TRUE(silent->alloc().ok());
  ASSERT_TRUE(pinging->write(0, 1).ok());

  ASSERT_TRUE(eventually([&] { return server->core().sessions_detached() == 1; },
                         std::chrono::seconds(10)));
  EXPECT_EQ(server->core().refusals(memserver::Core::Refusal::kRdmaIdleTimeout), 1u);
  EXPECT_EQ(server->core().stats().slabs, 2u) << "the silent client's slab is kept for the grace";
  // The silent client learns it was cut (the memserver's disconnect): its connection is broken.
  EXPECT_TRUE(eventually([&] {
    auto st = transport::server_stats(*silent->conn, kTimeout);
    return !st.ok() && st.status().code() == StatusCode::kUnavailable;
  }));
  // The pinging client stays attached for three idle timeouts: never detached, never resumed.
  const auto until = Clock::now() + std::chrono::seconds(3);
  while (Clock::now() < until) {  // bounded: 3 s
    ASSERT_EQ(server->core().sessions_detached(), 1u);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(server->core().sessions_resumed(), 0u);
  EXPECT_EQ(server->core().refusals(memserver::Core::Refusal::kRdmaIdleTimeout), 1u);
  bool intact = false;
  ASSERT_TRUE(pinging->read(0, 1, &intact).ok());
  EXPECT_TRUE(intact);
}

TEST(VerbsResume, ACutConnectionResumesWithItsSlabsUnderTheKeysItWasGiven) {
  FARMEM_REQUIRE_RDMA_OR_SKIP();
  // No PING and a 1 s idle timeout: the memserver cuts the connection whenever the client
  // pauses, which is the break this test needs (the memserver disconnects the cm_id).
  memserver::RdmaListenerOptions rdma;
  rdma.idle_timeout = std::chrono::seconds(1);
  auto server = verbs_server(std::chrono::hours(1), rdma);
  ASSERT_NE(server, nullptr);
  auto c = Client::make(*server, /*resume=*/true, std::chrono::milliseconds(0));
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->alloc().ok());
  ASSERT_TRUE(c->alloc().ok());
  ASSERT_TRUE(c->write(0, 100).ok());
  ASSERT_TRUE(c->write(1, 101).ok());

  constexpr int kCuts = 2;
  for (int cut = 1; cut <= kCuts; ++cut) {
    const std::uint64_t resumed_before = server->core().sessions_resumed();
    ASSERT_TRUE(eventually([&] { return server->core().sessions_detached() == 1; },
                           std::chrono::seconds(10)))
        << "cut " << cut << ": the memserver did not cut the idle connection";
    // Every slab, written before the cut, reads back intact with the keys first granted.
    for (std::size_t i = 0; i < c->slabs.size(); ++i) {
      bool intact = false;
      const Status st = c->read(i, 100 + i, &intact);
      ASSERT_TRUE(st.ok()) << "cut " << cut << ", slab " << i << ": " << st.to_string();
      EXPECT_TRUE(intact) << "cut " << cut << ", slab " << i << " lost its bytes";
    }
    EXPECT_EQ(server->core().sessions_resumed(), resumed_before + 1);
    EXPECT_EQ(server->core().sessions_detached(), 0u);
    EXPECT_EQ(server->core().stats().sessions, 1u);
    EXPECT_EQ(server->core().stats().slabs, c->slabs.size());
    // A slab leased after a resume works too (its key is granted in the new PD).
    ASSERT_TRUE(c->alloc().ok());
    ASSERT_TRUE(c->write(c->slabs.size() - 1, 100 + c->slabs.size() - 1).ok());
  }
  // Writes after the resumes land where reads find them.
  ASSERT_TRUE(c->write(0, 100).ok());
  bool intact = false;
  ASSERT_TRUE(c->read(0, 100, &intact).ok());
  EXPECT_TRUE(intact);
  // A clean close ends the session at once (BYE), with no grace to wait out.
  c.reset();
  EXPECT_TRUE(eventually([&] { return server->core().stats().sessions == 0; }));
  EXPECT_EQ(server->core().sessions_detached(), 0u);
  EXPECT_EQ(server->core().stats().slabs, 0u);
}

TEST(VerbsResume, ASessionPastItsGraceIsAClearErrorForGood) {
  FARMEM_REQUIRE_RDMA_OR_SKIP();
  memserver::RdmaListenerOptions rdma;
  rdma.idle_timeout = std::chrono::seconds(1);
  auto server = verbs_server(std::chrono::hours(1), rdma);
  ASSERT_NE(server, nullptr);
  auto c = Client::make(*server, /*resume=*/true, std::chrono::milliseconds(0));
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->alloc().ok());
  ASSERT_TRUE(c->write(0, 5).ok());
  ASSERT_TRUE(eventually([&] { return server->core().sessions_detached() == 1; },
                         std::chrono::seconds(10)));
  // The grace runs out (reaped as if two hours had passed).
  EXPECT_EQ(server->core().reap_expired(Clock::now() + std::chrono::hours(2)), 1u);
  EXPECT_EQ(server->core().stats().slabs, 0u);
  bool intact = false;
  const Status st = c->read(0, 5, &intact);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.to_string();
  EXPECT_NE(st.message().find("cannot be resumed"), std::string::npos) << st.to_string();
  EXPECT_NE(st.message().find("no session"), std::string::npos) << st.to_string();
  // For good: the next access says the same without trying again.
  const Status again = c->read(0, 5, &intact);
  EXPECT_EQ(again.code(), StatusCode::kUnavailable) << again.to_string();
}

/// The state letter of /proc/PID/stat ('T': stopped), or 0.
char process_state(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  return close == std::string::npos || close + 2 >= all.size() ? 0 : all[close + 2];
}

/// One metric's value from a memserver's /metrics, or -1.
long long metric(const std::string& metrics_url, const std::string& name) {
  const auto [code, body] = http_get(metrics_url);
  if (code != 200) return -1;
  const auto at = body.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::atoll(body.c_str() + at + name.size() + 2);
}

TEST(VerbsResume, AMemserverStoppedPastTheTimeoutResumesWithNoByteLost) {
  FARMEM_REQUIRE_RDMA_OR_SKIP();
  const std::string host = rdma_test_address();
  MemserverProcess server;
  ASSERT_TRUE(server
                  .start({"--rdma", host + ":0", "--token", kToken, "--capacity", "64M",
                          "--log-level", "error", "--metrics", host + ":0"},
                         {"rdma", "metrics"}, {}, std::chrono::seconds(30))
                  .ok());
  const std::string url = "rdma://" + host + ":" + std::to_string(server.port("rdma"));
  const std::string metrics_url =
      "http://" + host + ":" + std::to_string(server.port("metrics")) + "/metrics";
  RuntimeOptions o;
  o.servers = {url};
  o.auth_token = kToken;
  o.slab_bytes = 4u << 20;
  o.cache_budget_bytes = 1u << 20;
  o.local_buffer_bytes = 1u << 20;
  o.op_timeout = std::chrono::milliseconds(1000);
  o.connect_timeout = std::chrono::milliseconds(1000);
  o.heartbeat_interval = std::chrono::milliseconds(200);
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  constexpr std::size_t kPage = 4096, kPages = 64;
  auto range = (*rt)->allocate(kPages * kPage);
  ASSERT_TRUE(range.ok()) << range.status().to_string();
  auto buf = (*rt)->local_buffer().subspan(0, kPage);
  const auto fill = [&](std::size_t p) {
    for (std::size_t i = 0; i < kPage; i += 8) {
      const std::uint64_t tag = (std::uint64_t{p} << 32) | i;
      std::memcpy(buf.data() + i, &tag, 8);
    }
  };
  for (std::size_t p = 0; p < kPages; ++p) {
    fill(p);
    ASSERT_TRUE((*rt)->write(range->addr + p * kPage, buf).ok());
  }
  ASSERT_EQ(metric(metrics_url, "farmem_memserver_sessions_resumed_total"), 0);

  // Stopped for more than twice op_timeout: the heartbeat's PING times out, the connection
  // is judged broken, and reconnecting waits for the memserver.
  ASSERT_TRUE(server.signal(SIGSTOP).ok());
  ASSERT_TRUE(eventually([&] { return process_state(server.pid()) == 'T'; }));
  const auto stopped = Clock::now();
  for (int i = 0; i < 100 && Clock::now() - stopped < 3 * o.op_timeout; ++i) {  // bounded
    // One-sided reads may still succeed (the NIC serves them): each succeeds or times out.
    const Status st = (*rt)->read(range->addr + (i % kPages) * kPage, buf);
    EXPECT_TRUE(st.ok() || st.code() == StatusCode::kTimedOut) << st.to_string();
    if (st.ok()) {
      std::uint64_t tag;
      std::memcpy(&tag, buf.data() + 8, 8);
      EXPECT_EQ(tag, (std::uint64_t{i % kPages} << 32) | 8);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(server.signal(SIGCONT).ok());

  // The session resumes (the memserver counts it) and every byte is there.
  ASSERT_TRUE(eventually([&] { return metric(metrics_url, "farmem_memserver_sessions_resumed_total") >= 1; },
                         std::chrono::seconds(20)))
      << "the session was not resumed";
  for (std::size_t p = 0; p < kPages; ++p) {
    Status st;
    for (int i = 0; i < 20; ++i) {  // bounded: an access during a reconnection may time out
      st = (*rt)->read(range->addr + p * kPage, buf);
      if (st.code() != StatusCode::kTimedOut) break;
    }
    ASSERT_TRUE(st.ok()) << "page " << p << ": " << st.to_string();
    std::vector<std::byte> want(kPage);
    for (std::size_t i = 0; i < kPage; i += 8) {
      const std::uint64_t tag = (std::uint64_t{p} << 32) | i;
      std::memcpy(want.data() + i, &tag, 8);
    }
    ASSERT_EQ(std::memcmp(buf.data(), want.data(), kPage), 0) << "page " << p << " changed";
  }
  EXPECT_EQ(metric(metrics_url, "farmem_memserver_sessions_expired_total"), 0);
}

}  // namespace
}  // namespace farmem::test
