// The memserver's TCP listener under load and abuse: 2,000 idle connections without a thread
// each, the global and per-host connection limits, the half-frame and idle timeouts, a busy
// client that must not starve another when there is one worker, and the metrics that count
// the refusals. Everything talks to 127.0.0.1 (and 127.0.0.2, playing a second host).
#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "memserver/metrics.h"
#include "memserver/server.h"
#include "memserver/tcp_listener.h"
#include "test/support/memserver_process.h"
#include "test/support/raw_client.h"
#include "test/support/test_server.h"
#include "transport/connect.h"
#include "transport/tcp/socket.h"

namespace farmem {
namespace {

using namespace std::chrono_literals;
using memserver::Core;
using proto::MsgType;
using test::eventually;
using test::Raw;

constexpr std::uint64_t kChunk = 2ull << 20;  // CoreOptions' default chunk
constexpr auto kTimeout = 5s;

// Sanitizer allocators keep freed memory (quarantine, shadow): RSS says nothing there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif
// What an idle connection may cost the memserver in RSS once its buffers are freed (it has
// a socket, a session record and a few small strings: ~5 KiB measured, ~14 KiB before its
// buffers are freed; a 64 KiB receive
// buffer kept per connection would be far above).
constexpr std::uint64_t kIdleConnectionKiB = 12;

std::unique_ptr<memserver::Server> serve(const memserver::TcpListenerOptions& tcp) {
  memserver::ServerOptions so;
  so.core.capacity_bytes = 64ull << 20;
  so.core.token = test::kToken;
  so.tcp = memserver::ListenAddress{"127.0.0.1", 0};
  so.tcp_options = tcp;
  auto s = memserver::Server::start(std::move(so));
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

Result<std::unique_ptr<transport::Connection>> connect(const std::string& url) {
  transport::ConnectOptions co;
  co.token = test::kToken;
  return transport::connect(url, co);
}

std::string url_of(const memserver::Server& s) {
  return "tcp://127.0.0.1:" + std::to_string(s.tcp_port());
}

/// One sample of the server's Prometheus text (-1: absent).
double metric(const Core& core, const std::string& name) {
  const std::string text = "\n" + memserver::render_prometheus(memserver::snapshot(core));
  const std::string key = "\n" + name + " ";
  const auto at = text.find(key);
  return at == std::string::npos ? -1 : std::strtod(text.c_str() + at + key.size(), nullptr);
}

std::size_t threads_of(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  std::size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  // Bounded by the directory's entries.
  while (const dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

std::uint64_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string word;
  while (in >> word) {  // bounded by the file
    if (word == "VmRSS:") {
      std::uint64_t kib = 0;
      in >> kib;
      return kib;
    }
  }
  return 0;
}

TEST(TcpLimits, TwoThousandIdleConnectionsNeedNoThreadEach) {
  constexpr std::size_t kIdle = 2000;
  // Each connection is a socket in this process and one in the memserver (which inherits
  // this process's limit).
  const rlim_t want = kIdle + 512;
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < want) {
    GTEST_SKIP() << "the hard RLIMIT_NOFILE (" << lim.rlim_max << ") is below the " << want
                 << " descriptors 2,000 connections need";
  }
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
    lim.rlim_cur = want;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0) << std::strerror(errno);
  }
  test::MemserverProcess ms;
  ASSERT_TRUE(ms.start("tcp", {"--max-connections", "4096", "--max-connections-per-host", "4096"})
                  .ok());
  const std::size_t threads_idle_server = threads_of(ms.pid());
  const std::uint64_t rss_idle_server = rss_kib(ms.pid());
  std::vector<std::unique_ptr<transport::Connection>> idle;
  idle.reserve(kIdle);
  for (std::size_t i = 0; i < kIdle; ++i) {
    auto c = connect(ms.url());
    ASSERT_TRUE(c.ok()) << "connection " << i << ": " << c.status().to_string();
    idle.push_back(std::move(c).value());
  }
  // A new client still gets in and works; the server holds a session for every connection.
  auto fresh = connect(ms.url());
  ASSERT_TRUE(fresh.ok()) << fresh.status().to_string();
  auto stats = transport::server_stats(**fresh, kTimeout);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->sessions, kIdle + 1);
  auto slab = transport::alloc_slab(**fresh, kChunk, kTimeout);
  ASSERT_TRUE(slab.ok()) << slab.status().to_string();
  std::vector<std::byte> buf(4096, std::byte{0x3c});
  auto mr = (*fresh)->register_memory(buf.data(), buf.size());
  ASSERT_TRUE(mr.ok());
  using transport::OpKind;
  ASSERT_TRUE((*fresh)->execute({OpKind::kWrite, 4096, buf.data(), (*mr)->lkey(), slab->rkey,
                                 slab->addr}, kTimeout).ok());
  std::fill(buf.begin(), buf.end(), std::byte{0});
  ASSERT_TRUE((*fresh)->execute({OpKind::kRead, 4096, buf.data(), (*mr)->lkey(), slab->rkey,
                                 slab->addr}, kTimeout).ok());
  EXPECT_EQ(buf[4095], std::byte{0x3c});

