// The Connection contract suite, one instance per backend, each described by a helper object
// (ContractBackend): local, tcp, verbs (skipped natively, run for real in the soft-RoCE VM)
// and fault (tcp inside the fault wrapper with no faults planned). Data is checked against a
// shadow copy; errors against the failure table in runtime/transport/transport.h, codes
// included. Suites elsewhere keep only what is specific: stalls of a memserver process
// (stall_test.cc), clients killed under a memserver (failure_test.cc), planned faults
// (fault_test.cc).
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <random>
#include <thread>

#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using transport::Completion;
using transport::Op;
using transport::OpKind;

constexpr std::uint64_t kSlabBytes = 16u << 20;   // room for 4 MiB ops at odd offsets
constexpr std::size_t kLocalBytes = 16u << 20;
constexpr auto kTimeout = std::chrono::seconds(30);

/// One backend under the contract: how its memserver and clients come up, and the one thing
/// the contract lets backends differ in (whether the peer is a separate party that can go
/// away: the in-process backend's memserver lives as long as the client).
struct ContractBackend {
  const char* name;     ///< TestServer backend: "local", "tcp", "verbs", "fault"
  bool needs_rdma;      ///< skipped natively without an RDMA device, required in the VM
  bool peer_can_stop;   ///< the memserver can disappear under a connected client (ConformancePeerLoss)

  Result<std::unique_ptr<TestServer>> start(memserver::CoreOptions o) const {
    return TestServer::start(name, o);
  }
};

constexpr ContractBackend kLocal{"local", false, false};
constexpr ContractBackend kTcp{"tcp", false, true};
constexpr ContractBackend kVerbs{"verbs", true, true};
constexpr ContractBackend kFault{"fault", false, true};

/// Printed by its name in test output (not as a pointer).
void PrintTo(const ContractBackend* b, std::ostream* os) { *os << b->name; }

/// Instance names "Local", "Tcp", "Verbs", "Fault" (--gtest_filter='*Verbs*' picks RDMA).
struct ContractBackendName {
  std::string operator()(const ::testing::TestParamInfo<const ContractBackend*>& info) const {
    return BackendName{}(::testing::TestParamInfo<std::string>(info.param->name, info.index));
  }
};

class Conformance : public ::testing::TestWithParam<const ContractBackend*> {
 protected:
  const ContractBackend& backend() const { return *GetParam(); }

  void SetUp() override {
    if (backend().needs_rdma) FARMEM_REQUIRE_RDMA_OR_SKIP();
    memserver::CoreOptions o;
    o.capacity_bytes = 256u << 20;
    auto s = backend().start(o);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
    auto c = server_->connect();
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    conn_ = std::move(c).value();
    auto slab = transport::alloc_slab(*conn_, kSlabBytes, kTimeout);
    ASSERT_TRUE(slab.ok()) << slab.status().to_string();
    slab_ = *slab;
    ASSERT_GE(slab_.bytes, kSlabBytes);
    local_.assign(kLocalBytes, std::byte{0});
    auto reg = conn_->register_memory(local_.data(), local_.size());
    ASSERT_TRUE(reg.ok()) << reg.status().to_string();
    reg_ = std::move(reg).value();
    shadow_.assign(kSlabBytes, std::byte{0});  // fresh slabs read as zeros
  }

  Op op(OpKind kind, std::size_t local_off, std::uint64_t remote_off, std::uint32_t len) {
    return Op{kind, len, local_.data() + local_off, reg_->lkey(), slab_.rkey,
              slab_.addr + remote_off};
  }

