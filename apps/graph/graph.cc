// run_graph: input, build, kernel, report (graph.h).
#include "graph/graph.h"

#include <oneapi/tbb/info.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>

namespace farmem::graph {
namespace {

using Json = nlohmann::json;

// Ranks listed in the report, highest first.
constexpr std::size_t kTopRanks = 5;

struct Timer {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
};

Result<EdgeSource> make_source(const GraphOptions& o, Json& j) {
  if (!o.input.empty()) {
    FARMEM_ASSIGN_OR_RETURN(std::vector<Edge> edges, read_edge_list(o.input));
    j["input"] = {{"kind", "file"}, {"path", o.input}};
    return edges_in_memory(std::move(edges));
  }
  FARMEM_RETURN_IF_ERROR(check(o.rmat));
  j["input"] = {{"kind", "rmat"}, {"scale", o.rmat.scale}, {"edge_factor", o.rmat.edge_factor},
                {"seed", o.rmat.seed}, {"permute", o.rmat.permute}};
  return rmat_edges(o.rmat);
}

void report_build(Json& j, const BuildStats& st, std::uint64_t vertices, Algorithm a) {
  j["graph"] = {{"vertices", vertices},
                {"edges_read", st.edges_read},
                {"self_loops_dropped", st.self_loops},
                {"duplicates_dropped", st.duplicates},
                {"edges_kept", st.edges_kept},
                {"kernel_bytes", kernel_bytes(a, vertices, st.edges_kept)}};
}

// Scans `a` a chunk at a time in order, calling fn(index, value).
template <typename Array, typename T, typename Fn>
Status scan(const Array& a, std::uint64_t n, Fn&& fn) {
  std::vector<T> buf;
  for (std::uint64_t lo = 0; lo < n; lo += kChunkVertices) {
    buf.resize(std::min(kChunkVertices, n - lo));
    FARMEM_RETURN_IF_ERROR(a.read(lo, buf));
    for (std::size_t k = 0; k < buf.size(); ++k) fn(lo + k, buf[k]);
  }
  return Status::Ok();
}

// The ranks' sum, an FNV-1a hash of their bits (equal in far and local runs) and the top.
template <typename Array>
Status summarize_ranks(const Array& rank, std::uint64_t n, Json& j, std::vector<double>* keep) {
  double sum = 0;
  std::uint64_t hash = 0xcbf29ce484222325ull;
  std::vector<std::pair<double, std::uint64_t>> top;  // (rank, vertex), best first
  FARMEM_RETURN_IF_ERROR((scan<Array, double>(rank, n, [&](std::uint64_t v, double r) {
    sum += r;
    hash = (hash ^ std::bit_cast<std::uint64_t>(r)) * 0x100000001b3ull;
    if (keep != nullptr) keep->push_back(r);
    if (top.size() < kTopRanks || r > top.back().first) {
      if (top.size() == kTopRanks) top.pop_back();
      top.insert(std::upper_bound(top.begin(), top.end(), std::pair{r, v},
                                  [](const auto& a, const auto& b) { return a.first > b.first; }),
                 {r, v});
    }
  })));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  j["rank_sum"] = sum;
  j["checksum"] = hex;
  j["top"] = Json::array();
  for (const auto& [r, v] : top) j["top"].push_back({{"vertex", v}, {"rank", r}});
  return Status::Ok();
}

template <typename Store>
Status run_pagerank(const Store& store, const EdgeSource& src, const GraphOptions& o, Report& out) {
  Timer build;
  BuildStats st;
  FARMEM_ASSIGN_OR_RETURN(Csr<Store> in, build_csr(store, src, /*transpose=*/true, &st));
  FARMEM_ASSIGN_OR_RETURN(auto out_degree, target_counts(store, in));
  out.json["build_seconds"] = build.seconds();
  report_build(out.json, st, in.vertices, o.algorithm);

  Timer run;
  auto rank = store.template make<double>();
  FARMEM_ASSIGN_OR_RETURN(PageRankResult r, pagerank(store, in, out_degree, o.pagerank, rank));
  const double seconds = run.seconds();
  out.json["seconds"] = seconds;
  out.json["iterations"] = r.iterations;
  out.json["edges_per_second"] = seconds > 0 ? double(in.edges) * r.iterations / seconds : 0.0;
  Json& pr = out.json["pagerank"];
  pr = {{"damping", o.pagerank.damping}, {"converged", r.converged}, {"delta", r.delta}};
  return summarize_ranks(rank, in.vertices, pr, o.keep_values ? &out.ranks : nullptr);
}

// The lowest-numbered vertex with an out-edge (0 in a graph without edges).
template <typename Store>
Result<Vertex> first_with_edges(const Csr<Store>& g) {
  std::vector<std::uint64_t> off;
  for (std::uint64_t lo = 0; lo < g.vertices; lo += kChunkVertices) {
    off.resize(std::min(kChunkVertices, g.vertices - lo) + 1);
    FARMEM_RETURN_IF_ERROR(g.offsets.read(lo, off));
    for (std::size_t k = 0; k + 1 < off.size(); ++k) {
      if (off[k + 1] > off[k]) return static_cast<Vertex>(lo + k);
    }
  }
  return Vertex{0};
}

template <typename Store>
Status run_bfs(const Store& store, const EdgeSource& src, const GraphOptions& o, Report& out) {
  Timer build;
  BuildStats st;
  FARMEM_ASSIGN_OR_RETURN(Csr<Store> g, build_csr(store, src, /*transpose=*/false, &st));
  out.json["build_seconds"] = build.seconds();
  report_build(out.json, st, g.vertices, o.algorithm);
  Vertex source = static_cast<Vertex>(o.source);
  if (o.source < 0) {
    FARMEM_ASSIGN_OR_RETURN(source, first_with_edges(g));
  } else if (static_cast<std::uint64_t>(o.source) >= g.vertices) {
    return InvalidArgument("--source " + std::to_string(o.source) + " is not a vertex (the graph has " +
                           std::to_string(g.vertices) + ")");
  }

  Timer run;
  auto depth = store.template make<std::uint32_t>();
  FARMEM_ASSIGN_OR_RETURN(BfsResult r, bfs(store, g, source, depth));
  const double seconds = run.seconds();
  out.json["seconds"] = seconds;
  out.json["iterations"] = r.histogram.size();  // levels
  out.json["edges_per_second"] = seconds > 0 ? double(r.edges_traversed) / seconds : 0.0;
  out.json["bfs"] = {{"source", source},
                     {"reached", r.reached},
                     {"max_depth", r.histogram.size() - 1},
                     {"depth_histogram", r.histogram},
                     {"edges_traversed", r.edges_traversed}};
  if (!o.keep_values) return Status::Ok();
  return scan<decltype(depth), std::uint32_t>(depth, g.vertices, [&](std::uint64_t, std::uint32_t d) {
    out.depths.push_back(static_cast<std::int64_t>(d) - 1);
  });
}

Json far_report(Runtime& rt) {
  const CacheStats c = rt.cache_stats();
  return {{"budget_bytes", c.budget_bytes},       {"hits", c.hits},
          {"misses", c.misses},                   {"prefetches_issued", c.prefetches_issued},
          {"prefetches_used", c.prefetches_used}, {"evictions", c.evictions},
          {"writebacks", c.writebacks},           {"bytes_read", c.bytes_read},
          {"bytes_written", c.bytes_written},     {"fault_p50_ns", c.fault_latency.percentile_ns(50)}};
}

}  // namespace

const char* name_of(Algorithm a) { return a == Algorithm::kPageRank ? "pagerank" : "bfs"; }

std::uint64_t kernel_bytes(Algorithm a, std::uint64_t vertices, std::uint64_t edges) {
  const std::uint64_t csr = (vertices + 1) * sizeof(std::uint64_t) + edges * sizeof(Vertex);
  if (a == Algorithm::kBfs) return csr + vertices * sizeof(std::uint32_t);
  return csr + vertices * (sizeof(std::uint32_t) + 3 * sizeof(double));
}

Result<Report> run_graph(const GraphOptions& o, Runtime* rt) {
  Report out;
  out.json["program"] = "farmem-graph";
  out.json["version"] = farmem::version();
  out.json["mode"] = rt != nullptr ? "far" : "local";
  out.json["algorithm"] = name_of(o.algorithm);
  out.json["threads"] = tbb::this_task_arena::max_concurrency();
  FARMEM_ASSIGN_OR_RETURN(EdgeSource src, make_source(o, out.json));
  const auto run = [&](const auto& store) {
    return o.algorithm == Algorithm::kPageRank ? run_pagerank(store, src, o, out)
                                               : run_bfs(store, src, o, out);
  };
  if (rt == nullptr) {
    FARMEM_RETURN_IF_ERROR(run(LocalStore{}));
  } else {
    FARMEM_RETURN_IF_ERROR(run(FarStore{rt}));
    out.json["far"] = far_report(*rt);
  }
  return out;
}

}  // namespace farmem::graph