  const std::size_t threads = threads_of(ms.pid());
  EXPECT_LT(threads, 100u);
  // Parked connections drop their buffers after a second.
  std::uint64_t rss = 0;
  const bool small = eventually([&] {
    rss = rss_kib(ms.pid());
    return rss < rss_idle_server + kIdle * kIdleConnectionKiB;
  }, 10s, 100ms);
  std::cout << "[ measure  ] memserver with " << kIdle << " idle TCP connections: " << threads
            << " threads, " << rss << " KiB RSS (with none: " << threads_idle_server
            << " threads, " << rss_idle_server << " KiB)\n";
  if constexpr (!kSanitized) {
    EXPECT_TRUE(small) << rss << " KiB RSS: more than " << kIdleConnectionKiB
                       << " KiB per idle connection";
  }
  // Every idle connection is still open: the memserver still counts them all.
  stats = transport::server_stats(**fresh, kTimeout);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->sessions, kIdle + 1);
}

TEST(TcpLimits, OneSourceAddressCannotTakeEveryConnection) {
  memserver::TcpListenerOptions o;
  o.max_connections = 64;
  o.max_connections_per_host = 4;
  auto server = serve(o);
  ASSERT_NE(server, nullptr);
  const std::uint16_t port = server->tcp_port();
  std::vector<std::unique_ptr<Raw>> host2;
  for (int i = 0; i < 4; ++i) host2.push_back(std::make_unique<Raw>(port, "127.0.0.2"));
  Raw fifth(port, "127.0.0.2");
  EXPECT_ERROR_FRAME(fifth.read_frame(), StatusCode::kResourceExhausted, 0,
                     "too many connections from 127.0.0.2: at most 4 per source address "
                     "(--max-connections-per-host)");
  EXPECT_TRUE(fifth.closed_by_server());
  // 127.0.0.1 is another host: it still gets in, and works.
  auto conn = connect(url_of(*server));
  ASSERT_TRUE(conn.ok()) << conn.status().to_string();
  EXPECT_TRUE(transport::alloc_slab(**conn, kChunk, kTimeout).ok());
  Core& core = server->core();
  EXPECT_EQ(core.refusals(Core::Refusal::kPerHostLimit), 1u);
  EXPECT_EQ(core.refusals(Core::Refusal::kGlobalLimit), 0u);
  EXPECT_EQ(metric(core, "farmem_memserver_tcp_refused_per_host_limit_total"), 1);
  EXPECT_EQ(metric(core, "farmem_memserver_tcp_refused_global_limit_total"), 0);
  // One of the full host's connections leaves: that host may connect again.
  host2.pop_back();
  EXPECT_TRUE(eventually([&] {
    Raw again(port, "127.0.0.2");
    return again.read_frame(100ms).status().code() == StatusCode::kTimedOut;  // no refusal
  }));
}

TEST(TcpLimits, GlobalLimitRefusesTheNextConnectionAndSaysWhichLimit) {
  memserver::TcpListenerOptions o;
  o.max_connections = 3;
  o.max_connections_per_host = 3;
  auto server = serve(o);
  ASSERT_NE(server, nullptr);
  std::vector<std::unique_ptr<transport::Connection>> clients;
  for (int i = 0; i < 3; ++i) {
    auto c = connect(url_of(*server));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    clients.push_back(std::move(c).value());
  }
  Raw extra(server->tcp_port(), "127.0.0.2");
  EXPECT_ERROR_FRAME(extra.read_frame(), StatusCode::kResourceExhausted, 0,
                     "at most 3 (--max-connections)");
  EXPECT_TRUE(extra.closed_by_server());
  EXPECT_EQ(server->core().refusals(Core::Refusal::kGlobalLimit), 1u);
  EXPECT_EQ(metric(server->core(), "farmem_memserver_tcp_refused_global_limit_total"), 1);
  clients.pop_back();
  EXPECT_TRUE(eventually([&] { return connect(url_of(*server)).ok(); }));
}