  void fill(std::size_t off, std::size_t len, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < len; ++i) local_[off + i] = std::byte(rng());
  }

  // Posts ops in batches the backend accepts and waits for each.
  void run_batch(std::span<const Op> ops) {
    const std::size_t max = conn_->capabilities().max_batch_ops;
    for (std::size_t i = 0; i < ops.size(); i += max) {
      Completion done;
      auto part = ops.subspan(i, std::min(max, ops.size() - i));
      ASSERT_TRUE(conn_->post(part, done).ok());
      auto st = conn_->wait(done, kTimeout);
      ASSERT_TRUE(st.ok()) << st.to_string();
    }
  }

  // Reads the whole slab back (in 4 MiB pieces) and compares with the shadow.
  void verify_whole_slab() {
    constexpr std::uint32_t kPiece = 4u << 20;
    for (std::uint64_t off = 0; off < kSlabBytes; off += kPiece) {
      std::memset(local_.data(), 0xEE, kPiece);
      auto st = conn_->execute(op(OpKind::kRead, 0, off, kPiece), kTimeout);
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_EQ(std::memcmp(local_.data(), shadow_.data() + off, kPiece), 0)
          << "slab differs from shadow in piece at " << off;
    }
  }

  std::unique_ptr<TestServer> server_;
  std::unique_ptr<transport::Connection> conn_;
  proto::SlabInfo slab_{};
  std::vector<std::byte> local_;
  std::unique_ptr<transport::MemoryRegistration> reg_;
  std::vector<std::byte> shadow_;
};

TEST_P(Conformance, ReadsAndWritesOneByteToFourMiBAtUnalignedOffsets) {
  std::mt19937_64 rng(1);
  const std::uint32_t sizes[] = {1, 2, 3, 7, 63, 64, 65, 511, 4095, 4096, 4097, 65549,
                                 (1u << 20) + 1, 4u << 20};
  for (int round = 0; round < 2; ++round) {
    for (std::uint32_t len : sizes) {
      const std::uint64_t roff = rng() % (kSlabBytes - len);
      const std::size_t loff = rng() % (kLocalBytes / 2 - len);
      fill(loff, len, rng());
      ASSERT_TRUE(conn_->execute(op(OpKind::kWrite, loff, roff, len), kTimeout).ok()) << len;
      std::memcpy(shadow_.data() + roff, local_.data() + loff, len);
      // Read back into the other half of the local buffer, at another odd offset.
      const std::size_t back = kLocalBytes / 2 + rng() % (kLocalBytes / 2 - len);
      auto st = conn_->execute(op(OpKind::kRead, back, roff, len), kTimeout);
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_EQ(std::memcmp(local_.data() + back, shadow_.data() + roff, len), 0)
          << "read-back mismatch, len " << len << " remote offset " << roff;
    }
  }
  verify_whole_slab();
}

TEST_P(Conformance, BatchesOfAThousandOps) {
  std::mt19937_64 rng(2);
  constexpr int kOps = 1000;
  constexpr std::uint32_t kStride = 16384;  // disjoint remote targets within one batch
  std::vector<Op> writes, reads;
  std::size_t loff = 0;
  std::vector<std::pair<std::uint64_t, std::uint32_t>> targets;
  for (int i = 0; i < kOps; ++i) {
    const std::uint32_t len = 1 + static_cast<std::uint32_t>(rng() % (kStride - 64));
    const std::uint64_t roff = static_cast<std::uint64_t>(i) * kStride + rng() % 64;
    targets.emplace_back(roff, len);
    fill(loff, len, rng());
    std::memcpy(shadow_.data() + roff, local_.data() + loff, len);
    writes.push_back(op(OpKind::kWrite, loff, roff, len));
    loff += len;
  }
  run_batch(writes);
  std::memset(local_.data(), 0, kLocalBytes);
  loff = 0;
  for (auto [roff, len] : targets) {
    reads.push_back(op(OpKind::kRead, loff, roff, len));
    loff += len;
  }
  run_batch(reads);
  loff = 0;
  for (auto [roff, len] : targets) {
    ASSERT_EQ(std::memcmp(local_.data() + loff, shadow_.data() + roff, len), 0) << roff;
    loff += len;
  }
  verify_whole_slab();
}

