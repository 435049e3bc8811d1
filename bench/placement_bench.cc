// farmem_bench_placement: where far memory goes across memservers of different sizes.
//
// Three in-process memservers on 127.0.0.1 (TCP) of 128, 256 and 512 MiB; one runtime
// allocates 4 MiB slabs until it has leased 25 %, 50 % and 75 % of the 896 MiB, then one
// striped allocation of 96 MiB. Placement by free room (power of two choices over reported
// free bytes) should give each server a share of the far bytes close to its share of the
// capacity (a server with twice the room gets about twice the slabs). At each step it prints
// per server: leased MiB, free MiB, share of the far bytes vs share of the capacity; the last
// stdout line is one JSON object:
//   placement_max_share_deviation   max over steps and servers of
//                                   |far share - capacity share| (0 = exactly proportional)
//   placement_max_free_spread       max over steps of (max - min) free fraction
//   placement_striped_servers       servers the 96 MiB allocation was striped over
// Counts, not timings: the figures are the same on any machine for a given seed.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/version_flag.h"
#include "farmem/farmem.h"
#include "memserver/server.h"

namespace {

using namespace farmem;

[[noreturn]] void die(const char* what, const Status& st) {
  std::fprintf(stderr, "farmem_bench_placement: %s: %s\n", what, st.to_string().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  bench::handle_version_flag(argc, argv, "farmem_bench_placement");
  const std::vector<std::uint64_t> mib = {128, 256, 512};
  std::vector<std::unique_ptr<memserver::Server>> servers;
  RuntimeOptions o;
  o.servers.clear();
  o.slab_bytes = 4u << 20;
  o.local_buffer_bytes = 1u << 20;
  std::uint64_t total = 0;
  for (std::uint64_t m : mib) {
    memserver::ServerOptions so;
    so.core.capacity_bytes = m << 20;
    so.tcp = memserver::ListenAddress{"127.0.0.1", 0};
    auto s = memserver::Server::start(so);
    if (!s.ok()) die("memserver", s.status());
    o.servers.push_back("tcp://127.0.0.1:" + std::to_string((*s)->tcp_port()));
    servers.push_back(std::move(s).value());
    total += m << 20;
  }
  auto rt = Runtime::open(o);
  if (!rt.ok()) die("runtime", rt.status());

  double max_dev = 0, max_spread = 0;
  auto report = [&](const char* step) {
    auto st = (*rt)->server_stats();
    if (!st.ok()) die("server_stats", st.status());
    std::uint64_t leased = 0;
    for (auto& s : *st) leased += s.leased_by_me;
    double lo = 1, hi = 0;
    std::printf("%-18s", step);
    for (std::size_t i = 0; i < st->size(); ++i) {
      const auto& s = (*st)[i];
      const double far_share = leased ? double(s.leased_by_me) / double(leased) : 0;
      const double cap_share = double(s.capacity_bytes) / double(total);
      const double free_frac = double(s.capacity_bytes - s.used_bytes) / double(s.capacity_bytes);
      max_dev = std::max(max_dev, std::fabs(far_share - cap_share));
      lo = std::min(lo, free_frac);
      hi = std::max(hi, free_frac);
      std::printf("  [%3llu MiB: leased %4llu free %4llu share %.3f/%.3f]",
                  static_cast<unsigned long long>(s.capacity_bytes >> 20),
                  static_cast<unsigned long long>(s.leased_by_me >> 20),
                  static_cast<unsigned long long>((s.capacity_bytes - s.used_bytes) >> 20),
                  far_share, cap_share);
    }
    max_spread = std::max(max_spread, hi - lo);
    std::printf("  free spread %.3f\n", hi - lo);
  };

  std::vector<FarRange> got;
  for (int pct : {25, 50, 75}) {
    while ((*rt)->stats().far_bytes_leased < total * static_cast<unsigned>(pct) / 100) {
      auto r = (*rt)->allocate(4u << 20);
      if (!r.ok()) die("allocate", r.status());
      got.push_back(*r);
    }
    report((std::to_string(pct) + "% leased").c_str());
  }
  auto before = (*rt)->server_stats();
  if (!before.ok()) die("server_stats", before.status());
  auto big = (*rt)->allocate(96u << 20);
  if (!big.ok()) die("striped allocate", big.status());
  report("+96 MiB striped");
  int striped = 0;
  auto after = (*rt)->server_stats();
  if (!after.ok()) die("server_stats", after.status());
  for (std::size_t i = 0; i < after->size(); ++i) {
    striped += (*after)[i].leased_by_me > (*before)[i].leased_by_me;
  }
  for (auto& r : got) (void)(*rt)->free(r);
  (void)(*rt)->free(*big);
  std::printf("{\"placement_max_share_deviation\": %.4f, \"placement_max_free_spread\": %.4f, "
              "\"placement_striped_servers\": %d}\n",
              max_dev, max_spread, striped);
  return 0;
}
