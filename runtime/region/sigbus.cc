#include "region/sigbus.h"

#include <signal.h>
#include <ucontext.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <string>
#include <thread>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "region/region_constants.h"

namespace farmem::region {

namespace {

/// One registered range. `server` null means free. `inside` counts handlers between their
/// check of the slot and their return, so that unregistering can wait for them.
struct RangeSlot {
  std::atomic<std::uintptr_t> start{0};
  std::atomic<std::uintptr_t> end{0};
  std::atomic<FaultServer*> server{nullptr};
  std::atomic<int> inside{0};
};

std::array<RangeSlot, kMaxSigbusRegions> g_ranges;

/// Handlers replaced by ours, newest last; the signal handler chains to g_chain[g_chain_len-1].
/// Written only under g_install_mu (before publishing the length), read by signal handlers.
std::array<struct sigaction, kMaxSigbusChain> g_chain;
std::atomic<std::size_t> g_chain_len{0};

/// Serialises (un)registration and (re)installation. Never taken in the signal handler, so
/// what it serialises (g_chain, g_ranges) is read lock-free there and annotates no field.
Mutex g_install_mu;

/// Whether the faulting access was a store: the page-fault error code's W bit on x86-64.
/// Elsewhere unknown (false): a store then takes one more fault to be recorded as a write.
bool fault_was_write([[maybe_unused]] void* ucontext) {
#if defined(__x86_64__)
  constexpr long long kPageFaultWriteBit = 0x2;  // x86 #PF error code bit 1: W/R
  const auto* uc = static_cast<const ucontext_t*>(ucontext);
  return (uc->uc_mcontext.gregs[REG_ERR] & kPageFaultWriteBit) != 0;
#else
  return false;
#endif
}

/// Serves `addr` if a registered range holds it; false if none does or it could not be served.
bool serve(std::uintptr_t addr, bool write) {
  for (RangeSlot& slot : g_ranges) {
    FaultServer* s = slot.server.load(std::memory_order_acquire);
    if (s == nullptr) continue;
    slot.inside.fetch_add(1, std::memory_order_acq_rel);
    // Re-check after announcing ourselves: an unregister that cleared the slot before
    // this point does not wait for us, so we must not use `s` then.
    const bool mine = slot.server.load(std::memory_order_acquire) == s &&
                      addr >= slot.start.load(std::memory_order_acquire) &&
                      addr < slot.end.load(std::memory_order_acquire);
    const bool served = mine && s->serve_sigbus(addr, write);
    slot.inside.fetch_sub(1, std::memory_order_acq_rel);
    if (mine) return served;
  }
  return false;
}

/// Hands the signal to the handler ours replaced; with none, restores the default action so
/// that the signal kills the process as it would have without farmem.
void chain(int sig, siginfo_t* info, void* ucontext) {
  const std::size_t n = g_chain_len.load(std::memory_order_acquire);
  const struct sigaction* prev = n == 0 ? nullptr : &g_chain[n - 1];
  if (prev != nullptr && (prev->sa_flags & SA_SIGINFO) != 0 && prev->sa_sigaction != nullptr) {
    prev->sa_sigaction(sig, info, ucontext);
    return;
  }
  if (prev != nullptr && prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
    prev->sa_handler(sig);
    return;
  }
  // SIG_DFL (or SIG_IGN, which cannot work for a fault: the access would fault forever).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  // A hardware fault recurs when the access is retried on return and is then fatal; a sent
  // signal does not recur, so it is raised again (pending until this handler returns).
  if (info->si_code <= 0) ::raise(sig);
}

void on_sigbus(int sig, siginfo_t* info, void* ucontext) {
  const int saved_errno = errno;  // the interrupted code may be between a call and its errno
  // Only kernel-raised faults (si_code > 0) name an address in si_addr; a sigqueue'd SIGBUS
  // (e.g. a handler-thread region giving up on a fetch) belongs to the application.
  const bool handled =
      info->si_code > 0 &&
      serve(reinterpret_cast<std::uintptr_t>(info->si_addr), fault_was_write(ucontext));
  if (!handled) chain(sig, info, ucontext);
  errno = saved_errno;
}

/// Makes on_sigbus the SIGBUS handler unless it is already; remembers what it replaces.
Status install_locked() FARMEM_REQUIRES(g_install_mu) {
  struct sigaction current {};
  if (::sigaction(SIGBUS, nullptr, &current) != 0) return Internal("sigaction(SIGBUS) query");
  if ((current.sa_flags & SA_SIGINFO) != 0 && current.sa_sigaction == &on_sigbus) {
    return Status::Ok();
  }
  const std::size_t n = g_chain_len.load(std::memory_order_relaxed);
  if (n == g_chain.size()) {
    return ResourceExhausted("the SIGBUS handler was replaced too often to chain again");
  }
  g_chain[n] = current;
  g_chain_len.store(n + 1, std::memory_order_release);
  struct sigaction ours {};
  ours.sa_sigaction = &on_sigbus;
  ours.sa_flags = SA_SIGINFO | SA_RESTART;  // no SA_ONSTACK: see sigbus.h
  sigemptyset(&ours.sa_mask);
  if (::sigaction(SIGBUS, &ours, nullptr) != 0) {
    g_chain_len.store(n, std::memory_order_release);
    return Internal("sigaction(SIGBUS) install");
  }
  return Status::Ok();
}

}  // namespace

Status register_sigbus_range(void* start, std::size_t bytes, FaultServer* server) {
  MutexLock lock(g_install_mu);
  FARMEM_RETURN_IF_ERROR(install_locked());
  for (RangeSlot& slot : g_ranges) {
    if (slot.server.load(std::memory_order_acquire) != nullptr) continue;
    const auto s = reinterpret_cast<std::uintptr_t>(start);
    slot.start.store(s, std::memory_order_release);
    slot.end.store(s + bytes, std::memory_order_release);
    slot.server.store(server, std::memory_order_release);  // publishes start and end
    return Status::Ok();
  }
  return ResourceExhausted("too many faulting-thread regions at once (limit " +
                           std::to_string(kMaxSigbusRegions) + ")");
}

void unregister_sigbus_range(FaultServer* server) {
  MutexLock lock(g_install_mu);
  for (RangeSlot& slot : g_ranges) {
    if (slot.server.load(std::memory_order_acquire) != server) continue;
    slot.server.store(nullptr, std::memory_order_release);
    // A handler may be mid-fetch in this region; it finishes soon (or is handed off to the
    // helper thread, which still runs: regions unregister before stopping it).
    while (slot.inside.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    slot.start.store(0, std::memory_order_release);
    slot.end.store(0, std::memory_order_release);
  }
}

}  // namespace farmem::region
