// The fault backend: wraps any Connection and injects failures into its operations, for
// tests of every failure path above the transport.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "transport/transport.h"

namespace farmem::transport {

struct FaultPlan {
  enum class Action : std::uint8_t {
    kNone,
    kFail,   ///< a hit op is not performed; its batch completes with kIoError
    kDelay,  ///< a hit op's batch is posted only after `delay`
    kDrop,   ///< a hit op is not performed and its batch does not complete before wait's
             ///< deadline: wait times out, which breaks the connection and completes the
             ///< batch with kTimedOut, as a real timeout does
  };
  Action action = Action::kNone;
  std::uint64_t after_ops = 0;  ///< the first `after_ops` data ops pass untouched
  double rate = 1.0;            ///< after that, the fraction of ops hit (0..1)
  std::chrono::microseconds delay{0};
  bool fail_control = false;    ///< also fail control calls once after_ops ops have passed
  std::uint64_t seed = 1;       ///< the rate's choice is a hash of (seed, op number): repeatable
};

class FaultConnection final : public Connection {
 public:
  FaultConnection(std::unique_ptr<Connection> inner, FaultPlan plan);
  ~FaultConnection() override;

  /// Replaces the plan (op counting continues). Thread-safe.
  void set_plan(FaultPlan plan);
  /// Ops the wrapper has hit so far.
  std::uint64_t injected() const { return injected_.load(std::memory_order_relaxed); }
  Connection& inner() { return *inner_; }

  const Capabilities& capabilities() const override { return caps_; }
  const std::string& peer() const override { return inner_->peer(); }
  Result<std::unique_ptr<MemoryRegistration>> register_memory(void* addr,
                                                              std::size_t length) override {
    return inner_->register_memory(addr, length);
  }
  Status post(std::span<const Op> ops, Completion& done) override;
  Status wait(Completion& done, std::chrono::nanoseconds timeout) override;
  Result<proto::Message> call(proto::Message request, std::chrono::nanoseconds timeout) override;

 private:
  struct Pending;
  bool hit(std::uint64_t op_number, const FaultPlan& plan) const;
  FaultPlan plan_snapshot() const;

  std::unique_ptr<Connection> inner_;
  Capabilities caps_;
  std::atomic<std::uint64_t> ops_seen_{0};
  std::atomic<std::uint64_t> injected_{0};
  /// Guards plan_, pending_ (the state of each posted batch, keyed by its Completion) and
  /// broken_.
  mutable Mutex mu_;
  FaultPlan plan_ FARMEM_GUARDED_BY(mu_);
  /// Set by a timed-out wait: later ops and calls fail with it.
  Status broken_ FARMEM_GUARDED_BY(mu_);
  std::map<Completion*, std::unique_ptr<Pending>> pending_ FARMEM_GUARDED_BY(mu_);
};

std::unique_ptr<FaultConnection> wrap_with_faults(std::unique_ptr<Connection> inner,
                                                  FaultPlan plan);

}  // namespace farmem::transport
