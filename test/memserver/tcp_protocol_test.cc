// The memserver's TCP listener against malformed and hostile input (raw bytes on a socket),
// and the tcp client backend against a misbehaving or vanishing server.
//
// Every TcpProtocolTest case runs next to a well-behaved "bystander" client that connected
// and wrote its data before the abuse; TearDown checks that it reads its data back intact
// and can still allocate, i.e. that one bad client never hurts another.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "test/support/raw_client.h"
#include "test/support/test_server.h"
#include "transport/tcp/socket.h"
#include "transport/tcp/tcp.h"

namespace farmem {
namespace {

using namespace std::chrono_literals;
using proto::MsgType;
using transport::Op;
using transport::OpKind;

constexpr auto kTimeout = 5s;
constexpr std::size_t kPage = 4096;
constexpr std::uint64_t kChunk = 2ull << 20;  // CoreOptions' default chunk

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte((i * 131 + seed * 17 + (i >> 9)) & 0xff);
  return v;
}

// ---- a client on the real transport ----

struct Client {
  std::unique_ptr<transport::Connection> conn;
  proto::SlabInfo slab{};
  std::vector<std::byte> buf;
  std::unique_ptr<transport::MemoryRegistration> mr;

  Op op(OpKind kind, std::uint64_t remote_off, std::uint32_t len, std::size_t buf_off = 0) {
    return Op{kind, len, buf.data() + buf_off, mr->lkey(), slab.rkey, slab.addr + remote_off};
  }
};

Client make_client(const test::TestServer& server, std::uint64_t slab_bytes = kChunk,
                   std::size_t buf_bytes = 4 << 20) {
  Client c;
  auto conn = server.connect();
  EXPECT_TRUE(conn.ok()) << conn.status().to_string();
  if (!conn.ok()) return c;
  c.conn = std::move(conn).value();
  c.buf.resize(buf_bytes);
  c.mr = std::move(c.conn->register_memory(c.buf.data(), c.buf.size())).value();
  auto slab = transport::alloc_slab(*c.conn, slab_bytes, kTimeout);
  EXPECT_TRUE(slab.ok()) << slab.status().to_string();
  if (slab.ok()) c.slab = *slab;
  return c;
}

// ---- raw frames: test/support/raw_client.h ----

using test::Raw;
using test::text_of;

// ---- the fixture: a server plus a bystander ----

class TcpProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }

  void start(memserver::CoreOptions options) {
    bystander_ = Client{};
    server_.reset();
    auto s = test::TestServer::start("tcp", std::move(options));
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
    port_ = transport::parse_endpoint(server_->url())->port;
    bystander_ = make_client(*server_);
    ASSERT_NE(bystander_.conn, nullptr);
    const auto data = pattern(kPage * 4, 7);
    std::memcpy(bystander_.buf.data(), data.data(), data.size());
    ASSERT_TRUE(bystander_.conn->execute(bystander_.op(OpKind::kWrite, kPage, kPage * 4), kTimeout).ok());
  }

  void TearDown() override {
    if (!server_ || !bystander_.conn || HasFatalFailure()) return;
    std::memset(bystander_.buf.data(), 0, kPage * 4);
    const Status st = bystander_.conn->execute(bystander_.op(OpKind::kRead, kPage, kPage * 4), kTimeout);
    ASSERT_TRUE(st.ok()) << "bystander read: " << st.to_string();
    const auto want = pattern(kPage * 4, 7);
    EXPECT_EQ(std::memcmp(bystander_.buf.data(), want.data(), want.size()), 0)
        << "the bystander's data changed";
    auto slab = transport::alloc_slab(*bystander_.conn, kChunk, kTimeout);
    EXPECT_TRUE(slab.ok()) << "bystander cannot allocate: " << slab.status().to_string();
  }

  std::uint64_t errors() { return server_->core().stats().errors; }

  std::unique_ptr<test::TestServer> server_;
  std::uint16_t port_ = 0;
  Client bystander_;
};

