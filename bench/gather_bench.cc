// farmem_bench_gather: random page reads from one thread with many misses in flight, two
// ways: far_vector::gather (which prefetches the next group of pages while it copies this
// one) and coroutines on a farmem::Scheduler (each reads its pages with co_await load(), the
// scheduler batches their misses); against batched sequential reads of the same pages
// (Runtime::submit of 32 pages at a time) and one synchronous miss at a time, all in one run.
// The memserver is in-process on loopback tcp, or --server URL (say rdma:// in the soft-RoCE
// VM, ci/bench-rxe). The local cache holds an eighth of the pages, and is emptied before
// each random pass, so every random read misses.
//
//   farmem_bench_gather [--server URL --token-file FILE]
//
// Each figure is the median of kRounds passes. Last stdout line, one JSON object:
//   gather_random_pages_s, coro_random_pages_s, seq_batched_pages_s, sync_random_pages_s
//   (pages a second), async_random_ratio = gather_random / seq_batched (issue 14's target:
//   >= 0.6 over tcp, >= 0.8 over verbs), coro_random_ratio = coro_random / seq_batched,
//   gather_vs_sync = gather_random / sync_random, coro_peak_in_flight.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <string_view>
#include <random>
#include <vector>

#include "bench/version_flag.h"
#include "farmem/farmem.h"
#include "memserver/core.h"
#include "memserver/tcp_listener.h"

