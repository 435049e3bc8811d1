// farmem_test_client URL TOKEN SLABS: connects, leases SLABS slabs, writes to each, prints
// "ready" and then waits to be killed (at most 60 s, so it never outlives a broken test).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "transport/connect.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: farmem_test_client URL TOKEN SLABS\n");
    return 2;
  }
  using namespace farmem;
  transport::ConnectOptions co;
  co.token = argv[2];
  auto conn = transport::connect(argv[1], co);
  if (!conn.ok()) {
    std::fprintf(stderr, "connect: %s\n", conn.status().to_string().c_str());
    return 1;
  }
  std::vector<std::byte> buf(4096, std::byte{0x5A});
  auto reg = (*conn)->register_memory(buf.data(), buf.size());
  if (!reg.ok()) return 1;
  const int slabs = std::atoi(argv[3]);
  for (int i = 0; i < slabs; ++i) {
    auto s = transport::alloc_slab(**conn, 1 << 20, std::chrono::seconds(10));
    if (!s.ok()) {
      std::fprintf(stderr, "alloc: %s\n", s.status().to_string().c_str());
      return 1;
    }
    transport::Op w{transport::OpKind::kWrite, 4096, buf.data(), (*reg)->lkey(), s->rkey, s->addr};
    if (!(*conn)->execute(w, std::chrono::seconds(10)).ok()) return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::seconds(60));
  return 0;
}