TEST_F(TcpProtocolTest, UnknownMessageTypeIsRejectedAndTheStreamGoesOn) {
  Raw raw(port_);
  raw.hello();
  const auto before = errors();
  raw.send_frame(static_cast<MsgType>(77), 5, pattern(8, 1));
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kProtocolError, 5, "unknown message type 77");
  raw.send_frame(MsgType::kHelloOk, 6, {});  // a reply type is not a request either
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kProtocolError, 6, "not a request");
  raw.send_frame(MsgType::kStats, 7, {});
  auto stats = raw.read_frame();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->type, MsgType::kStatsReply);
  EXPECT_EQ(stats->req_id, 7u);
  EXPECT_EQ(errors(), before + 2);
}

TEST_F(TcpProtocolTest, OversizedFrameIsRejectedThenClosed) {
  Raw raw(port_);
  raw.hello();
  auto h = proto::make_header(MsgType::kAllocSlab, 3, proto::kMaxControlPayload + 1);
  raw.send_bytes(&h, sizeof h);
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kProtocolError, 3, "exceeds the limit");
  EXPECT_TRUE(raw.closed_by_server());
}

TEST_F(TcpProtocolTest, TruncatedFrameIsReportedThenClosed) {
  Raw raw(port_);
  raw.hello();
  auto h = proto::make_header(MsgType::kAllocSlab, 4, sizeof(proto::AllocSlab));
  raw.send_bytes(&h, sizeof h);
  raw.send_bytes("abc", 3);
  ASSERT_EQ(::shutdown(raw.fd(), SHUT_WR), 0);
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kProtocolError, 4, "truncated frame");
  EXPECT_TRUE(raw.closed_by_server());

  Raw half_header(port_);
  half_header.hello();
  half_header.send_bytes(&h, 10);
  ASSERT_EQ(::shutdown(half_header.fd(), SHUT_WR), 0);
  EXPECT_ERROR_FRAME(half_header.read_frame(), StatusCode::kProtocolError, 0, "truncated frame");
  EXPECT_TRUE(half_header.closed_by_server());
}

TEST_F(TcpProtocolTest, WrongVersionIsRejectedThenClosed) {
  Raw raw(port_);
  raw.send_frame(MsgType::kHello, 1, proto::make_hello("", proto::Nonce{}, 1).payload,
                 proto::kVersion + 1);
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kProtocolError, 1, "version");
  EXPECT_TRUE(raw.closed_by_server());
}

TEST_F(TcpProtocolTest, BadMagicIsRejectedThenClosed) {
  Raw raw(port_);
  const std::string http = "GET / HTTP/1.1\r\nHost: memserver\r\n\r\n";
  raw.send_bytes(http.data(), http.size());
  auto reply = raw.read_frame();
  ASSERT_TRUE(reply.ok()) << reply.status().to_string();
  EXPECT_EQ(reply->type, MsgType::kError);
  EXPECT_EQ(reply->status, StatusCode::kProtocolError);
  EXPECT_NE(text_of(*reply).find("magic"), std::string::npos) << text_of(*reply);
  EXPECT_TRUE(raw.closed_by_server());
}

TEST_F(TcpProtocolTest, WrongTokenIsPermissionDenied) {
  auto conn = server_->connect("not-the-token");
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), StatusCode::kPermissionDenied) << conn.status().to_string();

  Raw raw(port_);
  const proto::HelloOk ok = raw.hello_only();
  raw.send_body(MsgType::kAuth, 9, raw.proof(ok, "not-the-token"));
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kPermissionDenied, 9, "authentication failed");
  EXPECT_TRUE(raw.closed_by_server());
}

TEST_F(TcpProtocolTest, NothingButAuthIsTakenAfterHello) {
  for (MsgType first : {MsgType::kStats, MsgType::kAllocSlab, MsgType::kRead}) {
    Raw raw(port_);
    raw.hello_only();
    if (first == MsgType::kRead) {
      raw.send_body(first, 2, proto::DataOp{bystander_.slab.addr, bystander_.slab.rkey, kPage});
    } else if (first == MsgType::kAllocSlab) {
      raw.send_body(first, 2, proto::AllocSlab{kChunk});
    } else {
      raw.send_frame(first, 2, {});
    }
    EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kPermissionDenied, 2, "expected AUTH");
    EXPECT_TRUE(raw.closed_by_server());
  }
}

