// Replication of far memory (RuntimeOptions::replicas): real farmem-memserver processes
// killed or stopped while the application reads and writes, checked against a shadow copy.
// The cases with memserver processes run over each transport: tcp natively, verbs (rdma://
// on the RDMA device's address) in the soft-RoCE VM, where they must not skip.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "farmem/farmem.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

// Small slabs, many of them spread over the servers; 2 MiB, the memserver's lease granule, so
// that a slab holds exactly one allocation of kSlab.
constexpr std::uint64_t kSlab = 2u << 20;
constexpr int kSlabs = 16;

struct Servers {
  std::vector<std::unique_ptr<MemserverProcess>> procs;
  std::vector<std::string> urls;
};

// `n` farmem-memserver processes serving `backend` ("tcp" or "verbs"); empty after a test
// failure saying why.
Servers start_servers(int n, const std::string& backend) {
  Servers s;
  for (int i = 0; i < n; ++i) {
    auto p = std::make_unique<MemserverProcess>();
    const Status st = p->start(backend);
    EXPECT_TRUE(st.ok()) << st.to_string();
    if (!st.ok()) return {};
    s.urls.push_back(p->url());
    s.procs.push_back(std::move(p));
  }
  return s;
}

RuntimeOptions replicated(std::vector<std::string> servers) {
  RuntimeOptions o;
  o.servers = std::move(servers);
  o.auth_token = kToken;
  o.local_buffer_bytes = 4u << 20;
  o.slab_bytes = kSlab;
  o.replicas = 2;
  // Long enough that a loaded machine (the CI's CPU hog) does not miss a probe's answer.
  o.replica_grace = std::chrono::milliseconds(2000);
  o.replica_copy_bytes_per_sec = 64u << 20;
  o.op_timeout = std::chrono::milliseconds(20'000);
  return o;
}

std::unique_ptr<Runtime> open_or_fail(RuntimeOptions o) {
  auto rt = Runtime::open(std::move(o));
  EXPECT_TRUE(rt.ok()) << rt.status().to_string();
  return rt.ok() ? std::move(rt).value() : nullptr;
}

std::byte pattern(std::uint64_t slab, std::uint64_t off) {
  return std::byte((slab * 77 + off * 13 + (off >> 9)) & 0xff);
}

TEST(Replication, OptionsAreCheckedAtOpen) {
  EXPECT_EQ(to_string(StatusCode::kDataLoss), "data loss");
  RuntimeOptions o;
  o.servers = {"local", "local"};
  o.replicas = 3;
  auto three = Runtime::open(o);
  ASSERT_EQ(three.status().code(), StatusCode::kInvalidArgument) << three.status().to_string();
  EXPECT_NE(three.status().message().find("replicas is 3"), std::string::npos)
      << three.status().to_string();
  EXPECT_NE(three.status().message().find("only 2"), std::string::npos)
      << three.status().to_string();
  o.replicas = 0;
  EXPECT_EQ(Runtime::open(o).status().code(), StatusCode::kInvalidArgument);
  o.replicas = 4;
  EXPECT_EQ(Runtime::open(o).status().code(), StatusCode::kInvalidArgument);
  o.replicas = 2;
  o.swap_file = "/tmp/farmem-replication-test-never-created";
  o.swap_file_max_bytes = 1ull << 30;
  auto swap = Runtime::open(o);
  EXPECT_EQ(swap.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(swap.status().message().find("swap_file"), std::string::npos)
      << swap.status().to_string();
}

// The cases on farmem-memserver processes, once a transport: the parameter is the backend.
class ReplicatedMemservers : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "verbs") FARMEM_REQUIRE_RDMA_OR_SKIP();
  }
  Servers start_servers(int n) const { return test::start_servers(n, GetParam()); }
};