namespace {

using namespace farmem;
using Clock = std::chrono::steady_clock;
using Page = std::array<std::uint64_t, 512>;

constexpr std::size_t kPages = 16384;          // 64 MiB of far memory
constexpr std::uint64_t kBudget = 8u << 20;    // an eighth of it local
constexpr std::size_t kSeqBatch = 32;          // pages per sequential batch
constexpr std::size_t kGatherChunk = 1024;     // indices per gather call
constexpr std::size_t kSyncPages = 2048;       // random synchronous reads per pass
constexpr std::size_t kCoroutines = 256;       // coroutines of the coroutine pass
constexpr int kRounds = 5;

[[noreturn]] void die(const char* what, const Status& st) {
  std::fprintf(stderr, "farmem_bench_gather: %s: %s\n", what, st.to_string().c_str());
  std::exit(1);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One coroutine of the coroutine pass: reads its share of the pages and checks each.
Task<> read_pages(const far_vector<Page>& v, std::span<const std::size_t> idx, int* wrong) {
  for (std::size_t i : idx) {
    Result<Page> p = co_await load(v, i);
    if (!p.ok()) die("co_await load", p.status());
    if ((*p)[7] != i) ++*wrong;
  }
}

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: farmem_bench_gather [--server URL --token-file FILE]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  farmem::bench::handle_version_flag(argc, argv, "farmem_bench_gather");
  std::string server, token_file;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--server" && i + 1 < argc) {
      server = argv[++i];
    } else if (a == "--token-file" && i + 1 < argc) {
      token_file = argv[++i];
    } else {
      usage();
    }
  }
  if (server.empty() != token_file.empty()) usage();

  RuntimeOptions o;
  std::unique_ptr<memserver::Core> core;
  std::unique_ptr<memserver::TcpListener> listener;
  if (server.empty()) {
    memserver::CoreOptions co;
    co.capacity_bytes = 256u << 20;
    co.token = "bench";
    core = std::make_unique<memserver::Core>(co);
    auto l = memserver::TcpListener::start(*core, "127.0.0.1", 0);
    if (!l.ok()) die("listen", l.status());
    listener = std::move(l).value();
    o.servers = {"tcp://127.0.0.1:" + std::to_string(listener->port())};
    o.auth_token = "bench";
  } else {
    std::ifstream f(token_file);
    if (!std::getline(f, o.auth_token) || o.auth_token.empty()) {
      die("--token-file", InvalidArgument("cannot read a token from " + token_file));
    }
    o.servers = {server};
  }
  o.cache_budget_bytes = kBudget;
  o.slab_bytes = 16u << 20;
  auto rt = Runtime::open(o);
  if (!rt.ok()) die("open", rt.status());
  Runtime& r = **rt;
  far_vector<Page> v(r);
  if (Status st = v.append(kPages, [](std::size_t i) {
        Page p;
        p.fill(i);
        return p;
      });
      !st.ok()) {
    die("append", st);
  }
  if (Status st = r.flush(); !st.ok()) die("flush", st);
  const auto drop_cache = [&] {
    if (Status st = r.advise(v.addr_of(0), kPages * sizeof(Page), Advice::kDontNeed); !st.ok()) {
      die("advise(kDontNeed)", st);
    }
  };

  std::vector<std::size_t> order(kPages);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(42);
  std::vector<Page> out(kGatherChunk);
  auto buf = r.local_buffer().first(kSeqBatch * sizeof(Page));
  std::vector<double> gather_rate, coro_rate, seq_rate, sync_rate;
  std::size_t coro_peak = 0;
  std::uint64_t check = 0;
  for (int round = 0; round < kRounds; ++round) {
    // Batched sequential reads of every page, around the cache.
    auto t = Clock::now();
    for (std::size_t i = 0; i < kPages; i += kSeqBatch) {
      IoBatch batch;
      for (std::size_t k = 0; k < kSeqBatch; ++k) {
        batch.read(v.addr_of(i + k), buf.subspan(k * sizeof(Page), sizeof(Page)));
      }
      if (Status st = r.submit(batch); !st.ok()) die("submit", st);
      if (Status st = r.wait(batch); !st.ok()) die("wait", st);
      check += static_cast<std::uint64_t>(buf[0]);
    }
    seq_rate.push_back(kPages / seconds_since(t));

    // Every page once, in a random order, through gather.
    std::shuffle(order.begin(), order.end(), rng);
    drop_cache();
    t = Clock::now();
    for (std::size_t i = 0; i < kPages; i += kGatherChunk) {
      const std::span<const std::size_t> idx(order.data() + i, kGatherChunk);
      if (Status st = v.gather(idx, out); !st.ok()) die("gather", st);
      for (std::size_t k = 0; k < kGatherChunk; ++k) {
        if (out[k][7] != idx[k]) die("gather", DataLoss("wrong page read back"));
      }
    }
    gather_rate.push_back(kPages / seconds_since(t));

    // Every page once, in another random order, by kCoroutines coroutines on one thread.
    std::shuffle(order.begin(), order.end(), rng);
    drop_cache();
    t = Clock::now();
    {
      Scheduler sched(r);
      int wrong = 0;
      const std::size_t share = kPages / kCoroutines;
      for (std::size_t c = 0; c < kCoroutines; ++c) {
        sched.spawn(read_pages(v, std::span<const std::size_t>(order.data() + c * share, share),
                               &wrong));
      }
      if (Status st = sched.run(); !st.ok()) die("Scheduler::run", st);
      if (wrong != 0) die("co_await load", DataLoss("wrong page read back"));
      coro_peak = std::max(coro_peak, sched.stats().peak_in_flight);
    }
    coro_rate.push_back(kPages / seconds_since(t));

    // One synchronous miss at a time.
    drop_cache();
    t = Clock::now();
    for (std::size_t i = 0; i < kSyncPages; ++i) {
      auto p = v.load(order[i]);
      if (!p.ok()) die("load", p.status());
      if ((*p)[7] != order[i]) die("load", DataLoss("wrong page read back"));
    }
    sync_rate.push_back(kSyncPages / seconds_since(t));
  }
  const double g = median(gather_rate), c = median(coro_rate), s = median(seq_rate),
               y = median(sync_rate);
  std::fprintf(stderr, "farmem_bench_gather: %zu pages, budget %llu MiB, check %llu\n", kPages,
               static_cast<unsigned long long>(kBudget >> 20),
               static_cast<unsigned long long>(check));
  std::printf("{\"gather_random_pages_s\": %.0f, \"coro_random_pages_s\": %.0f, "
              "\"seq_batched_pages_s\": %.0f, \"sync_random_pages_s\": %.0f, "
              "\"async_random_ratio\": %.3f, \"coro_random_ratio\": %.3f, "
              "\"gather_vs_sync\": %.3f, \"coro_peak_in_flight\": %zu}\n",
              g, c, s, y, g / s, c / s, g / y, coro_peak);
  return 0;
}
