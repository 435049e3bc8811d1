// Top-down level-synchronous BFS (kernels.h).
#include <oneapi/tbb/parallel_sort.h>

#include <algorithm>
#include <atomic>

#include "graph/kernels.h"
#include "graph/parallel.h"

namespace farmem::graph {
namespace {

/// Frontier vertices a task expands at a time: their offsets travel in one gather.
constexpr std::size_t kFrontierChunk = 1024;
/// Lists at least this long are read as ranges (sequential pages, prefetched by the trend
/// detector) rather than gathered edge by edge: a 4 KiB page of ids.
constexpr std::uint64_t kLongList = 1024;

// One bit a vertex: set by the first task to reach it.
class Visited {
 public:
  explicit Visited(std::uint64_t n) : words_((n + 63) / 64) {}
  /// True when this call set v's bit.
  bool claim(Vertex v) {
    std::atomic<std::uint64_t>& w = words_[v / 64];
    const std::uint64_t bit = std::uint64_t{1} << (v % 64);
    if (w.load(std::memory_order_relaxed) & bit) return false;
    return (w.fetch_or(bit, std::memory_order_relaxed) & bit) == 0;
  }

 private:
  std::vector<std::atomic<std::uint64_t>> words_;
};

// Calls fn(target) for every edge of the lists [ends[2i], ends[2i + 1]).
template <typename Array, typename Fn>
Status visit_lists(const Array& targets, const std::vector<std::uint64_t>& ends, Fn&& fn) {
  std::vector<std::size_t> idx;
  std::vector<Vertex> buf;
  const auto flush = [&]() -> Status {
    buf.resize(idx.size());
    FARMEM_RETURN_IF_ERROR(targets.gather(idx, buf));
    for (Vertex t : buf) fn(t);
    idx.clear();
    return Status::Ok();
  };
  for (std::size_t k = 0; k < ends.size(); k += 2) {
    const std::uint64_t b = ends[k], e = ends[k + 1];
    if (e - b >= kLongList) {
      for (std::uint64_t x = b; x < e; x += kBuildBlockEdges) {
        buf.resize(std::min(kBuildBlockEdges, e - x));
        FARMEM_RETURN_IF_ERROR(targets.read(x, buf));
        for (Vertex t : buf) fn(t);
      }
      continue;
    }
    for (std::uint64_t x = b; x < e; ++x) idx.push_back(x);
    if (idx.size() >= kBuildBlockEdges) FARMEM_RETURN_IF_ERROR(flush());
  }
  return flush();
}

// Expands these frontier vertices: claims their unvisited targets into `next`; returns the edges
// it walked.
template <typename Store>
Result<std::uint64_t> expand(const Csr<Store>& g, std::span<const Vertex> frontier,
                             Visited& visited, std::vector<Vertex>& next) {
  std::vector<std::size_t> idx;  // v, v + 1 for each frontier vertex
  idx.reserve(2 * frontier.size());
  for (Vertex v : frontier) idx.insert(idx.end(), {std::size_t{v}, std::size_t{v} + 1});
  std::vector<std::uint64_t> ends(idx.size());
  FARMEM_RETURN_IF_ERROR(g.offsets.gather(idx, ends));
  std::uint64_t walked = 0;
  for (std::size_t k = 0; k < ends.size(); k += 2) walked += ends[k + 1] - ends[k];
  FARMEM_RETURN_IF_ERROR(visit_lists(g.targets, ends, [&](Vertex t) {
    if (visited.claim(t)) next.push_back(t);
  }));
  return walked;
}

// depth[v] = value for every v of `vertices`, in parallel chunks.
template <typename Array>
Status set_depths(Array& depth, const std::vector<Vertex>& vertices, std::uint32_t value) {
  const std::size_t chunks = (vertices.size() + kChunkVertices - 1) / kChunkVertices;
  return parallel_tasks(chunks, [&](std::size_t c) -> Status {
    const std::size_t lo = c * kChunkVertices;
    const std::size_t hi = std::min(vertices.size(), lo + kChunkVertices);
    const std::vector<std::size_t> idx(vertices.begin() + static_cast<std::ptrdiff_t>(lo),
                                       vertices.begin() + static_cast<std::ptrdiff_t>(hi));
    const std::vector<std::uint32_t> val(hi - lo, value);
    return depth.scatter(idx, val);
  });
}

}  // namespace

template <typename Store>
Result<BfsResult> bfs(const Store&, const Csr<Store>& g, Vertex source,
                      typename Store::template Array<std::uint32_t>& depth) {
  if (source >= g.vertices) {
    return InvalidArgument("BFS source " + std::to_string(source) + " is not a vertex (the graph has " +
                           std::to_string(g.vertices) + ")");
  }
  FARMEM_RETURN_IF_ERROR(depth.resize(g.vertices));
  BfsResult result;
  Visited visited(g.vertices);
  std::vector<Vertex> frontier{source};
  visited.claim(source);
  for (std::uint32_t level = 1; !frontier.empty(); ++level) {
    FARMEM_RETURN_IF_ERROR(set_depths(depth, frontier, level));
    result.histogram.push_back(frontier.size());
    result.reached += frontier.size();
    const std::size_t chunks = (frontier.size() + kFrontierChunk - 1) / kFrontierChunk;
    std::vector<std::vector<Vertex>> parts(chunks);
    std::vector<std::uint64_t> walked(chunks);
    FARMEM_RETURN_IF_ERROR(parallel_tasks(chunks, [&](std::size_t c) -> Status {
      const std::size_t lo = c * kFrontierChunk;
      const auto part = std::span<const Vertex>(frontier).subspan(lo, std::min(kFrontierChunk, frontier.size() - lo));
      FARMEM_ASSIGN_OR_RETURN(walked[c], expand(g, part, visited, parts[c]));
      return Status::Ok();
    }));
    frontier.clear();
    for (std::size_t c = 0; c < chunks; ++c) {
      frontier.insert(frontier.end(), parts[c].begin(), parts[c].end());
      result.edges_traversed += walked[c];
    }
    // Sorted: the next level's offsets and depths are then visited in address order.
    tbb::parallel_sort(frontier.begin(), frontier.end());
  }
  return result;
}

template Result<BfsResult> bfs(const LocalStore&, const Csr<LocalStore>&, Vertex,
                               LocalArray<std::uint32_t>&);
template Result<BfsResult> bfs(const FarStore&, const Csr<FarStore>&, Vertex,
                               FarArray<std::uint32_t>&);

}  // namespace farmem::graph
