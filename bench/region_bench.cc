// farmem_bench_region: what a mapped region's page fault costs over a bare userfaultfd loop.
//
//   bare_uffd_fault         a minimal handler thread (poll, read one uffd_msg, UFFDIO_COPY of a
//                           constant 4 KiB page): the least a userfaultfd fault can cost
//   region_fault            first read of a fresh page of a Region on the in-process ("local")
//                           transport, prefetch off, budget larger than the region (no eviction):
//                           uffd read + budget charge + far READ into staging + UFFDIO_COPY(WP)
//   region_fault_evict      the same with a 256-page budget: every fault also evicts (clean
//                           pages, so MADV_DONTNEED and no write-back), in batches of 8
//   region_touch_prefetch   per-page cost of a sequential read scan with prefetch on (most
//                           pages then arrive without a fault)
//
//   bare_uffd_spin_fault    the same handler busy-polling with non-blocking read(2): what
//                           spinning buys on this machine, for reading region_fault
//   bare_sigbus_fault       the least a faulting-thread fault can cost: UFFD_FEATURE_SIGBUS, a
//                           SIGBUS handler doing UFFDIO_COPY of a constant page
//   region_fault_sigbus     region_fault in FaultMode::kFaultingThread
//   region_touch_prefetch_sigbus  region_touch_prefetch in FaultMode::kFaultingThread
//   region_seq_write/read   one pass over a 16 MiB region with a 4 MiB budget (prefetch on),
//                           storing / loading every 8-byte word; reported as a ratio
//   region_scan/vector_scan one read pass summing 16 MiB of uint64 through a region (Runtime::map)
//                           and through a far_vector, under the same 4 MiB runtime budget
//
// Every case touches pages in the same order (0, 1, 2, ... of a 64 MiB mapping, which is
// emptied with MADV_DONTNEED/Advice::kDontNeed, untimed, when used up). Cases are
// interleaved kRounds times so that load from other processes on a shared host hits all of
// them alike; the medians go into the last stdout line, one JSON object:
//   {"region_fault_us": a, "bare_uffd_fault_us": b, "region_fault_ratio": a/b, ...,
//    "region_fault_vs_sigbus", "region_fault_vs_poll_thread", "region_write_vs_read",
//    "region_scan_vs_vector"}
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>

#include "bench/bench_report.h"
#include "bench/version_flag.h"
#include "farmem/far_vector.h"
#include "paging/budget.h"
#include "memserver/core.h"
#include "pool/far_pool.h"
#include "pool/io_service.h"
#include "transport/connect.h"
#include "farmem/region.h"
#include "farmem/runtime.h"
#include "region/region.h"