TEST_F(TcpProtocolTest, AReplayedHandshakeIsRefused) {
  // An eavesdropper replays a good client's HELLO and AUTH bytes on a new connection: the
  // memserver's nonce is new, so the recorded proof no longer fits.
  Raw good(port_);
  const proto::HelloOk ok = good.hello_only();
  const proto::AuthProof recorded = good.proof(ok, test::kToken);
  good.send_body(MsgType::kAuth, 2, recorded);
  auto accepted = good.read_frame();
  ASSERT_TRUE(accepted.ok());
  ASSERT_EQ(accepted->type, MsgType::kAuthOk);

  Raw replay(port_);
  replay.hello_only();
  replay.send_body(MsgType::kAuth, 2, recorded);
  EXPECT_ERROR_FRAME(replay.read_frame(), StatusCode::kPermissionDenied, 2, "authentication failed");
  EXPECT_TRUE(replay.closed_by_server());
}

TEST_F(TcpProtocolTest, HelloTwiceIsRejectedButTheSessionGoesOn) {
  Raw raw(port_);
  raw.hello();
  raw.send_frame(MsgType::kHello, 3, proto::make_hello("", proto::Nonce{}, 3).payload);
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kProtocolError, 3, "HELLO sent twice");
  raw.send_body(MsgType::kAllocSlab, 3, proto::AllocSlab{kChunk});
  auto slab = raw.read_frame();
  ASSERT_TRUE(slab.ok());
  EXPECT_EQ(slab->type, MsgType::kSlabInfo);
}

TEST_F(TcpProtocolTest, DataOpBeforeHelloIsRejectedThenClosed) {
  Raw raw(port_);
  raw.send_body(MsgType::kRead, 1,
                proto::DataOp{bystander_.slab.addr, bystander_.slab.rkey, kPage});
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kProtocolError, 1, "expected HELLO");
  EXPECT_TRUE(raw.closed_by_server());
}

TEST_F(TcpProtocolTest, ReadAndWriteOutsideTheSlabAreOutOfRange) {
  Client c = make_client(*server_);
  const auto end = c.slab.bytes;
  EXPECT_EQ(c.conn->execute(c.op(OpKind::kRead, end - 100, kPage), kTimeout).code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(c.conn->execute(c.op(OpKind::kWrite, end - 100, kPage), kTimeout).code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(c.conn->execute(c.op(OpKind::kRead, end, 1), kTimeout).code(),
            StatusCode::kOutOfRange);
  // The bystander's slab is not this session's: out of range too, nothing revealed.
  Op steal{OpKind::kRead, kPage, c.buf.data(), 0, bystander_.slab.rkey, bystander_.slab.addr};
  EXPECT_EQ(c.conn->execute(steal, kTimeout).code(), StatusCode::kOutOfRange);
  // The connection stays usable.
  EXPECT_TRUE(c.conn->execute(c.op(OpKind::kRead, end - kPage, kPage), kTimeout).ok());
}

TEST_F(TcpProtocolTest, WrongRkeyIsPermissionDeniedAndWritesNothing) {
  Client c = make_client(*server_);
  const auto data = pattern(kPage, 3);
  std::memcpy(c.buf.data(), data.data(), kPage);
  ASSERT_TRUE(c.conn->execute(c.op(OpKind::kWrite, 0, kPage), kTimeout).ok());
  Op bad = c.op(OpKind::kWrite, 0, kPage);
  bad.rkey ^= 0x5a5a;
  std::memset(c.buf.data(), 0xee, kPage);
  EXPECT_EQ(c.conn->execute(bad, kTimeout).code(), StatusCode::kPermissionDenied);
  bad.kind = OpKind::kRead;
  EXPECT_EQ(c.conn->execute(bad, kTimeout).code(), StatusCode::kPermissionDenied);
  ASSERT_TRUE(c.conn->execute(c.op(OpKind::kRead, 0, kPage), kTimeout).ok());
  EXPECT_EQ(std::memcmp(c.buf.data(), data.data(), kPage), 0);
}

TEST_F(TcpProtocolTest, RejectedWritePayloadIsSkippedAndTheStreamStaysInSync) {
  Raw raw(port_);
  raw.hello();
  const std::uint32_t len = 100000;  // larger than the server's receive buffer
  auto h = proto::make_header(MsgType::kWrite, 2, sizeof(proto::DataOp) + len);
  const proto::DataOp op{bystander_.slab.addr + kPage, bystander_.slab.rkey, len};
  raw.send_bytes(&h, sizeof h);
  raw.send_bytes(&op, sizeof op);
  const auto junk = pattern(len, 99);
  raw.send_bytes(junk.data(), junk.size());
  raw.send_frame(MsgType::kStats, 3, {});
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kOutOfRange, 2, "no slab");
  auto stats = raw.read_frame();
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->type, MsgType::kStatsReply);
  EXPECT_EQ(stats->req_id, 3u);
}

