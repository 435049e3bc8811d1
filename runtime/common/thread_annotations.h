// Clang thread-safety annotations (-Wthread-safety): which lock guards which field, which
// functions need a lock held or take one, so the compiler checks what the comments say.
//
// Under clang each macro is the matching __attribute__; under GCC (which has no such
// analysis) every one expands to nothing. Prefixed FARMEM_ so they do not clash with the
// same-named macros of other libraries (abseil, LevelDB) a program may include beside ours.
//
// Use them on farmem::Mutex / farmem::SharedMutex (common/mutex.h): libstdc++'s std::mutex
// carries no capability attributes, so the analysis cannot see it.
//
//   mutable Mutex mu_;                     ///< what it guards, why
//   int count_ FARMEM_GUARDED_BY(mu_);
//   void bump_locked() FARMEM_REQUIRES(mu_);
//
// Note: clang checks ACQUIRED_BEFORE/AFTER only under -Wthread-safety-beta; they still
// write the lock order down where the locks are declared.
#pragma once

#if defined(__clang__)
#define FARMEM_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define FARMEM_THREAD_ANNOTATION_(x)
#endif

/// On a class: its objects are locks ("mutex", or another name used in diagnostics).
#define FARMEM_CAPABILITY(name) FARMEM_THREAD_ANNOTATION_(capability(name))
/// On a class: an RAII object that holds a capability for its lifetime (a lock guard).
#define FARMEM_SCOPED_CAPABILITY FARMEM_THREAD_ANNOTATION_(scoped_lockable)

/// On a field: read or written only with the lock held (shared is enough to read).
#define FARMEM_GUARDED_BY(lock) FARMEM_THREAD_ANNOTATION_(guarded_by(lock))
/// On a pointer field: what it points to is guarded by the lock (the pointer itself is not).
#define FARMEM_PT_GUARDED_BY(lock) FARMEM_THREAD_ANNOTATION_(pt_guarded_by(lock))

/// On a lock: the lock order (this one is taken before / after the others).
#define FARMEM_ACQUIRED_BEFORE(...) FARMEM_THREAD_ANNOTATION_(acquired_before(__VA_ARGS__))
#define FARMEM_ACQUIRED_AFTER(...) FARMEM_THREAD_ANNOTATION_(acquired_after(__VA_ARGS__))

/// On a function: the caller holds the locks (exclusively / at least shared).
#define FARMEM_REQUIRES(...) FARMEM_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define FARMEM_REQUIRES_SHARED(...) \
  FARMEM_THREAD_ANNOTATION_(requires_shared_capability(__VA_ARGS__))

/// On a function: it takes the locks and returns holding them (no argument: `this`).
#define FARMEM_ACQUIRE(...) FARMEM_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define FARMEM_ACQUIRE_SHARED(...) \
  FARMEM_THREAD_ANNOTATION_(acquire_shared_capability(__VA_ARGS__))
/// On a function: it releases locks the caller held (no argument: `this`).
#define FARMEM_RELEASE(...) FARMEM_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
#define FARMEM_RELEASE_SHARED(...) \
  FARMEM_THREAD_ANNOTATION_(release_shared_capability(__VA_ARGS__))
/// On a function: it takes the locks when it returns `result` (true for try_lock).
#define FARMEM_TRY_ACQUIRE(...) FARMEM_THREAD_ANNOTATION_(try_acquire_capability(__VA_ARGS__))
#define FARMEM_TRY_ACQUIRE_SHARED(...) \
  FARMEM_THREAD_ANNOTATION_(try_acquire_shared_capability(__VA_ARGS__))

/// On a function: the caller must not hold the locks (it takes them itself).
#define FARMEM_EXCLUDES(...) FARMEM_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))
/// On a function: the analysis may assume the lock held after the call (an assertion).
#define FARMEM_ASSERT_CAPABILITY(lock) FARMEM_THREAD_ANNOTATION_(assert_capability(lock))
#define FARMEM_ASSERT_SHARED_CAPABILITY(lock) \
  FARMEM_THREAD_ANNOTATION_(assert_shared_capability(lock))
/// On a function: it returns a reference to this lock (an accessor).
#define FARMEM_RETURN_CAPABILITY(lock) FARMEM_THREAD_ANNOTATION_(lock_returned(lock))

/// On a function: not analysed. Only where the code is right for a reason the analysis
/// cannot see; say the reason in a comment beside it.
#define FARMEM_NO_THREAD_SAFETY_ANALYSIS FARMEM_THREAD_ANNOTATION_(no_thread_safety_analysis)