namespace {

using namespace farmem;

constexpr std::size_t kPage = 4096;
// 64 MiB: 16384 fresh pages between untimed resets, so a reset is rare.
constexpr std::size_t kMappingBytes = 64u << 20;
constexpr std::size_t kPages = kMappingBytes / kPage;
// Small enough that every fault evicts, big enough for the eviction batch (8) to matter.
constexpr std::size_t kEvictBudgetPages = 256;
// Streams and scans: 16 MiB through a 4 MiB budget, so every pass evicts (and writes back).
constexpr std::size_t kStreamBytes = 16u << 20;
constexpr std::size_t kStreamBudget = kStreamBytes / 4;
// Rounds of interleaved cases; the median damps the noise of a shared 2-core VM.
constexpr int kRounds = 5;
constexpr double kMinTimeSeconds = 0.3;
// The bare handler wakes this often to see a stop request.
constexpr int kBarePollMs = 50;

[[noreturn]] void die(const char* what, const std::string& why) {
  std::fprintf(stderr, "farmem_bench_region: %s: %s\n", what, why.c_str());
  std::exit(1);
}

/// Reads one byte of page `p`: the first touch faults. The load goes into a local first:
/// DoNotOptimize(lvalue) is an in/out asm operand, which may store the byte back, and a store
/// is a second (write-protect) fault in a region.
inline void touch(std::byte* base, std::size_t p) {
  std::byte v = *reinterpret_cast<volatile std::byte*>(base + p * kPage);
  benchmark::DoNotOptimize(v);
}

// ---- the bare userfaultfd baseline ----

class BareUffd {
 public:
  /// `spin`: the handler busy-polls with non-blocking read(2) instead of sleeping in poll().
  explicit BareUffd(bool spin = false) : spin_(spin) {
    fd_ = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (fd_ < 0) die("userfaultfd", std::strerror(errno));
    uffdio_api api{UFFD_API, 0, 0};
    if (::ioctl(fd_, UFFDIO_API, &api) != 0) die("UFFDIO_API", std::strerror(errno));
    void* p = ::mmap(nullptr, kMappingBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("mmap", std::strerror(errno));
    base_ = static_cast<std::byte*>(p);
    ::madvise(base_, kMappingBytes, MADV_NOHUGEPAGE);  // as regions do
    uffdio_register reg{};
    reg.range = {reinterpret_cast<std::uintptr_t>(base_), kMappingBytes};
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) die("UFFDIO_REGISTER", std::strerror(errno));
    source_ = std::vector<std::byte>(kPage, std::byte{0x5A});
    handler_ = std::thread([this] { run(); });
  }
  ~BareUffd() {
    stop_.store(true);
    handler_.join();
    ::munmap(base_, kMappingBytes);
    ::close(fd_);
  }
  std::byte* base() const { return base_; }
  void reset() { ::madvise(base_, kMappingBytes, MADV_DONTNEED); }

 private:
  void run() {
    while (!stop_.load(std::memory_order_relaxed)) {
      pollfd p{fd_, POLLIN, 0};
      if (!spin_ && ::poll(&p, 1, kBarePollMs) <= 0) continue;
      uffd_msg m;
      if (::read(fd_, &m, sizeof m) != static_cast<ssize_t>(sizeof m)) continue;
      if (m.event != UFFD_EVENT_PAGEFAULT) continue;
      uffdio_copy c{};
      c.dst = m.arg.pagefault.address & ~static_cast<std::uint64_t>(kPage - 1);
      c.src = reinterpret_cast<std::uintptr_t>(source_.data());
      c.len = kPage;
      ::ioctl(fd_, UFFDIO_COPY, &c);
    }
  }

  bool spin_ = false;
  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::vector<std::byte> source_;
  std::atomic<bool> stop_{false};
  std::thread handler_;
};

// Touches fresh pages of a bare baseline's mapping (base(), reset() empties it, untimed).
template <typename Bare>
void bare_fault_loop(benchmark::State& state, Bare& bare) {
  std::size_t p = 0;
  for (auto _ : state) {
    if (p == kPages) {
      state.PauseTiming();
      bare.reset();
      p = 0;
      state.ResumeTiming();
    }
    touch(bare.base(), p++);
  }
}

void BM_BareUffdFault(benchmark::State& state, bool spin) {
  BareUffd bare(spin);
  bare_fault_loop(state, bare);
}

// ---- the bare faulting-thread baseline: UFFD_FEATURE_SIGBUS + UFFDIO_COPY in the handler ----

int g_sigbus_uffd = -1;
const std::byte* g_sigbus_source = nullptr;

void bare_sigbus_handler(int, siginfo_t* info, void*) {
  uffdio_copy c{};
  c.dst = reinterpret_cast<std::uintptr_t>(info->si_addr) & ~static_cast<std::uint64_t>(kPage - 1);
  c.src = reinterpret_cast<std::uintptr_t>(g_sigbus_source);
  c.len = kPage;
  ::ioctl(g_sigbus_uffd, UFFDIO_COPY, &c);
}

class BareSigbus {
 public:
  BareSigbus() {
    fd_ = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (fd_ < 0) die("userfaultfd", std::strerror(errno));
    uffdio_api api{UFFD_API, UFFD_FEATURE_SIGBUS, 0};
    if (::ioctl(fd_, UFFDIO_API, &api) != 0) die("UFFDIO_API(SIGBUS)", std::strerror(errno));
    void* p = ::mmap(nullptr, kMappingBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("mmap", std::strerror(errno));
    base_ = static_cast<std::byte*>(p);
    ::madvise(base_, kMappingBytes, MADV_NOHUGEPAGE);
    uffdio_register reg{};
    reg.range = {reinterpret_cast<std::uintptr_t>(base_), kMappingBytes};
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) die("UFFDIO_REGISTER", std::strerror(errno));
    source_ = std::vector<std::byte>(kPage, std::byte{0x5A});
    g_sigbus_uffd = fd_;
    g_sigbus_source = source_.data();
    struct sigaction sa {};
    sa.sa_sigaction = &bare_sigbus_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &previous_);  // restored after: regions install their own
  }
  ~BareSigbus() {
    ::sigaction(SIGBUS, &previous_, nullptr);
    ::munmap(base_, kMappingBytes);
    ::close(fd_);
  }
  std::byte* base() const { return base_; }
  void reset() { ::madvise(base_, kMappingBytes, MADV_DONTNEED); }

