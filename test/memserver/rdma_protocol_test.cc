// The memserver's RDMA listener and the verbs client, against each other: connect-time
// authentication and protocol checks (raw rdma_cm too), per-client protection domains, slab
// ownership, capacity, clients that die and memservers that stop. Every suite name contains
// "Verbs": natively these skip, in the soft-RoCE VM (FARMEM_REQUIRE_RDMA=1) they must run.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <csignal>
#include <cstring>
#include <random>
#include <thread>

#include "test/support/test_server.h"
#include "transport/connect.h"
#include "transport/verbs/ibv.h"

namespace farmem::test {
namespace {

using transport::Completion;
using transport::Connection;
using transport::Op;
using transport::OpKind;
using Clock = std::chrono::steady_clock;

constexpr auto kTimeout = std::chrono::seconds(10);
constexpr std::uint64_t kChunk = 1u << 20;      // small slabs keep the VM's memory use low
constexpr std::uint64_t kCapacity = 8 * kChunk;  // small enough to fill in a test
constexpr std::size_t kLocalBytes = 1u << 20;
/// One client: a connection plus a registered local buffer.
struct Client {
  std::unique_ptr<Connection> conn;
  std::vector<std::byte> local = std::vector<std::byte>(kLocalBytes);
  std::unique_ptr<transport::MemoryRegistration> reg;

  /// `checked`: false for a client that skips the verbs client's lease check, to reach the
  /// memserver's own protection (per-client PDs, rkeys, slab bounds) as any client could.
  static std::unique_ptr<Client> make(const TestServer& server, bool checked = true) {
    auto c = std::make_unique<Client>();
    auto conn = checked ? server.connect() : server.connect_unchecked();
    EXPECT_TRUE(conn.ok()) << conn.status().to_string();
    if (!conn.ok()) return nullptr;
    c->conn = std::move(conn).value();
    auto reg = c->conn->register_memory(c->local.data(), c->local.size());
    EXPECT_TRUE(reg.ok()) << reg.status().to_string();
    if (!reg.ok()) return nullptr;
    c->reg = std::move(reg).value();
    return c;
  }
  Result<proto::SlabInfo> alloc(std::uint64_t bytes = kChunk) {
    return transport::alloc_slab(*conn, bytes, kTimeout);
  }
  Status op(OpKind kind, std::uint64_t addr, std::uint32_t rkey, std::uint32_t len,
            std::size_t local_off = 0) {
    return conn->execute(Op{kind, len, local.data() + local_off, reg->lkey(), rkey, addr},
                         kTimeout);
  }
  void fill(std::size_t len, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < len; ++i) local[i] = std::byte(rng());
  }
  bool holds_pattern(std::size_t off, std::size_t len, std::uint64_t seed) const {
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < len; ++i) {
      if (local[off + i] != std::byte(rng())) return false;
    }
    return true;
  }
};

/// A connect attempt made with raw rdma_cm, to send private data no farmem client would.
struct RawOutcome {
  rdma_cm_event_type event{};
  proto::RejectData reject{};
};

