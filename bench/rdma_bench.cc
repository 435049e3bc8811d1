// farmem_bench_rdma: farmem's 4 KiB read latency and batched 4 KiB read bandwidth through the
// public Runtime API against a real memserver, measured the way perftest's ib_read_lat and
// ib_read_bw measure theirs, so ci/bench-rxe can print ratios from one VM boot; plus a far_ptr
// miss, far_vector scans, a region page fault and a region scan over the same transport.
// Last stdout line: one JSON object.
#include <farmem/farmem.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kPage = 4096;
// ib_read_bw keeps 128 READs in flight by default (--tx-depth); farmem gets the same depth,
// as kBatches batches of kBatchOps ops each.
constexpr int kBatches = 8;
constexpr int kBatchOps = 16;
// Keeps measured loads from being optimised away.
volatile std::uint64_t benchmark_sink = 0;

int fail(const char* what, const farmem::Status& st) {
  std::fprintf(stderr, "farmem_bench_rdma: %s: %s\n", what, st.to_string().c_str());
  return 1;
}

farmem::RuntimeOptions cache_options(const std::string& server, const std::string& token,
                                     std::uint64_t budget, bool prefetch) {
  farmem::RuntimeOptions o;
  o.servers = {server};
  o.auth_token = token;
  o.local_buffer_bytes = 1u << 20;
  o.cache_budget_bytes = budget;
  o.prefetch = prefetch;
  return o;
}

// A far_ptr miss that fetches one 4 KiB page, with the cache full of clean pages so frames
// come from evicting clean victims. Median over the misses of `iters` random derefs.
farmem::Result<double> fault_latency(const std::string& server, const std::string& token,
                                     int iters) {
  constexpr std::uint64_t kBudget = 4u << 20;
  auto rt = farmem::Runtime::open(cache_options(server, token, kBudget, false));
  if (!rt.ok()) return rt.status();
  farmem::far_vector<std::uint64_t> v(**rt);
  const std::size_t per_page = kPage / sizeof(std::uint64_t);
  const std::size_t pages = 16 * (kBudget / kPage);  // 16x the budget: nearly all misses
  if (auto st = v.resize(pages * per_page); !st.ok()) return st;
  if (auto st = (*rt)->flush(); !st.ok()) return st;  // every cached page clean
  std::vector<double> lat;
  std::mt19937_64 rng(7);
  for (int i = 0; i < iters; ++i) {
    const std::size_t page = rng() % pages;
    const auto misses = (*rt)->cache_stats().misses;
    const auto t0 = Clock::now();
    {
      farmem::DerefScope s(**rt);
      benchmark_sink = v.get(page * per_page, s);
    }
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if ((*rt)->cache_stats().misses == misses + 1) lat.push_back(us);
  }
  if (lat.empty()) return farmem::Internal("no misses measured");
  std::sort(lat.begin(), lat.end());
  return lat[lat.size() / 2];
}

// Sequential scan of a far_vector four times the cache budget, cold, in MiB/s.
farmem::Result<double> scan_mbs(const std::string& server, const std::string& token,
                                bool prefetch) {
  constexpr std::uint64_t kBudget = 8u << 20;
  auto rt = farmem::Runtime::open(cache_options(server, token, kBudget, prefetch));
  if (!rt.ok()) return rt.status();
  farmem::far_vector<std::uint64_t> v(**rt);
  const std::size_t n = 4 * kBudget / sizeof(std::uint64_t);
  if (auto st = v.resize(n); !st.ok()) return st;
  if (auto st = (*rt)->advise(v.addr_of(0), n * sizeof(std::uint64_t), farmem::Advice::kDontNeed);
      !st.ok()) {
    return st;
  }
  std::uint64_t sum = 0;
  const auto t0 = Clock::now();
  if (auto st = v.for_each([&](std::size_t, const std::uint64_t& x) { sum += x; }); !st.ok()) {
    return st;
  }
  const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
  benchmark_sink = sum;
  return static_cast<double>(n * sizeof(std::uint64_t)) / sec / 1048576.0;
}

