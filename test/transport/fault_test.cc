// The fault-injecting wrapper, over the local backend.
#include <gtest/gtest.h>

#include <cstring>

#include "test/support/test_server.h"
#include "transport/fault/fault.h"

namespace farmem::test {
namespace {

using transport::FaultPlan;
constexpr auto kTimeout = std::chrono::seconds(5);

class Fault : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::move(TestServer::start("local")).value();
    auto c = server_->connect();
    ASSERT_TRUE(c.ok());
    conn_ = transport::wrap_with_faults(std::move(c).value(), FaultPlan{});
    slab_ = *transport::alloc_slab(*conn_, 1 << 20, kTimeout);
    buf_.assign(4096, std::byte{7});
    reg_ = std::move(conn_->register_memory(buf_.data(), buf_.size())).value();
  }
  transport::Op write_op(std::uint64_t off) {
    return {transport::OpKind::kWrite, 64, buf_.data(), reg_->lkey(), slab_.rkey,
            slab_.addr + off};
  }
  std::unique_ptr<TestServer> server_;
  std::unique_ptr<transport::FaultConnection> conn_;
  proto::SlabInfo slab_{};
  std::vector<std::byte> buf_;
  std::unique_ptr<transport::MemoryRegistration> reg_;
};

TEST_F(Fault, FailsAfterNOpsAndDoesNotPerformTheFailedOp) {
  conn_->set_plan({.action = FaultPlan::Action::kFail, .after_ops = 3});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(conn_->execute(write_op(i * 64), kTimeout).ok());
  auto st = conn_->execute(write_op(512), kTimeout);
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_EQ(conn_->injected(), 1u);
  // Nothing was written at 512: read through the unwrapped connection.
  conn_->set_plan({});
  std::vector<std::byte> back(64, std::byte{1});
  auto r2 = std::move(conn_->register_memory(back.data(), back.size())).value();
  transport::Op r{transport::OpKind::kRead, 64, back.data(), r2->lkey(), slab_.rkey,
                  slab_.addr + 512};
  ASSERT_TRUE(conn_->execute(r, kTimeout).ok());
  EXPECT_EQ(back[0], std::byte{0});
}

TEST_F(Fault, RateHitsAboutThatFractionRepeatably) {
  conn_->set_plan({.action = FaultPlan::Action::kFail, .rate = 0.25, .seed = 9});
  int failed = 0;
  for (int i = 0; i < 2000; ++i) failed += conn_->execute(write_op(0), kTimeout).ok() ? 0 : 1;
  EXPECT_GT(failed, 400);
  EXPECT_LT(failed, 600);
}

TEST_F(Fault, DroppedOpsTimeOut) {
  conn_->set_plan({.action = FaultPlan::Action::kDrop});
  const auto t0 = std::chrono::steady_clock::now();
  auto st = conn_->execute(write_op(0), std::chrono::milliseconds(50));
  EXPECT_EQ(st.code(), StatusCode::kTimedOut);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
}

TEST_F(Fault, ADroppedBatchIsCompleteOnceItsWaitTimedOut) {
  // As on every backend (transport.h): once wait() returned, even kTimedOut, the batch has
  // completed and nothing of it is pending, so its Completion may be reused or freed.
  conn_->set_plan({.action = FaultPlan::Action::kDrop});
  const transport::Op op = write_op(0);
  transport::Completion done;
  ASSERT_TRUE(conn_->post(std::span(&op, 1), done).ok());
  EXPECT_EQ(conn_->wait(done, std::chrono::milliseconds(50)).code(), StatusCode::kTimedOut);
  EXPECT_TRUE(done.done());
  EXPECT_FALSE(done.status().ok());
}

TEST_F(Fault, ATimedOutWaitBreaksTheConnection) {
  conn_->set_plan({.action = FaultPlan::Action::kDrop});
  EXPECT_EQ(conn_->execute(write_op(0), std::chrono::milliseconds(50)).code(),
            StatusCode::kTimedOut);
  conn_->set_plan({});
  EXPECT_EQ(conn_->execute(write_op(0), kTimeout).code(), StatusCode::kUnavailable);
  EXPECT_EQ(transport::server_stats(*conn_, kTimeout).status().code(), StatusCode::kUnavailable);
}

TEST_F(Fault, DelayedOpsStillComplete) {
  conn_->set_plan({.action = FaultPlan::Action::kDelay, .delay = std::chrono::milliseconds(30)});
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(conn_->execute(write_op(0), kTimeout).ok());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(30));
}

TEST_F(Fault, FailsControlCallsOnRequest) {
  conn_->set_plan({.action = FaultPlan::Action::kNone, .fail_control = true});
  EXPECT_EQ(transport::alloc_slab(*conn_, 1, kTimeout).status().code(), StatusCode::kIoError);
}

}  // namespace
}  // namespace farmem::test
