// farmem-graph's kernels, one implementation over either storage (LocalStore, FarStore).
//
// PageRank pulls: each vertex sums its in-neighbours' contributions (rank / out-degree),
// read with a gather (their ids are known from the in-CSR, so their misses travel together),
// while its own list and the vertex arrays are read as sequential ranges. Dangling vertices'
// rank is spread over all vertices. Reductions are summed per chunk and then in chunk order,
// so results do not depend on the thread count or scheduling: far and local runs give the
// same bits.
//
// BFS is top-down and level-synchronous: each level's frontier (local, sorted) is cut into
// chunks; a chunk gathers its vertices' offsets, then their lists (short lists by a gather of
// edge positions, long ones as ranges), and claims unvisited targets in a local bitmap (one
// bit a vertex); the next frontier's depths are written with a scatter.
#pragma once

#include <cstdint>
#include <vector>

#include "graph/csr.h"

namespace farmem::graph {

struct PageRankOptions {
  double damping = 0.85;
  std::uint32_t max_iterations = 20;
  /// Stop once an iteration changes the ranks by less than this in total (L1); 0: always run
  /// max_iterations.
  double tolerance = 1e-6;
};

struct PageRankResult {
  std::uint32_t iterations = 0;
  double delta = 0;  ///< L1 change of the last iteration
  bool converged = false;
};

/// Ranks of in_csr's vertices (in_csr: the transposed CSR; out_degree: each vertex's
/// out-degree) into `rank` (resized to the vertex count); they sum to 1.
template <typename Store>
Result<PageRankResult> pagerank(const Store& store, const Csr<Store>& in_csr,
                                const typename Store::template Array<std::uint32_t>& out_degree,
                                const PageRankOptions& options,
                                typename Store::template Array<double>& rank);

struct BfsResult {
  std::vector<std::uint64_t> histogram;  ///< vertices at depth 0, 1, 2, ...
  std::uint64_t reached = 0;             ///< vertices reached, the source included
  std::uint64_t edges_traversed = 0;     ///< out-edges of the reached vertices
};

/// Breadth-first search from `source` over out_csr into `depth` (resized to the vertex
/// count): depth + 1 of each reached vertex, 0 for unreached ones.
template <typename Store>
Result<BfsResult> bfs(const Store& store, const Csr<Store>& out_csr, Vertex source,
                      typename Store::template Array<std::uint32_t>& depth);

}  // namespace farmem::graph
