// farmem-graph as a library: build a graph from an edge list or R-MAT, run PageRank or BFS
// over far memory (a Runtime) or all-local (the reference), report as JSON. main.cc is flags.
#pragma once

#include <farmem/farmem.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "graph/edges.h"
#include "graph/kernels.h"

namespace farmem::graph {

enum class Algorithm { kPageRank, kBfs };

struct GraphOptions {
  /// Edge-list file ("SRC DST" lines); empty: the R-MAT graph of `rmat`.
  std::string input;
  RmatOptions rmat;
  Algorithm algorithm = Algorithm::kPageRank;
  PageRankOptions pagerank;
  /// BFS source; negative: the lowest-numbered vertex with an out-edge.
  std::int64_t source = -1;
  /// Copy every rank or depth into the Report (tests compare them).
  bool keep_values = false;
};

struct Report {
  nlohmann::json json;        ///< what farmem-graph prints
  std::vector<double> ranks;  ///< with keep_values, PageRank
  /// With keep_values, BFS: each vertex's depth, -1 where it was not reached.
  std::vector<std::int64_t> depths;
};

/// Builds the graph and runs the algorithm: in far memory through `rt`, or all-local when
/// `rt` is null. Errors: the input's (kNotFound, kInvalidArgument with "FILE:LINE: ..."),
/// the options' (kInvalidArgument), far memory's (as the Runtime gives them).
Result<Report> run_graph(const GraphOptions& options, Runtime* rt);

/// The bytes of the arrays an algorithm's kernel works on for a graph of `vertices` and
/// `edges` kept edges: the far memory it touches while it runs (the build needs the raw edge
/// array besides, until it ends). PageRank: offsets, in-edges, out-degrees and three rank
/// arrays; BFS: offsets, out-edges and depths.
std::uint64_t kernel_bytes(Algorithm algorithm, std::uint64_t vertices, std::uint64_t edges);

const char* name_of(Algorithm a);

}  // namespace farmem::graph
