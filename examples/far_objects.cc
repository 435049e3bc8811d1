// Far objects through the page cache: far_ptr, far_vector, far_hash_map.
//   far_objects [SERVER_URL...]   e.g. rdma://10.0.0.7:7471 tcp://10.0.0.8:7472
// Default: "local", an in-process memserver. FARMEM_TOKEN: the memservers' auth token.
#include <farmem/farmem.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>

// Exits with the error's message unless `s` is ok.
void check(const farmem::Status& s) {
  if (!s.ok()) { std::fprintf(stderr, "%s\n", s.to_string().c_str()); std::exit(1); }
}

int main(int argc, char** argv) {
  farmem::RuntimeOptions opts;                     // servers default to {"local"}
  if (argc > 1) opts.servers.assign(argv + 1, argv + argc);
  if (const char* t = std::getenv("FARMEM_TOKEN")) opts.auth_token = t;
  opts.cache_budget_bytes = 4 << 20;               // local memory for cached far pages
  auto rt = farmem::Runtime::open(opts).value();

  // Explicit far objects (AIFM-style): a hit is a plain load, no lock, no atomic RMW.
  struct Node { std::uint64_t key, count; };
  auto p = rt->make_far<Node>(Node{42, 0}).value();
  {
    farmem::DerefScope scope(*rt);                 // pages touched in it stay resident
    p.deref_mut(scope).count++;                    // until it ends; marks the page dirty
  }
  const std::size_t n = 2 << 20;                   // 16 MiB of doubles: 4x the budget
  farmem::far_vector<double> v(*rt);               // growable, with iterators
  check(v.push_back(0));                           // one element, one scope
  check(v.append(n - 1, [](std::size_t i) { return double(i); }));  // a scope per page
  double sum = 0;                                  // for_each opens a scope per page
  check(v.for_each([&](std::size_t, const double& x) { sum += x; }));
  farmem::far_hash_map<std::uint64_t, Node> kv(*rt);
  check(kv.put(7, Node{7, 1}));
  std::optional<Node> got = kv.get(7).value();     // value() throws if the fetch failed
  check(rt->flush());                              // every dirty page durable on the memservers

  farmem::DerefScope scope(*rt);
  const bool ok = p.deref(scope).count == 1 && sum == n * (n - 1) / 2.0 &&
                  got.has_value() && got->count == 1;
  std::printf("far_objects: %s\n", ok ? "ok" : "WRONG DATA");
  return ok ? 0 : 1;
}
