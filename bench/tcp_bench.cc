// farmem_bench_tcp: what farmem's tcp transport costs over a plain socket, on loopback.
//
//   plain_rr_4k       a blocking client sends a 16-byte request, a blocking server thread
//                     answers 4096 bytes: the least any TCP request/reply of a page can cost
//   farmem_read_4k    a synchronous 4 KiB execute() READ from a slab of an in-process
//                     memserver (Core + TcpListener on 127.0.0.1:0)
//   farmem_write_4k   the same for a WRITE
//   farmem_batch_read a post() of 32 x 4 KiB READs and one wait()
//   farmem_write_64k  a synchronous 64 KiB WRITE
//   tls_*             the farmem cases again over tls:// (TLS 1.3, certificates made at
//                     start, verified as always), against a second memserver
//   connect_*         a connection's whole life: insecure, with challenge-response, and with
//                     TLS plus challenge-response
//
// Each case runs kRepetitions times; the per-iteration real times are captured by a reporter
// and the medians go into the last stdout line, one JSON object:
//   {"tcp_plain_rr_4k_us": x, "tcp_farmem_read_4k_us": y, "tcp_ratio": y/x, ...}
// with tls_ratio_read_4k = tls_read_4k_us / tcp_farmem_read_4k_us and tls_ratio_write_64k
// likewise for 64 KiB writes: what TLS multiplies a request's time by (1: free).
#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_report.h"
#include "bench/version_flag.h"
#include "memserver/core.h"
#include "memserver/tcp_listener.h"
#include "transport/tcp/socket.h"
#include "transport/tcp/tcp.h"
#include "transport/tcp/tls.h"
#include "test/support/test_certs.h"

