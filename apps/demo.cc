// farmem-demo: allocates far memory several times larger than its local buffer, writes a
// pattern through the buffer, reads it all back and verifies it, then measures 4 KiB read
// latency. Uses only the public API: copy from here.
#include <farmem/farmem.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// The pattern byte at far offset `off`: position-dependent, so misplaced blocks show.
std::byte pattern(std::uint64_t off) { return std::byte((off * 2654435761u) >> 13); }

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Moves the whole far range through the local buffer in batches of `block`-sized ops.
farmem::Status stream(farmem::Runtime& rt, farmem::FarRange far, std::size_t block, bool write,
                      std::uint64_t* mismatches) {
  auto buf = rt.local_buffer();
  farmem::IoBatch batch;
  for (std::uint64_t base = 0; base < far.bytes; base += buf.size()) {
    const std::uint64_t n = std::min<std::uint64_t>(buf.size(), far.bytes - base);
    if (write) {
      for (std::uint64_t i = 0; i < n; ++i) buf[i] = pattern(base + i);
    }
    batch.clear();
    for (std::uint64_t off = 0; off < n; off += block) {
      const auto len = std::min<std::uint64_t>(block, n - off);
      if (write) batch.write(far.addr + base + off, buf.subspan(off, len));
      else batch.read(far.addr + base + off, buf.subspan(off, len));
    }
    if (auto st = rt.submit(batch); !st.ok()) return st;
    if (auto st = rt.wait(batch); !st.ok()) return st;
    if (!write) {
      for (std::uint64_t i = 0; i < n; ++i) *mismatches += buf[i] != pattern(base + i);
    }
  }
  return farmem::Status::Ok();
}

struct Value {
  std::uint64_t key;
  char text[56];
};

// Phase 2: a key-value map in far memory, through the page cache with a small budget.
int run_kv(farmem::Runtime& rt, std::uint64_t keys) {
  farmem::far_hash_map<std::uint64_t, Value> kv(rt);
  const auto t0 = Clock::now();
  for (std::uint64_t k = 0; k < keys; ++k) {
    Value v{k, {}};
    std::snprintf(v.text, sizeof v.text, "value of key %llu", static_cast<unsigned long long>(k));
    if (auto st = kv.put(k * 2654435761u, v); !st.ok()) {
      std::fprintf(stderr, "farmem-demo: put: %s\n", st.to_string().c_str());
      return 1;
    }
  }
  const double put_s = seconds_since(t0);
  std::mt19937_64 rng(2);
  std::uint64_t wrong = 0;
  const std::uint64_t gets = keys;
  const auto t1 = Clock::now();
  for (std::uint64_t i = 0; i < gets; ++i) {
    const std::uint64_t k = rng() % keys;
    auto v = kv.get(k * 2654435761u);
    if (!v.ok()) {
      std::fprintf(stderr, "farmem-demo: get failed: %s\n", v.status().to_string().c_str());
      return 1;
    }
    wrong += !v->has_value() || (*v)->key != k;
  }
  const double get_s = seconds_since(t1);
  const auto cs = rt.cache_stats();
  std::printf("far hash map: %llu keys (~%.0f MiB of slots) in a %.0f MiB cache: "
              "%.0f puts/s, %.0f gets/s\n",
              static_cast<unsigned long long>(keys), keys * sizeof(Value) / 0.7 / 1048576.0,
              cs.budget_bytes / 1048576.0, keys / put_s, gets / get_s);
  std::printf("cache: %llu misses, %llu evictions, %llu write-backs, prefetch accuracy %.2f, "
              "fault p50 %.1f us\n",
              static_cast<unsigned long long>(cs.misses),
              static_cast<unsigned long long>(cs.evictions),
              static_cast<unsigned long long>(cs.writebacks), cs.prefetch_accuracy(),
              cs.fault_latency.percentile_ns(50) / 1000.0);
  if (wrong != 0) {
    std::fprintf(stderr, "farmem-demo: VERIFY FAILED: %llu lookups wrong\n",
                 static_cast<unsigned long long>(wrong));
    return 1;
  }
  std::printf("verify: all %llu lookups correct\n", static_cast<unsigned long long>(gets));
  return 0;
}