 private:
  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::vector<std::byte> source_;
  struct sigaction previous_ {};
};

void BM_BareSigbusFault(benchmark::State& state) {
  BareSigbus bare;
  bare_fault_loop(state, bare);
}

// ---- regions ----

// Regions are built the way the composition root builds them: an in-process memserver, a
// pool over one connection to it, and the far I/O service, injected into each region with a
// budget of the case's own.
struct RegionEnv {
  std::shared_ptr<memserver::Core> core;
  std::unique_ptr<pool::FarPool> pool;
  std::unique_ptr<pool::IoService> io;
  FarRange far;
};

RegionEnv& region_env() {
  static RegionEnv env = [] {
    RegionEnv e;
    memserver::CoreOptions co;
    co.capacity_bytes = 2 * kMappingBytes;
    e.core = std::make_shared<memserver::Core>(co);
    auto conn = transport::connect("local", transport::ConnectOptions{}, e.core);
    if (!conn.ok()) die("connect", conn.status().to_string());
    std::vector<std::unique_ptr<transport::Connection>> conns;
    conns.push_back(std::move(conn).value());
    pool::PoolOptions po;
    po.slab_bytes = kMappingBytes;
    e.pool = std::make_unique<pool::FarPool>(std::move(conns), std::vector<std::string>{"local"}, po);
    e.io = std::make_unique<pool::IoService>(*e.pool, std::chrono::seconds(10));
    auto far = e.pool->allocate(kMappingBytes);
    if (!far.ok()) die("allocate", far.status().to_string());
    e.far = *far;
    return e;
  }();
  return env;
}

void BM_RegionFault(benchmark::State& state, std::size_t budget_pages, bool prefetch,
                    FaultMode mode) {
  RegionEnv& env = region_env();
  paging::Budget budget(budget_pages * kPage);
  region::RegionOptions ro;
  ro.prefetch = prefetch;
  ro.fault_mode = mode;
  auto r = region::make_region(*env.io, budget, env.far, ro);
  if (!r.ok()) die("make_region", r.status().to_string());
  Region& region = **r;
  std::size_t p = 0;
  for (auto _ : state) {
    if (p == kPages) {
      state.PauseTiming();
      if (Status st = region.advise(0, kMappingBytes, Advice::kDontNeed); !st.ok()) {
        die("DontNeed", st.to_string());
      }
      p = 0;
      state.ResumeTiming();
    }
    touch(region.data(), p++);
  }
  const CacheStats s = region.stats();
  state.counters["faults"] = static_cast<double>(s.misses);
  state.counters["evictions"] = static_cast<double>(s.evictions);
  state.counters["fault_p50_ns"] = static_cast<double>(s.fault_latency.percentile_ns(50));
}