TEST_P(Conformance, FourThreadsAtOnce) {
  constexpr int kThreads = 4;
  constexpr std::uint64_t kShare = kSlabBytes / kThreads;
  constexpr std::size_t kLocalShare = kLocalBytes / kThreads;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      std::byte* mine = local_.data() + t * kLocalShare;
      for (int i = 0; i < 300 && failures == 0; ++i) {
        const std::uint32_t len = 1 + static_cast<std::uint32_t>(rng() % 65536);
        const std::uint64_t roff = t * kShare + rng() % (kShare - len);
        for (std::uint32_t k = 0; k < len; ++k) mine[k] = std::byte(rng());
        Op w{OpKind::kWrite, len, mine, reg_->lkey(), slab_.rkey, slab_.addr + roff};
        if (!conn_->execute(w, kTimeout).ok()) { ++failures; break; }
        std::memcpy(shadow_.data() + roff, mine, len);  // disjoint shares: no race
        Op r{OpKind::kRead, len, mine + len, reg_->lkey(), slab_.rkey, slab_.addr + roff};
        if (!conn_->execute(r, kTimeout).ok()) { ++failures; break; }
        if (std::memcmp(mine + len, shadow_.data() + roff, len) != 0) { ++failures; break; }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  verify_whole_slab();
}

TEST_P(Conformance, ControlCallsAllocateFreeAndReportStats) {
  auto before = transport::server_stats(*conn_, kTimeout);
  ASSERT_TRUE(before.ok()) << before.status().to_string();
  EXPECT_EQ(before->slabs, 1u);
  auto extra = transport::alloc_slab(*conn_, 1, kTimeout);  // rounded up to one chunk
  ASSERT_TRUE(extra.ok());
  EXPECT_EQ(extra->bytes, server_->core().options().chunk_bytes);
  EXPECT_EQ(transport::server_stats(*conn_, kTimeout)->slabs, 2u);
  ASSERT_TRUE(transport::free_slab(*conn_, extra->slab_id, kTimeout).ok());
  auto after = transport::server_stats(*conn_, kTimeout);
  EXPECT_EQ(after->slabs, 1u);
  EXPECT_EQ(after->used_bytes, before->used_bytes);
}

TEST_P(Conformance, RejectsInvalidBatchesBeforeStartingThem) {
  Completion done;
  EXPECT_EQ(conn_->post({}, done).code(), StatusCode::kInvalidArgument);
  Op zero = op(OpKind::kRead, 0, 0, 1);
  zero.length = 0;
  EXPECT_EQ(conn_->post(std::span(&zero, 1), done).code(), StatusCode::kInvalidArgument);
  // The connection is still fine afterwards.
  EXPECT_TRUE(conn_->execute(op(OpKind::kRead, 0, 0, 4096), kTimeout).ok());
}

TEST_P(Conformance, AccessOutsideTheSlabFailsOutOfRangeAndKeepsTheConnection) {
  // Running past the slab's end, and an address in no slab at all.
  Op past = op(OpKind::kRead, 0, slab_.bytes - 100, 4096);
  Op nowhere = op(OpKind::kWrite, 0, 0, 64);
  nowhere.remote_addr = slab_.addr + (1ull << 44);
  for (const Op& bad : {past, nowhere}) {
    Completion done;
    ASSERT_TRUE(conn_->post(std::span(&bad, 1), done).ok());
    const Status st = conn_->wait(done, kTimeout);
    EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.to_string();
  }
  fill(0, 4096, 7);
  ASSERT_TRUE(conn_->execute(op(OpKind::kWrite, 0, 4096, 4096), kTimeout).ok());
  std::memcpy(shadow_.data() + 4096, local_.data(), 4096);
  verify_whole_slab();
}

TEST_P(Conformance, WrongKeyFailsPermissionDeniedAndKeepsTheConnection) {
  Op bad = op(OpKind::kRead, 0, 0, 4096);
  bad.rkey ^= 0x5a5a5a5a;
  const Status st = conn_->execute(bad, kTimeout);
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << st.to_string();
  Op wbad = op(OpKind::kWrite, 0, 0, 4096);
  wbad.rkey ^= 1;
  EXPECT_EQ(conn_->execute(wbad, kTimeout).code(), StatusCode::kPermissionDenied);
  verify_whole_slab();  // the rejected write changed nothing, and reads still work
}

TEST_P(Conformance, RefusedControlCallsKeepTheConnection) {
  EXPECT_EQ(transport::free_slab(*conn_, slab_.slab_id + 1000, kTimeout).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(transport::alloc_slab(*conn_, 1ull << 40, kTimeout).status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_TRUE(transport::server_stats(*conn_, kTimeout).ok());
  verify_whole_slab();
}

TEST_P(Conformance, OpsOnAFreedSlabFailOutOfRange) {
  auto extra = transport::alloc_slab(*conn_, 1 << 20, kTimeout);
  ASSERT_TRUE(extra.ok()) << extra.status().to_string();
  Op r{OpKind::kRead, 4096, local_.data(), reg_->lkey(), extra->rkey, extra->addr};
  ASSERT_TRUE(conn_->execute(r, kTimeout).ok());
  ASSERT_TRUE(transport::free_slab(*conn_, extra->slab_id, kTimeout).ok());
  EXPECT_EQ(conn_->execute(r, kTimeout).code(), StatusCode::kOutOfRange);
  verify_whole_slab();
}

TEST_P(Conformance, ManyThreadsWaitOnOneConnectionWithOnePollerAtATime) {
  // Six threads, each with its own batches in flight, drive one connection's completions
  // together (tcp: leader/follower; verbs: one CQ poller at a time).
  constexpr int kThreads = 6;
  constexpr std::uint64_t kShare = kSlabBytes / kThreads / 4096 * 4096;
  constexpr std::size_t kLocalShare = kLocalBytes / kThreads / 4096 * 4096;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::byte* mine = local_.data() + t * kLocalShare;
      std::vector<Op> ops;
      for (int i = 0; i < 50 && failures == 0; ++i) {
        ops.clear();
        for (std::uint32_t k = 0; k < 8; ++k) {
          std::memset(mine + k * 4096, t * 16 + (i + k) % 16, 4096);
          ops.push_back({OpKind::kWrite, 4096, mine + k * 4096, reg_->lkey(), slab_.rkey,
                         slab_.addr + t * kShare + k * 4096});
        }
        Completion w;
        if (!conn_->post(ops, w).ok() || !conn_->wait(w, kTimeout).ok()) { ++failures; break; }
        for (Op& o : ops) { o.kind = OpKind::kRead; o.local = static_cast<std::byte*>(o.local) + 8 * 4096; }
        Completion r;
        if (!conn_->post(ops, r).ok() || !conn_->wait(r, kTimeout).ok()) { ++failures; break; }
        if (std::memcmp(mine, mine + 8 * 4096, 8 * 4096) != 0) { ++failures; break; }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

// Dead peer: the table says kUnavailable, within the op's deadline, and the connection stays
// broken (control calls too). Instantiated for the backends whose peer can go away.
class ConformancePeerLoss : public Conformance {};

TEST_P(ConformancePeerLoss, PeerThatGoesAwayFailsUnavailableWithoutHanging) {
  ASSERT_TRUE(backend().peer_can_stop);
  run_batch(std::array{op(OpKind::kRead, 0, 0, 4096)});
  server_.reset();  // the memserver goes away under the client
  const auto t0 = std::chrono::steady_clock::now();
  Status st;
  // The first op may race the disconnect; within a few tries every op must fail.
  for (int i = 0; i < 50 && st.ok(); ++i) {
    st = conn_->execute(op(OpKind::kRead, 0, 0, 4096), std::chrono::seconds(5));
    if (st.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.to_string();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(12));
  EXPECT_EQ(conn_->execute(op(OpKind::kWrite, 0, 0, 4096), kTimeout).code(),
            StatusCode::kUnavailable);
  EXPECT_FALSE(transport::server_stats(*conn_, std::chrono::seconds(5)).ok());
}

// Timeouts: Stall.* (stall_test.cc) stops a memserver process under tcp and verbs clients;
// Fault.ATimedOutWaitBreaksTheConnection drops a batch in the wrapper. "local" cannot stall.

INSTANTIATE_TEST_SUITE_P(Transports, Conformance,
                         ::testing::Values(&kLocal, &kTcp, &kVerbs, &kFault),
                         ContractBackendName{});
// kLocal's memserver is in-process and lives as long as its client: no peer to lose.
INSTANTIATE_TEST_SUITE_P(Transports, ConformancePeerLoss,
                         ::testing::Values(&kTcp, &kVerbs, &kFault), ContractBackendName{});

}  // namespace
}  // namespace farmem::test
