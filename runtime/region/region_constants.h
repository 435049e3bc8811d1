// Every sizing and timing constant of mapped regions, with the reason for its value.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace farmem::region {

/// Dirty pages written back per IoBatch (eviction, flush, DontNeed): 128 KiB amortises a
/// round trip over many pages, yet keeps page_mu_ (held across the round trip) short.
inline constexpr std::size_t kWriteBackBatchPages = 32;

/// Pages pulled per background batch (pull order, WillNeed): small enough that a demand
/// fault arriving meanwhile waits for at most one 64 KiB transfer.
inline constexpr std::size_t kPullBatchPages = 16;

/// Upper bound accepted for RegionOptions::max_prefetch_pages: the fetch staging area is
/// sized from it, and 1 MiB ahead is beyond any useful readahead.
inline constexpr std::uint32_t kMaxPrefetchPagesLimit = 256;

/// A reclaim call evicts at least this many pages: one eviction a fault would write dirty
/// pages back one round trip each; a batch of 8 shares the trip at little cost in hit rate.
inline constexpr std::size_t kMinReclaimPages = 8;

/// One stream's prefetch may occupy at most 1/4 of the budget, so a scan never pushes the
/// rest of the working set out wholesale (and tiny budgets still prefetch a little).
inline constexpr std::uint64_t kMaxPrefetchShareOfBudget = 4;

/// uffd messages taken per read(2): one call drains a burst (several threads faulting at
/// once) without a syscall per fault.
inline constexpr std::size_t kMessagesPerRead = 16;

/// How soon background pulling looks at a full budget again. Pulling is opportunistic:
/// being late costs a missed chance, never correctness; 10 ms keeps an idle region idle.
inline constexpr std::chrono::milliseconds kPullRetryInterval{10};

/// Backoff of a failing demand fetch: starts below a memserver reconnect and doubles to a
/// ceiling that still notices recovery within a second.
inline constexpr std::chrono::milliseconds kFirstRetryDelay{1};
inline constexpr std::chrono::milliseconds kMaxRetryDelay{1000};

/// Waste reports passed to the prefetcher per fault: each halves its depth, so after ~8 it
/// sits at its minimum and more reports change nothing.
inline constexpr std::uint32_t kMaxWasteReportsPerFault = 8;

/// After serving a fault the handler busy-polls the userfaultfd (non-blocking read(2)) this
/// long before it sleeps in poll(): a fault arriving meanwhile is read at once instead of
/// waking the handler (bare C on the dev VM: 47 us a fault through poll, 14 us spinning).
/// The window restarts at every fault, so a thread touching page after page (one fault every
/// 10-20 us) never meets a sleeping handler, while an idle region burns at most 50 us of CPU
/// after its last fault.
inline constexpr std::chrono::microseconds kSpinAfterFault{50};

/// Free room the background evictor keeps in the budget, so that a fault charges its page
/// without evicting on the fault path. The evictor starts when free room falls below half
/// the reserve and drops at least that half in one MADV_DONTNEED pass: each pass is a TLB
/// shootdown (an IPI to every CPU running the process), measured at ~36 % of a scan's time
/// with 32-page drops in a VM, so refills must be large: up to 512 pages (2 MiB), and at
/// most 1/8 of the budget, so small budgets keep most of their pages in use.
inline constexpr std::size_t kReservePagesMax = 512;
inline constexpr std::uint64_t kReserveShareOfBudget = 8;

/// Longest sleep of an idle evictor: only a backstop, faults that eat into the reserve wake it.
inline constexpr std::chrono::milliseconds kEvictorIdleWait{100};

}  // namespace farmem::region

namespace farmem::region {

/// Smallest sequential prefetch window that gets a pipelining marker page (see
/// prefetch_candidates_on_handler): below 8 pages the extra fault costs more than waiting.
inline constexpr std::size_t kMinPipelinedWindow = 8;

/// Faulting-thread regions alive at once (the SIGBUS handler's range table is a fixed array:
/// it cannot allocate). Each region costs one slot; 256 is far beyond any real use.
inline constexpr std::size_t kMaxSigbusRegions = 256;

/// Times the SIGBUS handler may be re-installed after the application replaced it (each
/// keeps the replaced handler to chain to, in a fixed array).
inline constexpr std::size_t kMaxSigbusChain = 16;

/// Threads of one faulting-thread region that may fetch on their own stack at once (each owns
/// a staging slot of 1 + max_prefetch_pages registered pages). Beyond that a fault is handed
/// to the helper thread: slower, never wrong.
inline constexpr std::size_t kFaulterSlots = 8;

/// Faults handed to the helper thread at once (faults inside farmem calls, an empty reserve,
/// no free staging slot, a failed fetch); a faulter finding them all busy yields and retries.
inline constexpr std::size_t kMailboxSlots = 16;

}  // namespace farmem::region
