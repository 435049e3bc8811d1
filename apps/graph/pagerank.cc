// PageRank by pulling over the in-CSR (kernels.h).
#include <algorithm>
#include <cmath>

#include "graph/kernels.h"
#include "graph/parallel.h"

namespace farmem::graph {
namespace {

template <typename Store>
using DoubleArray = typename Store::template Array<double>;

std::uint64_t chunks_of(std::uint64_t n) { return (n + kChunkVertices - 1) / kChunkVertices; }

// Sums, in chunk order: the same bits whatever ran the chunks.
double ordered_sum(const std::vector<double>& partial) {
  double s = 0;
  for (double x : partial) s += x;
  return s;
}

// contrib[v] = rank[v] / out_degree[v] for vertices [lo, hi); returns the rank of those
// without out-edges (dangling), which the next iteration spreads over every vertex.
template <typename Store>
Result<double> contribute(const DoubleArray<Store>& rank,
                          const typename Store::template Array<std::uint32_t>& out_degree,
                          DoubleArray<Store>& contrib, std::uint64_t lo, std::uint64_t hi) {
  std::vector<double> r(hi - lo), c(hi - lo);
  std::vector<std::uint32_t> d(hi - lo);
  FARMEM_RETURN_IF_ERROR(rank.read(lo, r));
  FARMEM_RETURN_IF_ERROR(out_degree.read(lo, d));
  double dangling = 0;
  for (std::size_t k = 0; k < r.size(); ++k) {
    if (d[k] == 0) dangling += r[k];
    c[k] = d[k] == 0 ? 0.0 : r[k] / d[k];
  }
  FARMEM_RETURN_IF_ERROR(contrib.write(lo, c));
  return dangling;
}

// sums[v - lo] = the contributions of v's in-neighbours, for v in [lo, hi), walking the
// chunk's in-edges a block at a time (a gather of their contributions per block).
template <typename Store>
Status pull(const Csr<Store>& in, const DoubleArray<Store>& contrib, std::uint64_t lo,
            std::uint64_t hi, std::vector<double>& sums) {
  std::vector<std::uint64_t> off(hi - lo + 1);
  FARMEM_RETURN_IF_ERROR(in.offsets.read(lo, off));
  std::vector<Vertex> src;
  std::vector<std::size_t> idx;
  std::vector<double> val;
  std::uint64_t v = 0;  // index into off of the vertex the current edge belongs to
  for (std::uint64_t e = off.front(); e < off.back();) {
    const std::uint64_t end = std::min(off.back(), e + kBuildBlockEdges);
    src.resize(end - e);
    FARMEM_RETURN_IF_ERROR(in.targets.read(e, src));
    idx.assign(src.begin(), src.end());
    val.resize(idx.size());
    FARMEM_RETURN_IF_ERROR(contrib.gather(idx, val));
    for (std::size_t k = 0; k < val.size(); ++k, ++e) {
      while (off[v + 1] <= e) ++v;
      sums[v] += val[k];
    }
  }
  return Status::Ok();
}

// next[v] = base + damping * (pulled sum), for the chunk [lo, hi); returns its L1 change.
template <typename Store>
Result<double> update(const Csr<Store>& in, const DoubleArray<Store>& contrib,
                      const DoubleArray<Store>& rank, DoubleArray<Store>& next, double base,
                      double damping, std::uint64_t lo, std::uint64_t hi) {
  std::vector<double> sums(hi - lo, 0.0), old(hi - lo);
  FARMEM_RETURN_IF_ERROR(pull(in, contrib, lo, hi, sums));
  FARMEM_RETURN_IF_ERROR(rank.read(lo, old));
  double delta = 0;
  for (std::size_t k = 0; k < sums.size(); ++k) {
    sums[k] = base + damping * sums[k];
    delta += std::fabs(sums[k] - old[k]);
  }
  FARMEM_RETURN_IF_ERROR(next.write(lo, sums));
  return delta;
}

template <typename Array>
Status fill(Array& a, std::uint64_t n, double value) {
  FARMEM_RETURN_IF_ERROR(a.resize(n));
  const std::vector<double> buf(std::min(n, kChunkVertices), value);
  for (std::uint64_t lo = 0; lo < n; lo += kChunkVertices) {
    FARMEM_RETURN_IF_ERROR(a.write(lo, std::span<const double>(buf.data(), std::min(kChunkVertices, n - lo))));
  }
  return Status::Ok();
}

}  // namespace

template <typename Store>
Result<PageRankResult> pagerank(const Store& store, const Csr<Store>& in,
                                const typename Store::template Array<std::uint32_t>& out_degree,
                                const PageRankOptions& o, DoubleArray<Store>& rank) {
  const std::uint64_t n = in.vertices;
  PageRankResult result;
  if (n == 0) return result;
  auto contrib = store.template make<double>();
  auto next = store.template make<double>();
  FARMEM_RETURN_IF_ERROR(fill(rank, n, 1.0 / static_cast<double>(n)));
  FARMEM_RETURN_IF_ERROR(contrib.resize(n));
  FARMEM_RETURN_IF_ERROR(next.resize(n));
  const std::uint64_t chunks = chunks_of(n);
  std::vector<double> partial(chunks);
  const auto range = [&](std::size_t c) {
    return std::pair{c * kChunkVertices, std::min(n, (c + 1) * kChunkVertices)};
  };
  while (result.iterations < o.max_iterations) {
    FARMEM_RETURN_IF_ERROR(parallel_tasks(chunks, [&](std::size_t c) -> Status {
      const auto [lo, hi] = range(c);
      FARMEM_ASSIGN_OR_RETURN(partial[c], contribute<Store>(rank, out_degree, contrib, lo, hi));
      return Status::Ok();
    }));
    const double base =
        ((1.0 - o.damping) + o.damping * ordered_sum(partial)) / static_cast<double>(n);
    FARMEM_RETURN_IF_ERROR(parallel_tasks(chunks, [&](std::size_t c) -> Status {
      const auto [lo, hi] = range(c);
      FARMEM_ASSIGN_OR_RETURN(partial[c], update<Store>(in, contrib, rank, next, base, o.damping, lo, hi));
      return Status::Ok();
    }));
    std::swap(rank, next);
    ++result.iterations;
    result.delta = ordered_sum(partial);
    if (o.tolerance > 0 && result.delta < o.tolerance) {
      result.converged = true;
      break;
    }
  }
  return result;
}

template Result<PageRankResult> pagerank(const LocalStore&, const Csr<LocalStore>&,
                                         const LocalArray<std::uint32_t>&, const PageRankOptions&,
                                         LocalArray<double>&);
template Result<PageRankResult> pagerank(const FarStore&, const Csr<FarStore>&,
                                         const FarArray<std::uint32_t>&, const PageRankOptions&,
                                         FarArray<double>&);

}  // namespace farmem::graph
