// farmem_bench_tier: the application of the tier's cgroup test and benchmark (ci/tier-vm runs
// it in the soft-RoCE VM, inside a cgroup v2 with a memory.max):
//
//   --mode far    a far_vector of --elements uint64 (the working set) through a Runtime with a
//                 fixed budget (--budget) or the tier (--floor/--ceiling set: the budget starts
//                 at --budget and follows the cgroup's pressure)
//   --mode plain  the same passes over an anonymous mapping: plain memory, which the kernel
//                 swaps (the comparison under kernel swap)
//   --mode hog    allocates --bytes in --chunk steps every --chunk-interval (the memory hog
//                 joining the cgroup), then holds them until killed
//
// The passes (far and plain alike): fill (element i = value(i, 0)), then --passes times a
// sequential read-check-write pass (element i must be value(i, p-1), becomes value(i, p)),
// then a verify pass (value(i, passes)). Every element is checked, so lost or stale pages count
// as mismatches; the exit status is 1 when any element was wrong. The far mode fills with
// far_vector::append and passes with for_each_mut: a DerefScope per page, not per element.
// --ready-file: created (with the CLOCK_MONOTONIC time) after the fill, so a script can start
// the hog mid-run. --step-file: the hog writes its start time there; the far mode then reports
// how long after it the budget reached its new level and the RSS followed (from samples taken
// every 10 ms). --held-file (hog): created once the hog holds all its bytes; --until-file F
// (far, plain): after --passes, more passes while F does not exist, up to --max-passes, so the
// workload is still running when the hog holds everything (a quick workload on an idle host
// could otherwise finish while the hog was still taking its bytes). Last stdout line: one
// JSON object ("passes": the passes done).
#include <farmem/farmem.h>
#include <sys/mman.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC on Linux: shared by processes
constexpr auto kSamplePeriod = std::chrono::milliseconds(10);
// "Reached its new level": 90 % of the drop done (the last few percent are the policy's
// growth probes and the page-granular tail, not the reaction).
constexpr double kSettledShare = 0.9;

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

// The value element i holds after pass p (splitmix64 of both): every pass changes every element.
std::uint64_t value(std::uint64_t i, std::uint64_t p) {
  std::uint64_t z = i * 0x9E3779B97F4A7C15ull + (p + 1) * 0xD1B54A32D192ED03ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A "Key:  N kB" line of a /proc file, in bytes (0 when absent).
std::uint64_t proc_kb(const char* path, const char* key) {
  std::ifstream in(path);
  std::string line;
  const std::size_t n = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, n, key) == 0) return std::stoull(line.substr(n)) * 1024;
  }
  return 0;
}

std::uint64_t rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // kB
  }
  return 0;
}

void write_time_file(const std::string& path) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << std::to_string(now_s()) << "\n";
  std::rename(tmp.c_str(), path.c_str());  // appears whole
}

// Element access for the passes: `body(i, x)` gets a reference to element i, one chunk
// (page) at a time.
struct FarArray {
  farmem::Runtime& rt;
  farmem::far_vector<std::uint64_t>& v;
  template <typename Body>
  void for_chunks(std::size_t n, Body&& body) {
    (void)n;  // the vector holds exactly n after the fill
    if (auto st = v.for_each_mut(body); !st.ok()) {
      std::fprintf(stderr, "farmem_bench_tier: pass: %s\n", st.to_string().c_str());
      std::exit(2);
    }
  }
  // The verify pass only reads: no page of it is dirtied or written back.
  template <typename Body>
  void scan(std::size_t n, Body&& body) {
    (void)n;
    if (auto st = v.for_each(body); !st.ok()) {
      std::fprintf(stderr, "farmem_bench_tier: verify: %s\n", st.to_string().c_str());
      std::exit(2);
    }
  }
  // append: one sweep, a scope per page (push_back opens one per element; resize would
  // write every page twice, zeros first).
  bool fill(std::size_t n) { return v.append(n, [](std::size_t i) { return value(i, 0); }).ok(); }
};
struct PlainArray {
  std::uint64_t* p;
  template <typename Body>
  void for_chunks(std::size_t n, Body&& body) {
    for (std::size_t i = 0; i < n; ++i) body(i, p[i]);
  }
  template <typename Body>
  void scan(std::size_t n, Body&& body) {
    for (std::size_t i = 0; i < n; ++i) body(i, static_cast<const std::uint64_t&>(p[i]));
  }
  bool fill(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) p[i] = value(i, 0);
    return true;
  }
};

