// A graph in compressed sparse row form over either storage (arrays.h), and its build.
//
// The build drops self loops and keeps one copy of each (src, dst) pair: the kernels then
// see a simple directed graph, as the GAP benchmark suite's builder gives them (PageRank on
// a multigraph would weigh a repeated edge twice; BFS does not care). Each adjacency list is
// sorted by vertex id, so a graph's CSR is the same whatever the edge order or thread count.
//
//   pass 1  walk the edges, count each vertex's edges (self loops counted apart)   local
//   pass 2  walk them again, place each at its vertex's cursor (scatter)           -> raw
//   pass 3  per block of vertices: read, sort and unique each list, write it back
//           compacted at the block's start, note the kept degrees                  raw
//   pass 4  prefix sum of kept degrees -> offsets; copy each block's kept edges     -> targets
//
// Local memory during the build: two 8-byte counters a vertex, and a block of edges a thread
// (kBuildBlockEdges, or one vertex's whole list when it is longer). Far memory: the raw
// array (edges as read) until the build ends, besides the result.
#pragma once

#include <cstdint>
#include <vector>

#include "graph/arrays.h"
#include "graph/edges.h"

namespace farmem::graph {

/// Vertices a parallel task of the kernels takes at a time: a multiple of the elements one
/// 4 KiB page holds (512 of 8 bytes, 1024 of 4), so that tasks writing a vertex array meet on
/// no page (correct either way: tasks may write disjoint elements of one page).
inline constexpr std::uint64_t kChunkVertices = 4096;
/// Edges a build or kernel task holds locally at a time (32 Ki edges: 128 KiB of ids, and
/// 8 bytes of index each for a gather).
inline constexpr std::uint64_t kBuildBlockEdges = 32 << 10;

template <typename Store>
struct Csr {
  template <typename T>
  using Array = typename Store::template Array<T>;

  std::uint64_t vertices = 0;
  std::uint64_t edges = 0;  ///< kept: no self loops, no duplicates
  Array<std::uint64_t> offsets;  ///< vertices + 1: vertex v's list is [offsets[v], offsets[v+1])
  Array<Vertex> targets;         ///< edges: each list sorted, without repeats
};

/// What the build kept of the edges it was given.
struct BuildStats {
  std::uint64_t edges_read = 0;
  std::uint64_t self_loops = 0;   ///< dropped
  std::uint64_t duplicates = 0;   ///< dropped: further copies of a (src, dst) pair
  std::uint64_t edges_kept = 0;
};

/// Builds the CSR of `source`'s edges (transpose: of the reversed edges, each vertex listing
/// its in-neighbours, as PageRank's pull needs).
template <typename Store>
Result<Csr<Store>> build_csr(const Store& store, const EdgeSource& source, bool transpose,
                             BuildStats* stats);

/// Each vertex's count of appearances in csr.targets: its out-degree when csr is transposed.
template <typename Store>
Result<typename Store::template Array<std::uint32_t>> target_counts(const Store& store,
                                                                      const Csr<Store>& csr);

/// The vertex blocks of [0, offsets.size() - 1) a task takes: consecutive vertices of at most
/// kChunkVertices and (unless one vertex has more) kBuildBlockEdges edges.
struct VertexBlock {
  std::uint64_t lo = 0, hi = 0;
};
std::vector<VertexBlock> vertex_blocks(const std::vector<std::uint64_t>& offsets);

}  // namespace farmem::graph