// The first `n` bytes of a frame reach the server one at a time, `gap` apart, until it
// answers; returns how many it got before answering.
std::size_t dribble(Raw& raw, const void* frame, std::size_t n, std::chrono::milliseconds gap) {
  const auto* p = static_cast<const std::byte*>(frame);
  std::size_t sent = 0;
  // Bounded by n.
  while (sent < n) {
    pollfd pfd{raw.fd(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(gap.count())) != 0) break;  // an answer, or closed
    if (::send(raw.fd(), p + sent, 1, MSG_NOSIGNAL) != 1) break;
    ++sent;
  }
  return sent;
}

TEST(TcpLimits, HalfAHeaderThenSilenceIsClosedWithinTheFrameTimeout) {
  memserver::TcpListenerOptions o;
  o.frame_timeout = 300ms;
  o.idle_timeout = 0ms;
  auto server = serve(o);
  ASSERT_NE(server, nullptr);
  Raw raw(server->tcp_port());
  raw.hello();
  const auto h = proto::make_header(MsgType::kStats, 7, 0);
  const auto start = net::Clock::now();
  raw.send_bytes(&h, 10);
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kTimedOut, 0, "(--frame-timeout)");
  const auto took = net::Clock::now() - start;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 3s);
  EXPECT_TRUE(raw.closed_by_server());

  // Progress does not renew the time: a header dribbled a byte every 100 ms (24 bytes, 2.4 s)
  // is cut off once its first byte is 300 ms old.
  Raw slow(server->tcp_port());
  slow.hello();
  const std::size_t sent = dribble(slow, &h, sizeof h, 100ms);
  EXPECT_LT(sent, sizeof h);
  EXPECT_ERROR_FRAME(slow.read_frame(), StatusCode::kTimedOut, 0, "(--frame-timeout)");
  EXPECT_TRUE(slow.closed_by_server());

  Core& core = server->core();
  EXPECT_EQ(core.refusals(Core::Refusal::kFrameTimeout), 2u);
  EXPECT_EQ(core.refusals(Core::Refusal::kIdleTimeout), 0u);
  EXPECT_EQ(metric(core, "farmem_memserver_tcp_closed_frame_timeout_total"), 2);
  EXPECT_TRUE(eventually([&] { return core.stats().sessions == 0; }));
}

TEST(TcpLimits, StalledWriteBodyIsClosedAndItsSlabsReclaimed) {
  memserver::TcpListenerOptions o;
  o.frame_timeout = 300ms;
  auto server = serve(o);
  ASSERT_NE(server, nullptr);
  Core& core = server->core();
  Raw raw(server->tcp_port());
  raw.hello();
  raw.send_body(MsgType::kAllocSlab, 2, proto::AllocSlab{kChunk});
  auto info = raw.read_frame();
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  auto slab = info->as<proto::SlabInfo>();
  ASSERT_TRUE(slab.ok()) << slab.status().to_string();
  EXPECT_EQ(core.stats().slabs, 1u);
  const std::uint32_t len = 8192;
  const auto h = proto::make_header(MsgType::kWrite, 3, sizeof(proto::DataOp) + len);
  const proto::DataOp op{slab->addr, slab->rkey, len};
  raw.send_bytes(&h, sizeof h);
  raw.send_bytes(&op, sizeof op);
  const std::vector<std::byte> part(1000, std::byte{1});
  raw.send_bytes(part.data(), part.size());
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kTimedOut, 3, "(--frame-timeout)");
  EXPECT_TRUE(raw.closed_by_server());
  EXPECT_TRUE(eventually([&] { return core.stats().slabs == 0; }));
  EXPECT_EQ(core.stats().slabs_reclaimed, 1u);
  EXPECT_EQ(core.refusals(Core::Refusal::kFrameTimeout), 1u);
}

