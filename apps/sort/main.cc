// farmem-sort: generates fixed-size records into far memory (or plain memory), sorts them as
// plain code on a pointer, verifies the result and prints one JSON line. Flags only: the
// sort is job.h. Exit codes: 0 sorted and verified, 1 an error or a failed verification,
// 2 bad options.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <string>
#include <thread>

#include "common/far_flags.h"
#include "sort/job.h"

namespace {

constexpr int kBadOptions = 2;
// Record counts beyond this overflow nothing, but no machine holds them (100 PiB).
constexpr std::uint64_t kMaxRecords = 1ull << 50;

int bad_options(const std::string& why) {
  std::fprintf(stderr, "farmem-sort: %s\n", why.c_str());
  return kBadOptions;
}

}  // namespace

int main(int argc, char** argv) {
  using farmem::sort::Algo;
  using farmem::sort::Mode;
  CLI::App app{"farmem-sort: sorts 100-byte records (10-byte keys, as sortbenchmark's gensort) "
               "several times larger than local memory, in a mapped far region, then verifies "
               "the result; prints one JSON line."};
  farmem::sort::SortOptions o;
  o.threads = std::max(1u, std::thread::hardware_concurrency());
  std::uint64_t bytes = 0;
  std::string output, fault_mode = "faulting";
  farmem::apps::FarFlags far;
  bool no_hints = false;
  const std::map<std::string, Mode> modes{{"far", Mode::kFar}, {"plain", Mode::kPlain}};
  const std::map<std::string, Algo> algos{{"chunked", Algo::kChunked}, {"naive", Algo::kNaive}};
  app.add_option("--mode", o.mode, "far: a mapped far region; plain: malloc'd memory, same code")
      ->transform(CLI::CheckedTransformer(modes, CLI::ignore_case))->default_str("far");
  app.add_option("--algo", o.algo,
                 "chunked: sort budget-sized runs in place, then a k-way merge into a second "
                 "region; naive: one parallel sort over the whole input")
      ->transform(CLI::CheckedTransformer(algos, CLI::ignore_case))->default_str("chunked");
  auto* n = app.add_option("-n,--records", o.records, "Records to sort (100 bytes each)")
                ->check(CLI::Range(std::uint64_t{1}, kMaxRecords))->capture_default_str();
  app.add_option("--bytes", bytes, "Or: bytes of records to sort (e.g. 1g; whole records, rounded down)")
      ->transform(CLI::AsSizeValue(false))->excludes(n);
  app.add_option("--seed", o.seed, "The input is a function of it")->capture_default_str();
  app.add_option("-t,--threads", o.threads, "Threads that sort, merge, generate and verify")
      ->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("-b,--budget", o.budget_bytes,
                 "Local memory for far pages (e.g. 64m); also sizes the runs in both modes")
      ->transform(CLI::AsSizeValue(false))->default_str("64m");
  app.add_option("--run-bytes", o.run_bytes, "Bytes of a sorted run (default: 3/8 of --budget)")
      ->transform(CLI::AsSizeValue(false));
  app.add_flag("--no-hints", no_hints,
               "Give the memory no advice (prefetch, drop-behind): faults and eviction only");
  app.add_option("--fault-mode", fault_mode,
                 "Who serves a region's faults: faulting (the faulting thread, through SIGBUS: no thread switch a fault) or handler (a thread)")
      ->check(CLI::IsMember({"handler", "faulting"}))->capture_default_str();
  app.add_option("-o,--output", output, "Write the sorted records to FILE (100 bytes each)");
  farmem::apps::add_far_flags(app, o.runtime, far);
  app.set_version_flag("--version", std::string("farmem-sort ") + farmem::version());
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kBadOptions;
  }
  if (bytes != 0) {
    if (bytes < farmem::sort::Record::kBytes) {
      return bad_options("--bytes must hold at least one record (100 bytes)");
    }
    o.records = bytes / farmem::sort::Record::kBytes;
  }
  const bool far_flags = !o.runtime.servers.empty() || !o.runtime.registry.empty();
  if (o.mode == Mode::kPlain && far_flags) {
    return bad_options("--server and --registry apply to --mode far only");
  }
  if (auto st = farmem::apps::finish_far_flags(o.runtime, far); !st.ok()) {
    return bad_options(st.message());
  }
  o.hints = !no_hints;
  o.region.fault_mode = fault_mode == "faulting" ? farmem::FaultMode::kFaultingThread
                                                 : farmem::FaultMode::kHandlerThread;

  auto job = farmem::sort::SortJob::open(o);
  if (!job.ok()) {
    std::fprintf(stderr, "farmem-sort: %s\n", job.status().to_string().c_str());
    return job.status().code() == farmem::StatusCode::kInvalidArgument ? kBadOptions : 1;
  }
  auto report = (*job)->run(output);
  if (!report.ok()) {
    std::fprintf(stderr, "farmem-sort: %s\n", report.status().to_string().c_str());
    return 1;
  }
  std::printf("%s\n", report->to_json(o).c_str());
  if (!report->sorted || !report->checksum_match) {
    std::fprintf(stderr, "farmem-sort: VERIFY FAILED: %s\n",
                 !report->sorted ? "the output is not sorted"
                                 : "the output is not a permutation of the input");
    return 1;
  }
  return 0;
}
