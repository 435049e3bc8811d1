#include "bench/kvload/runner.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

namespace farmem::kvload {

namespace {

using Clock = std::chrono::steady_clock;
// How often the runner looks at its workers (phase ends, aborts, progress lines).
constexpr auto kTick = std::chrono::milliseconds(10);
// memcached's longest key.
constexpr std::size_t kMaxKeyBytes = 250;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::kLoad: return "load";
    case Phase::kWarmup: return "warm-up";
    case Phase::kMeasure: return "measure";
    default: return "drain";
  }
}

// Prints a progress line every o.progress_s seconds while it is polled, and one at the end
// of each phase (so that even a run shorter than the interval shows its phases).
class Progress {
 public:
  Progress(const LoadOptions& o, const std::vector<std::unique_ptr<Worker>>& w)
      : o_(o), workers_(w), last_(Clock::now()), start_(last_) {}
  void poll(Phase phase) {
    if (o_.progress_s <= 0 || since(last_) < o_.progress_s) return;
    print(phase);
  }
  void phase_end(Phase phase) {
    if (o_.progress_s > 0) print(phase);
  }

 private:
  void print(Phase phase) {
    std::uint64_t done = 0;
    for (const auto& w : workers_) done += w->completed.load(std::memory_order_relaxed);
    const double dt = since(last_);
    std::fprintf(stderr, "farmem-kvload: %5.1f s %-8s %10llu replies, %9.0f ops/s\n",
                 since(start_), phase_name(phase), static_cast<unsigned long long>(done),
                 dt > 0 ? static_cast<double>(done - done_) / dt : 0.0);
    done_ = done;
    last_ = Clock::now();
  }

  const LoadOptions& o_;
  const std::vector<std::unique_ptr<Worker>>& workers_;
  Clock::time_point last_, start_;
  std::uint64_t done_ = 0;
};

// Waits in ticks until done() or an abort, printing progress.
template <typename Done>
void wait_for(Shared& s, Progress& progress, Done done) {
  while (!s.abort.load() && !done()) {
    std::this_thread::sleep_for(kTick);
    progress.poll(s.phase.load());
  }
}

}  // namespace

Status validate(const LoadOptions& o) {
  if (o.keys == 0) return InvalidArgument("--keys must be at least 1");
  if (o.value_min < kMinValueBytes || o.value_max < o.value_min) {
    return InvalidArgument("--value-size: at least " + std::to_string(kMinValueBytes) +
                           " bytes (each value carries a 24-byte stamp), MIN <= MAX");
  }
  if (o.read_ratio < 0 || o.read_ratio > 1) return InvalidArgument("--read-ratio: 0 to 1");
  // memcached keys: at most 250 bytes, no spaces or control characters (20 digits of index).
  if (o.key_prefix.size() > kMaxKeyBytes - 20 ||
      std::any_of(o.key_prefix.begin(), o.key_prefix.end(),
                  [](char ch) { return static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f; })) {
    return InvalidArgument("--key-prefix: at most 230 bytes, no spaces or control characters");
  }
  if (o.dist == KeyDist::kZipf && (o.zipf_theta < 0 || o.zipf_theta >= 1)) {
    return InvalidArgument("--zipf-theta: 0 <= theta < 1");
  }
  if (o.threads == 0 || o.connections == 0 || o.pipeline == 0) {
    return InvalidArgument("--threads, --connections and --pipeline must be at least 1");
  }
  if (o.timeout_s <= 0) return InvalidArgument("--timeout must be positive");
  if (o.ops == 0 && o.duration_s <= 0) return InvalidArgument("give --duration or --ops");
  return Status::Ok();
}

Result<Report> run_load(const LoadOptions& o) {
  if (Status st = validate(o); !st.ok()) return st;
  Report rep;
  rep.run_id = static_cast<std::uint32_t>(std::random_device{}());
  Shared s(o, rep.run_id);
  rep.threads = std::min(o.threads, o.connections);
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned i = 0, first = 0; i < rep.threads; ++i) {
    const unsigned count = o.connections / rep.threads + (i < o.connections % rep.threads);
    workers.push_back(std::make_unique<Worker>(s, i, first, count));
    first += count;
  }
  Progress progress(o, workers);
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });

  wait_for(s, progress, [&] { return s.loaded.load() == rep.threads; });
  if (o.load) progress.phase_end(Phase::kLoad);
  rep.load_s = o.load ? since(t0) : 0;
  s.phase.store(Phase::kWarmup);
  const auto tw = Clock::now();
  wait_for(s, progress, [&] { return since(tw) >= o.warmup_s; });
  if (o.warmup_s > 0) progress.phase_end(Phase::kWarmup);
  s.ops_left.store(static_cast<std::int64_t>(o.ops));
  const auto tm = Clock::now();
  const auto tm_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(tm.time_since_epoch()).count());
  s.phase.store(Phase::kMeasure);
  wait_for(s, progress,
           [&] { return o.ops > 0 ? s.ops_left.load() <= 0 : since(tm) >= o.duration_s; });
  progress.phase_end(Phase::kMeasure);
  s.phase.store(Phase::kDrain);
  for (auto& t : threads) t.join();
  if (Status st = s.error(); !st.ok()) return st;

  std::uint64_t last = tm_ns;
  for (const auto& w : workers) {
    rep.load.merge(w->load);
    rep.warmup.merge(w->warmup);
    rep.measured.merge(w->measured);
    last = std::max(last, w->last_measured_ns.load());
  }
  rep.measured_s = static_cast<double>(last - tm_ns) / 1e9;
  return rep;
}

}  // namespace farmem::kvload
