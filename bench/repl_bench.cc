// farmem_bench_repl: what replication (RuntimeOptions::replicas) costs and how fast it heals,
// through the public Runtime API against real farmem-memserver processes (ci/bench-rxe starts
// them in the soft-RoCE VM and passes their URLs and pids). In order:
//   1. replicas = 2 on servers 0,1 vs replicas = 1 on server 0, both runtimes open at once and
//      measured in alternating rounds (so that a drift of the host hits both alike):
//      the page cache's write-back (dirty far_vector pages, then flush(); only the flush is
//      timed), batched raw 4 KiB writes (128 in flight), and a synchronous raw 4 KiB
//      Runtime::read (not a far_ptr miss) for latency.
//   2. replicas = 2 on servers 0,1,2 holding --rebuild-far of far memory: synchronous 4 KiB
//      reads for a second, then server 2 is SIGKILLed and the reads go on for a second more
//      (failover_read_ratio: the mean read latency of that second vs the one before); then,
//      with the application idle, the time from the kill until every slab has two live copies
//      again (rereplicate_s), at the default replica_copy_bytes_per_sec; every byte is read
//      back and checked afterwards.
//   3. (--unthrottled, needs a fourth server) the rebuild again on servers 0,1,3, killing 3,
//      with the copy rate set far above what the link carries.
// The bench SIGKILLs the pids it is given, and nothing else. Last stdout line: one JSON object.
#include <signal.h>
#include <sys/types.h>

#include <farmem/farmem.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kPage = 4096;
// As farmem_bench_rdma's bandwidth run (and ib_read_bw's default --tx-depth): 128 ops in
// flight, as kBatches batches of kBatchOps.
constexpr int kBatches = 8;
constexpr int kBatchOps = 16;
// The local buffer: 128 in-flight pages, and the 1 MiB chunks the fill and the check move.
constexpr std::uint64_t kLocalBuffer = 1u << 20;
// Slabs of the rebuild run: 2 MiB (the memserver's lease granule) gives many slabs, so that
// copies and reads spread over all three servers as an application's would.
constexpr std::uint64_t kRebuildSlab = 2u << 20;
// Length of the failover windows before and after the kill, as the issue defines the figure.
constexpr auto kWindow = std::chrono::seconds(1);
// Bound on waiting for the copies to be rebuilt (256 MiB at 32 MiB/s is ~8 s; TCG is slow).
constexpr auto kRebuildDeadline = std::chrono::seconds(900);
// "Unthrottled": a pace no soft-RoCE link reaches, so the pacing never waits.
constexpr std::uint64_t kUnthrottledRate = 64ull << 30;
volatile std::uint64_t benchmark_sink = 0;

int fail(const char* what, const farmem::Status& st) {
  std::fprintf(stderr, "farmem_bench_repl: %s: %s\n", what, st.to_string().c_str());
  return 1;
}

double since_us(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / double(v.size());
}

// The word at byte offset `off` (a multiple of 8) of far memory filled with `seed`.
std::uint64_t pattern(std::uint64_t seed, std::uint64_t off) {
  return (off / 8 + seed) * 0x9E3779B97F4A7C15ull;
}

struct Setup {
  std::string token;
  std::uint64_t far_bytes = 64u << 20;   // each runtime's far memory in the ratio runs
  std::uint64_t wb_bytes = 16u << 20;    // dirtied and flushed per write-back round
  int rounds = 4;                        // alternations of the ratio runs
  int lat_iters = 4000;                  // reads per runtime per round
  int write_iters = 8192;                // raw 4 KiB writes per runtime per round
};

farmem::RuntimeOptions options_for(std::vector<std::string> servers, const Setup& s,
                                   std::uint32_t replicas) {
  farmem::RuntimeOptions o;
  o.servers = std::move(servers);
  o.auth_token = s.token;
  o.replicas = replicas;
  o.local_buffer_bytes = kLocalBuffer;
  return o;
}

// ---- 1. replicas = 2 vs 1 ------------------------------------------------------------------

// One runtime of the ratio runs, with what it measured summed over the rounds.
struct Side {
  std::unique_ptr<farmem::Runtime> rt;
  farmem::FarRange far{};
  std::optional<farmem::far_vector<std::uint64_t>> vec;
  std::vector<double> lat_us;
  double wb_bytes = 0, wb_sec = 0, raw_bytes = 0, raw_sec = 0;
};