namespace {

using namespace farmem;

constexpr std::size_t kPage = 4096;
// The baseline request is as big as farmem's READ request body (a DataOp).
constexpr std::size_t kRequestBytes = sizeof(proto::DataOp);
// Pages per batch in the throughput case: a typical prefetch window.
constexpr int kBatchOps = 32;
// Repetitions per case; the median damps the noise of a shared 2-core VM.
constexpr int kRepetitions = 5;
constexpr double kMinTimeSeconds = 0.3;
constexpr auto kOpTimeout = std::chrono::seconds(5);
// One 2 MiB slab (one memserver chunk) holds every page the benchmark touches.
constexpr std::uint64_t kSlabBytes = 2ull << 20;
constexpr std::uint64_t kCapacityBytes = 64ull << 20;

[[noreturn]] void die(const char* what, const Status& st) {
  std::fprintf(stderr, "farmem_bench_tcp: %s: %s\n", what, st.to_string().c_str());
  std::exit(1);
}

// ---- the plain-socket baseline ----

bool recv_exact(int fd, void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool send_exact(int fd, const void* buf, std::size_t n) {
  auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

/// Answers every 16-byte request on one connection with 4096 bytes, until EOF.
class PlainServer {
 public:
  PlainServer() {
    auto l = net::listen_on("127.0.0.1", 0);
    if (!l.ok()) die("plain listen", l.status());
    port_ = l->port;
    listen_ = std::move(l->fd);
    thread_ = std::thread([this] { serve(); });
  }
  ~PlainServer() { thread_.join(); }  // the client closes first; serve() then sees EOF
  std::uint16_t port() const { return port_; }

 private:
  void serve() {
    auto fd = net::accept_from(listen_.get(), nullptr);
    if (!fd.ok()) die("plain accept", fd.status());
    char req[kRequestBytes];
    std::vector<char> page(kPage, 'x');
    while (recv_exact(fd->get(), req, sizeof req) && send_exact(fd->get(), page.data(), kPage)) {
    }
  }
  net::UniqueFd listen_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

net::UniqueFd plain_connect(std::uint16_t port) {
  auto fd = net::connect_to("127.0.0.1", port, net::deadline_after(kOpTimeout));
  if (!fd.ok()) die("plain connect", fd.status());
  if (Status st = net::set_blocking(fd->get(), true); !st.ok()) die("plain blocking", st);
  return std::move(fd).value();
}

void BM_PlainRR4K(benchmark::State& state, int fd) {
  char req[kRequestBytes] = {};
  std::vector<char> page(kPage);
  for (auto _ : state) {
    if (!send_exact(fd, req, sizeof req) || !recv_exact(fd, page.data(), kPage)) {
      state.SkipWithError("plain socket failed");
      break;
    }
    benchmark::DoNotOptimize(page.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(kPage));
}

// ---- farmem's tcp transport ----

struct FarmemEnv {
  std::unique_ptr<memserver::Core> core;
  std::unique_ptr<memserver::TcpListener> listener;
  std::unique_ptr<transport::Connection> conn;
  std::vector<std::byte> buf = std::vector<std::byte>(kBatchOps * kPage);
  std::unique_ptr<transport::MemoryRegistration> mr;
  proto::SlabInfo slab{};

  transport::Op op(transport::OpKind kind, int page) {
    return transport::Op{kind, kPage, buf.data() + page * kPage, mr->lkey(), slab.rkey,
                         slab.addr + static_cast<std::uint64_t>(page) * kPage};
  }
};

/// Certificates for the TLS cases, in a temporary directory removed at exit.
struct Certs {
  Certs() {
    char tmpl[] = "/tmp/farmem-bench-tls-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) die("mkdtemp", IoError("cannot make a temporary directory"));
    dir = tmpl;
    auto c = test::make_test_certs(dir);
    if (!c.ok()) die("certificates", c.status());
    files = *c;
  }
  ~Certs() { std::filesystem::remove_all(dir); }
  std::string dir;
  test::TestCerts files;
};

memserver::TcpListenerOptions listener_options(const Certs* tls) {
  memserver::TcpListenerOptions lo;
  if (tls != nullptr) {
    auto ctx = net::TlsContext::for_server({tls->files.server_cert, tls->files.server_key, ""});
    if (!ctx.ok()) die("TLS server context", ctx.status());
    lo.tls = *ctx;
  }
  return lo;
}

transport::ConnectOptions client_options(const std::string& token, const Certs* tls) {
  transport::ConnectOptions opts;
  opts.token = token;
  if (tls != nullptr) opts.tls.ca_file = tls->files.ca;
  return opts;
}

std::unique_ptr<FarmemEnv> start_farmem(const Certs* tls = nullptr) {
  auto env = std::make_unique<FarmemEnv>();
  memserver::CoreOptions co;
  co.capacity_bytes = kCapacityBytes;
  co.token = "bench";
  env->core = std::make_unique<memserver::Core>(co);
  auto l = memserver::TcpListener::start(*env->core, "127.0.0.1", 0, listener_options(tls));
  if (!l.ok()) die("memserver listen", l.status());
  env->listener = std::move(l).value();
  const transport::ConnectOptions opts = client_options("bench", tls);
  auto c = transport::connect_tcp(
      {tls != nullptr ? "tls" : "tcp", "127.0.0.1", env->listener->port()}, opts);
  if (!c.ok()) die("connect", c.status());
  env->conn = std::move(c).value();
  auto mr = env->conn->register_memory(env->buf.data(), env->buf.size());
  if (!mr.ok()) die("register", mr.status());
  env->mr = std::move(mr).value();
  auto slab = transport::alloc_slab(*env->conn, kSlabBytes, kOpTimeout);
  if (!slab.ok()) die("alloc slab", slab.status());
  env->slab = *slab;
  return env;
}

void BM_FarmemSync(benchmark::State& state, FarmemEnv* env, transport::OpKind kind,
                   std::uint32_t bytes) {
  transport::Op op = env->op(kind, 0);
  op.length = bytes;
  for (auto _ : state) {
    const Status st = env->conn->execute(op, kOpTimeout);
    if (!st.ok()) {
      state.SkipWithError(st.to_string().c_str());
      break;
    }
    benchmark::DoNotOptimize(env->buf.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
}

void BM_FarmemBatchRead(benchmark::State& state, FarmemEnv* env) {
  std::vector<transport::Op> ops;
  for (int i = 0; i < kBatchOps; ++i) ops.push_back(env->op(transport::OpKind::kRead, i));
  for (auto _ : state) {
    transport::Completion done;
    Status st = env->conn->post(ops, done);
    if (st.ok()) st = env->conn->wait(done, kOpTimeout);
    if (!st.ok()) {
      state.SkipWithError(st.to_string().c_str());
      break;
    }
  }
  state.SetBytesProcessed(state.iterations() * kBatchOps * static_cast<std::int64_t>(kPage));
}

// A connection's whole life, HELLO to BYE: against a memserver without secrets (HELLO only)
// and one with a token (HELLO, then the HMAC-SHA256 challenge-response: one more round trip
// and four MACs).
struct ConnectEnv {
  std::unique_ptr<memserver::Core> core;
  std::unique_ptr<memserver::TcpListener> listener;
  std::string token;
  const Certs* tls = nullptr;
};

std::unique_ptr<ConnectEnv> start_connect_env(const std::string& token,
                                              const Certs* tls = nullptr) {
  auto env = std::make_unique<ConnectEnv>();
  memserver::CoreOptions co;
  co.capacity_bytes = kCapacityBytes;
  co.token = token;
  env->token = token;
  env->tls = tls;
  env->core = std::make_unique<memserver::Core>(co);
  auto l = memserver::TcpListener::start(*env->core, "127.0.0.1", 0, listener_options(tls));
  if (!l.ok()) die("memserver listen", l.status());
  env->listener = std::move(l).value();
  return env;
}

void BM_Connect(benchmark::State& state, ConnectEnv* env) {
  const transport::ConnectOptions opts = client_options(env->token, env->tls);
  const std::string scheme = env->tls != nullptr ? "tls" : "tcp";
  for (auto _ : state) {
    auto c = transport::connect_tcp({scheme, "127.0.0.1", env->listener->port()}, opts);
    if (!c.ok()) {
      state.SkipWithError(c.status().to_string().c_str());
      break;
    }
  }
}

// ---- reporting ----


void configure(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Unit(benchmark::kMicrosecond)->Repetitions(kRepetitions)
      ->MinTime(kMinTimeSeconds);
}

}  // namespace

int main(int argc, char** argv) {
  farmem::bench::handle_version_flag(argc, argv, "farmem_bench_tcp");
  benchmark::Initialize(&argc, argv);
  PlainServer plain;
  const net::UniqueFd plain_fd = plain_connect(plain.port());
  auto env = start_farmem();
  const Certs certs;
  auto tls_env = start_farmem(&certs);
  using transport::OpKind;

  configure(benchmark::RegisterBenchmark("plain_rr_4k", BM_PlainRR4K, plain_fd.get()));
  configure(benchmark::RegisterBenchmark("farmem_read_4k", BM_FarmemSync, env.get(),
                                         OpKind::kRead, kPage));
  configure(benchmark::RegisterBenchmark("farmem_write_4k", BM_FarmemSync, env.get(),
                                         OpKind::kWrite, kPage));
  configure(benchmark::RegisterBenchmark("farmem_write_64k", BM_FarmemSync, env.get(),
                                         OpKind::kWrite, 16 * kPage));
  configure(benchmark::RegisterBenchmark("farmem_batch_read_32x4k", BM_FarmemBatchRead,
                                         env.get()));
  configure(benchmark::RegisterBenchmark("tls_read_4k", BM_FarmemSync, tls_env.get(),
                                         OpKind::kRead, kPage));
  configure(benchmark::RegisterBenchmark("tls_write_64k", BM_FarmemSync, tls_env.get(),
                                         OpKind::kWrite, 16 * kPage));
  configure(benchmark::RegisterBenchmark("tls_batch_read_32x4k", BM_FarmemBatchRead,
                                         tls_env.get()));
  const auto open_env = start_connect_env("");
  const auto auth_env = start_connect_env("bench-secret");
  const auto tls_connect_env = start_connect_env("bench-secret", &certs);
  configure(benchmark::RegisterBenchmark("connect_insecure", BM_Connect, open_env.get()));
  configure(benchmark::RegisterBenchmark("connect_auth", BM_Connect, auth_env.get()));
  configure(benchmark::RegisterBenchmark("connect_tls_auth", BM_Connect, tls_connect_env.get()));
  farmem::bench::CapturingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  const double plain_us = reporter.median_us("plain_rr_4k");
  const double read_us = reporter.median_us("farmem_read_4k");
  const double write_us = reporter.median_us("farmem_write_4k");
  const double batch_us = reporter.median_us("farmem_batch_read_32x4k");
  const double gib_s = batch_us > 0 ? kBatchOps * kPage / (batch_us * 1e-6) / (1u << 30) : -1;
  const double connect_open_ms = reporter.median_us("connect_insecure") / 1000;
  const double connect_auth_ms = reporter.median_us("connect_auth") / 1000;
  const double connect_tls_ms = reporter.median_us("connect_tls_auth") / 1000;
  const double write64_us = reporter.median_us("farmem_write_64k");
  const double tls_read_us = reporter.median_us("tls_read_4k");
  const double tls_write64_us = reporter.median_us("tls_write_64k");
  const double tls_batch_us = reporter.median_us("tls_batch_read_32x4k");
  const auto ratio = [](double a, double b) { return a > 0 && b > 0 ? a / b : -1; };
  std::printf(
      "{\"tcp_plain_rr_4k_us\": %.3f, \"tcp_farmem_read_4k_us\": %.3f, \"tcp_ratio\": %.3f, "
      "\"tcp_farmem_write_4k_us\": %.3f, \"tcp_farmem_batch_read_32x4k_us\": %.3f, "
      "\"tcp_farmem_batch_read_gib_s\": %.3f, \"tcp_farmem_write_64k_us\": %.3f, "
      "\"tls_read_4k_us\": %.3f, \"tls_write_64k_us\": %.3f, "
      "\"tls_batch_read_32x4k_us\": %.3f, \"tls_ratio_read_4k\": %.3f, "
      "\"tls_ratio_write_64k\": %.3f, \"tls_ratio_batch_read\": %.3f, "
      "\"connect_ms_insecure\": %.3f, \"connect_ms_auth\": %.3f, \"connect_ms_tls_auth\": %.3f}\n",
      plain_us, read_us, ratio(read_us, plain_us), write_us, batch_us, gib_s, write64_us,
      tls_read_us, tls_write64_us, tls_batch_us, ratio(tls_read_us, read_us),
      ratio(tls_write64_us, write64_us), ratio(tls_batch_us, batch_us), connect_open_ms,
      connect_auth_ms, connect_tls_ms);
  return 0;
}