Result<RawOutcome> raw_connect(const std::string& url, std::span<const std::byte> priv) {
  FARMEM_ASSIGN_OR_RETURN(auto ep, transport::parse_endpoint(url));
  FARMEM_ASSIGN_OR_RETURN(auto channel, ibv::create_event_channel());
  FARMEM_ASSIGN_OR_RETURN(auto id, ibv::create_id(channel.get(), nullptr));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(ep.port);
  if (inet_pton(AF_INET, ep.host.c_str(), &sin.sin_addr) != 1) return InvalidArgument(ep.host);
  const std::chrono::milliseconds wait(5000);
  if (rdma_resolve_addr(id.get(), nullptr, reinterpret_cast<sockaddr*>(&sin), 5000) != 0) {
    return Internal("rdma_resolve_addr");
  }
  FARMEM_RETURN_IF_ERROR(
      ibv::expect_cm_event(channel.get(), RDMA_CM_EVENT_ADDR_RESOLVED, wait, "addr").status());
  if (rdma_resolve_route(id.get(), 5000) != 0) return Internal("rdma_resolve_route");
  FARMEM_RETURN_IF_ERROR(
      ibv::expect_cm_event(channel.get(), RDMA_CM_EVENT_ROUTE_RESOLVED, wait, "route").status());
  FARMEM_ASSIGN_OR_RETURN(auto pd, ibv::alloc_pd(id->verbs));
  FARMEM_ASSIGN_OR_RETURN(auto cq, ibv::create_cq(id->verbs, 8, nullptr));
  ibv::QpShape shape{4, 4, 0};
  FARMEM_ASSIGN_OR_RETURN(auto qp, ibv::create_rc_qp(id.get(), pd.get(), cq.get(), shape));
  rdma_conn_param param{};
  param.private_data = priv.empty() ? nullptr : priv.data();
  param.private_data_len = static_cast<std::uint8_t>(priv.size());
  param.initiator_depth = 1;
  param.responder_resources = 1;
  param.retry_count = 7;
  if (rdma_connect(id.get(), &param) != 0) return Internal("rdma_connect");
  FARMEM_ASSIGN_OR_RETURN(auto ev, ibv::next_cm_event(channel.get(), wait));
  RawOutcome out;
  out.event = ev->event;
  if (ev->param.conn.private_data != nullptr && ev->param.conn.private_data_len >= sizeof out.reject) {
    std::memcpy(&out.reject, ev->param.conn.private_data, sizeof out.reject);
  }
  ev.reset();
  if (out.event == RDMA_CM_EVENT_ESTABLISHED) rdma_disconnect(id.get());
  return out;
}

/// Connect private data as a client would send it, with any header values: ConnectData, a
/// zero nonce, then `tenant`.
std::vector<std::byte> connect_data(std::uint32_t magic, std::uint16_t version,
                                    std::uint16_t tenant_len, std::string_view tenant) {
  std::vector<std::byte> out(sizeof(proto::ConnectData) + proto::kNonceBytes + tenant.size());
  const proto::ConnectData cd{magic, version, tenant_len};
  std::memcpy(out.data(), &cd, sizeof cd);
  std::memcpy(out.data() + sizeof cd + proto::kNonceBytes, tenant.data(), tenant.size());
  return out;
}

/// Polls `pred` every 10 ms until it holds or `limit` passes.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

/// A memserver with one well-behaved bystander client whose data, written in SetUp, must
/// read back intact in TearDown whatever the test did to the server in between.
class VerbsProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FARMEM_REQUIRE_RDMA_OR_SKIP();
    memserver::CoreOptions o;
    o.chunk_bytes = kChunk;
    o.capacity_bytes = kCapacity;
    auto s = TestServer::start("verbs", o);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
    bystander_ = Client::make(*server_);
    ASSERT_NE(bystander_, nullptr);
    auto slab = bystander_->alloc();
    ASSERT_TRUE(slab.ok()) << slab.status().to_string();
    bystander_slab_ = *slab;
    bystander_->fill(kLocalBytes, kBystanderSeed);
    ASSERT_TRUE(bystander_->op(OpKind::kWrite, slab->addr, slab->rkey, kLocalBytes).ok());
  }

  void TearDown() override {
    if (!bystander_) return;
    std::memset(bystander_->local.data(), 0, kLocalBytes);
    auto st = bystander_->op(OpKind::kRead, bystander_slab_.addr, bystander_slab_.rkey,
                             kLocalBytes);
    ASSERT_TRUE(st.ok()) << "bystander's read failed: " << st.to_string();
    EXPECT_TRUE(bystander_->holds_pattern(0, kLocalBytes, kBystanderSeed))
        << "a misbehaving client corrupted another client's slab";
    // Clients of the test body have disconnected; the server notices asynchronously.
    EXPECT_TRUE(eventually([&] { return server_->core().stats().sessions == 1; },
                           std::chrono::seconds(10)))
        << "sessions left: " << server_->core().stats().sessions << " (only the bystander's "
        << "should be)";
  }

  std::unique_ptr<Client> client() {
    auto c = Client::make(*server_);
    EXPECT_NE(c, nullptr);
    return c;
  }
  /// A client without the lease check: its bad ops reach the memserver's NIC.
  std::unique_ptr<Client> attacker() {
    auto c = Client::make(*server_, /*checked=*/false);
    EXPECT_NE(c, nullptr);
    return c;
  }

  static constexpr std::uint64_t kBystanderSeed = 42;
  std::unique_ptr<TestServer> server_;
  std::unique_ptr<Client> bystander_;
  proto::SlabInfo bystander_slab_{};
};

