// Many misses in flight from one thread: gather random elements of a far_vector (the next
// group's pages are fetched while this group is copied) and prefetch a set of far pointers
// before visiting them.   gather [SERVER_URL...]   (default "local"; FARMEM_TOKEN: the token)
#include <farmem/farmem.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

// Exits with the error's message unless `s` is ok.
void check(const farmem::Status& s) {
  if (!s.ok()) { std::fprintf(stderr, "%s\n", s.to_string().c_str()); std::exit(1); }
}

int main(int argc, char** argv) {
  farmem::RuntimeOptions opts;
  if (argc > 1) opts.servers.assign(argv + 1, argv + argc);
  if (const char* t = std::getenv("FARMEM_TOKEN")) opts.auth_token = t;
  opts.cache_budget_bytes = 4 << 20;               // 4 MiB local for 64 MiB of values
  auto rt = farmem::Runtime::open(opts).value();

  farmem::far_vector<std::uint64_t> v(*rt);
  const std::size_t n = 8 << 20;
  check(v.append(n, [](std::size_t i) { return i * i; }));

  std::mt19937_64 rng(1);
  std::vector<std::size_t> idx(4096);
  for (auto& i : idx) i = rng() % n;               // 4096 random elements, most far away
  std::vector<std::uint64_t> out(idx.size());
  check(v.gather(idx, out));                       // one call, many misses in flight

  bool ok = true;
  for (std::size_t k = 0; k < idx.size(); ++k) ok &= out[k] == idx[k] * idx[k];

  std::vector<farmem::far_ptr<std::uint64_t>> ptrs;  // objects, fetched as one batch
  std::vector<farmem::FarAddr> addrs;
  for (int i = 0; i < 64; ++i) {
    ptrs.push_back(rt->make_far<std::uint64_t>(i).value());
    addrs.push_back(ptrs.back().addr());
  }
  check(rt->prefetch(addrs));                      // returns at once; pages travel together
  farmem::DerefScope scope(*rt);
  for (int i = 0; i < 64; ++i) ok &= ptrs[i].deref(scope) == static_cast<std::uint64_t>(i);

  std::printf("gather: %s\n", ok ? "ok" : "WRONG DATA");
  return ok ? 0 : 1;
}
