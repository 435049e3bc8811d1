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

}  // namespace farmem::region