farmem::Status open_side(Side& side, farmem::RuntimeOptions o, const Setup& s) {
  o.slab_bytes = s.far_bytes;
  o.cache_budget_bytes = 4 * s.wb_bytes;  // the dirtied pages fit: no eviction while dirtying
  o.prefetch = false;
  FARMEM_ASSIGN_OR_RETURN(side.rt, farmem::Runtime::open(std::move(o)));
  FARMEM_ASSIGN_OR_RETURN(side.far, side.rt->allocate(s.far_bytes));
  side.vec.emplace(*side.rt);
  return side.vec->resize(s.wb_bytes / sizeof(std::uint64_t));
}

farmem::Status read_round(Side& side, const Setup& s, std::mt19937_64& rng) {
  auto buf = side.rt->local_buffer().first(kPage);
  const std::uint64_t pages = s.far_bytes / kPage;
  for (int i = 0; i < s.lat_iters; ++i) {
    const auto t0 = Clock::now();
    FARMEM_RETURN_IF_ERROR(side.rt->read(side.far.addr + rng() % pages * kPage, buf));
    side.lat_us.push_back(since_us(t0));
  }
  return farmem::Status::Ok();
}

// Dirties one word of every page of the vector (untimed), then times the flush that writes
// them back; counts the pages the cache says it wrote back meanwhile.
farmem::Status writeback_round(Side& side, std::uint64_t round) {
  auto& v = *side.vec;
  const std::size_t per_page = kPage / sizeof(std::uint64_t);
  for (std::size_t i = 0; i < v.size(); i += per_page) {
    farmem::DerefScope scope(*side.rt);
    v.get_mut(i, scope) = round;
  }
  const auto before = side.rt->cache_stats().writebacks;
  const auto t0 = Clock::now();
  FARMEM_RETURN_IF_ERROR(side.rt->flush());
  side.wb_sec += since_us(t0) / 1e6;
  side.wb_bytes += double(side.rt->cache_stats().writebacks - before) * kPage;
  return farmem::Status::Ok();
}

// write_iters random 4 KiB writes, kBatches batches in flight, each resubmitted on completion.
farmem::Status raw_write_round(Side& side, const Setup& s, std::mt19937_64& rng) {
  auto buf = side.rt->local_buffer();
  const std::uint64_t pages = s.far_bytes / kPage;
  std::vector<farmem::IoBatch> batches(kBatches);
  auto fill = [&](int b) {
    batches[b].clear();
    for (int k = 0; k < kBatchOps; ++k) {
      batches[b].write(side.far.addr + rng() % pages * kPage,
                       buf.subspan((b * kBatchOps + k) * kPage, kPage));
    }
  };
  const int rounds = std::max(1, s.write_iters / (kBatches * kBatchOps));
  const auto t0 = Clock::now();
  for (int b = 0; b < kBatches; ++b) {
    fill(b);
    FARMEM_RETURN_IF_ERROR(side.rt->submit(batches[b]));
  }
  for (int r = 0; r < rounds; ++r) {
    for (int b = 0; b < kBatches; ++b) {
      FARMEM_RETURN_IF_ERROR(side.rt->wait(batches[b]));
      if (r + 1 == rounds) continue;
      fill(b);
      FARMEM_RETURN_IF_ERROR(side.rt->submit(batches[b]));
    }
  }
  side.raw_sec += since_us(t0) / 1e6;
  side.raw_bytes += double(rounds) * kBatches * kBatchOps * kPage;
  return farmem::Status::Ok();
}