TEST(TcpLimits, IdleConnectionsAreClosedAndTheirSlabsReclaimedButBusyOnesStay) {
  memserver::TcpListenerOptions o;
  o.idle_timeout = 300ms;
  auto server = serve(o);
  ASSERT_NE(server, nullptr);
  Core& core = server->core();
  auto idle = connect(url_of(*server));
  ASSERT_TRUE(idle.ok()) << idle.status().to_string();
  ASSERT_TRUE(transport::alloc_slab(**idle, kChunk, kTimeout).ok());
  Raw raw(server->tcp_port());
  raw.hello();
  auto busy = connect(url_of(*server));
  ASSERT_TRUE(busy.ok()) << busy.status().to_string();
  ASSERT_TRUE(transport::alloc_slab(**busy, kChunk, kTimeout).ok());
  EXPECT_EQ(core.stats().slabs, 2u);
  // The busy client asks something every 50 ms, well within the idle timeout.
  EXPECT_TRUE(eventually([&] {
    EXPECT_TRUE(transport::server_stats(**busy, kTimeout).ok());
    return core.refusals(Core::Refusal::kIdleTimeout) == 2;
  }, 10s, 50ms));
  EXPECT_ERROR_FRAME(raw.read_frame(), StatusCode::kTimedOut, 0, "(--idle-timeout)");
  EXPECT_TRUE(raw.closed_by_server());
  EXPECT_TRUE(eventually([&] { return core.stats().slabs == 1; }));
  EXPECT_EQ(core.stats().slabs_reclaimed, 1u);
  EXPECT_EQ(core.stats().sessions, 1u);
  EXPECT_FALSE(transport::server_stats(**idle, kTimeout).ok());
  EXPECT_TRUE(transport::server_stats(**busy, kTimeout).ok());
  EXPECT_EQ(metric(core, "farmem_memserver_tcp_closed_idle_total"), 2);
  EXPECT_EQ(metric(core, "farmem_memserver_tcp_closed_frame_timeout_total"), 0);
}

TEST(TcpLimits, ABusyClientYieldsItsWorkerToOthers) {
  memserver::TcpListenerOptions o;
  o.workers = 1;
  auto server = serve(o);
  ASSERT_NE(server, nullptr);
  auto busy = connect(url_of(*server));
  auto other = connect(url_of(*server));
  ASSERT_TRUE(busy.ok() && other.ok());
  auto slab = transport::alloc_slab(**busy, kChunk, kTimeout);
  ASSERT_TRUE(slab.ok());
  std::vector<std::byte> buf(4096);
  auto mr = (*busy)->register_memory(buf.data(), buf.size());
  ASSERT_TRUE(mr.ok());
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> busy_ops{0};
  std::atomic<bool> busy_failed{false};
  // Back-to-back reads: the next request always arrives while the last turn could linger.
  std::thread hammer([&] {
    const transport::Op read{transport::OpKind::kRead, 4096, buf.data(), (*mr)->lkey(),
                             slab->rkey, slab->addr};
    while (!stop.load()) {  // bounded by the test, which sets stop
      if (!(*busy)->execute(read, kTimeout).ok()) {
        busy_failed = true;
        return;
      }
      busy_ops.fetch_add(1);
    }
  });
  EXPECT_TRUE(eventually([&] { return busy_ops.load() > 200; }));
  for (int i = 0; i < 20; ++i) {
    const auto st = transport::server_stats(**other, 2s);
    EXPECT_TRUE(st.ok()) << "request " << i << ": " << st.status().to_string();
    if (!st.ok()) break;
  }
  const std::uint64_t before = busy_ops.load();
  EXPECT_TRUE(eventually([&] { return busy_ops.load() > before; }));
  stop = true;
  hammer.join();
  EXPECT_FALSE(busy_failed.load());
}

TEST(TcpLimits, HalfAHelloHoldsNoWorker) {
  memserver::TcpListenerOptions o;
  o.workers = 1;
  auto server = serve(o);
  ASSERT_NE(server, nullptr);
  // Connections that start a HELLO and stall: each would hold the only worker for the
  // handshake timeout (10 s) if its handshake started at the first byte.
  std::vector<std::unique_ptr<Raw>> slow;
  const auto h = proto::make_header(MsgType::kHello, 1, 64);
  for (int i = 0; i < 3; ++i) {
    slow.push_back(std::make_unique<Raw>(server->tcp_port()));
    slow.back()->send_bytes(&h, i == 0 ? 10 : sizeof h);  // half a header; a header, no body
  }
  transport::ConnectOptions co;
  co.token = test::kToken;
  co.connect_timeout = 2s;
  auto conn = transport::connect(url_of(*server), co);
  ASSERT_TRUE(conn.ok()) << conn.status().to_string();
  EXPECT_TRUE(transport::server_stats(**conn, kTimeout).ok());
}

