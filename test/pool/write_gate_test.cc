// WriteGate (pool/write_gate.h): the replica write gate's exclusion, without a pool.
#include "pool/write_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "test/support/memserver_process.h"

namespace farmem::test {
namespace {

using std::chrono::milliseconds;

TEST(WriteGate, ClosesWhenEmptyAndHoldsWritersOutUntilOpened) {
  pool::WriteGate gate;
  ASSERT_TRUE(gate.close(milliseconds(100)));
  std::atomic<bool> in{false};
  std::thread writer([&] {
    gate.enter();
    in = true;
    gate.leave();
  });
  // The writer cannot get in while the gate is closed (given 200 ms to try).
  EXPECT_FALSE(eventually([&] { return in.load(); }, milliseconds(200)));
  gate.open();
  EXPECT_TRUE(eventually([&] { return in.load(); }));
  writer.join();
}

TEST(WriteGate, GivesUpOnAWriterThatStaysInsideAndOpensAgain) {
  pool::WriteGate gate;
  gate.enter();  // a batch in flight
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(gate.close(milliseconds(50)));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(50));
  std::thread second([&] {  // the gate is open again: another writer gets in at once
    gate.enter();
    gate.leave();
  });
  second.join();
  gate.leave();
  EXPECT_TRUE(gate.close(milliseconds(50)));
  gate.open();
}

// Writers count themselves inside; while the closer holds the gate the count must stay 0.
TEST(WriteGate, NoWriterIsInsideWhileItIsClosed) {
  pool::WriteGate gate;
  std::atomic<int> inside{0};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> entries{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t) {
    writers.emplace_back([&] {
      while (!stop.load()) {  // ends on stop; each pass is bounded by the closer's hold
        gate.enter();
        inside.fetch_add(1);
        inside.fetch_sub(1);
        gate.leave();
        entries.fetch_add(1);
      }
    });
  }
  // The writers are running before the closer starts, and keep entering while it works.
  ASSERT_TRUE(eventually([&] { return entries.load() >= 1000; }));
  const std::uint64_t before = entries.load();
  int closed = 0, violations = 0;
  for (int i = 0; i < 2000; ++i) {
    if (!gate.close(milliseconds(100))) continue;
    ++closed;
    for (int k = 0; k < 50; ++k) {
      violations += inside.load() != 0 ? 1 : 0;
      std::this_thread::yield();  // lets a writer run, so that one that got in would show
    }
    gate.open();
  }
  const std::uint64_t during = entries.load() - before;
  stop = true;
  for (auto& w : writers) w.join();
  EXPECT_EQ(violations, 0);
  EXPECT_GT(closed, 1000);
  EXPECT_GT(during, 0u);
}

}  // namespace
}  // namespace farmem::test
