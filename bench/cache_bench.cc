// farmem_bench_cache: the cost of a far_ptr dereference that hits the cache, against a raw
// pointer dereference of the same data layout, measured in one run; and the cost of a miss on
// the in-process transport (far_ptr_miss_local_us, target <= 2 us). Last stdout line: JSON.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
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

// A miss on the "local" transport (no network): the runtime's own cost of a miss, including
// the eviction of a clean page. One object on each of kMissPages pages, visited in a fixed
// shuffled order, over a cache 1/16 that size with prefetch off: every visit misses.
constexpr int kMissPages = 8192;
constexpr int kMissCachePages = kMissPages / 16;
constexpr int kMissesPerIter = 256;

struct MissFixture {
  std::unique_ptr<farmem::Runtime> rt;
  std::vector<far_ptr<Rec>> ptrs;  // one per page, in visiting order
};

MissFixture& miss_fixture() {
  static MissFixture f = [] {
    MissFixture x;
    farmem::RuntimeOptions o;
    o.cache_budget_bytes = std::uint64_t{kMissCachePages} * 4096;
    o.prefetch = false;
    x.rt = std::move(farmem::Runtime::open(o)).value();
    const farmem::FarAddr base = x.rt->allocate_pages(kMissPages).value();
    for (int i = 0; i < kMissPages; ++i) {
      x.ptrs.emplace_back(base + static_cast<std::uint64_t>(i) * 4096);
    }
    std::mt19937_64 rng(7);
    std::shuffle(x.ptrs.begin(), x.ptrs.end(), rng);
    if (!x.rt->flush().ok()) std::abort();  // clean pages: evictions write nothing back
    return x;
  }();
  return f;
}

std::uint64_t g_miss_misses = 0, g_miss_derefs = 0;

void BM_FarPtrMissLocal(benchmark::State& state) {
  auto& f = miss_fixture();
  std::uint64_t sum = 0;
  std::size_t next = 0;
  const auto before = f.rt->cache_stats().misses;
  std::uint64_t derefs = 0;
  for (auto _ : state) {
    for (int i = 0; i < kMissesPerIter; ++i) {
      DerefScope scope(*f.rt);
      sum += f.ptrs[next].deref(scope).v[0];
      next = next + 1 == f.ptrs.size() ? 0 : next + 1;
    }
    derefs += kMissesPerIter;
  }
  g_miss_misses += f.rt->cache_stats().misses - before;
  g_miss_derefs += derefs;
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
                                              {"far_ptr_scope_each", BM_FarPtrScopeEach},
                                              {"far_ptr_miss_local", BM_FarPtrMissLocal}};
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
              "\"far_ptr_scope_each_ns\": %.3f, \"far_ptr_miss_local_us\": %.3f, "
              "\"far_ptr_miss_local_miss_fraction\": %.3f}\n",
              raw_same, fp_same, fp_same / raw_same, raw_spread, fp_spread,
              fp_spread / raw_spread, ns("far_ptr_scope_each"),
              reporter.median_us("far_ptr_miss_local") / kMissesPerIter,
              g_miss_derefs ? static_cast<double>(g_miss_misses) / g_miss_derefs : 0.0);
  return 0;
}