struct PassTimes {
  double fill_s = 0, passes_s = 0, verify_s = 0;
  std::uint64_t mismatches = 0;
  int passes = 0;  // done
};

// How many passes to run: at least `passes`; then, while `until_file` (if named) does not
// exist, more, up to `max_passes`.
struct PassPlan {
  int passes = 1, max_passes = 1;
  std::string until_file;
  bool another(int done) const {
    if (done < passes) return true;
    if (until_file.empty() || done >= max_passes) return false;
    return !std::ifstream(until_file).good();
  }
};

template <typename Array>
PassTimes run_passes(Array a, std::size_t n, const PassPlan& plan, const std::string& ready_file) {
  PassTimes t;
  double t0 = now_s();
  if (!a.fill(n)) {
    std::fprintf(stderr, "farmem_bench_tier: the fill failed\n");
    t.mismatches = n;
    return t;
  }
  t.fill_s = now_s() - t0;
  write_time_file(ready_file);
  t0 = now_s();
  int p = 1;
  for (; plan.another(p - 1); ++p) {
    std::uint64_t bad = 0;
    a.for_chunks(n, [&](std::size_t i, std::uint64_t& x) {
      bad += x != value(i, p - 1);
      x = value(i, p);
    });
    t.mismatches += bad;
    std::fprintf(stderr, "farmem_bench_tier: pass %d done at %.3f (%llu wrong)\n", p, now_s(),
                 static_cast<unsigned long long>(bad));
  }
  t.passes = p - 1;
  t.passes_s = now_s() - t0;
  t0 = now_s();
  a.scan(n, [&](std::size_t i, const std::uint64_t& x) { t.mismatches += x != value(i, t.passes); });
  t.verify_s = now_s() - t0;
  return t;
}

struct Sample {
  double t;
  std::uint64_t budget, rss, resident;
};

// Samples the budget, RSS and cache residency every kSamplePeriod until stopped.
class Sampler {
 public:
  explicit Sampler(farmem::Runtime& rt) : rt_(rt), thread_([this] { run(); }) {}
  ~Sampler() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const std::vector<Sample>& samples() const { return samples_; }

 private:
  void run() {
    double next_log = now_s();
    while (!stop_) {
      const farmem::TierStats ts = rt_.tier_stats();
      const Sample s{now_s(), ts.budget_bytes, rss_bytes(), rt_.cache_stats().resident_bytes};
      samples_.push_back(s);
      if (s.t >= next_log) {  // a progress line a second, for the logs
        next_log = s.t + 1;
        std::fprintf(stderr,
                     "farmem_bench_tier: t %.2f budget %llu resident %llu rss %llu thp %llu "
                     "cgroup %llu shrinks %llu grows %llu (%s)\n",
                     s.t, mib(s.budget), mib(s.resident), mib(s.rss),
                     mib(proc_kb("/proc/self/smaps_rollup", "AnonHugePages:")),
                     mib(ts.last_reading.cgroup_current.value_or(0)),
                     static_cast<unsigned long long>(ts.shrinks),
                     static_cast<unsigned long long>(ts.grows), ts.last_reason.c_str());
      }
      std::this_thread::sleep_for(kSamplePeriod);
    }
  }
  static unsigned long long mib(std::uint64_t b) { return b >> 20; }
  farmem::Runtime& rt_;
  std::atomic<bool> stop_{false};
  std::vector<Sample> samples_;  // written by the thread only, read after stop()
  std::thread thread_;
};