TEST_F(VerbsProtocolTest, WrongTokenIsPermissionDenied) {
  const auto failures_before = server_->core().auth_failures();
  for (const std::string& token : std::vector<std::string>{"wrong-token", std::string(kToken) + "x"}) {
    auto c = server_->connect(token);
    ASSERT_FALSE(c.ok()) << "token '" << token << "' was accepted";
    EXPECT_EQ(c.status().code(), StatusCode::kPermissionDenied) << c.status().to_string();
    EXPECT_NE(c.status().message().find("authentication failed"), std::string::npos)
        << c.status().to_string();
  }
  EXPECT_EQ(server_->core().auth_failures(), failures_before + 2);
  // Without a secret the client stops at the memserver's challenge, saying what is missing.
  auto none = server_->connect("");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kPermissionDenied) << none.status().to_string();
  EXPECT_NE(none.status().message().find("requires authentication"), std::string::npos)
      << none.status().to_string();
}

TEST_F(VerbsProtocolTest, WrongVersionIsRejectedAsProtocolError) {
  const auto priv = connect_data(proto::kMagic, proto::kVersion + 1, 0, "");
  auto out = raw_connect(server_->url(), priv);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->event, RDMA_CM_EVENT_REJECTED);
  EXPECT_EQ(out->reject.magic, proto::kMagic);
  EXPECT_EQ(out->reject.status, static_cast<std::uint32_t>(StatusCode::kProtocolError));
}

TEST_F(VerbsProtocolTest, MalformedConnectDataIsRejectedAsProtocolError) {
  const std::vector<std::vector<std::byte>> cases = {
      connect_data(0xDEADBEEF, proto::kVersion, 0, ""),              // bad magic
      {},                                                             // no private data
      connect_data(proto::kMagic, proto::kVersion, 200, "kv"),        // tenant_len too big
      connect_data(proto::kMagic, proto::kVersion, 33, "kv")};        // one past the limit
  // (A tenant_len that runs past short data is not tested: rdma_cm zero-pads private data
  // to 56 bytes on IB/RoCE, so any length up to the limit "fits" there.)
  for (std::size_t i = 0; i < cases.size(); ++i) {
    auto out = raw_connect(server_->url(), cases[i]);
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    EXPECT_EQ(out->event, RDMA_CM_EVENT_REJECTED) << "case " << i;
    EXPECT_EQ(out->reject.magic, proto::kMagic) << "case " << i;
    EXPECT_EQ(out->reject.status, static_cast<std::uint32_t>(StatusCode::kProtocolError))
        << "case " << i;
  }
}

TEST(VerbsConnect, NoListenerIsUnavailableAndNamesTheUrl) {
  FARMEM_REQUIRE_RDMA_OR_SKIP();
  auto s = TestServer::start("verbs");
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const std::string url = (*s)->url();
  s->reset();  // the port is free again
  transport::ConnectOptions co;
  co.token = kToken;
  const auto t0 = Clock::now();
  auto c = transport::connect(url, co);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable) << c.status().to_string();
  EXPECT_NE(c.status().message().find(url), std::string::npos) << c.status().to_string();
  EXPECT_LT(Clock::now() - t0, co.connect_timeout + std::chrono::seconds(1));
}

