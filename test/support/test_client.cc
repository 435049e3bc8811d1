// farmem_test_client URL TOKEN SLABS [mid-batch|resume]: connects, leases SLABS slabs, writes to
// each, prints "ready" and then waits to be killed (at most 60 s, so it never outlives a broken
// test). With mid-batch it instead posts a batch of writes over all its slabs and kills itself
// (SIGKILL) while the batch is in flight. With resume its connection resumes its session when
// it breaks and PINGs every 100 ms; after "ready" it reads its first page back every 100 ms
// and prints "intact", "WRONG DATA" or "error: ..." for each read.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <string>
#include <vector>

#include "transport/connect.h"

int main(int argc, char** argv) {
  const bool mid_batch = argc == 5 && std::string(argv[4]) == "mid-batch";
  const bool resume = argc == 5 && std::string(argv[4]) == "resume";
  if (argc != 4 && !mid_batch && !resume) {
    std::fprintf(stderr, "usage: farmem_test_client URL TOKEN SLABS [mid-batch|resume]\n");
    return 2;
  }
  using namespace farmem;
  transport::ConnectOptions co;
  co.token = argv[2];
  co.resume_on_break = resume;
  co.heartbeat = std::chrono::milliseconds(resume ? 100 : 0);
  auto conn = transport::connect(argv[1], co);
  if (!conn.ok()) {
    std::fprintf(stderr, "connect: %s\n", conn.status().to_string().c_str());
    return 1;
  }
  std::vector<std::byte> buf(4096, std::byte{0x5A});
  auto reg = (*conn)->register_memory(buf.data(), buf.size());
  if (!reg.ok()) return 1;
  const int slabs = std::atoi(argv[3]);
  std::vector<transport::Op> batch;
  for (int i = 0; i < slabs; ++i) {
    auto s = transport::alloc_slab(**conn, 1 << 20, std::chrono::seconds(10));
    if (!s.ok()) {
      std::fprintf(stderr, "alloc: %s\n", s.status().to_string().c_str());
      return 1;
    }
    transport::Op w{transport::OpKind::kWrite, 4096, buf.data(), (*reg)->lkey(), s->rkey, s->addr};
    if (!(*conn)->execute(w, std::chrono::seconds(10)).ok()) return 1;
    for (std::uint64_t off = 0; off < s->bytes; off += 4096) {
      batch.push_back({transport::OpKind::kWrite, 4096, buf.data(), (*reg)->lkey(), s->rkey,
                       s->addr + off});
    }
  }
  if (mid_batch) {
    std::printf("ready\n");
    std::fflush(stdout);
    transport::Completion done;
    const std::size_t n = std::min<std::size_t>(batch.size(), (*conn)->capabilities().max_batch_ops);
    if (!(*conn)->post(std::span(batch).first(n), done).ok()) return 1;
    raise(SIGKILL);  // with the batch in flight
  }
  std::printf("ready\n");
  std::fflush(stdout);
  if (!resume) {
    std::this_thread::sleep_for(std::chrono::seconds(60));
    return 0;
  }
  std::vector<std::byte> back(4096);
  auto back_reg = (*conn)->register_memory(back.data(), back.size());
  if (!back_reg.ok() || batch.empty()) return 1;
  for (int i = 0; i < 600; ++i) {  // 60 s at most
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    transport::Op r{transport::OpKind::kRead, 4096, back.data(), (*back_reg)->lkey(), batch[0].rkey,
                    batch[0].remote_addr};
    const Status st = (*conn)->execute(r, std::chrono::seconds(5));
    if (!st.ok()) {
      std::printf("error: %s\n", st.to_string().c_str());
    } else {
      std::printf("%s\n", back == buf ? "intact" : "WRONG DATA");
    }
    std::fflush(stdout);
  }
  return 0;
}
