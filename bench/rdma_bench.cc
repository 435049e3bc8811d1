// farmem_bench_rdma: farmem's 4 KiB read latency and batched 4 KiB read bandwidth through the
// public Runtime API against a real memserver, measured the way perftest's ib_read_lat and
// ib_read_bw measure theirs, so ci/bench-rxe can print ratios from one VM boot.
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

int fail(const char* what, const farmem::Status& st) {
  std::fprintf(stderr, "farmem_bench_rdma: %s: %s\n", what, st.to_string().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"farmem_bench_rdma: 4 KiB read latency and bandwidth through the Runtime API"};
  std::string server = "local", token, token_file;
  int lat_iters = 10000, bw_iters = 50000, warmup = 1000;
  std::uint64_t far_bytes = 64u << 20;
  app.add_option("--server", server, "rdma://host:port, tcp://host:port or local")
      ->capture_default_str();
  auto* t = app.add_option("--token", token, "Auth token");
  app.add_option("--token-file", token_file, "Read the auth token from FILE")
      ->excludes(t)->check(CLI::ExistingFile);
  app.add_option("--lat-iters", lat_iters, "Timed synchronous reads")->capture_default_str();
  app.add_option("--bw-iters", bw_iters, "Reads in the bandwidth run")->capture_default_str();
  app.add_option("--far", far_bytes, "Far memory the reads spread over")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!token_file.empty()) std::getline(std::ifstream(token_file), token);

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
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
