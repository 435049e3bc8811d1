// The sort algorithms of farmem-sort, plain code over a Record* (see docs/sort.md for why the
// chunked one is the default on far memory).
#pragma once

#include <oneapi/tbb/task_arena.h>

#include <cstdint>
#include <vector>

#include "sort/memory.h"
#include "sort/record.h"

namespace farmem::sort {

/// How a sort proceeds; sizes in records.
struct SortPlan {
  std::uint64_t records = 0;      ///< records at the start of the input
  std::uint64_t run_records = 0;  ///< chunked: records sorted in place at a time (a run)
  /// Bytes between hints while streaming (prefetch the next window, drop the last one).
  std::uint64_t window_bytes = 1u << 20;
  bool hints = true;  ///< give the hints at all (off: only faults and eviction move pages)
};

/// What a sort did besides sorting.
struct SortCounts {
  std::uint64_t runs = 0;        ///< sorted runs merged (chunked), 1 (naive)
  std::uint64_t partitions = 0;  ///< merge partitions, one a thread (chunked)
  double run_s = 0;              ///< chunked: time to sort the runs in place
  double merge_s = 0;            ///< chunked: time of the k-way merge
};

/// Sorts the whole input in place with one tbb::parallel_sort (std::sort's algorithm, split
/// across the arena's threads): the comparison baseline.
Status sort_naive(Memory& in, const SortPlan& plan, tbb::task_arena& arena, SortCounts& counts);

/// Sorts runs of plan.run_records in place in `in`, one after the other (each fits the local
/// budget), then merges them into `out`, one key range a thread.
Status sort_chunked(Memory& in, Memory& out, const SortPlan& plan, tbb::task_arena& arena,
                    SortCounts& counts);

// ---- the merge's parts (merge.cc), separate so that they can be tested alone ----

/// A sorted run: records [begin, end) of the input.
struct Run {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

/// One thread's share of the merge: from each run r the records [first[r], last[r]) (all
/// keys in one key range), merged into the output from record `out_begin` on.
struct Partition {
  std::vector<std::uint64_t> first;
  std::vector<std::uint64_t> last;
  std::uint64_t out_begin = 0;
};

/// Splits the merge of `runs` into `parts` key ranges of about equal size (splitter keys
/// sampled from every run, then each run cut at them by binary search).
std::vector<Partition> plan_partitions(const Record* base, const std::vector<Run>& runs,
                                       unsigned parts);

/// Merges one partition (a k-way merge with a binary heap of the runs' next keys) from
/// `in` into `out`, hinting window by window when plan.hints.
Status merge_partition(Memory& in, Memory& out, const Partition& p, const SortPlan& plan);

}  // namespace farmem::sort