// A random region page fault (prefetch off) in fault mode `mode`: plain loads of untouched
// pages of a mapping 16x the budget. Median over the faults of `iters` touches.
farmem::Result<double> region_fault_latency(const std::string& server, const std::string& token,
                                            int iters,
                                            farmem::FaultMode mode = farmem::FaultMode::kHandlerThread) {
  constexpr std::uint64_t kBudget = 4u << 20;
  auto o = cache_options(server, token, kBudget, false);
  auto rt = farmem::Runtime::open(o);
  if (!rt.ok()) return rt.status();
  const std::uint64_t pages = 16 * (kBudget / kPage);
  farmem::RegionOptions ro;
  ro.fault_mode = mode;
  auto region = (*rt)->map(pages * kPage, ro);
  if (!region.ok()) return region.status();
  const auto* base = reinterpret_cast<const volatile std::uint64_t*>((*region)->data());
  std::vector<double> lat;
  std::mt19937_64 rng(11);
  for (int i = 0; i < iters; ++i) {
    const std::uint64_t page = rng() % pages;
    const auto faults = (*region)->stats().misses;
    const auto t0 = Clock::now();
    benchmark_sink = base[page * (kPage / sizeof(std::uint64_t))];
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if ((*region)->stats().misses == faults + 1) lat.push_back(us);
  }
  if (lat.empty()) return farmem::Internal("no region faults measured");
  std::sort(lat.begin(), lat.end());
  return lat[lat.size() / 2];
}