/// One pass over a 16 MiB region (own 4 MiB budget) per iteration, storing or loading every
/// word. Write and read streams use disjoint far ranges, so neither evicts the other's pages.
void BM_RegionStream(benchmark::State& state, bool write) {
  RegionEnv& env = region_env();
  paging::Budget budget(kStreamBudget);
  const FarRange range{env.far.addr + (write ? 0 : kStreamBytes), kStreamBytes};
  auto r = region::make_region(*env.io, budget, range);
  if (!r.ok()) die("make_region", r.status().to_string());
  auto* words = reinterpret_cast<std::uint64_t*>((*r)->data());
  const std::size_t n = kStreamBytes / sizeof(std::uint64_t);
  std::uint64_t round = 0;
  for (auto _ : state) {
    ++round;
    if (write) {
      for (std::size_t i = 0; i < n; ++i) words[i] = round + i;
    } else {
      std::uint64_t sum = 0;
      for (std::size_t i = 0; i < n; ++i) sum += reinterpret_cast<volatile std::uint64_t*>(words)[i];
      benchmark::DoNotOptimize(sum);
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kStreamBytes));
}

/// A runtime whose page cache and regions share a 4 MiB budget, with a 16 MiB far_vector and a
/// 16 MiB region to scan.
struct ScanEnv {
  std::unique_ptr<Runtime> rt;
  std::unique_ptr<far_vector<std::uint64_t>> vec;
  std::unique_ptr<Region> region;
};

ScanEnv& scan_env() {
  static ScanEnv env = [] {
    RuntimeOptions o;
    o.servers = {"local"};
    o.local_buffer_bytes = 1u << 20;
    o.slab_bytes = kMappingBytes;
    o.local_server_capacity = 2 * kMappingBytes;
    o.cache_budget_bytes = kStreamBudget;
    auto rt = Runtime::open(o);
    if (!rt.ok()) die("Runtime::open (scan)", rt.status().to_string());
    ScanEnv e;
    e.rt = std::move(rt).value();
    e.vec = std::make_unique<far_vector<std::uint64_t>>(*e.rt);
    if (Status st = e.vec->resize(kStreamBytes / sizeof(std::uint64_t)); !st.ok()) {
      die("far_vector resize", st.to_string());
    }
    auto region = e.rt->map(kStreamBytes);
    if (!region.ok()) die("map (scan)", region.status().to_string());
    e.region = std::move(region).value();
    return e;
  }();
  return env;
}

void BM_RegionScan(benchmark::State& state) {
  ScanEnv& env = scan_env();
  const auto* words = reinterpret_cast<const volatile std::uint64_t*>(env.region->data());
  const std::size_t n = kStreamBytes / sizeof(std::uint64_t);
  for (auto _ : state) {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < n; ++i) sum += words[i];
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kStreamBytes));
  const CacheStats s = env.region->stats();
  state.counters["faults"] = static_cast<double>(s.misses);
  state.counters["prefetched"] = static_cast<double>(s.prefetches_issued);
  state.counters["fault_p50_ns"] = static_cast<double>(s.fault_latency.percentile_ns(50));
}

void BM_VectorScan(benchmark::State& state) {
  ScanEnv& env = scan_env();
  for (auto _ : state) {
    std::uint64_t sum = 0;
    if (Status st = env.vec->for_each([&](std::size_t, const std::uint64_t& v) { sum += v; });
        !st.ok()) {
      die("far_vector scan", st.to_string());
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kStreamBytes));
}

// ---- reporting ----


void configure(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Unit(benchmark::kMicrosecond)->MinTime(kMinTimeSeconds);
}

}  // namespace