// Four threads read and write random ranges against a shadow copy; one of three memservers
// is killed mid-run. No error reaches the application, no byte is wrong, and the lost copies
// are rebuilt while the threads run. Then a second memserver is killed: every slab must
// still read back right from the one copy left, which proves the rebuilt copies hold the data.
TEST_P(ReplicatedMemservers, AKilledMemserverCostsNoByteAndItsCopiesAreRebuilt) {
  Servers s = start_servers(3);
  ASSERT_EQ(s.urls.size(), 3u);
  auto o = replicated(s.urls);
  // About a second of copying (some 20 MiB of lost copies), all of it under the threads' writes.
  o.replica_copy_bytes_per_sec = 16u << 20;
  auto rt = open_or_fail(o);
  ASSERT_TRUE(rt);
  Runtime& r = *rt;
  std::vector<FarRange> far;
  for (int i = 0; i < kSlabs; ++i) {
    auto f = r.allocate(kSlab);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    far.push_back(*f);
  }
  std::vector<std::byte> shadow(kSlabs * kSlab);
  auto buf = r.local_buffer();
  for (int i = 0; i < kSlabs; ++i) {
    for (std::uint64_t k = 0; k < kSlab; ++k) shadow[i * kSlab + k] = pattern(i, k);
    std::memcpy(buf.data(), shadow.data() + i * kSlab, kSlab);
    ASSERT_TRUE(r.write(far[i].addr, buf.first(kSlab)).ok());
  }
  EXPECT_EQ(r.stats().replicas, 2u);
  EXPECT_EQ(r.stats().slabs_degraded, 0u);
  EXPECT_EQ(r.stats().far_bytes_leased, 2u * kSlabs * kSlab);  // two copies of each

  // Thread t owns the 4 KiB blocks b with b % 4 == t (so the shadow needs no lock) and uses
  // the t-th MiB of the local buffer.
  constexpr std::uint64_t kBlock = 4096;
  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ops{0}, errors{0}, wrong{0};
  std::mutex first_error_mu;
  std::string first_error;
  auto worker = [&](int t) {
    std::mt19937_64 rng(1000 + t);
    auto mine = buf.subspan(t * (1u << 20), kBlock);
    const std::uint64_t blocks = shadow.size() / kBlock;
    for (int n = 0; n < 2'000'000 && !stop.load(); ++n) {  // bounded; ends on `stop`
      const std::uint64_t b = (rng() % (blocks / kThreads)) * kThreads + t;
      const std::uint64_t off = rng() % kBlock;
      const std::uint64_t len = 1 + rng() % (kBlock - off);
      const std::uint64_t at = b * kBlock + off;
      const FarAddr addr = far[at / kSlab].addr + at % kSlab;
      Status st;
      if (rng() % 2 == 0) {
        for (std::uint64_t k = 0; k < len; ++k) mine[k] = std::byte(rng());
        st = r.write(addr, mine.first(len));
        if (st.ok()) std::memcpy(shadow.data() + at, mine.data(), len);
      } else {
        st = r.read(addr, mine.first(len));
        if (st.ok() && std::memcmp(mine.data(), shadow.data() + at, len) != 0) ++wrong;
      }
      if (!st.ok()) {
        ++errors;
        std::lock_guard lock(first_error_mu);
        if (first_error.empty()) first_error = st.to_string();
      }
      ++ops;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  ASSERT_TRUE(eventually([&] { return ops.load() >= 2000; }, std::chrono::seconds(60)));
  ASSERT_TRUE(s.procs[1]->signal(SIGKILL).ok());
  const std::uint64_t at_kill = ops.load();
  // The copies are rebuilt while the threads go on.
  const bool restored = eventually(
      [&] {
        const RuntimeStats st = r.stats();
        return st.servers_down == 1 && st.slabs_degraded == 0 && st.rereplications > 0 &&
               ops.load() >= at_kill + 4000;
      },
      std::chrono::seconds(120), std::chrono::milliseconds(50));
  stop = true;
  for (auto& t : threads) t.join();
  const RuntimeStats st = r.stats();
  EXPECT_TRUE(restored) << "down " << st.servers_down << ", degraded " << st.slabs_degraded
                        << ", rebuilt " << st.rereplications << ", ops after the kill "
                        << ops.load() - at_kill;
  EXPECT_EQ(errors.load(), 0u) << first_error;
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_EQ(st.slabs_lost, 0u);
  EXPECT_GE(st.bytes_rereplicated, st.rereplications * kSlab);
  EXPECT_EQ(st.far_bytes_leased, 2u * kSlabs * kSlab);  // two live copies again

  // Every slab is on servers 0 and 2 now; with 2 gone too, all of it reads from 0.
  ASSERT_TRUE(s.procs[2]->signal(SIGKILL).ok());
  for (int i = 0; i < kSlabs; ++i) {
    std::memset(buf.data(), 0, kSlab);
    const Status rd = r.read(far[i].addr, buf.first(kSlab));
    ASSERT_TRUE(rd.ok()) << i << ": " << rd.to_string();
    ASSERT_EQ(std::memcmp(buf.data(), shadow.data() + i * kSlab, kSlab), 0) << "slab " << i;
  }
  EXPECT_EQ(r.stats().slabs_lost, 0u);
}

// Two of three memservers die at once (replicas = 2): slabs that had both copies there give
// kDataLoss, naming the servers, on every read and write; every other slab reads back right
// and stays writable.
TEST_P(ReplicatedMemservers, SlabsWithBothCopiesLostGiveDataLossAndTheRestReadBackRight) {
  Servers s = start_servers(3);
  ASSERT_EQ(s.urls.size(), 3u);
  auto rt = open_or_fail(replicated(s.urls));
  ASSERT_TRUE(rt);
  Runtime& r = *rt;
  auto buf = r.local_buffer();
  std::vector<FarRange> far;
  for (int i = 0; i < kSlabs; ++i) {
    auto f = r.allocate(kSlab);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    far.push_back(*f);
    for (std::uint64_t k = 0; k < kSlab; ++k) buf[k] = pattern(i, k);
    ASSERT_TRUE(r.write(f->addr, buf.first(kSlab)).ok());
  }
  // Slabs with a copy on the survivor, from its own count.
  auto ss = r.server_stats();
  ASSERT_TRUE(ss.ok()) << ss.status().to_string();
  ASSERT_EQ(ss->size(), 3u);
  const std::uint64_t surviving = (*ss)[2].leased_by_me / kSlab;
  ASSERT_LT(surviving, std::uint64_t{kSlabs}) << "no slab has both copies on servers 0 and 1: "
                                                 "the test would check nothing";
  // Stopped first, so that nothing is rebuilt from one of them while the other dies.
  ASSERT_TRUE(s.procs[0]->signal(SIGSTOP).ok());
  ASSERT_TRUE(s.procs[1]->signal(SIGSTOP).ok());
  ASSERT_TRUE(s.procs[0]->signal(SIGKILL).ok());
  ASSERT_TRUE(s.procs[1]->signal(SIGKILL).ok());

  std::uint64_t ok = 0, lost = 0;
  for (int i = 0; i < kSlabs; ++i) {
    std::memset(buf.data(), 0, kSlab);
    const Status rd = r.read(far[i].addr, buf.first(kSlab));
    if (rd.ok()) {
      ++ok;
      for (std::uint64_t k = 0; k < kSlab; ++k) ASSERT_EQ(buf[k], pattern(i, k)) << i << " " << k;
      for (std::uint64_t k = 0; k < 4096; ++k) buf[k] = pattern(i + 1, k);
      ASSERT_TRUE(r.write(far[i].addr, buf.first(4096)).ok()) << i;
      std::memset(buf.data(), 0, 4096);
      ASSERT_TRUE(r.read(far[i].addr, buf.first(4096)).ok()) << i;
      for (std::uint64_t k = 0; k < 4096; ++k) ASSERT_EQ(buf[k], pattern(i + 1, k)) << i;
      continue;
    }
    ++lost;
    ASSERT_EQ(rd.code(), StatusCode::kDataLoss) << i << ": " << rd.to_string();
    EXPECT_NE(rd.message().find(s.urls[0]), std::string::npos) << rd.to_string();
    EXPECT_NE(rd.message().find(s.urls[1]), std::string::npos) << rd.to_string();
    EXPECT_NE(rd.message().find("slab"), std::string::npos) << rd.to_string();
    EXPECT_EQ(r.write(far[i].addr + 100, buf.first(64)).code(), StatusCode::kDataLoss) << i;
    EXPECT_EQ(r.read(far[i].addr + 4096, buf.first(64)).code(), StatusCode::kDataLoss) << i;
  }
  EXPECT_EQ(ok, surviving);
  EXPECT_EQ(lost, kSlabs - surviving);
  EXPECT_TRUE(eventually([&] { return r.stats().servers_down == 2; }));
  auto after = r.server_stats();  // the dead are listed as such, not asked
  ASSERT_TRUE(after.ok()) << after.status().to_string();
  ASSERT_EQ(after->size(), 3u);
  EXPECT_TRUE((*after)[0].down && (*after)[1].down && !(*after)[2].down);
  EXPECT_EQ((*after)[2].leased_by_me, surviving * kSlab);
  const RuntimeStats st = r.stats();
  EXPECT_EQ(st.slabs_lost, lost);
  EXPECT_EQ(st.slabs_degraded, surviving);  // one copy each, and nowhere to rebuild
  // A new allocation needs two live servers: a clear error, not a half-replicated slab.
  auto more = r.allocate(kSlab);
  EXPECT_EQ(more.status().code(), StatusCode::kResourceExhausted) << more.status().to_string();
}

// A striped allocation (larger than a slab): each stripe position has two copies on distinct
// servers. One server killed: the positions it held are rebuilt on the server that holds
// none of them; a second one killed: every stripe still reads back from the last.
TEST_P(ReplicatedMemservers, AStripedAllocationIsRebuiltPositionByPosition) {
  Servers s = start_servers(3);
  ASSERT_EQ(s.urls.size(), 3u);
  auto rt = open_or_fail(replicated(s.urls));
  ASSERT_TRUE(rt);
  Runtime& r = *rt;
  constexpr std::uint64_t kBytes = 12u << 20;  // 12 stripes of 1 MiB over 3 positions
  auto far = r.allocate(kBytes);
  ASSERT_TRUE(far.ok()) << far.status().to_string();
  EXPECT_EQ(r.stats().far_bytes_leased, 2 * kBytes);
  auto buf = r.local_buffer();
  auto check_all = [&](std::uint64_t seed) {
    for (std::uint64_t at = 0; at < kBytes; at += buf.size()) {
      ASSERT_TRUE(r.read(far->addr + at, buf).ok()) << at;
      for (std::uint64_t k = 0; k < buf.size(); k += 509) {
        ASSERT_EQ(buf[k], pattern(seed, at + k)) << at + k;
      }
    }
  };
  for (std::uint64_t at = 0; at < kBytes; at += buf.size()) {
    for (std::uint64_t k = 0; k < buf.size(); ++k) buf[k] = pattern(1, at + k);
    ASSERT_TRUE(r.write(far->addr + at, buf).ok()) << at;
  }
  ASSERT_TRUE(s.procs[0]->signal(SIGKILL).ok());
  check_all(1);  // reads fail over position by position
  ASSERT_TRUE(eventually(
      [&] {
        const RuntimeStats st = r.stats();
        return st.servers_down == 1 && st.slabs_degraded == 0 && st.rereplications >= 2;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(50)));
  EXPECT_EQ(r.stats().far_bytes_leased, 2 * kBytes);
  ASSERT_TRUE(s.procs[1]->signal(SIGKILL).ok());
  check_all(1);
  EXPECT_EQ(r.stats().slabs_lost, 0u);
}

// Three copies on three servers: one server goes away, and there is nowhere to rebuild (each
// survivor holds a copy already) until a fourth server is added while the runtime runs.
// Batches of many reads fail over request by request.
TEST(Replication, ThreeCopiesWaitForANewServerToBeWholeAgain) {
  std::vector<std::unique_ptr<TestServer>> servers;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(tcp_server_of(64));
    ASSERT_TRUE(servers.back());
  }
  auto o = replicated({servers[0]->url(), servers[1]->url(), servers[2]->url()});
  o.replicas = 3;
  auto rt = open_or_fail(o);
  ASSERT_TRUE(rt);
  Runtime& r = *rt;
  auto buf = r.local_buffer();
  constexpr int kN = 6;
  std::vector<FarRange> far;
  for (int i = 0; i < kN; ++i) {
    auto f = r.allocate(i % 2 == 0 ? kSlab : 3 * kSlab);  // shared and striped slabs
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    far.push_back(*f);
    for (std::uint64_t k = 0; k < buf.size(); ++k) buf[k] = pattern(i, k);
    ASSERT_TRUE(r.write(f->addr, buf.first(std::min<std::uint64_t>(f->bytes, buf.size()))).ok());
  }
  const std::uint64_t leased = r.stats().far_bytes_leased;
  for (auto& s : servers) EXPECT_EQ(s->core().stats().used_bytes, leased / 3);  // a copy each
  auto read_all = [&] {  // one batch, a 256 KiB read of every allocation, into its own slice
    IoBatch batch;
    for (int i = 0; i < kN; ++i) batch.read(far[i].addr, buf.subspan(i * (256u << 10), 256u << 10));
    ASSERT_TRUE(r.submit(batch).ok());
    const Status st = r.wait(batch);
    ASSERT_TRUE(st.ok()) << st.to_string();
    for (int i = 0; i < kN; ++i) {
      for (std::uint64_t k = 0; k < (256u << 10); k += 61) {
        ASSERT_EQ(buf[i * (256u << 10) + k], pattern(i, k)) << i << " " << k;
      }
    }
  };
  read_all();
  const std::string gone = servers[1]->url();
  servers[1].reset();  // its connections break
  read_all();
  ASSERT_TRUE(eventually([&] { return r.stats().servers_down == 1; }));
  EXPECT_EQ(r.stats().slabs_degraded, static_cast<std::uint64_t>(kN));
  EXPECT_EQ(r.stats().rereplications, 0u);
  servers.push_back(tcp_server_of(64));
  ASSERT_TRUE(servers.back());
  ASSERT_TRUE(r.add_server(servers.back()->url()).ok());
  ASSERT_TRUE(eventually([&] { return r.stats().slabs_degraded == 0; }, std::chrono::seconds(60)));
  EXPECT_EQ(servers.back()->core().stats().used_bytes, leased / 3);
  EXPECT_EQ(r.stats().far_bytes_leased, leased);
  // The new server's copies are real: with two of the three old ones gone, all reads go there.
  servers[0].reset();
  servers[2].reset();
  read_all();
  auto ss = r.server_stats();
  ASSERT_TRUE(ss.ok()) << ss.status().to_string();
  ASSERT_EQ(ss->size(), 4u);
  EXPECT_TRUE((*ss)[1].down) << gone;
}

// The rebuild yields to the application: while a thread keeps reading, every copy window is
// a small one (RebuildPacer's yielding mode); once it stops, the rest is copied in the large,
// overlapped windows of the idle mode. Asserted on the counters, not on timings: the pace
// (8 MiB/s for some 20 MiB of lost copies) leaves seconds of copying after the reader stops.
TEST(Replication, TheRebuildYieldsWhileTheApplicationRunsAndSpeedsUpWhenItIsIdle) {
  std::vector<std::unique_ptr<TestServer>> servers;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(tcp_server_of(128));
    ASSERT_TRUE(servers.back());
  }
  auto o = replicated({servers[0]->url(), servers[1]->url(), servers[2]->url()});
  o.replica_copy_bytes_per_sec = 8u << 20;
  auto rt = open_or_fail(o);
  ASSERT_TRUE(rt);
  Runtime& r = *rt;
  auto buf = r.local_buffer();
  std::vector<FarRange> far;
  for (int i = 0; i < kSlabs; ++i) {
    auto f = r.allocate(kSlab);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    far.push_back(*f);
    for (std::uint64_t k = 0; k < kSlab; ++k) buf[k] = pattern(i, k);
    ASSERT_TRUE(r.write(f->addr, buf.first(kSlab)).ok());
  }
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> reads{0}, bad{0};
  std::thread reader([&] {
    std::mt19937_64 rng(7);
    auto mine = buf.subspan(0, 4096);
    for (int n = 0; n < 10'000'000 && !stop.load(); ++n) {  // bounded; ends on `stop`
      const std::uint64_t i = rng() % kSlabs, off = rng() % (kSlab / 4096) * 4096;
      const Status st = r.read(far[i].addr + off, mine);
      if (!st.ok() || mine[5] != pattern(i, off + 5)) ++bad;
      ++reads;
    }
  });
  ASSERT_TRUE(eventually([&] { return reads.load() >= 100; }, std::chrono::seconds(30)));
  servers[1].reset();  // its connections break: its copies are lost and rebuilt
  const bool copying = eventually(
      [&] { return r.stats().rereplication_yielding_copies >= 20; }, std::chrono::seconds(60));
  const RuntimeStats during = r.stats();
  stop = true;
  reader.join();
  ASSERT_TRUE(copying) << "yielding copies " << during.rereplication_yielding_copies;
  EXPECT_EQ(bad.load(), 0u);
  // The reader started an op every few microseconds: an idle window needs 100 ms without
  // one, which even a CPU hog beside the test should not cause more than now and then.
  EXPECT_LE(during.rereplication_idle_copies * 10, during.rereplication_yielding_copies);
  ASSERT_GT(during.slabs_degraded, 0u) << "the rebuild ended while the reader ran";
  ASSERT_TRUE(eventually([&] { return r.stats().slabs_degraded == 0; }, std::chrono::seconds(120),
                         std::chrono::milliseconds(50)));
  const RuntimeStats after = r.stats();
  EXPECT_GT(after.rereplication_idle_copies, during.rereplication_idle_copies);
  // Idle windows copy up to 2 MiB each, yielding ones 16 KiB: once idle, the rest took few windows.
  EXPECT_LT(after.rereplication_idle_copies - during.rereplication_idle_copies,
            after.bytes_rereplicated / (64u << 10));
  EXPECT_EQ(after.slabs_lost, 0u);
  for (int i = 0; i < kSlabs; ++i) {  // the rebuilt copies hold the data
    ASSERT_TRUE(r.read(far[i].addr, buf.first(kSlab)).ok());
    for (std::uint64_t k = 0; k < kSlab; k += 4093) ASSERT_EQ(buf[k], pattern(i, k)) << i;
  }
}

// The two copies of a slab go to different hosts when there is a choice: here two servers on
// 127.0.0.1 and the in-process one ("local"), so every slab has exactly one copy on "local".
TEST(Replication, CopiesGoToDifferentHostsFirst) {
  auto a = tcp_server_of(64), b = tcp_server_of(64);
  ASSERT_TRUE(a && b);
  auto o = replicated({a->url(), b->url(), "local"});
  // As roomy as each other: placement alone (two of three drawn by free room) would leave
  // "local" out of about a third of the slabs.
  o.local_server_capacity = 64u << 20;
  auto rt = open_or_fail(o);
  ASSERT_TRUE(rt);
  constexpr int kN = 12;
  for (int i = 0; i < kN; ++i) {
    auto f = rt->allocate(kSlab);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
  }
  auto ss = rt->server_stats();
  ASSERT_TRUE(ss.ok()) << ss.status().to_string();
  ASSERT_EQ(ss->size(), 3u);
  EXPECT_EQ((*ss)[2].leased_by_me, kN * kSlab) << "a slab has both copies on one host";
  EXPECT_EQ((*ss)[0].leased_by_me + (*ss)[1].leased_by_me, kN * kSlab);
}

// A stalled (SIGSTOPped) memserver is judged dead after replica_grace, far below op_timeout:
// reads that were waiting on it fail over, and its copies are rebuilt.
TEST_P(ReplicatedMemservers, AStalledMemserverIsJudgedDeadAfterTheGraceAndReadsFailOver) {
  Servers s = start_servers(3);
  ASSERT_EQ(s.urls.size(), 3u);
  auto o = replicated(s.urls);
  o.op_timeout = std::chrono::milliseconds(60'000);
  auto rt = open_or_fail(o);
  ASSERT_TRUE(rt);
  Runtime& r = *rt;
  auto buf = r.local_buffer();
  std::vector<FarRange> far;
  for (int i = 0; i < 8; ++i) {
    auto f = r.allocate(kSlab);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    far.push_back(*f);
    for (std::uint64_t k = 0; k < kSlab; ++k) buf[k] = pattern(i, k);
    ASSERT_TRUE(r.write(f->addr, buf.first(kSlab)).ok());
  }
  ASSERT_TRUE(s.procs[0]->signal(SIGSTOP).ok());
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 8; ++i) {
      const Status rd = r.read(far[i].addr, buf.first(kSlab));
      ASSERT_TRUE(rd.ok()) << i << ": " << rd.to_string();
      for (std::uint64_t k = 0; k < kSlab; k += 997) ASSERT_EQ(buf[k], pattern(i, k)) << i;
    }
  }
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(30)) << "reads waited for op_timeout, not the grace";
  EXPECT_TRUE(eventually(
      [&] {
        const RuntimeStats st = r.stats();
        return st.servers_down == 1 && st.slabs_degraded == 0;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(50)));
  EXPECT_EQ(r.stats().slabs_lost, 0u);
  ASSERT_TRUE(s.procs[0]->signal(SIGKILL).ok());
}

INSTANTIATE_TEST_SUITE_P(Transports, ReplicatedMemservers, ::testing::Values("tcp", "verbs"),
                         BackendName{});

}  // namespace
}  // namespace farmem::test
