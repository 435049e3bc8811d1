// A mapped region: far memory behind a plain pointer, faulted in through userfaultfd.
//   region [SERVER_URL...]   (default "local"; FARMEM_TOKEN: the auth token)
// Needs Linux >= 5.7 and the right to use userfaultfd (root, CAP_SYS_PTRACE or
// /dev/userfaultfd).
#include <farmem/farmem.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// Exits with the error's message unless `s` is ok.
void check(const farmem::Status& s) {
  if (!s.ok()) { std::fprintf(stderr, "%s\n", s.to_string().c_str()); std::exit(1); }
}

int main(int argc, char** argv) {
  farmem::RuntimeOptions opts;
  if (argc > 1) opts.servers.assign(argv + 1, argv + argc);
  if (const char* t = std::getenv("FARMEM_TOKEN")) opts.auth_token = t;
  opts.cache_budget_bytes = 16 << 20;              // regions share it with far_ptr pages
  auto rt = farmem::Runtime::open(opts).value();

  auto region = rt->map(64 << 20).value();         // 64 MiB of far memory, 4x the budget
  std::byte* p = region->data();                   // any code may load and store through it
  std::memset(p, 7, region->size());               // pages fault in; dirty ones are written
  check(region->flush());                          // back under pressure and by flush()
  check(region->advise(0, 4 << 20, farmem::Advice::kWillNeed));
  check(region->set_pull_order({5, 4, 3}));        // pull these pages first, in the background
  const farmem::FarRange far = region->far();
  region.reset();                                  // unmaps; the far range stays allocated
  auto again = rt->open_region(far).value();       // the same bytes, mapped anew

  const std::byte* q = again->data();
  const bool ok = std::all_of(q, q + again->size(), [](std::byte b) { return b == std::byte{7}; });
  again.reset();
  check(rt->free(far));
  std::printf("region: %s\n", ok ? "ok" : "WRONG DATA");
  return ok ? 0 : 1;
}
