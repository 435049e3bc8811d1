// Where farmem-graph's edges come from: an edge-list file, or an R-MAT generator.
//
// Both hand edges out in blocks through an EdgeSource, which can be walked more than once
// (the CSR build walks it twice: counting, then filling). A file's edges are parsed once into
// local memory; R-MAT edges are generated again on each walk from the seed (edge i from its
// own counter-based random stream), so an R-MAT graph's edge list never sits in local memory.
#pragma once

#include <farmem/status.h>

#include <cstdint>
#include <functional>
#include <istream>
#include <span>
#include <string>
#include <vector>

namespace farmem::graph {

/// Vertex ids are 32-bit: up to 2^32 - 1 vertices (R-MAT scale <= 31), 4 bytes an edge.
using Vertex = std::uint32_t;
/// Largest vertex id a file may name (so that max id + 1 vertices fit a Vertex).
inline constexpr std::uint64_t kMaxVertexId = 0xFFFFFFFEull;

struct Edge {
  Vertex src = 0;
  Vertex dst = 0;
  friend bool operator==(const Edge&, const Edge&) = default;
};

/// A walkable sequence of directed edges over vertices [0, vertices).
struct EdgeSource {
  std::uint64_t vertices = 0;
  std::uint64_t edges = 0;  ///< as produced, self loops and duplicates included
  /// Calls fn on consecutive blocks of the edges, in the same order on every walk. The blocks
  /// are produced in parallel but fn is called from the calling thread, in order.
  std::function<Status(const std::function<Status(std::span<const Edge>)>& fn)> walk;
};

/// Reads "SRC DST" lines (decimal vertex ids, separated by spaces or tabs; blank lines and
/// lines starting with '#' or '%' are skipped). `name` prefixes error messages, which say
/// "NAME:LINE: what is wrong". Vertices: the largest id + 1.
Result<std::vector<Edge>> parse_edge_list(std::istream& in, const std::string& name);
/// parse_edge_list of a file; kNotFound when it cannot be opened.
Result<std::vector<Edge>> read_edge_list(const std::string& path);
/// An EdgeSource over edges held in memory (vertices: the largest id + 1, or `vertices` if
/// larger).
EdgeSource edges_in_memory(std::vector<Edge> edges, std::uint64_t vertices = 0);

/// Graph500-style R-MAT: 2^scale vertices, edge_factor * 2^scale directed edges, each placed
/// by descending `scale` levels of the adjacency matrix, picking a quadrant with
/// probabilities a, b, c and 1 - a - b - c at each (no per-level noise, unlike Graph500's
/// reference). The same seed gives the same edges, whatever the thread count.
struct RmatOptions {
  std::uint32_t scale = 16;        ///< log2 of the vertex count, 1..31
  std::uint32_t edge_factor = 16;  ///< edges per vertex
  std::uint64_t seed = 1;
  double a = 0.57, b = 0.19, c = 0.19;
  /// Renames vertices by a seeded bijection of [0, 2^scale), so that ids do not tell degree
  /// (without it vertex 0 is the hub, as R-MAT's skew puts it top-left).
  bool permute = false;
};
Status check(const RmatOptions& o);
/// The R-MAT edges as an EdgeSource (check(o) first).
EdgeSource rmat_edges(const RmatOptions& o);
/// Edge i of the R-MAT graph (what rmat_edges produces at position i).
Edge rmat_edge(const RmatOptions& o, std::uint64_t i);

}  // namespace farmem::graph
