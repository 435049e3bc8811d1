// --capacity auto: the memserver lends a share of what its host can spare and follows
// MemAvailable (read here from a made-up meminfo file), refusing new slabs when the host
// needs memory back and never taking back a leased one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "memserver/auto_capacity.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using namespace std::chrono_literals;
using memserver::AutoCapacity;
using memserver::AutoCapacityOptions;
constexpr std::uint64_t kMiB = 1u << 20;

TEST(AutoCapacity, ParsesItsSpecAndComputesTheShareOfSpareMemory) {
  EXPECT_DOUBLE_EQ(*memserver::parse_auto_capacity("auto"), 0.5);
  EXPECT_DOUBLE_EQ(*memserver::parse_auto_capacity("auto:0.25"), 0.25);
  for (const char* bad : {"auto:0", "auto:1.5", "auto:x", "auto:", "autox", "1G"}) {
    EXPECT_EQ(memserver::parse_auto_capacity(bad).status().code(), StatusCode::kInvalidArgument)
        << bad;
  }
  AutoCapacityOptions o;
  o.fraction = 0.5;
  o.reserve_bytes = 100 * kMiB;
  EXPECT_EQ(memserver::auto_capacity_bytes(1000 * kMiB, 0, o, 2 * kMiB), 400 * kMiB);
  // What it lent is not in MemAvailable any more: it counts as spare.
  EXPECT_EQ(memserver::auto_capacity_bytes(600 * kMiB, 400 * kMiB, o, 2 * kMiB), 400 * kMiB);
  EXPECT_EQ(memserver::auto_capacity_bytes(100 * kMiB, 0, o, 2 * kMiB), 0u);  // below reserve
  EXPECT_EQ(memserver::auto_capacity_bytes(1001 * kMiB, 0, o, 2 * kMiB) % (2 * kMiB), 0u);
}

TEST(AutoCapacity, FollowsMemAvailableRefusesNewSlabsAndKeepsLeasedOnes) {
  const auto meminfo = std::filesystem::temp_directory_path() /
                       ("farmem-meminfo-" + std::to_string(::getpid()));
  auto set_available = [&](std::uint64_t mib) {
    std::ofstream(meminfo) << "MemTotal: 99999999 kB\nMemAvailable: " << mib * 1024 << " kB\n";
  };
  set_available(400);
  memserver::CoreOptions co;
  co.capacity_bytes = 2 * kMiB;  // one chunk: the lender sets the real figure at start
  co.token = kToken;
  auto server = std::move(TestServer::start("tcp", co)).value();
  AutoCapacityOptions ao;
  ao.fraction = 0.5;
  ao.reserve_bytes = 0;
  ao.interval = 20ms;
  ao.meminfo_path = meminfo.string();
  auto lender = AutoCapacity::start(server->core(), ao);
  ASSERT_TRUE(lender.ok()) << lender.status().to_string();
  auto conn = std::move(server->connect()).value();
  auto capacity = [&] { return transport::server_stats(*conn, 5s)->capacity_bytes; };
  EXPECT_EQ(capacity(), 200 * kMiB);

  std::vector<proto::SlabInfo> slabs;
  for (int i = 0; i < 3; ++i) {
    auto s = transport::alloc_slab(*conn, 64 * kMiB, 5s);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    slabs.push_back(*s);
  }
  EXPECT_EQ(transport::alloc_slab(*conn, 64 * kMiB, 5s).status().code(),
            StatusCode::kResourceExhausted);  // 192 of 200 leased

  // The host's own applications take memory: the capacity falls below what is leased.
  set_available(50);  // 0.5 x (50 + 192) = 121 MiB
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (capacity() != 120 * kMiB && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(capacity(), 120 * kMiB);  // whole 2 MiB chunks
  EXPECT_EQ(transport::alloc_slab(*conn, 2 * kMiB, 5s).status().code(),
            StatusCode::kResourceExhausted);
  const auto st = transport::server_stats(*conn, 5s);
  EXPECT_EQ(st->used_bytes, 192 * kMiB);  // nothing leased was taken back
  EXPECT_EQ(st->slabs, 3u);
  // ... and the leased slabs still serve.
  std::vector<std::byte> buf(4096, std::byte{0x5A});
  auto reg = std::move(conn->register_memory(buf.data(), buf.size())).value();
  for (const auto& s : slabs) {
    transport::Op w{transport::OpKind::kWrite, 4096, buf.data(), reg->lkey(), s.rkey, s.addr};
    EXPECT_TRUE(conn->execute(w, 5s).ok());
  }

  // Memory comes back: so does the room.
  set_available(800);
  while (capacity() < 400 * kMiB && std::chrono::steady_clock::now() < deadline + 10s) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(transport::alloc_slab(*conn, 64 * kMiB, 5s).ok());
  lender->reset();
  std::filesystem::remove(meminfo);
}

}  // namespace
}  // namespace farmem::test