// Sequential read of every word of a region four times the budget, cold, in MiB/s (the
// region counterpart of scan_mbs; prefetch on).
farmem::Result<double> region_scan_mbs(const std::string& server, const std::string& token) {
  constexpr std::uint64_t kBudget = 8u << 20;
  auto rt = farmem::Runtime::open(cache_options(server, token, kBudget, true));
  if (!rt.ok()) return rt.status();
  const std::uint64_t bytes = 4 * kBudget;
  auto region = (*rt)->map(bytes);
  if (!region.ok()) return region.status();
  const auto* words = reinterpret_cast<const std::uint64_t*>((*region)->data());
  std::uint64_t sum = 0;
  const auto t0 = Clock::now();
  for (std::uint64_t i = 0; i < bytes / sizeof(std::uint64_t); ++i) sum += words[i];
  const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
  benchmark_sink = sum;
  return static_cast<double>(bytes) / sec / 1048576.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"farmem_bench_rdma: 4 KiB read latency and bandwidth through the Runtime API"};
  std::string server = "local", token, token_file;
  int lat_iters = 10000, bw_iters = 50000, warmup = 1000, fault_iters = 3000;
  bool skip_cache = false, region_fault_only = false;
  std::uint64_t far_bytes = 64u << 20;
  app.add_option("--server", server, "rdma://host:port, tcp://host:port or local")
      ->capture_default_str();
  auto* t = app.add_option("--token", token, "Auth token");
  app.add_option("--token-file", token_file, "Read the auth token from FILE")
      ->excludes(t)->check(CLI::ExistingFile);
  app.add_option("--lat-iters", lat_iters, "Timed synchronous reads")->capture_default_str();
  app.add_option("--bw-iters", bw_iters, "Reads in the bandwidth run")->capture_default_str();
  app.add_option("--fault-iters", fault_iters, "Random far_ptr derefs for the fault latency")
      ->capture_default_str();
  app.add_flag("--no-cache", skip_cache, "Skip the page-cache figures (fault latency, scans)");
  app.add_flag("--region-fault-only", region_fault_only,
               "Measure only the region fault latency (ci/bench-rxe --contended runs this "
               "under a CPU hog)");
  app.add_option("--far", far_bytes, "Far memory the reads spread over")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.set_version_flag("--version", std::string("farmem_bench_rdma ") + farmem::version());
  CLI11_PARSE(app, argc, argv);
  if (!token_file.empty()) std::getline(std::ifstream(token_file), token);
  if (region_fault_only) {
    auto rfault = region_fault_latency(server, token, fault_iters);
    if (!rfault.ok()) return fail("region fault latency", rfault.status());
    nlohmann::json only;
    only["farmem_region_fault_lat_4k_us"] = *rfault;
    std::printf("%s\n", only.dump().c_str());
    return 0;
  }

  farmem::RuntimeOptions opts;
  opts.servers = {server};
  opts.auth_token = token;
  opts.local_buffer_bytes = kBatches * kBatchOps * kPage;
  opts.slab_bytes = far_bytes;
  auto rt = farmem::Runtime::open(opts);
  if (!rt.ok()) return fail("open", rt.status());
  auto far = (*rt)->allocate(far_bytes);
  if (!far.ok()) return fail("allocate", far.status());
  auto buf = (*rt)->local_buffer();
  const std::uint64_t pages = far_bytes / kPage;

  // Latency: one outstanding read at a time, like ib_read_lat; report the median
  // (perftest's t_typical) and the mean.
  std::vector<double> lat;
  lat.reserve(lat_iters);
  std::mt19937_64 rng(1);
  for (int i = 0; i < warmup + lat_iters; ++i) {
    const auto off = rng() % pages * kPage;
    const auto t0 = Clock::now();
    if (auto st = (*rt)->read(far->addr + off, buf.first(kPage)); !st.ok()) return fail("read", st);
    if (i >= warmup) lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(lat.begin(), lat.end());
  double mean = 0;
  for (double v : lat) mean += v;
  mean /= lat.size();

  // Bandwidth: kBatches batches in flight, each re-submitted as soon as it completes.
  std::vector<farmem::IoBatch> batches(kBatches);
  auto fill = [&](int b) {
    batches[b].clear();
    for (int k = 0; k < kBatchOps; ++k) {
      const auto off = rng() % pages * kPage;
      batches[b].read(far->addr + off, buf.subspan((b * kBatchOps + k) * kPage, kPage));
    }
  };
  const int rounds = std::max(1, bw_iters / (kBatches * kBatchOps));
  const auto t0 = Clock::now();
  for (int b = 0; b < kBatches; ++b) {
    fill(b);
    if (auto st = (*rt)->submit(batches[b]); !st.ok()) return fail("submit", st);
  }
  for (int r = 0; r < rounds; ++r) {
    for (int b = 0; b < kBatches; ++b) {
      if (auto st = (*rt)->wait(batches[b]); !st.ok()) return fail("wait", st);
      if (r + 1 == rounds) continue;
      fill(b);
      if (auto st = (*rt)->submit(batches[b]); !st.ok()) return fail("submit", st);
    }
  }
  const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
  const double bytes = static_cast<double>(rounds) * kBatches * kBatchOps * kPage;

  nlohmann::json out;
  out["transport"] = (*rt)->transports()[0];
  out["farmem_read_lat_4k_us"] = lat[lat.size() / 2];
  out["farmem_read_lat_4k_mean_us"] = mean;
  out["farmem_read_lat_4k_p99_us"] = lat[lat.size() * 99 / 100];
  // MiB/s: perftest's "MB/sec" is 2^20 bytes per second as well.
  out["farmem_read_bw_4k_mbs"] = bytes / sec / 1048576.0;
  if (!skip_cache) {
    auto fault = fault_latency(server, token, fault_iters);
    if (!fault.ok()) return fail("fault latency", fault.status());
    auto scan = scan_mbs(server, token, true);
    if (!scan.ok()) return fail("scan", scan.status());
    auto scan_off = scan_mbs(server, token, false);
    if (!scan_off.ok()) return fail("scan without prefetch", scan_off.status());
    out["farmem_fault_lat_4k_us"] = *fault;
    out["farmem_scan_mbs"] = *scan;
    out["farmem_scan_noprefetch_mbs"] = *scan_off;
    auto rfault = region_fault_latency(server, token, fault_iters);
    if (!rfault.ok()) return fail("region fault latency", rfault.status());
    auto rfault_sigbus =
        region_fault_latency(server, token, fault_iters, farmem::FaultMode::kFaultingThread);
    if (!rfault_sigbus.ok()) return fail("region fault latency (faulting thread)", rfault_sigbus.status());
    auto rscan = region_scan_mbs(server, token);
    if (!rscan.ok()) return fail("region scan", rscan.status());
    out["farmem_region_fault_lat_4k_us"] = *rfault;
    out["farmem_region_fault_sigbus_lat_4k_us"] = *rfault_sigbus;
    out["farmem_region_scan_mbs"] = *rscan;
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
