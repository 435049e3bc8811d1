// An outside program: uses only the installed public headers and libfarmem.
#include <farmem/farmem.h>

#include <cstdio>
#include <cstring>

int main() {
  farmem::RuntimeOptions opts;  // embedded "local" memserver
  opts.local_buffer_bytes = 1 << 20;
  auto rt = farmem::Runtime::open(opts);
  if (!rt.ok()) {
    std::fprintf(stderr, "open: %s\n", rt.status().to_string().c_str());
    return 1;
  }
  auto range = (*rt)->allocate(1 << 20);
  if (!range.ok()) return 2;
  auto buf = (*rt)->local_buffer();
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = std::byte(i * 7 + 3);
  if (!(*rt)->write(range->addr, buf).ok()) return 3;
  std::memset(buf.data(), 0, buf.size());
  if (!(*rt)->read(range->addr, buf).ok()) return 4;
  for (std::size_t i = 0; i < buf.size(); ++i) {
    if (buf[i] != std::byte(i * 7 + 3)) return 5;
  }
  std::printf("consumer: wrote and read back %zu bytes with farmem %s\n", buf.size(),
              farmem::version());
  return 0;
}
