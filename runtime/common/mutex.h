// farmem's locks: std::mutex and std::shared_mutex with clang's thread-safety annotations
// (common/thread_annotations.h), which libstdc++'s types lack, and the scoped guards that go
// with them. Each is the std:: type inside and nothing more: no extra state, every call
// inline, the same size (checked below).
//
//   Mutex mu_;        MutexLock lock(mu_);   a scope holding it
//   SharedMutex mu_;  ReaderLock / WriterLock
//   Mutex + condition_variable:
//     UniqueLock lock(mu_);
//     while (!ready_) lock.wait(cv_);
//     lock.wait_for(cv_, d, [&]() FARMEM_REQUIRES(mu_) { return ready_; });
//
// The analysis checks a lambda as a separate function that holds nothing, so a wait
// predicate reading guarded fields says which lock it runs under (FARMEM_REQUIRES, checked in
// its body); without that, a read of a guarded field in it is an error. Or loop in the
// locked scope, as above.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "common/thread_annotations.h"

namespace farmem {

/// std::mutex, seen by the analysis. There is no assert_held(): std::mutex does not know its
/// owner, so it could only tell the analysis what nothing checks.
class FARMEM_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() FARMEM_ACQUIRE() { mu_.lock(); }
  void unlock() FARMEM_RELEASE() { mu_.unlock(); }
  [[nodiscard]] bool try_lock() FARMEM_TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  friend class UniqueLock;
  std::mutex mu_;
};

/// std::shared_mutex, seen by the analysis: exclusive for writers, shared for readers.
class FARMEM_CAPABILITY("mutex") SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  void lock() FARMEM_ACQUIRE() { mu_.lock(); }
  void unlock() FARMEM_RELEASE() { mu_.unlock(); }
  [[nodiscard]] bool try_lock() FARMEM_TRY_ACQUIRE(true) { return mu_.try_lock(); }
  void lock_shared() FARMEM_ACQUIRE_SHARED() { mu_.lock_shared(); }
  void unlock_shared() FARMEM_RELEASE_SHARED() { mu_.unlock_shared(); }
  [[nodiscard]] bool try_lock_shared() FARMEM_TRY_ACQUIRE_SHARED(true) {
    return mu_.try_lock_shared();
  }

 private:
  std::shared_mutex mu_;
};

static_assert(sizeof(Mutex) == sizeof(std::mutex));
static_assert(sizeof(SharedMutex) == sizeof(std::shared_mutex));

/// Holds a Mutex for its scope (std::lock_guard).
class FARMEM_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) FARMEM_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() FARMEM_RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

/// Holds a SharedMutex shared for its scope (std::shared_lock).
class FARMEM_SCOPED_CAPABILITY ReaderLock {
 public:
  explicit ReaderLock(SharedMutex& mu) FARMEM_ACQUIRE_SHARED(mu) : mu_(mu) { mu_.lock_shared(); }
  ~ReaderLock() FARMEM_RELEASE() { mu_.unlock_shared(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  SharedMutex& mu_;
};

/// Holds a SharedMutex exclusively for its scope (std::unique_lock without the extras).
class FARMEM_SCOPED_CAPABILITY WriterLock {
 public:
  explicit WriterLock(SharedMutex& mu) FARMEM_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~WriterLock() FARMEM_RELEASE() { mu_.unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  SharedMutex& mu_;
};

/// Holds a Mutex for its scope, may drop it and take it again (unlock()/lock()), and waits on
/// a std::condition_variable (std::unique_lock<std::mutex>, which it wraps). The analysis
/// treats a wait as holding the lock throughout, as the caller sees it.
class FARMEM_SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& mu) FARMEM_ACQUIRE(mu) : lock_(mu.mu_) {}
  // The analysis cannot see that std::unique_lock releases the mutex; it does, once, here.
  ~UniqueLock() FARMEM_RELEASE() {}
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;

  void lock() FARMEM_ACQUIRE() { lock_.lock(); }
  void unlock() FARMEM_RELEASE() { lock_.unlock(); }

  /// cv.wait: returns holding the lock; may wake spuriously (loop on the condition).
  void wait(std::condition_variable& cv) { cv.wait(lock_); }
  template <typename Rep, typename Period>
  std::cv_status wait_for(std::condition_variable& cv,
                          const std::chrono::duration<Rep, Period>& timeout) {
    return cv.wait_for(lock_, timeout);
  }
  template <typename Clock, typename Duration>
  std::cv_status wait_until(std::condition_variable& cv,
                            const std::chrono::time_point<Clock, Duration>& deadline) {
    return cv.wait_until(lock_, deadline);
  }

  /// With a predicate, as std::condition_variable's: `pred` runs holding the lock, so
  /// annotate it with FARMEM_REQUIRES(the mutex) when it reads guarded fields.
  template <typename Predicate>
  void wait(std::condition_variable& cv, Predicate pred) {
    cv.wait(lock_, std::move(pred));
  }
  /// pred() when it returns (true: the condition holds; false: timed out without it).
  template <typename Rep, typename Period, typename Predicate>
  bool wait_for(std::condition_variable& cv, const std::chrono::duration<Rep, Period>& timeout,
                Predicate pred) {
    return cv.wait_for(lock_, timeout, std::move(pred));
  }
  template <typename Clock, typename Duration, typename Predicate>
  bool wait_until(std::condition_variable& cv,
                  const std::chrono::time_point<Clock, Duration>& deadline, Predicate pred) {
    return cv.wait_until(lock_, deadline, std::move(pred));
  }
  /// The std::unique_lock, for APIs that take one (a wait with a predicate that reads no
  /// guarded field).
  std::unique_lock<std::mutex>& native() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace farmem
