// The CSR build (csr.h): count, place, sort and unique, compact.
#include "graph/csr.h"

#include <algorithm>
#include <atomic>
#include <tuple>

#include "graph/parallel.h"

namespace farmem::graph {
namespace {

// Pass 1: each vertex's edges (self loops counted apart), turned into list starts: on return
// start[v] is where v's raw list begins and start[n] the raw edge count.
Status count_edges(const EdgeSource& source, bool transpose, std::vector<std::uint64_t>& start,
                   BuildStats& st) {
  const std::uint64_t n = source.vertices;
  FARMEM_RETURN_IF_ERROR(source.walk([&](std::span<const Edge> block) -> Status {
    for (const Edge& e : block) {
      if (e.src >= n || e.dst >= n) {
        return InvalidArgument("edge (" + std::to_string(e.src) + ", " + std::to_string(e.dst) +
                               ") names a vertex past the graph's " + std::to_string(n));
      }
      ++st.edges_read;
      if (e.src == e.dst) ++st.self_loops;
      else ++start[transpose ? e.dst : e.src];
    }
    return Status::Ok();
  }));
  std::uint64_t sum = 0;
  for (std::uint64_t v = 0; v <= n; ++v) sum += std::exchange(start[v], sum);
  return Status::Ok();
}

// Pass 2: every edge but self loops placed at its vertex's cursor in `raw`. `start` is used
// as the cursors and restored.
template <typename Store>
Status place_edges(const EdgeSource& source, bool transpose, std::vector<std::uint64_t>& start,
                   typename Store::template Array<Vertex>& raw) {
  std::vector<std::pair<std::size_t, Vertex>> placed;
  std::vector<std::size_t> pos;
  std::vector<Vertex> val;
  const auto place = [&](std::span<const Edge> block) -> Status {
    for (std::size_t first = 0; first < block.size(); first += kBuildBlockEdges) {
      placed.clear();
      for (const Edge& e : block.subspan(first, std::min(kBuildBlockEdges, block.size() - first))) {
        if (e.src == e.dst) continue;
        placed.push_back({start[transpose ? e.dst : e.src]++, transpose ? e.src : e.dst});
      }
      // In position order: edges that land on one page are written in one visit to it.
      std::sort(placed.begin(), placed.end());
      pos.resize(placed.size());
      val.resize(placed.size());
      for (std::size_t k = 0; k < placed.size(); ++k) std::tie(pos[k], val[k]) = placed[k];
      FARMEM_RETURN_IF_ERROR(raw.scatter(pos, val));
    }
    return Status::Ok();
  };
  FARMEM_RETURN_IF_ERROR(source.walk(place));
  // Each cursor now stands at the next vertex's start: shift them back.
  for (std::uint64_t v = source.vertices; v > 0; --v) start[v] = start[v - 1];
  start[0] = 0;
  return Status::Ok();
}

// Pass 3, one block: sorts and uniques each list, writes them back compacted from the
// block's start; kept[v] = v's list length now. Returns the block's kept edge count.
template <typename Array>
Result<std::uint64_t> unique_block(Array& raw, const std::vector<std::uint64_t>& start,
                                   VertexBlock b, std::vector<std::uint64_t>& kept) {
  const std::uint64_t base = start[b.lo];
  std::vector<Vertex> buf(start[b.hi] - base);
  FARMEM_RETURN_IF_ERROR(raw.read(base, buf));
  std::uint64_t out = 0;
  for (std::uint64_t v = b.lo; v < b.hi; ++v) {
    const auto first = buf.begin() + static_cast<std::ptrdiff_t>(start[v] - base);
    const auto last = buf.begin() + static_cast<std::ptrdiff_t>(start[v + 1] - base);
    std::sort(first, last);
    const auto end = std::unique(first, last);
    kept[v] = static_cast<std::uint64_t>(end - first);
    std::move(first, end, buf.begin() + static_cast<std::ptrdiff_t>(out));
    out += kept[v];
  }
  FARMEM_RETURN_IF_ERROR(raw.write(base, std::span<const Vertex>(buf.data(), out)));
  return out;
}

}  // namespace

std::vector<VertexBlock> vertex_blocks(const std::vector<std::uint64_t>& offsets) {
  std::vector<VertexBlock> blocks;
  const std::uint64_t n = offsets.empty() ? 0 : offsets.size() - 1;
  for (std::uint64_t lo = 0; lo < n;) {
    std::uint64_t hi = lo + 1;  // at least one vertex, however long its list
    while (hi < n && hi - lo < kChunkVertices && offsets[hi + 1] - offsets[lo] <= kBuildBlockEdges) {
      ++hi;
    }
    blocks.push_back({lo, hi});
    lo = hi;
  }
  return blocks;
}

template <typename Store>
Result<Csr<Store>> build_csr(const Store& store, const EdgeSource& source, bool transpose,
                             BuildStats* stats) {
  const std::uint64_t n = source.vertices;
  BuildStats st;
  std::vector<std::uint64_t> start(n + 1, 0);
  FARMEM_RETURN_IF_ERROR(count_edges(source, transpose, start, st));
  auto raw = store.template make<Vertex>();
  FARMEM_RETURN_IF_ERROR(raw.resize(start[n]));
  FARMEM_RETURN_IF_ERROR(place_edges<Store>(source, transpose, start, raw));

  const std::vector<VertexBlock> blocks = vertex_blocks(start);
  std::vector<std::uint64_t> kept(n + 1, 0);
  std::vector<std::uint64_t> block_kept(blocks.size());
  FARMEM_RETURN_IF_ERROR(parallel_tasks(blocks.size(), [&](std::size_t i) -> Status {
    FARMEM_ASSIGN_OR_RETURN(block_kept[i], unique_block(raw, start, blocks[i], kept));
    return Status::Ok();
  }));
  std::uint64_t sum = 0;
  for (std::uint64_t v = 0; v <= n; ++v) sum += std::exchange(kept[v], sum);  // -> offsets

  Csr<Store> csr{n, sum, store.template make<std::uint64_t>(), store.template make<Vertex>()};
  FARMEM_RETURN_IF_ERROR(csr.offsets.resize(n + 1));
  FARMEM_RETURN_IF_ERROR(csr.offsets.write(0, kept));
  FARMEM_RETURN_IF_ERROR(csr.targets.resize(sum));
  const auto copy = [&](std::size_t i) -> Status {
    std::vector<Vertex> buf(block_kept[i]);
    FARMEM_RETURN_IF_ERROR(raw.read(start[blocks[i].lo], buf));
    return csr.targets.write(kept[blocks[i].lo], buf);
  };
  FARMEM_RETURN_IF_ERROR(parallel_tasks(blocks.size(), copy));
  st.edges_kept = sum;
  st.duplicates = st.edges_read - st.self_loops - sum;
  if (stats != nullptr) *stats = st;
  return csr;
}

template <typename Store>
Result<typename Store::template Array<std::uint32_t>> target_counts(const Store& store,
                                                                      const Csr<Store>& csr) {
  std::vector<std::atomic<std::uint32_t>> counts(csr.vertices);
  const std::uint64_t tasks = (csr.edges + kBuildBlockEdges - 1) / kBuildBlockEdges;
  const auto count = [&](std::size_t i) -> Status {
    const std::uint64_t lo = i * kBuildBlockEdges;
    std::vector<Vertex> buf(std::min(kBuildBlockEdges, csr.edges - lo));
    FARMEM_RETURN_IF_ERROR(csr.targets.read(lo, buf));
    for (Vertex t : buf) counts[t].fetch_add(1, std::memory_order_relaxed);
    return Status::Ok();
  };
  FARMEM_RETURN_IF_ERROR(parallel_tasks(tasks, count));
  auto out = store.template make<std::uint32_t>();
  FARMEM_RETURN_IF_ERROR(out.resize(csr.vertices));
  std::vector<std::uint32_t> buf;
  for (std::uint64_t lo = 0; lo < csr.vertices; lo += kChunkVertices) {
    buf.resize(std::min(kChunkVertices, csr.vertices - lo));
    for (std::size_t k = 0; k < buf.size(); ++k) buf[k] = counts[lo + k].load(std::memory_order_relaxed);
    FARMEM_RETURN_IF_ERROR(out.write(lo, buf));
  }
  return out;
}

template Result<Csr<LocalStore>> build_csr(const LocalStore&, const EdgeSource&, bool, BuildStats*);
template Result<Csr<FarStore>> build_csr(const FarStore&, const EdgeSource&, bool, BuildStats*);
template Result<LocalArray<std::uint32_t>> target_counts(const LocalStore&, const Csr<LocalStore>&);
template Result<FarArray<std::uint32_t>> target_counts(const FarStore&, const Csr<FarStore>&);

}  // namespace farmem::graph
