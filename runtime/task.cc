// farmem::Scheduler (include/farmem/task.h): coroutines whose misses overlap on one thread.
//
// A coroutine that misses is parked with its page's address; the page is requested
// (collected, then posted as one Runtime::prefetch batch when nothing else can run) unless
// the window of pages in flight is full, when it queues without a request. With nothing
// ready, the scheduler hands over every parked coroutine whose page has arrived; when none
// has, it resumes the oldest: its translate then waits for that page's batch (or fetches it
// in line, or reports the error), which is the first batch due to complete anyway.
#include <algorithm>
#include <span>

#include "common/dcheck.h"
#include "farmem/task.h"

namespace farmem {

namespace {
thread_local Scheduler* t_current = nullptr;
// One writer (the running thread): a load and a store, no read-modify-write.
void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
}  // namespace

Scheduler::Scheduler(Runtime& rt, std::size_t max_in_flight)
    : rt_(rt), max_in_flight_(max_in_flight != 0 ? max_in_flight : rt.prefetch_window()) {}

Scheduler::~Scheduler() {
  // Roots that never ran or never finished (run() not called, or it failed): their frames
  // are ours to free. Parked handles belong to those roots' chains.
  for (auto h : roots_) h.destroy();
}

Scheduler* Scheduler::current() { return t_current; }

Scheduler::Stats Scheduler::stats() const {
  Stats s;
  s.suspensions = suspensions_.load(std::memory_order_relaxed);
  s.batches = batches_.load(std::memory_order_relaxed);
  s.pages_requested = pages_requested_.load(std::memory_order_relaxed);
  s.resumed_ready = resumed_ready_.load(std::memory_order_relaxed);
  s.resumed_waiting = resumed_waiting_.load(std::memory_order_relaxed);
  s.peak_in_flight = peak_in_flight_.load(std::memory_order_relaxed);
  return s;
}

void Scheduler::spawn(Task<void> task) {
  auto h = std::exchange(task.h_, {});
  h.promise().root_of = this;
  h.promise().root_index = roots_.size();
  roots_.push_back(h);
  ready_.push_back(h);
}

void Scheduler::root_finished(RootHandle h) {
  detail::PromiseBase& p = h.promise();
  if (p.error && !first_error_) first_error_ = p.error;
  // Out of roots_ in O(1): the last root takes its place. Freed by run() once control is
  // back there (a frame must not be destroyed while its final_suspend is on the stack above).
  const std::size_t i = p.root_index;
  FARMEM_DCHECK_MSG(i < roots_.size() && roots_[i] == h, "root {} of {} is not where it says",
                    i, roots_.size());
  roots_[i] = roots_.back();
  roots_[i].promise().root_index = i;
  roots_.pop_back();
  finished_.push_back(h);
}

bool Scheduler::resident(FarAddr addr) const {
  return rt_.is_local(addr);  // no cache: true, the translate reports why without waiting
}

void Scheduler::park(FarAddr addr, std::coroutine_handle<> h) {
  bump(suspensions_);
  if (waiting_.size() < max_in_flight_) {
    waiting_.push_back({h, addr});
    to_post_.push_back(addr);
    if (waiting_.size() > peak_in_flight_.load(std::memory_order_relaxed)) {
      peak_in_flight_.store(waiting_.size(), std::memory_order_relaxed);
    }
  } else {
    queued_.push_back({h, addr});
  }
}

void Scheduler::post_requests() {
  for (std::size_t from = 0; from < to_post_.size(); from += Runtime::kMaxPrefetchBatch) {
    const std::size_t n = std::min(Runtime::kMaxPrefetchBatch, to_post_.size() - from);
    bump(batches_);
    bump(pages_requested_, n);
    // A refused batch (a write-back failed while making room) leaves its pages absent: each
    // coroutine's own translate fetches its page in line and reports its own error.
    (void)rt_.prefetch(std::span<const FarAddr>(to_post_.data() + from, n));
  }
  to_post_.clear();
}

void Scheduler::wake() {
  // Hand over every parked coroutine whose page is local; else the oldest, to wait for its.
  std::size_t woken = 0;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (resident(it->addr)) {
      ready_.push_back(it->h);
      it = waiting_.erase(it);
      ++woken;
    } else {
      ++it;
    }
  }
  bump(resumed_ready_, woken);
  if (woken == 0) {
    ready_.push_back(waiting_.front().h);
    waiting_.pop_front();
    bump(resumed_waiting_);
  }
  // Freed window slots go to the queued, in order.
  while (!queued_.empty() && waiting_.size() < max_in_flight_) {
    waiting_.push_back(queued_.front());
    to_post_.push_back(queued_.front().addr);
    queued_.pop_front();
  }
}

Status Scheduler::run() {
  if (t_current != nullptr) {
    return InvalidArgument(t_current == this
                                  ? "Scheduler::run called from one of its own coroutines"
                                  : "Scheduler::run while another scheduler runs on this thread");
  }
  t_current = this;
  while (!roots_.empty()) {
    if (ready_.empty()) {
      // Post the collected requests as one batch once enough have gathered, or when the
      // pages already posted run low (the oldest waiter's page is then always posted before
      // wake() may block on it: requests are posted in the order they were parked).
      // (A page parked twice may have arrived for its first waiter before being posted for
      // its second: to_post_ can hold more than waiting_'s unposted tail.)
      const std::size_t posted =
          waiting_.size() > to_post_.size() ? waiting_.size() - to_post_.size() : 0;
      if (!to_post_.empty() && (posted < max_in_flight_ / 2 || to_post_.size() >= max_in_flight_ / 2)) {
        post_requests();
      }
      if (waiting_.empty()) break;  // live roots with nothing to wake: they await elsewhere
      wake();
      continue;
    }
    auto h = ready_.front();
    ready_.pop_front();
    h.resume();
    for (auto done : finished_) done.destroy();
    finished_.clear();
  }
  t_current = nullptr;
  if (!roots_.empty()) {
    return InvalidArgument(std::to_string(roots_.size()) +
                              " coroutine(s) wait on something other than this scheduler");
  }
  if (first_error_) std::rethrow_exception(std::exchange(first_error_, nullptr));
  return Status::Ok();
}

}  // namespace farmem
