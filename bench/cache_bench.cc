// farmem_bench_cache: the cost of a far_ptr dereference that hits the cache, against a raw
// pointer dereference of the same data layout, measured in one run. Last stdout line: JSON.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <vector>

#include "bench/bench_report.h"
#include "bench/version_flag.h"
#include "farmem/farmem.h"

namespace {

using farmem::DerefScope;
using farmem::far_ptr;

struct Rec {
  std::uint64_t v[8];  // 64 bytes
};

constexpr int kObjects = 64;       // all resident: this measures hits only
constexpr int kDerefsPerIter = 4096;
constexpr int kRepetitions = 5;

struct Fixture {
  std::unique_ptr<farmem::Runtime> rt;
  std::vector<far_ptr<Rec>> same_page;  // 64 objects sharing one page (scope TLB hits)
  std::vector<far_ptr<Rec>> spread;     // 64 objects on 64 pages (page-table walks)
  std::vector<Rec> raw_same;            // the same layouts in plain memory
  std::vector<Rec> raw_spread;
};

Fixture& fixture() {
  static Fixture f = [] {
    Fixture x;
    farmem::RuntimeOptions o;
    o.cache_budget_bytes = 64u << 20;
    x.rt = std::move(farmem::Runtime::open(o)).value();
    std::vector<far_ptr<Rec>> all;
    for (int i = 0; i < kObjects * kObjects; ++i) all.push_back(*x.rt->make_far<Rec>());
    for (int i = 0; i < kObjects; ++i) {
      x.same_page.push_back(all[i]);
      x.spread.push_back(all[static_cast<std::size_t>(i) * kObjects]);
    }
    x.raw_same.resize(kObjects);
    x.raw_spread.resize(static_cast<std::size_t>(kObjects) * kObjects);
    return x;
  }();
  return f;
}

void BM_RawSamePage(benchmark::State& state) {
  auto& f = fixture();
  std::uint64_t sum = 0;
  for (auto _ : state) {
    for (int i = 0; i < kDerefsPerIter; ++i) {
      const Rec* p = &f.raw_same[i & (kObjects - 1)];
      benchmark::DoNotOptimize(p);
      sum += p->v[i & 7];
    }
  }
  benchmark::DoNotOptimize(sum);
}

void BM_RawSpread(benchmark::State& state) {
  auto& f = fixture();
  std::uint64_t sum = 0;
  for (auto _ : state) {
    for (int i = 0; i < kDerefsPerIter; ++i) {
      const Rec* p = &f.raw_spread[static_cast<std::size_t>(i & (kObjects - 1)) * kObjects];
      benchmark::DoNotOptimize(p);
      sum += p->v[i & 7];
    }
  }
  benchmark::DoNotOptimize(sum);
}

void deref_loop(benchmark::State& state, const std::vector<far_ptr<Rec>>& ptrs) {
  auto& f = fixture();
  std::uint64_t sum = 0;
  for (auto _ : state) {
    DerefScope scope(*f.rt);
    for (int i = 0; i < kDerefsPerIter; ++i) {
      const far_ptr<Rec>& p = ptrs[i & (kObjects - 1)];
      benchmark::DoNotOptimize(&p);
      sum += p.deref(scope).v[i & 7];
    }
  }
  benchmark::DoNotOptimize(sum);
}

void BM_FarPtrSamePage(benchmark::State& state) { deref_loop(state, fixture().same_page); }
void BM_FarPtrSpread(benchmark::State& state) { deref_loop(state, fixture().spread); }

// A scope per dereference: what a caller pays who cannot batch derefs in one scope.
void BM_FarPtrScopeEach(benchmark::State& state) {
  auto& f = fixture();
  std::uint64_t sum = 0;
  for (auto _ : state) {
    for (int i = 0; i < kDerefsPerIter; ++i) {
      DerefScope scope(*f.rt);
      sum += f.spread[i & (kObjects - 1)].deref(scope).v[i & 7];
    }
  }
  benchmark::DoNotOptimize(sum);
}

}  // namespace

int main(int argc, char** argv) {
  farmem::bench::handle_version_flag(argc, argv, "farmem_bench_cache");
  benchmark::Initialize(&argc, argv);
  using Fn = void (*)(benchmark::State&);
  const std::pair<const char*, Fn> cases[] = {{"raw_same_page", BM_RawSamePage},
                                              {"raw_spread", BM_RawSpread},
                                              {"far_ptr_same_page", BM_FarPtrSamePage},
                                              {"far_ptr_spread", BM_FarPtrSpread},
                                              {"far_ptr_scope_each", BM_FarPtrScopeEach}};
  for (auto [name, fn] : cases) {
    benchmark::RegisterBenchmark(name, fn)->Unit(benchmark::kMicrosecond)
        ->Repetitions(kRepetitions)->UseRealTime();
  }
  farmem::bench::CapturingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  auto ns = [&](const char* n) { return reporter.median_us(n) * 1000.0 / kDerefsPerIter; };
  const double raw_same = ns("raw_same_page"), raw_spread = ns("raw_spread");
  const double fp_same = ns("far_ptr_same_page"), fp_spread = ns("far_ptr_spread");
  std::printf("{\"raw_deref_same_page_ns\": %.3f, \"far_ptr_deref_same_page_ns\": %.3f, "
              "\"deref_same_page_ratio\": %.3f, \"raw_deref_spread_ns\": %.3f, "
              "\"far_ptr_deref_spread_ns\": %.3f, \"deref_spread_ratio\": %.3f, "
              "\"far_ptr_scope_each_ns\": %.3f}\n",
              raw_same, fp_same, fp_same / raw_same, raw_spread, fp_spread,
              fp_spread / raw_spread, ns("far_ptr_scope_each"));
  return 0;
}
