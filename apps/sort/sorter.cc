// Run formation and the two sorts' outlines; the merge is merge.cc.
#include "sort/sorter.h"

#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/parallel_sort.h>

#include <algorithm>
#include <atomic>
#include <chrono>

namespace farmem::sort {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

Record* records_of(Memory& m) { return reinterpret_cast<Record*>(m.data()); }

// Sorts every run in place, one at a time: while one is sorted the next is pulled in the
// background, and a sorted run is written back and dropped at once, so that the budget
// holds about two runs.
Status sort_runs(Memory& in, const std::vector<Run>& runs, const SortPlan& plan,
                 tbb::task_arena& arena) {
  Record* base = records_of(in);
  auto bytes = [](const Run& r) { return (r.end - r.begin) * Record::kBytes; };
  if (plan.hints) {
    FARMEM_RETURN_IF_ERROR(in.advise(0, plan.records * Record::kBytes, Advice::kSequential));
  }
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    if (plan.hints && i + 1 < runs.size()) {
      FARMEM_RETURN_IF_ERROR(
          in.advise(runs[i + 1].begin * Record::kBytes, bytes(runs[i + 1]), Advice::kWillNeed));
    }
    arena.execute([&] { tbb::parallel_sort(base + r.begin, base + r.end, KeyLess{}); });
    if (plan.hints) {
      FARMEM_RETURN_IF_ERROR(in.advise(r.begin * Record::kBytes, bytes(r), Advice::kDontNeed));
    }
  }
  return Status::Ok();
}

// Merges every partition on its own thread of the arena; the first error wins.
Status merge_all(Memory& in, Memory& out, const std::vector<Partition>& parts,
                 const SortPlan& plan, tbb::task_arena& arena) {
  std::vector<Status> errors(parts.size());
  arena.execute([&] {
    tbb::parallel_for(std::size_t{0}, parts.size(), [&](std::size_t p) {
      errors[p] = merge_partition(in, out, parts[p], plan);
    });
  });
  for (Status& s : errors) {
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

}  // namespace

Status sort_naive(Memory& in, const SortPlan& plan, tbb::task_arena& arena, SortCounts& counts) {
  Record* base = records_of(in);
  arena.execute([&] { tbb::parallel_sort(base, base + plan.records, KeyLess{}); });
  counts.runs = 1;
  return Status::Ok();
}

Status sort_chunked(Memory& in, Memory& out, const SortPlan& plan, tbb::task_arena& arena,
                    SortCounts& counts) {
  if (plan.run_records == 0) return InvalidArgument("a run must hold at least one record");
  std::vector<Run> runs;
  for (std::uint64_t b = 0; b < plan.records; b += plan.run_records) {
    runs.push_back({b, std::min(plan.records, b + plan.run_records)});
  }
  auto t0 = Clock::now();
  FARMEM_RETURN_IF_ERROR(sort_runs(in, runs, plan, arena));
  counts.run_s = since(t0);
  t0 = Clock::now();
  if (plan.hints) {
    // The input's streams are pulled window by window (merge.cc); a fault's own read-ahead
    // on top, per stream, would overrun the budget once there are many streams.
    FARMEM_RETURN_IF_ERROR(in.advise(0, plan.records * Record::kBytes, Advice::kRandom));
    FARMEM_RETURN_IF_ERROR(out.advise(0, plan.records * Record::kBytes, Advice::kSequential));
  }
  const auto parts = plan_partitions(records_of(in), runs,
                                     static_cast<unsigned>(arena.max_concurrency()));
  FARMEM_RETURN_IF_ERROR(merge_all(in, out, parts, plan, arena));
  counts.merge_s = since(t0);
  counts.runs = runs.size();
  counts.partitions = parts.size();
  return Status::Ok();
}

}  // namespace farmem::sort
