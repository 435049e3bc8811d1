// farmem-graph: PageRank and BFS over a CSR graph in far memory. Flags only: the work is
// graph.h. The far-memory flags are every app's (common/far_flags.h).
#include <oneapi/tbb/global_control.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "common/far_flags.h"
#include "graph/graph.h"

namespace {

void add_graph_options(CLI::App& app, farmem::graph::GraphOptions& o, std::string& algorithm) {
  app.add_option("-a,--algorithm", algorithm, "pagerank or bfs")
      ->check(CLI::IsMember({"pagerank", "bfs"}))->capture_default_str();
  app.add_option("-i,--input", o.input,
                 "Edge-list file: 'SRC DST' a line, '#' or '%' comments. None: an R-MAT graph")
      ->check(CLI::ExistingFile);
  app.add_option("--scale", o.rmat.scale, "R-MAT: 2^SCALE vertices")
      ->check(CLI::Range(1, 31))->capture_default_str();
  app.add_option("--edge-factor", o.rmat.edge_factor, "R-MAT: edges per vertex")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--seed", o.rmat.seed, "R-MAT: the seed (same seed, same graph)")
      ->capture_default_str();
  app.add_flag("--permute", o.rmat.permute, "R-MAT: rename vertices by a seeded permutation");
  app.add_option("--iterations", o.pagerank.max_iterations, "PageRank: most iterations")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--tolerance", o.pagerank.tolerance,
                 "PageRank: stop when an iteration moves the ranks by less (L1); 0: never")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--damping", o.pagerank.damping, "PageRank: damping factor")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--source", o.source, "BFS: source vertex (default: the first with an out-edge)");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"farmem-graph: PageRank and BFS over a CSR graph whose arrays live in far memory.\n"
               "Reads an edge list or generates an R-MAT graph, runs the algorithm in parallel "
               "(oneTBB) and prints a JSON report on stdout."};
  farmem::graph::GraphOptions o;
  farmem::RuntimeOptions r;
  std::string mode = "far";
  std::string algorithm = "pagerank";
  std::uint64_t memory_mib = 64;
  farmem::apps::FarFlags far;
  unsigned threads = 0;
  app.add_option("--mode", mode,
                 "far: the graph in far memory behind a -m MiB cache; local: all in local "
                 "memory (the reference)")
      ->check(CLI::IsMember({"far", "local"}))->capture_default_str();
  app.add_option("-t,--threads", threads, "Worker threads (0: one a core)")->capture_default_str();
  add_graph_options(app, o, algorithm);
  std::uint64_t budget_bytes = 0;
  auto* m = app.add_option("-m,--memory-limit", memory_mib,
                           "Local memory for cached far pages, in MiB (the page cache's budget)")
                ->check(CLI::Range(1, 1 << 24))->capture_default_str();
  app.add_option("--budget", budget_bytes,
                 "Or: that local memory as a size, for budgets that are not whole MiB (e.g. 1536k)")
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(std::uint64_t{1} << 20, std::uint64_t{1} << 44))
      ->excludes(m);
  farmem::apps::add_far_flags(app, r, far);
  app.set_version_flag("--version", std::string("farmem-graph ") + farmem::version());
  CLI11_PARSE(app, argc, argv);
  o.algorithm = algorithm == "bfs" ? farmem::graph::Algorithm::kBfs
                                   : farmem::graph::Algorithm::kPageRank;
  if (auto st = farmem::apps::finish_far_flags(r, far); !st.ok()) {
    std::fprintf(stderr, "farmem-graph: %s\n", st.to_string().c_str());
    return 2;
  }
  r.cache_budget_bytes = budget_bytes != 0 ? budget_bytes : memory_mib << 20;
  // The kernels go through the page cache, not the runtime's registered buffer: keep it small.
  r.local_buffer_bytes = 1u << 20;

  std::optional<tbb::global_control> limit;
  if (threads > 0) limit.emplace(tbb::global_control::max_allowed_parallelism, threads);
  std::unique_ptr<farmem::Runtime> rt;
  if (mode == "far") {
    auto opened = farmem::Runtime::open(r);
    if (!opened.ok()) {
      std::fprintf(stderr, "farmem-graph: %s\n", opened.status().to_string().c_str());
      return 1;
    }
    rt = std::move(opened).value();
  }
  auto report = farmem::graph::run_graph(o, rt.get());
  if (!report.ok()) {
    std::fprintf(stderr, "farmem-graph: %s\n", report.status().to_string().c_str());
    return 1;
  }
  std::cout << report->json.dump(2) << std::endl;
  return 0;
}
