// farmem-sort as a library: options, the three timed phases (generate, sort, verify) and the
// report. main.cc reads the options from flags; the tests drive a SortJob directly.
#pragma once

#include <farmem/farmem.h>
#include <farmem/region.h>

#include <oneapi/tbb/task_arena.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "sort/memory.h"
#include "sort/record.h"
#include "sort/sorter.h"

namespace farmem::sort {

enum class Mode { kFar, kPlain };
enum class Algo { kChunked, kNaive };

struct SortOptions {
  Mode mode = Mode::kFar;    ///< far: a mapped region; plain: memory from the allocator
  Algo algo = Algo::kChunked;
  std::uint64_t records = 1u << 20;  ///< records to generate and sort (100 bytes each)
  std::uint64_t seed = 1;            ///< the input is a function of it
  unsigned threads = 1;              ///< of the sort, the merge, generation and verification
  /// Local memory for far pages (far mode: RuntimeOptions::cache_budget_bytes). Also sizes
  /// the chunked sort's runs in both modes, so that they run the same code.
  std::uint64_t budget_bytes = 64u << 20;
  /// Chunked: bytes of a run; 0: 3/8 of the budget (one run sorted while the next is pulled).
  std::uint64_t run_bytes = 0;
  bool hints = true;           ///< advise the memory (prefetch, drop behind, sequential)
  RuntimeOptions runtime;      ///< far mode: servers, registry, security (budget set from above)
  RegionOptions region;        ///< far mode: the fault mode
};

/// What a run measured; to_json() is the result line.
struct SortReport {
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;
  std::uint64_t budget_bytes = 0;
  std::uint64_t run_records = 0;
  double gen_s = 0, sort_s = 0, verify_s = 0;
  SortCounts counts;
  bool verified = false;  ///< verify() ran
  bool sorted = false;
  bool checksum_match = false;
  Checksum input, output;
  CacheStats cache;  ///< far mode: both regions' counters summed
  std::string to_json(const SortOptions& o) const;
};

class SortJob {
 public:
  /// Checks the options and allocates the input (and for chunked, output) memory: opens the
  /// runtime and maps the regions (far), or allocates (plain).
  static Result<std::unique_ptr<SortJob>> open(SortOptions options);
  ~SortJob();  // the regions before the runtime

  Status generate();  ///< writes the input, checksumming it
  Status sort();      ///< sorts it (into the output memory for chunked)
  Status verify();    ///< sortedness and the output's checksum, in one pass
  /// All three, then the output to `path` when not empty (gensort's format: the records back
  /// to back).
  Result<SortReport> run(const std::string& path = {});
  Status write_output(const std::string& path);

  /// The sorted records (valid after sort()).
  std::span<const Record> output() const;
  const SortReport& report() const { return report_; }

 private:
  SortJob() = default;
  Memory& result_memory() const { return out_ ? *out_ : *in_; }

  SortOptions o_;
  SortReport report_;
  std::unique_ptr<tbb::task_arena> arena_;
  std::unique_ptr<Runtime> rt_;  // far mode; outlives the regions below
  std::unique_ptr<Memory> in_;
  std::unique_ptr<Memory> out_;  // chunked only
};

/// The names used on the command line and in the report.
const char* mode_name(Mode m);
const char* algo_name(Algo a);

}  // namespace farmem::sort