// The pressure step from the samples: the hog started at t_hog; the budget's new level is the
// lowest it reached afterwards; times until 90 % of the budget's drop, and of that drop in RSS.
nlohmann::json step_figures(const std::vector<Sample>& s, double t_hog) {
  nlohmann::json j;
  auto first_after = std::find_if(s.begin(), s.end(), [&](const Sample& x) { return x.t >= t_hog; });
  if (first_after == s.begin() || first_after == s.end()) return j;
  const Sample before = *(first_after - 1);
  std::uint64_t level = before.budget;
  for (auto it = first_after; it != s.end(); ++it) level = std::min(level, it->budget);
  j["budget_before_bytes"] = before.budget;
  j["budget_new_level_bytes"] = level;
  j["rss_before_bytes"] = before.rss;
  if (level >= before.budget) return j;  // no drop: the figures below stay absent
  const double drop = static_cast<double>(before.budget - level);
  const double budget_goal = static_cast<double>(before.budget) - kSettledShare * drop;
  const double rss_goal = static_cast<double>(before.rss) - kSettledShare * drop;
  std::optional<double> tb, tr;
  std::uint64_t rss_min = before.rss;
  for (auto it = first_after; it != s.end(); ++it) {
    rss_min = std::min(rss_min, it->rss);
    if (!tb && static_cast<double>(it->budget) <= budget_goal) tb = it->t - t_hog;
    if (!tr && static_cast<double>(it->rss) <= rss_goal) tr = it->t - t_hog;
  }
  j["rss_min_bytes"] = rss_min;
  if (tb) j["step_budget_s"] = *tb;
  if (tr) j["step_rss_s"] = *tr;
  return j;
}