int main(int argc, char** argv) {
  farmem::bench::handle_version_flag(argc, argv, "farmem_bench_region");
  benchmark::Initialize(&argc, argv);
  constexpr auto kHandler = FaultMode::kHandlerThread;
  constexpr auto kFaulting = FaultMode::kFaultingThread;
  for (int round = 0; round < kRounds; ++round) {  // interleaved: shared-host noise hits all
    configure(benchmark::RegisterBenchmark("bare_uffd_fault", BM_BareUffdFault, false));
    configure(benchmark::RegisterBenchmark("bare_uffd_spin_fault", BM_BareUffdFault, true));
    configure(benchmark::RegisterBenchmark("bare_sigbus_fault", BM_BareSigbusFault));
    configure(benchmark::RegisterBenchmark("region_fault", BM_RegionFault, 2 * kPages, false,
                                           kHandler));
    configure(benchmark::RegisterBenchmark("region_fault_sigbus", BM_RegionFault, 2 * kPages,
                                           false, kFaulting));
    configure(benchmark::RegisterBenchmark("region_fault_evict", BM_RegionFault,
                                           kEvictBudgetPages, false, kHandler));
    configure(benchmark::RegisterBenchmark("region_touch_prefetch", BM_RegionFault, 2 * kPages,
                                           true, kHandler));
    configure(benchmark::RegisterBenchmark("region_touch_prefetch_sigbus", BM_RegionFault,
                                           2 * kPages, true, kFaulting));
    configure(benchmark::RegisterBenchmark("region_seq_write", BM_RegionStream, true));
    configure(benchmark::RegisterBenchmark("region_seq_read", BM_RegionStream, false));
    configure(benchmark::RegisterBenchmark("region_scan", BM_RegionScan));
    configure(benchmark::RegisterBenchmark("vector_scan", BM_VectorScan));
  }
  (void)region_env();  // set up before timing: the first case must not pay for it
  (void)scan_env();
  farmem::bench::CapturingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  auto ratio = [](double a, double b) { return a > 0 && b > 0 ? a / b : -1.0; };
  const double bare_us = reporter.median_us("bare_uffd_fault");
  const double bare_sigbus_us = reporter.median_us("bare_sigbus_fault");
  const double bare_spin_us = reporter.median_us("bare_uffd_spin_fault");
  const double region_us = reporter.median_us("region_fault");
  const double sigbus_us = reporter.median_us("region_fault_sigbus");
  const double evict_us = reporter.median_us("region_fault_evict");
  const double prefetch_us = reporter.median_us("region_touch_prefetch");
  const double prefetch_sigbus_us = reporter.median_us("region_touch_prefetch_sigbus");
  const double write_us = reporter.median_us("region_seq_write");
  const double read_us = reporter.median_us("region_seq_read");
  const double scan_us = reporter.median_us("region_scan");
  const double vector_us = reporter.median_us("vector_scan");
  std::printf(
      "{\"region_fault_us\": %.3f, \"bare_uffd_fault_us\": %.3f, \"region_fault_ratio\": %.3f, "
      "\"region_fault_evict_us\": %.3f, \"region_fault_evict_ratio\": %.3f, "
      "\"region_touch_prefetch_us\": %.3f, \"region_touch_prefetch_sigbus_us\": %.3f, "
      "\"region_fault_sigbus_us\": %.3f, "
      "\"bare_sigbus_fault_us\": %.3f, \"bare_uffd_spin_fault_us\": %.3f, "
      "\"region_seq_write_mb_s\": %.1f, "
      "\"region_seq_read_mb_s\": %.1f, \"region_scan_mb_s\": %.1f, \"vector_scan_mb_s\": %.1f, "
      "\"region_fault_vs_sigbus\": %.3f, \"region_fault_vs_poll_thread\": %.3f, "
      "\"region_write_vs_read\": %.3f, \"region_scan_vs_vector\": %.3f}\n",
      region_us, bare_us, ratio(region_us, bare_us), evict_us, ratio(evict_us, bare_us),
      prefetch_us, prefetch_sigbus_us, sigbus_us, bare_sigbus_us, bare_spin_us, ratio(kStreamBytes, write_us),
      ratio(kStreamBytes, read_us), ratio(kStreamBytes, scan_us), ratio(kStreamBytes, vector_us),
      ratio(sigbus_us, bare_sigbus_us), ratio(region_us, bare_us), ratio(read_us, write_us),
      ratio(vector_us, scan_us));
  scan_env().region.reset();
  scan_env().vec.reset();
  scan_env().rt.reset();
  region_env().io.reset();  // registrations go before the connections that made them
  region_env().pool.reset();
  return 0;
}