TEST_F(TcpProtocolTest, PipelinedRequestsAreAnsweredInOrder) {
  Raw raw(port_);
  raw.hello();
  raw.send_body(MsgType::kAllocSlab, 2, proto::AllocSlab{kChunk});
  auto info = raw.read_frame();
  ASSERT_TRUE(info.ok());
  auto slab = info->as<proto::SlabInfo>();
  ASSERT_TRUE(slab.ok());
  // Many requests in one burst, a failing one in the middle: replies come back in order.
  for (std::uint64_t id = 10; id < 30; ++id) {
    const bool bad = id == 17;
    raw.send_body(MsgType::kRead, id,
                  proto::DataOp{slab->addr + id * 64, slab->rkey ^ (bad ? 1u : 0u), 64});
  }
  for (std::uint64_t id = 10; id < 30; ++id) {
    auto r = raw.read_frame();
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->req_id, id);
    EXPECT_EQ(r->type, id == 17 ? MsgType::kError : MsgType::kReadData);
  }
}

TEST_F(TcpProtocolTest, FreeingASlabTwiceIsNotFound) {
  Client c = make_client(*server_);
  EXPECT_TRUE(transport::free_slab(*c.conn, c.slab.slab_id, kTimeout).ok());
  const Status again = transport::free_slab(*c.conn, c.slab.slab_id, kTimeout);
  EXPECT_EQ(again.code(), StatusCode::kNotFound) << again.to_string();
  EXPECT_EQ(c.conn->execute(c.op(OpKind::kRead, 0, kPage), kTimeout).code(),
            StatusCode::kOutOfRange);
}

TEST_F(TcpProtocolTest, FreeingAnotherClientsSlabIsNotFound) {
  Client c = make_client(*server_);
  const Status st = transport::free_slab(*c.conn, bystander_.slab.slab_id, kTimeout);
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.to_string();
}  // TearDown: the bystander's slab and data are still there

TEST_F(TcpProtocolTest, PoolAtCapacityIsResourceExhaustedUntilAClientLeaves) {
  memserver::CoreOptions small;
  small.capacity_bytes = 4 * kChunk;
  start(small);  // the bystander holds one chunk
  Client c = make_client(*server_, 3 * kChunk);
  ASSERT_NE(c.slab.slab_id, 0u);
  auto more = transport::alloc_slab(*c.conn, kChunk, kTimeout);
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.status().code(), StatusCode::kResourceExhausted) << more.status().to_string();
  auto bystander_more = transport::alloc_slab(*bystander_.conn, kChunk, kTimeout);
  EXPECT_EQ(bystander_more.status().code(), StatusCode::kResourceExhausted);
  // When the greedy client disconnects, its slabs return to the pool.
  c.conn.reset();
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (server_->core().stats().used_bytes != kChunk &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(server_->core().stats().used_bytes, kChunk);
}  // TearDown: the bystander can allocate again