TEST_F(VerbsProtocolTest, HelloOverTheControlChannelIsAnError) {
  auto a = client();
  ASSERT_NE(a, nullptr);
  auto reply = a->conn->call(proto::make_hello("", proto::Nonce{}, 0), kTimeout);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kProtocolError) << reply.status().to_string();
  // The control channel still works.
  EXPECT_TRUE(transport::server_stats(*a->conn, kTimeout).ok());
}

TEST_F(VerbsProtocolTest, ReadOutsideTheSlabIsOutOfRangeForAFarmemClient) {
  // The client checks its leases before posting: same code as tcp, connection intact.
  auto a = client();
  ASSERT_NE(a, nullptr);
  auto slab = a->alloc();
  ASSERT_TRUE(slab.ok());
  auto st = a->op(OpKind::kRead, slab->addr + slab->bytes - 100, slab->rkey, 4096);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.to_string();
  EXPECT_EQ(a->op(OpKind::kRead, slab->addr, slab->rkey ^ 1, 64).code(),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(a->op(OpKind::kRead, slab->addr, slab->rkey, 4096).ok());
}

TEST_F(VerbsProtocolTest, ReadOutsideTheSlabFailsWithRemoteAccessError) {
  // A client that posts it anyway meets the memserver's NIC.
  auto a = attacker();
  ASSERT_NE(a, nullptr);
  auto slab = a->alloc();
  ASSERT_TRUE(slab.ok());
  // Straddles the end of the slab.
  auto st = a->op(OpKind::kRead, slab->addr + slab->bytes - 100, slab->rkey, 4096);
  EXPECT_EQ(st.code(), StatusCode::kIoError) << st.to_string();
  EXPECT_NE(st.message().find("RDMA READ failed: remote access error"), std::string::npos)
      << st.to_string();
  EXPECT_NE(st.message().find(server_->url()), std::string::npos) << st.to_string();
  // The QP is in error now: the next op fails fast, and says why.
  const auto t0 = Clock::now();
  st = a->op(OpKind::kRead, slab->addr, slab->rkey, 4096);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.to_string();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(1));

  // Entirely past the slab, on a fresh connection.
  auto b = attacker();
  ASSERT_NE(b, nullptr);
  auto slab_b = b->alloc();
  ASSERT_TRUE(slab_b.ok());
  st = b->op(OpKind::kWrite, slab_b->addr + slab_b->bytes + 4096, slab_b->rkey, 64);
  EXPECT_EQ(st.code(), StatusCode::kIoError) << st.to_string();
}

TEST_F(VerbsProtocolTest, WaitTimeoutBreaksTheConnectionAndReturnsOnlyOnceTheBatchIsDone) {
  auto a = client();
  ASSERT_NE(a, nullptr);
  auto slab = a->alloc();
  ASSERT_TRUE(slab.ok());
  // A batch that completes late. (A real slow batch cannot be staged on rxe: for loopback
  // traffic it moves the data inside ibv_post_send itself.) Its "flush" arrives 300 ms after
  // the 20 ms timeout: wait() must not return before it, or the caller would free a
  // completion that is still written to.
  Completion late;
  late.arm(1);
  std::thread flusher([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    late.finish_part(Unavailable("flushed"));
  });
  const auto t0 = Clock::now();
  auto st = a->conn->wait(late, std::chrono::milliseconds(20));
  const auto took = Clock::now() - t0;
  const bool done_at_return = late.done();
  flusher.join();
  EXPECT_EQ(st.code(), StatusCode::kTimedOut) << st.to_string();
  EXPECT_NE(st.message().find(server_->url()), std::string::npos) << st.to_string();
  EXPECT_TRUE(done_at_return) << "wait() returned while its batch was still outstanding";
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(5));
  // Broken now: data ops and control calls fail at once.
  EXPECT_EQ(a->op(OpKind::kRead, slab->addr, slab->rkey, 64).code(), StatusCode::kUnavailable);
  EXPECT_EQ(a->alloc().status().code(), StatusCode::kUnavailable);
}