TEST(TcpLimits, AClientThatDoesNotReadItsRepliesHoldsNoWorker) {
  memserver::TcpListenerOptions o;
  o.workers = 1;
  auto server = serve(o);
  ASSERT_NE(server, nullptr);
  Raw hog(server->tcp_port());
  hog.hello();
  hog.send_body(MsgType::kAllocSlab, 2, proto::AllocSlab{kChunk});
  auto info = hog.read_frame();
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  auto slab = info->as<proto::SlabInfo>();
  ASSERT_TRUE(slab.ok()) << slab.status().to_string();
  // 128 MiB of READ replies asked for and none read: far beyond what the sockets buffer.
  constexpr std::uint64_t kReads = 64;
  for (std::uint64_t i = 0; i < kReads; ++i) {
    hog.send_body(MsgType::kRead, 10 + i,
                  proto::DataOp{slab->addr, slab->rkey, static_cast<std::uint32_t>(kChunk)});
  }
  // The only worker is free for others: a new client connects and is answered.
  auto other = connect(url_of(*server));
  ASSERT_TRUE(other.ok()) << other.status().to_string();
  for (int i = 0; i < 5; ++i) {
    const auto st = transport::server_stats(**other, 2s);
    ASSERT_TRUE(st.ok()) << "request " << i << ": " << st.status().to_string();
  }
  // And the hog still gets its replies, in order, once it reads.
  // (TcpLimits.AClientThatEndsWithoutReadingHoldsNoWorker covers the session's end.)
  std::vector<std::byte> payload(kChunk);
  for (std::uint64_t i = 0; i < 3; ++i) {
    proto::FrameHeader h{};
    const auto deadline = net::deadline_after(kTimeout);
    ASSERT_TRUE(net::read_full(hog.fd(), &h, sizeof h, deadline, "hog").ok());
    EXPECT_EQ(static_cast<MsgType>(h.type), MsgType::kReadData);
    EXPECT_EQ(h.req_id, 10 + i);
    ASSERT_EQ(h.length, kChunk);
    ASSERT_TRUE(net::read_full(hog.fd(), payload.data(), h.length, deadline, "hog").ok());
  }
}

TEST(TcpLimits, AClientThatEndsWithoutReadingHoldsNoWorker) {
  memserver::TcpListenerOptions o;
  o.workers = 1;
  auto server = serve(o);
  ASSERT_NE(server, nullptr);
  Raw hog(server->tcp_port());
  hog.hello();
  hog.send_body(MsgType::kAllocSlab, 2, proto::AllocSlab{kChunk});
  auto info = hog.read_frame();
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  auto slab = info->as<proto::SlabInfo>();
  ASSERT_TRUE(slab.ok()) << slab.status().to_string();
  // 128 MiB of READs and then a frame that ends the session, all in one write, none read:
  // the session ends with its replies queued, and its last flush must not wait for them long.
  std::vector<std::byte> burst;
  auto put = [&](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    burst.insert(burst.end(), b, b + n);
  };
  for (std::uint64_t i = 0; i < 64; ++i) {
    const auto h = proto::make_header(MsgType::kRead, 10 + i, sizeof(proto::DataOp));
    const proto::DataOp op{slab->addr, slab->rkey, static_cast<std::uint32_t>(kChunk)};
    put(&h, sizeof h);
    put(&op, sizeof op);
  }
  auto bad = proto::make_header(MsgType::kStats, 99, 0);
  bad.magic ^= 1;
  put(&bad, sizeof bad);
  hog.send_bytes(burst.data(), burst.size());
  const auto start = net::Clock::now();
  auto other = connect(url_of(*server));  // needs the only worker for its handshake
  ASSERT_TRUE(other.ok()) << other.status().to_string();
  EXPECT_TRUE(transport::server_stats(**other, kTimeout).ok());
  EXPECT_LT(net::Clock::now() - start, 4s);
}

}  // namespace
}  // namespace farmem
