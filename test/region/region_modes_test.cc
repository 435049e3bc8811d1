// Mapped regions in both fault modes (handler thread, faulting thread via SIGBUS): a fault
// raised inside a farmem call, an application's own SIGBUS handler, a write stream written
// back whole, and system calls on region memory (they work in the default mode, and after
// prefault() in the faulting-thread mode).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <csetjmp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <random>

#include "paging/budget.h"
#include "farmem/farmem.h"
#include "farmem/region.h"
#include "region/region.h"
#include "test/region/region_support.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using paging::Budget;
using region::kPageSize;

std::unique_ptr<Runtime> open_local_runtime() {
  RuntimeOptions o;
  o.servers = {"local"};
  o.auth_token = kToken;
  o.local_buffer_bytes = 1u << 20;
  o.slab_bytes = 64u << 20;
  o.local_server_capacity = 256u << 20;
  auto rt = Runtime::open(std::move(o));
  EXPECT_TRUE(rt.ok()) << rt.status().to_string();
  return rt.ok() ? std::move(rt).value() : nullptr;
}

std::unique_ptr<Region> map_in(Runtime& rt, Budget& budget, FarRange far, FaultMode mode) {
  region::RegionOptions o;
  o.fault_mode = mode;
  auto r = region::make_region(detail::io_service(rt), budget, far, o);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

bool os_resident(const Region& r, std::size_t page) {
  unsigned char v = 0;
  EXPECT_EQ(::mincore(r.data() + page * kPageSize, kPageSize, &v), 0);
  return (v & 1u) != 0;
}

class RegionModes : public ::testing::TestWithParam<FaultMode> {};

// Runtime::write whose source is an untouched region page: the fault is taken inside farmem
// (in the faulting-thread mode: handed to the helper thread while farmem's locks are held).
TEST_P(RegionModes, FaultInsideAFarmemCallIsServed) {
  auto rt = open_local_runtime();
  ASSERT_TRUE(rt);
  constexpr std::size_t kPages = 16;
  const FarRange far = *rt->allocate(kPages * kPageSize);
  const FarRange dst = *rt->allocate(kPages * kPageSize);
  const auto pattern = fill_far(*rt, far, 21);
  Budget budget(4 * kPages * kPageSize);
  auto r = map_in(*rt, budget, far, GetParam());
  ASSERT_TRUE(r);
  const std::span<std::byte> mem(r->data(), kPages * kPageSize);
  ASSERT_TRUE(rt->register_memory(mem).ok());  // a write's source must be registered
  ASSERT_FALSE(os_resident(*r, 3));
  ASSERT_TRUE(rt->write(dst.addr, mem.subspan(3 * kPageSize, 2 * kPageSize)).ok());
  EXPECT_TRUE(os_resident(*r, 3));
  auto got = read_far(*rt, dst);
  EXPECT_EQ(std::memcmp(got.data(), pattern.data() + 3 * kPageSize, 2 * kPageSize), 0);
  // And the other way: a read whose destination is an untouched region page.
  ASSERT_FALSE(os_resident(*r, 9));
  ASSERT_TRUE(rt->read(dst.addr, mem.subspan(9 * kPageSize, kPageSize)).ok());
  EXPECT_EQ(std::memcmp(r->data() + 9 * kPageSize, pattern.data() + 3 * kPageSize, kPageSize),
            0);
  ASSERT_TRUE(r->flush().ok());
  EXPECT_EQ(std::memcmp(read_far(*rt, far).data() + 9 * kPageSize,
                        pattern.data() + 3 * kPageSize, kPageSize),
            0);  // the store made by farmem's own read was tracked as dirty
  ASSERT_TRUE(rt->unregister_memory(mem).ok());
}

// ---- an application's own SIGBUS handler for its own mapping ----

sigjmp_buf g_jump;
volatile void* g_app_fault_addr = nullptr;

void app_sigbus(int, siginfo_t* info, void*) {
  g_app_fault_addr = info->si_addr;
  siglongjmp(g_jump, 1);
}

TEST_P(RegionModes, ApplicationSigbusHandlerForItsOwnMappingStillRuns) {
  // A file of one page mapped over two: touching the second page is SIGBUS (past EOF).
  char path[] = "/tmp/farmem-region-sigbus-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  ASSERT_EQ(::ftruncate(fd, kPageSize), 0);
  void* file = ::mmap(nullptr, 2 * kPageSize, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(file, MAP_FAILED);
  struct sigaction app {}, before {};
  app.sa_sigaction = &app_sigbus;
  app.sa_flags = SA_SIGINFO;
  sigemptyset(&app.sa_mask);
  ASSERT_EQ(::sigaction(SIGBUS, &app, &before), 0);

  auto rt = open_local_runtime();
  ASSERT_TRUE(rt);
  const FarRange far = *rt->allocate(8 * kPageSize);
  const auto pattern = fill_far(*rt, far, 5);
  Budget budget(64 * kPageSize);
  auto r = map_in(*rt, budget, far, GetParam());  // installed after the application's
  ASSERT_TRUE(r);
  EXPECT_EQ(std::memcmp(r->data(), pattern.data(), far.bytes), 0);  // region faults served

  auto* past_eof = static_cast<volatile std::byte*>(file) + kPageSize;
  g_app_fault_addr = nullptr;
  if (sigsetjmp(g_jump, 1) == 0) {
    const std::byte b = *past_eof;
    (void)b;
    ADD_FAILURE() << "reading past EOF of a file mapping did not raise SIGBUS";
  }
  EXPECT_EQ(g_app_fault_addr, static_cast<volatile void*>(past_eof));
  // Region faults still work after the application's handler ran.
  ASSERT_TRUE(r->advise(0, far.bytes, Advice::kDontNeed).ok());
  EXPECT_EQ(std::memcmp(r->data(), pattern.data(), far.bytes), 0);
  r.reset();
  ::munmap(file, 2 * kPageSize);
  ::close(fd);
}

// ---- a write stream: every page written back after flush ----

TEST_P(RegionModes, WriteStreamIsWrittenBackWhole) {
  auto rt = open_local_runtime();
  ASSERT_TRUE(rt);
  constexpr std::size_t kPages = 2048;
  const FarRange far = *rt->allocate(kPages * kPageSize);
  Budget budget(kPages * kPageSize / 4);  // most of the stream is evicted on the way
  auto r = map_in(*rt, budget, far, GetParam());
  ASSERT_TRUE(r);
  std::vector<std::byte> expected(far.bytes);
  for (std::size_t p = 0; p < kPages; ++p) {
    std::memset(r->data() + p * kPageSize, static_cast<int>(p * 7 + 1), kPageSize);
    std::memset(expected.data() + p * kPageSize, static_cast<int>(p * 7 + 1), kPageSize);
  }
  ASSERT_TRUE(r->flush().ok());
  const auto got = read_far(*rt, far);
  for (std::size_t p = 0; p < kPages; ++p) {
    ASSERT_EQ(std::memcmp(got.data() + p * kPageSize, expected.data() + p * kPageSize,
                          kPageSize),
              0)
        << "page " << p << " lost its stores";
  }
  EXPECT_GE(r->stats().writebacks, kPages);
  EXPECT_LE(budget.peak(), budget.limit());
}

// A new region (Runtime::map) reads as zeros without reading far memory, whatever its far
// range held (here: garbage written to it after the map); its zeros reach far memory at
// eviction and flush, and a page written back and dropped is read back with its bytes.
TEST_P(RegionModes, NewRegionReadsZerosWithoutFarReadsUntilWrittenBack) {
  RuntimeOptions o;
  o.servers = {"local"};
  o.auth_token = kToken;
  o.local_buffer_bytes = 1u << 20;
  o.cache_budget_bytes = 32 * kPageSize;
  o.max_prefetch_pages = 4;  // windows far smaller than the budget: few pages evicted unread
  auto opened = Runtime::open(std::move(o));
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  Runtime& rt = **opened;
  constexpr std::size_t kPages = 128;
  RegionOptions ro;
  ro.fault_mode = GetParam();
  auto mapped = rt.map(kPages * kPageSize, ro);
  ASSERT_TRUE(mapped.ok()) << mapped.status().to_string();
  Region& r = **mapped;
  (void)fill_far(rt, r.far(), 77);  // what an earlier user of the range might have left
  const std::uint64_t bytes_read_before = rt.stats().bytes_read;
  // Read every page (4x the budget: most are evicted on the way).
  std::size_t nonzero = 0;
  for (std::size_t i = 0; i < r.size(); ++i) nonzero += r.data()[i] != std::byte{0};
  EXPECT_EQ(nonzero, 0u);
  // No far read for them. A page evicted while the scan was still in it (written back as
  // zeros by then) is read again: a few, never most (before, every page was read).
  EXPECT_LT(r.stats().bytes_read, r.size() / 4);
  EXPECT_LT(rt.stats().bytes_read - bytes_read_before, r.size() / 4);
  EXPECT_GT(r.stats().evictions, 0u);
  // Pages written back by then (as zeros) are read again before these stores.
  std::vector<std::byte> expected(r.size());
  for (std::size_t p = 0; p < kPages / 2; ++p) {
    std::memset(r.data() + p * kPageSize, static_cast<int>(p + 1), kPageSize);
    std::memset(expected.data() + p * kPageSize, static_cast<int>(p + 1), kPageSize);
  }
  ASSERT_TRUE(r.flush().ok());
  const auto far_now = read_far(rt, r.far());
  ASSERT_EQ(far_now.size(), expected.size());
  for (std::size_t p = 0; p < kPages; ++p) {
    ASSERT_EQ(std::memcmp(far_now.data() + p * kPageSize, expected.data() + p * kPageSize,
                          kPageSize), 0)
        << "far memory of page " << p << " is not what the region showed";
  }
  // Everything was written back: dropped and touched again, pages are read from far memory.
  ASSERT_TRUE(r.advise(0, r.size(), Advice::kDontNeed).ok());
  EXPECT_EQ(std::memcmp(r.data(), expected.data(), r.size()), 0);
  EXPECT_GE(r.stats().bytes_read, r.size());
}

// A sequential read scan is served by readahead (pipelined in both modes): few demand faults.
TEST_P(RegionModes, SequentialScanIsReadAheadWithFewFaults) {
  auto rt = open_local_runtime();
  ASSERT_TRUE(rt);
  constexpr std::size_t kPages = 2048;
  const FarRange far = *rt->allocate(kPages * kPageSize);
  const auto pattern = fill_far(*rt, far, 13);
  Budget budget(kPages * kPageSize / 4);
  auto r = map_in(*rt, budget, far, GetParam());
  ASSERT_TRUE(r);
  for (std::size_t p = 0; p < kPages; ++p) {
    ASSERT_EQ(std::memcmp(r->data() + p * kPageSize, pattern.data() + p * kPageSize, kPageSize),
              0)
        << "page " << p;
  }
  const CacheStats s = r->stats();
  EXPECT_LT(s.misses, kPages / 4) << s.to_json();
  EXPECT_GT(s.prefetches_issued, kPages / 2) << s.to_json();
  EXPECT_LE(budget.peak(), budget.limit());
}

// ---- system calls on region memory ----

/// read(2) from a pipe into `dst`, after writing `src` into it; returns read's result/errno.
ssize_t pipe_through(const std::byte* src, std::byte* dst, std::size_t n, int& err) {
  int fds[2];
  if (::pipe(fds) != 0) return -2;
  EXPECT_EQ(::write(fds[1], src, n), static_cast<ssize_t>(n));
  const ssize_t got = ::read(fds[0], dst, n);
  err = errno;
  ::close(fds[0]);
  ::close(fds[1]);
  return got;
}

TEST_P(RegionModes, SyscallsOnNonResidentPagesWorkInDefaultModeAndAfterPrefault) {
  auto rt = open_local_runtime();
  ASSERT_TRUE(rt);
  constexpr std::size_t kPages = 16;
  const FarRange far = *rt->allocate(kPages * kPageSize);
  const auto pattern = fill_far(*rt, far, 9);
  Budget budget(4 * kPages * kPageSize);
  auto r = map_in(*rt, budget, far, GetParam());
  ASSERT_TRUE(r);
  std::vector<std::byte> incoming(2 * kPageSize, std::byte{0x6B});
  std::vector<std::byte> outgoing(kPageSize);
  std::byte* into = r->data() + 2 * kPageSize;  // pages 2-3: read(2) stores into them
  std::byte* from = r->data() + 8 * kPageSize;  // page 8: write(2) loads from it
  ASSERT_FALSE(os_resident(*r, 2));
  ASSERT_FALSE(os_resident(*r, 8));
  int err = 0;
  if (GetParam() == FaultMode::kFaultingThread) {
    // The kernel's own access to a non-resident page fails in this mode (as documented)...
    EXPECT_EQ(pipe_through(incoming.data(), into, incoming.size(), err), -1);
    EXPECT_EQ(err, EFAULT);
    // ...and works once the range is prefaulted.
    ASSERT_TRUE(r->prefault(2 * kPageSize, 2 * kPageSize).ok());
    ASSERT_TRUE(r->prefault(8 * kPageSize, kPageSize).ok());
    EXPECT_TRUE(os_resident(*r, 2));
  }
  ASSERT_EQ(pipe_through(incoming.data(), into, incoming.size(), err),
            static_cast<ssize_t>(incoming.size()))
      << std::strerror(err);
  EXPECT_EQ(std::memcmp(into, incoming.data(), incoming.size()), 0);
  // write(2) from region memory: the pipe carries the far bytes.
  ASSERT_EQ(pipe_through(from, outgoing.data(), kPageSize, err),
            static_cast<ssize_t>(kPageSize))
      << std::strerror(err);
  EXPECT_EQ(std::memcmp(outgoing.data(), pattern.data() + 8 * kPageSize, kPageSize), 0);
  // What the kernel stored is dirty like any store: durable after flush.
  ASSERT_TRUE(r->flush().ok());
  const auto got = read_far(*rt, far);
  EXPECT_EQ(std::memcmp(got.data() + 2 * kPageSize, incoming.data(), incoming.size()), 0);
}

// A fault whose page cannot be fetched kills with SIGBUS (never maps zeros): the handler
// thread raises it after its retry deadline; the faulting-thread mode passes the signal on
// to the default action.
class RegionDeathTest : public ::testing::TestWithParam<FaultMode> {};

TEST_P(RegionDeathTest, UnservableFaultEndsInSigbusNotZeros) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const FaultMode mode = GetParam();
  EXPECT_EXIT(
      {
        auto server = TestServer::start("tcp");
        RuntimeOptions o;
        o.servers = {(*server)->url()};
        o.auth_token = kToken;
        o.local_buffer_bytes = 1u << 20;
        o.slab_bytes = 64u << 20;
        o.op_timeout = std::chrono::milliseconds(200);
        auto rt = std::move(Runtime::open(o)).value();
        const FarRange far = *rt->allocate(16 * kPageSize);
        Budget budget(64 * kPageSize);
        region::RegionOptions ro;
        ro.fault_mode = mode;
        ro.fault_retry_deadline = std::chrono::milliseconds(300);
        auto r = std::move(region::make_region(detail::io_service(*rt), budget, far, ro)).value();
        server->reset();
        volatile std::byte b = r->data()[5 * kPageSize];  // cannot be fetched
        (void)b;
        std::_Exit(0);  // reached only if the fault was "served" with invented data
      },
      ::testing::KilledBySignal(SIGBUS), "");
}

std::string ModeName(const ::testing::TestParamInfo<FaultMode>& info) {
  return info.param == FaultMode::kHandlerThread ? "HandlerThread" : "FaultingThread";
}

INSTANTIATE_TEST_SUITE_P(Modes, RegionModes,
                         ::testing::Values(FaultMode::kHandlerThread, FaultMode::kFaultingThread),
                         ModeName);
INSTANTIATE_TEST_SUITE_P(Modes, RegionDeathTest,
                         ::testing::Values(FaultMode::kHandlerThread, FaultMode::kFaultingThread),
                         ModeName);

}  // namespace
}  // namespace farmem::test
