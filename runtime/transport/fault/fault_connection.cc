#include <thread>
#include <vector>

#include "transport/fault/fault.h"

namespace farmem::transport {

struct FaultConnection::Pending {
  Completion inner;
  bool has_inner = false;
  bool dropped = false;
  Status injected;
};

FaultConnection::FaultConnection(std::unique_ptr<Connection> inner, FaultPlan plan)
    : inner_(std::move(inner)), plan_(plan) {
  caps_ = inner_->capabilities();
  caps_.name = "fault(" + caps_.name + ")";
}

FaultConnection::~FaultConnection() = default;

void FaultConnection::set_plan(FaultPlan plan) {
  MutexLock lock(mu_);
  plan_ = plan;
}

FaultPlan FaultConnection::plan_snapshot() const {
  MutexLock lock(mu_);
  return plan_;
}

bool FaultConnection::hit(std::uint64_t n, const FaultPlan& plan) const {
  if (plan.action == FaultPlan::Action::kNone || n < plan.after_ops) return false;
  if (plan.rate >= 1.0) return true;
  std::uint64_t z = (plan.seed ^ n) + 0x9E3779B97F4A7C15ull;  // splitmix64 of (seed, n)
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53 < plan.rate;
}

Status FaultConnection::post(std::span<const Op> ops, Completion& done) {
  FARMEM_RETURN_IF_ERROR(validate_ops(ops, caps_));
  {
    MutexLock lock(mu_);
    if (!broken_.ok()) return broken_;
  }
  const FaultPlan plan = plan_snapshot();
  auto p = std::make_unique<Pending>();
  std::vector<Op> pass;
  pass.reserve(ops.size());
  bool delay = false;
  for (const Op& op : ops) {
    const auto n = ops_seen_.fetch_add(1, std::memory_order_relaxed);
    if (!hit(n, plan)) {
      pass.push_back(op);
      continue;
    }
    injected_.fetch_add(1, std::memory_order_relaxed);
    switch (plan.action) {
      case FaultPlan::Action::kFail:
        if (p->injected.ok()) {
          p->injected = IoError("injected fault: op " + std::to_string(n) + " failed");
        }
        break;
      case FaultPlan::Action::kDrop:
        p->dropped = true;
        break;
      case FaultPlan::Action::kDelay:
        delay = true;
        pass.push_back(op);
        break;
      case FaultPlan::Action::kNone:
        break;
    }
  }
  if (delay) std::this_thread::sleep_for(plan.delay);
  if (!pass.empty()) {
    FARMEM_RETURN_IF_ERROR(inner_->post(pass, p->inner));
    p->has_inner = true;
  }
  done.arm(1);
  MutexLock lock(mu_);
  pending_[&done] = std::move(p);
  return Status::Ok();
}

Status FaultConnection::wait(Completion& done, std::chrono::nanoseconds timeout) {
  Pending* p = nullptr;
  {
    MutexLock lock(mu_);
    auto it = pending_.find(&done);
    if (it == pending_.end()) return done.status();  // already completed earlier
    p = it->second.get();
  }
  Status st;
  // The inner wait returns only once nothing touches p->inner or the ops' buffers.
  if (p->has_inner) st = inner_->wait(p->inner, timeout);
  if (st.ok() && p->dropped) {
    // A dropped op never completes: the caller sees exactly what a lost reply looks like.
    std::this_thread::sleep_for(timeout);
    st = TimedOut(peer() + ": injected fault: op dropped, no completion within the deadline");
  }
  std::unique_ptr<Pending> mine;
  {
    MutexLock lock(mu_);
    auto it = pending_.find(&done);
    mine = std::move(it->second);
    pending_.erase(it);
    // As on every backend, a timed-out connection is broken: later ops fail kUnavailable.
    if (st.code() == StatusCode::kTimedOut && broken_.ok()) {
      broken_ = Unavailable(peer() + ": connection broken: " + st.message());
    }
  }
  if (st.code() == StatusCode::kTimedOut) {
    // Completed, failed, as a timed-out batch is on every backend (tcp fails its entries,
    // verbs polls its flushes): the caller may reuse `done` at once.
    done.finish_part(st);
    return st;
  }
  done.finish_part(!mine->injected.ok() ? mine->injected : st);
  return done.status();
}

Result<proto::Message> FaultConnection::call(proto::Message request,
                                             std::chrono::nanoseconds timeout) {
  const FaultPlan plan = plan_snapshot();
  if (plan.fail_control && ops_seen_.load(std::memory_order_relaxed) >= plan.after_ops) {
    injected_.fetch_add(1, std::memory_order_relaxed);
    return IoError("injected fault: control call " +
                   std::string(proto::to_string(request.type)) + " failed");
  }
  {
    MutexLock lock(mu_);
    if (!broken_.ok()) return broken_;
  }
  return inner_->call(std::move(request), timeout);
}

std::unique_ptr<FaultConnection> wrap_with_faults(std::unique_ptr<Connection> inner,
                                                  FaultPlan plan) {
  return std::make_unique<FaultConnection>(std::move(inner), plan);
}

}  // namespace farmem::transport