int hog(std::uint64_t bytes, std::uint64_t chunk, int interval_ms, const std::string& step_file,
        const std::string& held_file) {
  write_time_file(step_file);
  std::vector<std::unique_ptr<char[]>> held;
  for (std::uint64_t got = 0; got < bytes; got += chunk) {
    auto p = std::make_unique<char[]>(chunk);
    std::memset(p.get(), 0x5a, chunk);  // touched: charged to the cgroup
    held.push_back(std::move(p));
    std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
  }
  std::fprintf(stderr, "farmem_bench_tier: hog holds %llu bytes\n",
               static_cast<unsigned long long>(bytes));
  write_time_file(held_file);
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // until killed
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"farmem_bench_tier: a working set larger than its cgroup, far or plain"};
  std::string mode = "far", server = "local", token, token_file, ready_file, step_file;
  std::string held_file;
  PassPlan plan;
  std::uint64_t elements = 16u << 20, budget = 32u << 20, floor = 0, ceiling = 0;
  std::uint64_t hog_bytes = 32u << 20, hog_chunk = 1u << 20, page_bytes = 4096;
  int passes = 2, max_passes = 0, interval_ms = 100, hog_interval_ms = 20;
  app.add_option("--mode", mode, "far, plain or hog")
      ->check(CLI::IsMember({"far", "plain", "hog"}))->capture_default_str();
  app.add_option("--server", server, "memserver URL (far mode)")->capture_default_str();
  auto* t = app.add_option("--token", token, "Auth token");
  app.add_option("--token-file", token_file, "Read the auth token from FILE")
      ->excludes(t)->check(CLI::ExistingFile);
  app.add_option("--elements", elements, "uint64 elements in the working set")
      ->capture_default_str();
  app.add_option("--passes", passes, "read-check-write passes after the fill")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--budget", budget, "local budget (the tier's start)")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--floor", floor, "tier budget_floor (with --ceiling: tier on)")
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--ceiling", ceiling, "tier budget_ceiling")->transform(CLI::AsSizeValue(false));
  app.add_option("--page-bytes", page_bytes, "the cache's page size (far mode)")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--tier-interval-ms", interval_ms, "tier_interval")->capture_default_str();
  app.add_option("--ready-file", ready_file, "created after the fill");
  app.add_option("--step-file", step_file, "hog: writes its start time; far: reads it");
  app.add_option("--held-file", held_file, "hog: created once it holds all its bytes");
  app.add_option("--until-file", plan.until_file,
                 "more passes while FILE does not exist (up to --max-passes)");
  app.add_option("--max-passes", max_passes, "with --until-file: at most this many passes")
      ->check(CLI::PositiveNumber);
  app.add_option("--bytes", hog_bytes, "hog: bytes to take")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--chunk", hog_chunk, "hog: bytes per step")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--chunk-interval-ms", hog_interval_ms, "hog: pause between steps")
      ->capture_default_str();
  app.set_version_flag("--version", std::string("farmem_bench_tier ") + farmem::version());
  CLI11_PARSE(app, argc, argv);
  if (!token_file.empty()) std::getline(std::ifstream(token_file), token);
  if (mode == "hog") return hog(hog_bytes, std::max<std::uint64_t>(hog_chunk, 4096),
                                hog_interval_ms, step_file, held_file);
  plan.passes = passes;
  plan.max_passes = std::max(passes, max_passes);

  nlohmann::json j;
  j["mode"] = mode;
  j["elements"] = elements;
  j["working_set_bytes"] = elements * sizeof(std::uint64_t);
  if (mode == "far") j["page_bytes"] = page_bytes;
  PassTimes pt;
  if (mode == "plain") {
    const std::size_t len = elements * sizeof(std::uint64_t);
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { std::perror("farmem_bench_tier: mmap"); return 2; }
    pt = run_passes(PlainArray{static_cast<std::uint64_t*>(p)}, elements, plan, ready_file);
  } else {
    farmem::RuntimeOptions o;
    o.servers = {server};
    o.auth_token = token;
    o.local_buffer_bytes = 1u << 20;  // unused here; the default 64 MiB would crowd the cgroup
    o.cache_budget_bytes = budget;
    o.page_bytes = page_bytes;
    o.budget_floor = floor;
    o.budget_ceiling = ceiling;
    o.tier_interval = std::chrono::milliseconds(interval_ms);
    auto rt = farmem::Runtime::open(o);
    if (!rt.ok()) {
      std::fprintf(stderr, "farmem_bench_tier: %s\n", rt.status().to_string().c_str());
      return 2;
    }
    farmem::far_vector<std::uint64_t> v(**rt);
    if (auto st = v.reserve(elements); !st.ok()) {
      std::fprintf(stderr, "farmem_bench_tier: reserve: %s\n", st.to_string().c_str());
      return 2;
    }
    Sampler sampler(**rt);
    pt = run_passes(FarArray{**rt, v}, elements, plan, ready_file);
    sampler.stop();
    const farmem::TierStats ts = (*rt)->tier_stats();
    j["tier"] = ts.enabled;
    j["budget_final_bytes"] = ts.budget_bytes;
    j["shrinks"] = ts.shrinks;
    j["grows"] = ts.grows;
    j["readings"] = ts.readings;
    j["read_errors"] = ts.read_errors;
    j["last_reason"] = ts.last_reason;
    std::uint64_t lowest = ts.budget_bytes, rss_max = 0;
    for (const Sample& s : sampler.samples()) {
      lowest = std::min(lowest, s.budget);
      rss_max = std::max(rss_max, s.rss);
    }
    j["budget_lowest_bytes"] = lowest;
    j["rss_max_bytes"] = rss_max;
    if (!step_file.empty()) {
      std::ifstream in(step_file);
      double t_hog = 0;
      if (in >> t_hog) j["step"] = step_figures(sampler.samples(), t_hog);
    }
  }
  j["passes"] = pt.passes;
  j["fill_s"] = pt.fill_s;
  j["passes_s"] = pt.passes_s;
  j["verify_s"] = pt.verify_s;
  j["app_s"] = pt.fill_s + pt.passes_s + pt.verify_s;
  j["mismatches"] = pt.mismatches;
  std::printf("%s\n", j.dump().c_str());
  return pt.mismatches == 0 ? 0 : 1;
}