TEST_F(TcpProtocolTest, MixedBatchWithAFailingOpCompletesTheOthers) {
  Client c = make_client(*server_);
  const auto a = pattern(kPage, 1), b = pattern(kPage, 2), d = pattern(3 * kPage, 4);
  std::memcpy(c.buf.data(), b.data(), kPage);
  ASSERT_TRUE(c.conn->execute(c.op(OpKind::kWrite, 8 * kPage, kPage), kTimeout).ok());
  std::memcpy(c.buf.data() + kPage, d.data(), d.size());
  ASSERT_TRUE(c.conn->execute(c.op(OpKind::kWrite, 16 * kPage, 3 * kPage, kPage), kTimeout).ok());
  std::memset(c.buf.data(), 0, 8 * kPage);
  std::memcpy(c.buf.data() + 7 * kPage, a.data(), kPage);
  const Op batch[] = {
      c.op(OpKind::kRead, 8 * kPage, kPage, 0),                  // b
      c.op(OpKind::kRead, c.slab.bytes - 10, kPage, 2 * kPage),  // out of range
      c.op(OpKind::kRead, 16 * kPage, 3 * kPage, 3 * kPage),     // d
      c.op(OpKind::kWrite, 30 * kPage, kPage, 7 * kPage),        // a
  };
  transport::Completion done;
  ASSERT_TRUE(c.conn->post(batch, done).ok());
  EXPECT_EQ(c.conn->wait(done, kTimeout).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(std::memcmp(c.buf.data(), b.data(), kPage), 0);
  EXPECT_EQ(std::memcmp(c.buf.data() + 3 * kPage, d.data(), d.size()), 0);
  ASSERT_TRUE(c.conn->execute(c.op(OpKind::kRead, 30 * kPage, kPage, 0), kTimeout).ok());
  EXPECT_EQ(std::memcmp(c.buf.data(), a.data(), kPage), 0);
}

TEST_F(TcpProtocolTest, ThousandOpBatchesAndFourThreadsDoNotDeadlock) {
  Client c = make_client(*server_, 4 << 20, 8 << 20);
  constexpr int kOps = 1000;
  const auto data = pattern(kOps * kPage, 5);
  std::memcpy(c.buf.data(), data.data(), data.size());
  std::vector<Op> writes, reads;
  for (int i = 0; i < kOps; ++i) {
    writes.push_back(c.op(OpKind::kWrite, i * kPage, kPage, i * kPage));
    reads.push_back(c.op(OpKind::kRead, i * kPage, kPage, (4 << 20) + i * kPage));
  }
  std::atomic<int> failures{0};
  auto worker = [&](bool write) {
    for (int round = 0; round < 5; ++round) {
      transport::Completion done;
      if (!c.conn->post(write ? writes : reads, done).ok() ||
          !c.conn->wait(done, kTimeout).ok()) {
        failures.fetch_add(1);
      }
    }
  };
  ASSERT_TRUE(c.conn->execute(c.op(OpKind::kWrite, 0, 4 << 20), kTimeout).ok());
  std::vector<std::thread> threads;
  threads.emplace_back(worker, true);
  threads.emplace_back(worker, true);
  threads.emplace_back(worker, false);
  threads.emplace_back(worker, false);
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(std::memcmp(c.buf.data() + (4 << 20), data.data(), data.size()), 0);
}

TEST_F(TcpProtocolTest, MemserverStoppedUnderAClientFailsFast) {
  Client c = bystander_.conn ? std::move(bystander_) : Client{};
  ASSERT_NE(c.conn, nullptr);
  server_.reset();
  const auto t0 = std::chrono::steady_clock::now();
  const Status first = c.conn->execute(c.op(OpKind::kRead, 0, kPage), 30s);
  const Status second = c.conn->execute(c.op(OpKind::kRead, 0, kPage), 30s);
  const auto slab = transport::alloc_slab(*c.conn, kChunk, 30s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(first.code(), StatusCode::kUnavailable) << first.to_string();
  EXPECT_EQ(second.code(), StatusCode::kUnavailable) << second.to_string();
  EXPECT_EQ(slab.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.message().find(c.conn->peer() + ": connection lost"), std::string::npos)
      << second.message();
}

// ---- the client against a scripted fake server ----

class FakeServer {
 public:
  explicit FakeServer(std::function<void(int fd)> script) {
    auto l = net::listen_on("127.0.0.1", 0);
    EXPECT_TRUE(l.ok());
    port_ = l->port;
    listen_ = std::move(l->fd);
    thread_ = std::thread([this, script = std::move(script)] {
      auto fd = net::accept_from(listen_.get(), nullptr);
      if (!fd.ok()) return;
      const auto d = net::deadline_after(kTimeout);
      proto::FrameHeader h{};
      std::byte hello[128];
      if (!net::read_full(fd->get(), &h, sizeof h, d, "").ok() || h.length > sizeof hello) return;
      if (!net::read_full(fd->get(), hello, h.length, d, "").ok()) return;
      // An --insecure memserver's HELLO_OK: no AUTH follows.
      auto ok = proto::encode(
          proto::Message::of(MsgType::kHelloOk, proto::HelloOk{1, 1, 1, {}, 0, 0}));
      if (!net::write_full(fd->get(), ok.data(), ok.size(), d, "").ok()) return;
      script(fd->get());
    });
  }
  ~FakeServer() { thread_.join(); }
  std::unique_ptr<transport::Connection> connect() {
    transport::ConnectOptions o;
    auto c = transport::connect_tcp({"tcp", "127.0.0.1", port_}, o);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    return c.ok() ? std::move(c).value() : nullptr;
  }

 private:
  net::UniqueFd listen_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

TEST(TcpClientTest, RepliesOutOfOrderStillLandInTheRightBuffers) {
  FakeServer fake([](int fd) {
    const auto d = net::deadline_after(kTimeout);
    proto::FrameHeader h[2];
    proto::DataOp op[2];
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(net::read_full(fd, &h[i], sizeof h[i], d, "").ok());
      ASSERT_TRUE(net::read_full(fd, &op[i], sizeof op[i], d, "").ok());
    }
    // Both replies in one write, the second request answered first, so that one client
    // receive sees a header it did not predict followed by more frames.
    std::vector<std::byte> out;
    for (int i : {1, 0}) {
      const auto reply = proto::make_header(MsgType::kReadData, h[i].req_id, op[i].length);
      const auto* p = reinterpret_cast<const std::byte*>(&reply);
      out.insert(out.end(), p, p + sizeof reply);
      const auto data = pattern(op[i].length, 100 + i);
      out.insert(out.end(), data.begin(), data.end());
    }
    ASSERT_TRUE(net::write_full(fd, out.data(), out.size(), d, "").ok());
    std::byte b;
    (void)net::read_full(fd, &b, 1, d, "");  // until the client hangs up
  });
  auto conn = fake.connect();
  ASSERT_NE(conn, nullptr);
  std::vector<std::byte> buf(2 * kPage);
  const Op ops[] = {{OpKind::kRead, kPage, buf.data(), 0, 1, 0x1000},
                    {OpKind::kRead, 100, buf.data() + kPage, 0, 1, 0x9000}};
  transport::Completion done;
  ASSERT_TRUE(conn->post(ops, done).ok());
  ASSERT_TRUE(conn->wait(done, kTimeout).ok());
  EXPECT_EQ(std::memcmp(buf.data(), pattern(kPage, 100).data(), kPage), 0);
  EXPECT_EQ(std::memcmp(buf.data() + kPage, pattern(100, 101).data(), 100), 0);
}

TEST(TcpClientTest, NoReplyTimesOutAndBreaksTheConnection) {
  FakeServer fake([](int fd) {
    std::byte b;
    (void)net::read_full(fd, &b, 1, net::deadline_after(kTimeout), "");
    // Swallow requests without answering until the client gives up.
    while (net::read_full(fd, &b, 1, net::deadline_after(kTimeout), "").ok()) {
    }
  });
  auto conn = fake.connect();
  ASSERT_NE(conn, nullptr);
  std::vector<std::byte> buf(kPage);
  const Op op{OpKind::kRead, kPage, buf.data(), 0, 1, 0x1000};
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(conn->execute(op, 50ms).code(), StatusCode::kTimedOut);
  const Status later = conn->execute(op, 5s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(later.code(), StatusCode::kUnavailable);
  EXPECT_NE(later.message().find("connection lost"), std::string::npos) << later.message();
}

TEST(TcpClientTest, RefusedConnectIsUnavailableAndNamesThePeer) {
  std::uint16_t port = 0;
  {
    auto l = net::listen_on("127.0.0.1", 0);  // a port that was free a moment ago
    ASSERT_TRUE(l.ok());
    port = l->port;
  }
  auto c = transport::connect_tcp({"tcp", "127.0.0.1", port}, transport::ConnectOptions{});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable) << c.status().to_string();
  const std::string want = "tcp://127.0.0.1:" + std::to_string(port) + ": connect: ";
  EXPECT_EQ(c.status().message().rfind(want, 0), 0u) << c.status().message();
}

}  // namespace
}  // namespace farmem