farmem::Status replica_ratios(const std::vector<std::string>& urls, const Setup& s,
                              nlohmann::json& out) {
  Side one, two;
  FARMEM_RETURN_IF_ERROR(open_side(one, options_for({urls[0]}, s, 1), s));
  FARMEM_RETURN_IF_ERROR(open_side(two, options_for({urls[0], urls[1]}, s, 2), s));
  std::mt19937_64 rng(1);
  // A warm-up round of each (connections, first-touch of the cache), then the measured
  // rounds in alternating order: 1,2 then 2,1.
  for (int r = -1; r < s.rounds; ++r) {
    Side* order[2] = {&one, &two};
    if (r % 2 != 0) std::swap(order[0], order[1]);
    for (Side* side : order) {
      const std::size_t lat_before = side->lat_us.size();
      FARMEM_RETURN_IF_ERROR(read_round(*side, s, rng));
      FARMEM_RETURN_IF_ERROR(writeback_round(*side, std::uint64_t(r + 2)));
      FARMEM_RETURN_IF_ERROR(raw_write_round(*side, s, rng));
      if (r < 0) {  // the warm-up round counts for nothing
        side->lat_us.resize(lat_before);
        side->wb_bytes = side->wb_sec = side->raw_bytes = side->raw_sec = 0;
      }
    }
  }
  const double lat1 = median(one.lat_us), lat2 = median(two.lat_us);
  const double wb1 = one.wb_bytes / one.wb_sec / 1048576.0;
  const double wb2 = two.wb_bytes / two.wb_sec / 1048576.0;
  const double raw1 = one.raw_bytes / one.raw_sec / 1048576.0;
  const double raw2 = two.raw_bytes / two.raw_sec / 1048576.0;
  out["repl_read_lat_4k_r1_us"] = lat1;
  out["repl_read_lat_4k_r2_us"] = lat2;
  out["repl2_read_lat_ratio"] = lat2 / lat1;
  out["repl_writeback_r1_mbs"] = wb1;
  out["repl_writeback_r2_mbs"] = wb2;
  out["repl2_write_ratio"] = wb2 / wb1;
  out["repl_raw_write_4k_r1_mbs"] = raw1;
  out["repl_raw_write_4k_r2_mbs"] = raw2;
  out["repl2_raw_write_ratio"] = raw2 / raw1;
  return farmem::Status::Ok();
}

// ---- 2./3. a kill, the failover, the rebuild -----------------------------------------------

struct Rebuilt {
  std::vector<double> before_us, after_us;
  double detect_s = -1, rereplicate_s = -1;
  std::uint64_t bytes = 0, pieces = 0, wrong_words = 0;
};

farmem::Status fill(farmem::Runtime& rt, const std::vector<farmem::FarRange>& far) {
  auto buf = rt.local_buffer();
  auto* words = reinterpret_cast<std::uint64_t*>(buf.data());
  for (std::size_t i = 0; i < far.size(); ++i) {
    for (std::uint64_t at = 0; at < far[i].bytes; at += buf.size()) {
      for (std::uint64_t k = 0; k < buf.size() / 8; ++k) {
        words[k] = pattern(i, at + k * 8);
      }
      FARMEM_RETURN_IF_ERROR(rt.write(far[i].addr + at, buf));
    }
  }
  return farmem::Status::Ok();
}

// Random synchronous 4 KiB reads until `end`, each checked against the pattern (untimed).
// Notes in `detected` when the stats first show a server down.
farmem::Status read_until(farmem::Runtime& rt, const std::vector<farmem::FarRange>& far,
                          Clock::time_point end, std::mt19937_64& rng, Rebuilt& r,
                          std::vector<double>& lat,
                          std::optional<Clock::time_point> killed) {
  auto buf = rt.local_buffer().first(kPage);
  const auto* words = reinterpret_cast<const std::uint64_t*>(buf.data());
  const std::uint64_t pages = far[0].bytes / kPage;
  auto next_poll = Clock::now();
  for (int n = 0; n < 10'000'000 && Clock::now() < end; ++n) {  // bounded by `end` too
    const std::size_t i = rng() % far.size();
    const std::uint64_t off = rng() % pages * kPage;
    const auto t0 = Clock::now();
    FARMEM_RETURN_IF_ERROR(rt.read(far[i].addr + off, buf));
    lat.push_back(since_us(t0));
    for (std::uint64_t k = 0; k < kPage / 8; ++k) {
      r.wrong_words += words[k] != pattern(i, off + k * 8) ? 1 : 0;
    }
    if (killed && r.detect_s < 0 && Clock::now() >= next_poll) {
      next_poll = Clock::now() + std::chrono::milliseconds(10);
      if (rt.stats().servers_down > 0) {
        r.detect_s = std::chrono::duration<double>(Clock::now() - *killed).count();
      }
    }
  }
  return farmem::Status::Ok();
}

