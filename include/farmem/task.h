// farmem/task.h: C++20 coroutines that keep many far-memory misses in flight from one thread.
//
//   farmem::Task<> sum(farmem::far_vector<std::uint64_t>& v, std::size_t i, std::uint64_t* out) {
//     auto x = co_await farmem::load(v, i);   // suspends while the page travels
//     if (x.ok()) *out += *x;
//   }
//   farmem::Scheduler sched(rt);
//   for (std::size_t i : picks) sched.spawn(sum(v, i, &total));
//   FARMEM_RETURN_IF_ERROR(sched.run());     // one thread, many misses in flight
//
// A miss suspends the coroutine instead of blocking the thread: the scheduler runs the
// others, which suspend on their own misses, then fetches all of those pages in one batch
// (Runtime::prefetch) and resumes each coroutine once its page is local. At most
// Runtime::prefetch_window() pages are in flight per scheduler; further misses wait their
// turn. A page that could not be fetched (its memserver died, a timeout) reaches the
// coroutine that wanted it as an error; nothing aborts.
//
// Rules: one Scheduler per thread, run() on that thread. A DerefScope must not live across a
// co_await: scopes belong to the thread and would pin every page any suspended coroutine
// touched; load()/store() open their own short scope after the page has arrived. Awaited
// outside a Scheduler's run(), or on another runtime's far memory than the scheduler's,
// load()/store()/fetch() do not suspend: they fetch in line.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "farmem/far_ptr.h"
#include "farmem/far_vector.h"
#include "farmem/runtime.h"
#include "farmem/status.h"

namespace farmem {

class Scheduler;

namespace detail {

struct PromiseBase {
  std::coroutine_handle<> continuation;  ///< who awaits this task; null for a spawned root
  Scheduler* root_of = nullptr;          ///< the scheduler that owns this task as a root
  std::size_t root_index = 0;            ///< a root's place in that scheduler's roots_
  std::exception_ptr error;

  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept;
    void await_resume() noexcept {}
  };
  std::suspend_always initial_suspend() noexcept { return {}; }
  FinalAwaiter final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { error = std::current_exception(); }
};

template <typename T>
struct Promise : PromiseBase {
  std::optional<T> value;
  template <typename U>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
};
template <>
struct Promise<void> : PromiseBase {
  void return_void() noexcept {}
};

}  // namespace detail

/// A lazily started coroutine. Awaiting it runs it to completion (on the awaiting thread,
/// suspending with it); Scheduler::spawn runs a Task<void> as one of its roots.
template <typename T = void>
class [[nodiscard]] Task {
 public:
  struct promise_type : detail::Promise<T> {
    Task get_return_object() {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
  };

  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (h_) h_.destroy();
  }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
    h_.promise().continuation = awaiting;
    return h_;
  }
  T await_resume() {
    if (h_.promise().error) std::rethrow_exception(h_.promise().error);
    if constexpr (!std::is_void_v<T>) return std::move(*h_.promise().value);
  }

 private:
  friend class Scheduler;
  explicit Task(std::coroutine_handle<promise_type> h) : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

/// Runs coroutines on the calling thread, overlapping their far-memory misses. Not
/// thread-safe: spawn and run from one thread.
class Scheduler {
 public:
  struct Stats {
    std::uint64_t suspensions = 0;     ///< awaits that found their page absent
    std::uint64_t batches = 0;         ///< Runtime::prefetch calls made for them
    std::uint64_t pages_requested = 0; ///< pages those batches asked for
    std::uint64_t resumed_ready = 0;   ///< coroutines resumed with their page already local
    std::uint64_t resumed_waiting = 0; ///< resumed to wait in line for their page
    std::size_t peak_in_flight = 0;    ///< most pages requested and not yet handed over
  };

  /// `max_in_flight`: pages this scheduler keeps requested at once; 0 takes
  /// rt.prefetch_window().
  explicit Scheduler(Runtime& rt, std::size_t max_in_flight = 0);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Adds a root coroutine; it starts at the next run().
  void spawn(Task<void> task);
  /// Runs every spawned coroutine (and those they spawn) to completion. kInvalidArgument
  /// when called from inside a coroutine or while another scheduler runs on this thread.
  /// The first exception a root let escape is rethrown here, once all have finished.
  Status run();

  Runtime& runtime() const { return rt_; }
  /// A snapshot; safe to read from another thread while run() works.
  Stats stats() const;
  /// The scheduler running on this thread (inside run()), or nullptr.
  static Scheduler* current();

  // The awaiters' side (farmem::fetch/load/store): true when the page holding `addr` is
  // local now; otherwise park `h` until it may be.
  bool resident(FarAddr addr) const;
  void park(FarAddr addr, std::coroutine_handle<> h);

 private:
  friend struct detail::PromiseBase;
  struct Parked {
    std::coroutine_handle<> h;
    FarAddr addr;
  };
  using RootHandle = std::coroutine_handle<Task<void>::promise_type>;
  void root_finished(RootHandle h);
  void post_requests();
  void wake();

