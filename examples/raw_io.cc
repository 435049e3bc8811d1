// Raw far ranges: one-sided reads and writes through registered memory, one at a time or
// batched.   raw_io [SERVER_URL...]   (default "local"; FARMEM_TOKEN: the auth token)
#include <farmem/farmem.h>

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
  auto rt = farmem::Runtime::open(opts).value();

  auto range = rt->allocate(256 << 20).value();    // 256 MiB, contiguous in far memory
  auto buf = rt->local_buffer();                   // registered: RDMA lands here directly
  std::memset(buf.data(), 7, 4096);
  check(rt->write(range.addr + (100 << 20), buf.first(4096)));  // blocking, one page

  farmem::IoBatch batch;                           // many operations, one submit + wait
  for (int i = 1; i <= 16; ++i) {
    batch.read(range.addr + (100 << 20), buf.subspan(i * 4096, 4096));
  }
  check(rt->submit(batch));
  check(rt->wait(batch));
  check(rt->free(range));                          // an empty slab goes back to its server

  const bool ok = std::memcmp(buf.data(), buf.data() + 16 * 4096, 4096) == 0;
  std::printf("raw_io: %s\n", ok ? "ok" : "WRONG DATA");
  return ok ? 0 : 1;
}