farmem::Status check_all(farmem::Runtime& rt, const std::vector<farmem::FarRange>& far,
                         Rebuilt& r) {
  auto buf = rt.local_buffer();
  const auto* words = reinterpret_cast<const std::uint64_t*>(buf.data());
  for (std::size_t i = 0; i < far.size(); ++i) {
    for (std::uint64_t at = 0; at < far[i].bytes; at += buf.size()) {
      FARMEM_RETURN_IF_ERROR(rt.read(far[i].addr + at, buf));
      for (std::uint64_t k = 0; k < buf.size() / 8; ++k) {
        r.wrong_words += words[k] != pattern(i, at + k * 8) ? 1 : 0;
      }
    }
  }
  return farmem::Status::Ok();
}

// Three servers, replicas = 2, `far_bytes` written; SIGKILLs `victim` (the third server's
// process) and measures what the application and the rebuild see.
farmem::Result<Rebuilt> kill_and_rebuild(std::vector<std::string> urls, pid_t victim,
                                         const Setup& s, std::uint64_t far_bytes,
                                         std::uint64_t copy_rate, bool reads) {
  auto o = options_for(std::move(urls), s, 2);
  o.slab_bytes = kRebuildSlab;
  o.replica_copy_bytes_per_sec = copy_rate;
  o.cache_budget_bytes = 4u << 20;  // raw reads only: the cache is not used
  FARMEM_ASSIGN_OR_RETURN(auto rt, farmem::Runtime::open(std::move(o)));
  std::vector<farmem::FarRange> far;
  for (std::uint64_t at = 0; at < far_bytes; at += kRebuildSlab) {
    FARMEM_ASSIGN_OR_RETURN(auto f, rt->allocate(kRebuildSlab));
    far.push_back(f);
  }
  FARMEM_RETURN_IF_ERROR(fill(*rt, far));
  Rebuilt r;
  std::mt19937_64 rng(2);
  if (reads) {
    std::vector<double> warm;
    FARMEM_RETURN_IF_ERROR(read_until(*rt, far, Clock::now() + std::chrono::milliseconds(200),
                                      rng, r, warm, std::nullopt));
    FARMEM_RETURN_IF_ERROR(read_until(*rt, far, Clock::now() + kWindow, rng, r, r.before_us,
                                      std::nullopt));
  }
  if (kill(victim, SIGKILL) != 0) return farmem::Internal("cannot SIGKILL the memserver");
  const auto killed = Clock::now();
  if (reads) {
    FARMEM_RETURN_IF_ERROR(read_until(*rt, far, killed + kWindow, rng, r, r.after_us, killed));
  }
  // The application is idle now; wait for the copies (polling the stats, with a deadline).
  for (;;) {
    const farmem::RuntimeStats st = rt->stats();
    const auto now = Clock::now();
    if (st.servers_down > 0 && r.detect_s < 0) {
      r.detect_s = std::chrono::duration<double>(now - killed).count();
    }
    if (st.slabs_lost > 0) return farmem::DataLoss("slabs lost with one server killed");
    if (st.servers_down == 1 && st.slabs_degraded == 0) {
      r.rereplicate_s = std::chrono::duration<double>(now - killed).count();
      r.bytes = st.bytes_rereplicated;
      r.pieces = st.rereplications;
      break;
    }
    if (now - killed > kRebuildDeadline) return farmem::TimedOut("copies not rebuilt in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  FARMEM_RETURN_IF_ERROR(check_all(*rt, far, r));
  return r;
}

void report_rebuild(const Rebuilt& r, std::uint64_t copy_rate, const char* prefix,
                    nlohmann::json& out) {
  const std::string p = prefix;
  out[p + "_s"] = r.rereplicate_s;
  out[p + "_detect_s"] = r.detect_s;
  out[p + "_bytes"] = r.bytes;
  out[p + "_pieces"] = r.pieces;
  // Bytes moved per second over the whole time from the kill, and over the copying alone
  // (from the server being judged dead).
  out[p + "_mbs"] = double(r.bytes) / r.rereplicate_s / 1048576.0;
  out[p + "_copy_mbs"] = double(r.bytes) / (r.rereplicate_s - r.detect_s) / 1048576.0;
  out[p + "_rate_limit_mbs"] = double(copy_rate) / 1048576.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"farmem_bench_repl: replication's cost and its healing over real memservers"};
  std::vector<std::string> servers;
  std::vector<pid_t> pids;
  std::string token_file;
  Setup s;
  std::uint64_t rebuild_far = 256u << 20;
  bool unthrottled = false;
  std::uint64_t copy_rate = farmem::RuntimeOptions{}.replica_copy_bytes_per_sec;
  app.add_option("--server", servers, "A memserver URL (3, or 4 with --unthrottled), in order")
      ->required();
  app.add_option("--pid", pids, "The pid of each --server's process, same order (SIGKILLed)")
      ->required();
  app.add_option("--token", s.token, "Auth token");
  app.add_option("--token-file", token_file, "Read the auth token from FILE")
      ->check(CLI::ExistingFile);
  app.add_option("--far", s.far_bytes, "Far memory of each runtime in the ratio runs")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--writeback", s.wb_bytes, "Bytes dirtied and flushed per write-back round")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--rounds", s.rounds, "Alternating rounds of the ratio runs")
      ->capture_default_str();
  app.add_option("--lat-iters", s.lat_iters, "Timed reads per runtime per round")
      ->capture_default_str();
  app.add_option("--write-iters", s.write_iters, "Raw 4 KiB writes per runtime per round")
      ->capture_default_str();
  app.add_option("--rebuild-far", rebuild_far, "Far memory (one copy's worth) to rebuild")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--copy-rate", copy_rate,
                 "replica_copy_bytes_per_sec of the failover and rereplicate run (default: "
                 "RuntimeOptions' default)")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_flag("--unthrottled", unthrottled,
               "Also time a rebuild without pacing (needs a fourth --server)");
  app.set_version_flag("--version", std::string("farmem_bench_repl ") + farmem::version());
  CLI11_PARSE(app, argc, argv);
  if (!token_file.empty()) std::getline(std::ifstream(token_file), s.token);
  const std::size_t need = unthrottled ? 4 : 3;
  if (servers.size() != need || pids.size() != need) {
    std::fprintf(stderr, "farmem_bench_repl: give %zu --server and as many --pid\n", need);
    return 2;
  }

  nlohmann::json out;
  if (auto st = replica_ratios(servers, s, out); !st.ok()) return fail("replicas 2 vs 1", st);

  auto r = kill_and_rebuild({servers[0], servers[1], servers[2]}, pids[2], s, rebuild_far,
                            copy_rate, true);
  if (!r.ok()) return fail("kill and rebuild", r.status());
  out["failover_read_before_us"] = mean(r->before_us);
  out["failover_read_before_p50_us"] = median(r->before_us);
  out["failover_read_after_us"] = mean(r->after_us);
  out["failover_read_after_p50_us"] = median(r->after_us);
  out["failover_read_after_max_us"] =
      r->after_us.empty() ? 0.0 : *std::max_element(r->after_us.begin(), r->after_us.end());
  out["failover_reads_after"] = r->after_us.size();
  // The mean over the second: it holds the reads that waited for the dead server and those
  // slowed by the rebuild's copying; the median shows the typical read.
  out["failover_read_ratio"] = mean(r->after_us) / mean(r->before_us);
  out["failover_read_p50_ratio"] = median(r->after_us) / median(r->before_us);
  out["failover_reads_before"] = r->before_us.size();
  // The slow tail of each second: reads that waited behind a rebuild's chunk or for the dead
  // server, against the host's own noise before the kill.
  auto over_1ms = [](const std::vector<double>& v) {
    return std::count_if(v.begin(), v.end(), [](double us) { return us > 1000; });
  };
  out["failover_reads_before_over_1ms"] = over_1ms(r->before_us);
  out["failover_reads_after_over_1ms"] = over_1ms(r->after_us);
  out["rereplicate_far_bytes"] = rebuild_far;
  report_rebuild(*r, copy_rate, "rereplicate", out);
  std::uint64_t wrong = r->wrong_words;
  if (unthrottled) {
    auto u = kill_and_rebuild({servers[0], servers[1], servers[3]}, pids[3], s, rebuild_far,
                              kUnthrottledRate, false);
    if (!u.ok()) return fail("unthrottled rebuild", u.status());
    report_rebuild(*u, kUnthrottledRate, "rereplicate_unthrottled", out);
    wrong += u->wrong_words;
  }
  out["repl_wrong_words"] = wrong;
  std::printf("%s\n", out.dump().c_str());
  if (wrong != 0) {
    std::fprintf(stderr, "farmem_bench_repl: %llu words read back wrong\n",
                 static_cast<unsigned long long>(wrong));
    return 1;
  }
  return 0;
}