TEST_F(VerbsProtocolTest, GuessedRkeyFailsWithRemoteAccessError) {
  auto a = client();
  ASSERT_NE(a, nullptr);
  auto slab = a->alloc();
  ASSERT_TRUE(slab.ok());
  // Another key index with the same low byte, and the same index with another key byte.
  for (std::uint32_t guess : {slab->rkey + 0x100, slab->rkey ^ 0x1}) {
    auto c = attacker();
    ASSERT_NE(c, nullptr);
    auto own = c->alloc();
    ASSERT_TRUE(own.ok());
    auto st = c->op(OpKind::kRead, slab->addr, guess, 4096);
    EXPECT_EQ(st.code(), StatusCode::kIoError) << "rkey " << guess << ": " << st.to_string();
  }
}

TEST_F(VerbsProtocolTest, AnotherClientsExactAddressAndRkeyAreUseless) {
  // Per-client protection domains: B presenting A's (addr, rkey) verbatim must fail, for
  // reads and for writes, and A's data must not change.
  auto a = client();
  ASSERT_NE(a, nullptr);
  auto slab_a = a->alloc();
  ASSERT_TRUE(slab_a.ok());
  a->fill(65536, 7);
  ASSERT_TRUE(a->op(OpKind::kWrite, slab_a->addr, slab_a->rkey, 65536).ok());
  for (OpKind kind : {OpKind::kRead, OpKind::kWrite}) {
    auto b = attacker();
    ASSERT_NE(b, nullptr);
    ASSERT_TRUE(b->alloc().ok());  // B has memory of its own registered on the server
    std::memset(b->local.data(), 0xAB, 65536);
    auto st = b->op(kind, slab_a->addr, slab_a->rkey, 65536);
    EXPECT_EQ(st.code(), StatusCode::kIoError) << st.to_string();
    EXPECT_NE(st.message().find("remote access error"), std::string::npos) << st.to_string();
  }
  std::memset(a->local.data(), 0, 65536);
  ASSERT_TRUE(a->op(OpKind::kRead, slab_a->addr, slab_a->rkey, 65536).ok());
  EXPECT_TRUE(a->holds_pattern(0, 65536, 7)) << "A's slab changed through B's connection";
}

TEST_F(VerbsProtocolTest, FreeingASlabTwiceOrAnotherClientsSlabIsNotFound) {
  auto a = client();
  auto b = client();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  auto s1 = a->alloc();
  auto s2 = a->alloc();
  ASSERT_TRUE(s1.ok() && s2.ok());
  ASSERT_TRUE(transport::free_slab(*a->conn, s1->slab_id, kTimeout).ok());
  auto st = transport::free_slab(*a->conn, s1->slab_id, kTimeout);
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.to_string();
  st = transport::free_slab(*b->conn, s2->slab_id, kTimeout);
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.to_string();
  st = transport::free_slab(*b->conn, bystander_slab_.slab_id, kTimeout);
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.to_string();
  // A still owns s2 and can use and free it.
  a->fill(4096, 3);
  EXPECT_TRUE(a->op(OpKind::kWrite, s2->addr, s2->rkey, 4096).ok());
  EXPECT_TRUE(transport::free_slab(*a->conn, s2->slab_id, kTimeout).ok());
}

TEST_F(VerbsProtocolTest, PoolAtCapacityIsResourceExhausted) {
  auto a = client();
  ASSERT_NE(a, nullptr);
  // The bystander holds one chunk; take the rest.
  auto big = a->alloc(kCapacity - kChunk);
  ASSERT_TRUE(big.ok()) << big.status().to_string();
  auto more = a->alloc(kChunk);
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.status().code(), StatusCode::kResourceExhausted) << more.status().to_string();
  auto other = client();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->alloc(1).status().code(), StatusCode::kResourceExhausted);
  // Freeing makes room again; the refused client's connection is still good.
  ASSERT_TRUE(transport::free_slab(*a->conn, big->slab_id, kTimeout).ok());
  auto again = other->alloc(kChunk);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  other->fill(4096, 9);
  EXPECT_TRUE(other->op(OpKind::kWrite, again->addr, again->rkey, 4096).ok());
}

}  // namespace
}  // namespace farmem::test
