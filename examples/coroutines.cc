// Coroutines on far memory: each lookup is plain sequential code, yet one thread keeps many
// misses in flight, because a coroutine that misses suspends while its page travels and the
// scheduler runs the others.   coroutines [SERVER_URL...]   (default "local"; FARMEM_TOKEN)
#include <farmem/farmem.h>

#include <cstdio>
#include <cstdlib>
#include <random>

// Follows a chain of `hops` random links through the table and adds up what it visits.
farmem::Task<> walk(farmem::far_vector<std::uint64_t>& table, std::uint64_t start, int hops,
                    std::uint64_t* sum, int* errors) {
  std::uint64_t at = start;
  for (int h = 0; h < hops; ++h) {
    farmem::Result<std::uint64_t> next = co_await farmem::load(table, at);  // may suspend
    if (!next.ok()) { ++*errors; co_return; }                // e.g. the memserver died
    *sum += *next;
    at = *next % table.size();
  }
}

int main(int argc, char** argv) {
  farmem::RuntimeOptions opts;
  if (argc > 1) opts.servers.assign(argv + 1, argv + argc);
  if (const char* t = std::getenv("FARMEM_TOKEN")) opts.auth_token = t;
  opts.cache_budget_bytes = 4 << 20;               // 4 MiB local for 64 MiB of links
  auto rt = farmem::Runtime::open(opts).value();

  farmem::far_vector<std::uint64_t> table(*rt);
  const std::size_t n = 8 << 20;
  auto link = [](std::uint64_t i) { return i * 0x9E3779B97F4A7C15ull + 1; };
  if (!table.append(n, link).ok()) return 1;

  farmem::Scheduler sched(*rt);                    // one thread runs them all
  std::uint64_t sums[256] = {};
  int errors = 0;
  for (int w = 0; w < 256; ++w) sched.spawn(walk(table, w * 4099, 16, &sums[w], &errors));
  if (auto st = sched.run(); !st.ok()) { std::fprintf(stderr, "%s\n", st.to_string().c_str()); return 1; }

  // The same walks one at a time, with plain loads, must agree.
  bool ok = errors == 0;
  for (int w = 0; w < 256; ++w) {
    std::uint64_t at = w * 4099, sum = 0;
    for (int h = 0; h < 16; ++h) { sum += link(at); at = link(at) % n; }
    ok &= sum == sums[w];
  }
  std::printf("coroutines: %s, at most %zu misses in flight\n", ok ? "ok" : "WRONG DATA",
              sched.stats().peak_in_flight);
  return ok ? 0 : 1;
}