  Runtime& rt_;
  std::size_t max_in_flight_;
  std::deque<std::coroutine_handle<>> ready_;
  std::deque<Parked> waiting_;   ///< pages requested (posted or about to be), oldest first
  std::deque<Parked> queued_;    ///< over the window: not requested yet
  std::vector<FarAddr> to_post_; ///< requested pages not yet posted
  std::vector<RootHandle> roots_;  ///< spawned, not finished (each knows its index here)
  std::vector<std::coroutine_handle<>> finished_;  ///< finished, freed once back in run()
  std::exception_ptr first_error_;
  // Stats, written by the running thread only (relaxed: a snapshot may mix moments).
  std::atomic<std::uint64_t> suspensions_{0}, batches_{0}, pages_requested_{0}, resumed_ready_{0},
      resumed_waiting_{0};
  std::atomic<std::size_t> peak_in_flight_{0};
};

template <typename P>
std::coroutine_handle<> detail::PromiseBase::FinalAwaiter::await_suspend(
    std::coroutine_handle<P> h) noexcept {
  PromiseBase& p = h.promise();
  if (p.continuation) return p.continuation;
  if constexpr (std::is_same_v<P, Task<void>::promise_type>) {  // only a Task<void> is a root
    if (p.root_of != nullptr) p.root_of->root_finished(h);
  }
  return std::noop_coroutine();
}

namespace detail {

/// Suspends until the page holding `addr` is local (or could not be fetched), then runs
/// `finish` in a fresh DerefScope on the local address (nullptr and the error when the page
/// could not be fetched).
template <typename Finish>
class PageAwaiter {
 public:
  /// A non-ok `refused` is the answer, without touching far memory (a bad index).
  PageAwaiter(Runtime& rt, FarAddr addr, Finish finish, Status refused = Status::Ok())
      : rt_(rt), addr_(addr), finish_(std::move(finish)), refused_(std::move(refused)) {}
  bool await_ready() const {
    if (!refused_.ok()) return true;
    Scheduler* s = Scheduler::current();
    // Far memory of another runtime than the scheduler's is fetched in line.
    return s == nullptr || &s->runtime() != &rt_ || s->resident(addr_);
  }
  void await_suspend(std::coroutine_handle<> h) { Scheduler::current()->park(addr_, h); }
  auto await_resume() {
    if (!refused_.ok()) return finish_(nullptr, refused_);
    DerefScope scope(rt_);
    std::byte* p = scope.translate(addr_, Finish::kWrites);
    return finish_(p, scope.error());
  }

 private:
  Runtime& rt_;
  FarAddr addr_;
  Finish finish_;
  Status refused_;
};

template <typename T>
Status index_check(const far_vector<T>& v, std::size_t i) {
  if (i < v.size()) return Status::Ok();
  return OutOfRange("far_vector: index " + std::to_string(i) + " of " + std::to_string(v.size()));
}

template <typename T>
struct LoadFinish {
  static constexpr bool kWrites = false;
  Result<T> operator()(const std::byte* p, const Status& error) const {
    if (p == nullptr) return error;
    T out;
    std::memcpy(&out, p, sizeof(T));
    return out;
  }
};
template <typename T>
struct StoreFinish {
  static constexpr bool kWrites = true;
  T value;
  Status operator()(std::byte* p, const Status& error) const {
    if (p == nullptr) return error;
    std::memcpy(p, &value, sizeof(T));
    return Status::Ok();
  }
};
struct FetchFinish {
  static constexpr bool kWrites = false;
  Status operator()(const std::byte* p, const Status& error) const {
    return p == nullptr ? error : Status::Ok();
  }
};

}  // namespace detail

/// co_await: Status once the page holding `addr` is local (a DerefScope opened right after
/// finds it there unless it was evicted meanwhile, when it is fetched again in line).
inline auto fetch(Runtime& rt, FarAddr addr) {
  return detail::PageAwaiter<detail::FetchFinish>(rt, addr, {});
}
/// co_await: Result<T>, a copy of *p.
template <typename T>
auto load(Runtime& rt, far_ptr<T> p) {
  return detail::PageAwaiter<detail::LoadFinish<T>>(rt, p.addr(), {});
}
/// co_await: Status; *p = value (the page is marked dirty).
template <typename T>
auto store(Runtime& rt, far_ptr<T> p, T value) {
  return detail::PageAwaiter<detail::StoreFinish<T>>(rt, p.addr(), {std::move(value)});
}
/// co_await: Result<T>, a copy of v[i]. kOutOfRange past size().
template <typename T>
auto load(const far_vector<T>& v, std::size_t i) {
  Status st = detail::index_check(v, i);
  return detail::PageAwaiter<detail::LoadFinish<T>>(v.runtime(), st.ok() ? v.addr_of(i) : FarAddr{},
                                                    {}, std::move(st));
}
/// co_await: Status; v[i] = value. kOutOfRange past size().
template <typename T>
auto store(far_vector<T>& v, std::size_t i, T value) {
  Status st = detail::index_check(v, i);
  return detail::PageAwaiter<detail::StoreFinish<T>>(v.runtime(), st.ok() ? v.addr_of(i) : FarAddr{},
                                                     {std::move(value)}, std::move(st));
}

}  // namespace farmem