int fail(const char* what, const farmem::Status& st) {
  std::fprintf(stderr, "farmem-demo: %s: %s\n", what, st.to_string().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"farmem-demo: far memory larger than the local buffer, written and verified"};
  std::string server = "local", token, token_file;
  std::uint64_t far_bytes = 256u << 20, buffer_bytes = 16u << 20, block = 64u << 10;
  int samples = 2000;
  std::uint64_t cache_bytes = 8u << 20, kv_keys = 200000;
  app.add_option("--server", server, "rdma://host:port, tcp://host:port or local")
      ->capture_default_str();
  auto* t = app.add_option("--token", token, "Auth token of the memserver");
  app.add_option("--token-file", token_file, "Read the auth token from FILE")
      ->excludes(t)->check(CLI::ExistingFile);
  app.add_option("--far", far_bytes, "Far memory to allocate (e.g. 256M)")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--buffer", buffer_bytes, "Local registered buffer (e.g. 16M)")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--block", block, "Size of one read/write op when streaming")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--samples", samples, "4 KiB reads timed for the latency figures")
      ->check(CLI::Range(10, 1000000))->capture_default_str();
  app.add_option("--cache", cache_bytes, "Page-cache budget for the far hash map phase")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--kv-keys", kv_keys, "Keys in the far hash map phase (0: skip it)")
      ->capture_default_str();
  app.set_version_flag("--version", std::string("farmem-demo ") + farmem::version());
  CLI11_PARSE(app, argc, argv);
  if (!token_file.empty()) std::getline(std::ifstream(token_file), token);
  if (buffer_bytes < 4096 || block == 0 || far_bytes < buffer_bytes) {
    std::fprintf(stderr, "farmem-demo: need --buffer >= 4K, --block > 0, --far >= --buffer\n");
    return 2;
  }

  farmem::RuntimeOptions opts;
  opts.servers = {server};
  opts.auth_token = token;
  opts.local_buffer_bytes = buffer_bytes;
  opts.local_server_capacity = far_bytes + (256u << 20);
  opts.cache_budget_bytes = cache_bytes;
  auto rt = farmem::Runtime::open(opts);
  if (!rt.ok()) return fail("open", rt.status());
  std::printf("farmem %s: server %s over %s\n", farmem::version(), server.c_str(),
              (*rt)->transports()[0].c_str());
  auto far = (*rt)->allocate(far_bytes);
  if (!far.ok()) return fail("allocate", far.status());
  std::printf("far memory: %.0f MiB through a %.0f MiB local buffer (%.1fx)\n",
              far_bytes / 1048576.0, buffer_bytes / 1048576.0,
              static_cast<double>(far_bytes) / buffer_bytes);

  std::uint64_t bad = 0;
  auto t0 = Clock::now();
  if (auto st = stream(**rt, *far, block, true, &bad); !st.ok()) return fail("write", st);
  const double wsec = seconds_since(t0);
  t0 = Clock::now();
  if (auto st = stream(**rt, *far, block, false, &bad); !st.ok()) return fail("read", st);
  const double rsec = seconds_since(t0);
  std::printf("write: %.1f MiB/s   read+verify: %.1f MiB/s   (%zu-byte ops)\n",
              far_bytes / 1048576.0 / wsec, far_bytes / 1048576.0 / rsec,
              static_cast<std::size_t>(block));
  if (bad != 0) {
    std::fprintf(stderr, "farmem-demo: VERIFY FAILED: %llu bytes differ\n",
                 static_cast<unsigned long long>(bad));
    return 1;
  }
  std::printf("verify: all %llu bytes match\n", static_cast<unsigned long long>(far_bytes));

  std::vector<double> lat;
  std::mt19937_64 rng(1);
  auto page = (*rt)->local_buffer().first(4096);
  for (int i = 0; i < samples; ++i) {
    const auto off = rng() % (far_bytes / 4096) * 4096;
    const auto s = Clock::now();
    if (auto st = (*rt)->read(far->addr + off, page); !st.ok()) return fail("read", st);
    lat.push_back(seconds_since(s) * 1e6);
    if (page[100] != pattern(off + 100)) return fail("verify", farmem::Status());
  }
  std::sort(lat.begin(), lat.end());
  std::printf("4 KiB read latency: p50 %.1f us  p99 %.1f us  (%d samples)\n",
              lat[lat.size() / 2], lat[lat.size() * 99 / 100], samples);
  if (auto st = (*rt)->free(*far); !st.ok()) return fail("free", st);
  return kv_keys == 0 ? 0 : run_kv(**rt, kv_keys);
}
