// farmem-graph (apps/graph): the R-MAT generator, edge-list parsing, the CSR build (self
// loops and duplicates), PageRank and BFS in far memory at 12.5 % local memory against a
// farmem-memserver on loopback, compared with references computed here independently, and
// the binary itself (--help, real runs, every command line of docs/graph.md).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <regex>
#include <set>
#include <sstream>

#include "graph/csr.h"
#include "graph/graph.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"

namespace farmem::graph {
namespace {

using Pairs = std::set<std::pair<Vertex, Vertex>>;

std::vector<Edge> all_edges(const EdgeSource& s) {
  std::vector<Edge> out;
  EXPECT_TRUE(s.walk([&](std::span<const Edge> b) {
                 out.insert(out.end(), b.begin(), b.end());
                 return Status::Ok();
               }).ok());
  return out;
}

// The simple graph of `edges`: no self loops, each (src, dst) once, in (src, dst) order.
Pairs simple_graph(const std::vector<Edge>& edges) {
  Pairs p;
  for (const Edge& e : edges) {
    if (e.src != e.dst) p.insert({e.src, e.dst});
  }
  return p;
}

// PageRank by the textbook power iteration over `p` (dangling rank spread evenly).
std::vector<double> reference_pagerank(const Pairs& p, std::uint64_t n, int iterations,
                                       double d) {
  std::vector<std::vector<Vertex>> in(n);
  std::vector<std::uint32_t> outdeg(n, 0);
  for (const auto& [s, t] : p) {
    in[t].push_back(s);
    ++outdeg[s];
  }
  std::vector<double> rank(n, 1.0 / double(n)), next(n);
  for (int it = 0; it < iterations; ++it) {
    double dangling = 0;
    for (std::uint64_t v = 0; v < n; ++v) dangling += outdeg[v] == 0 ? rank[v] : 0;
    for (std::uint64_t v = 0; v < n; ++v) {
      double sum = 0;
      for (Vertex u : in[v]) sum += rank[u] / outdeg[u];
      next[v] = ((1 - d) + d * dangling) / double(n) + d * sum;
    }
    rank.swap(next);
  }
  return rank;
}

std::vector<std::int64_t> reference_bfs(const Pairs& p, std::uint64_t n, Vertex source) {
  std::vector<std::vector<Vertex>> out(n);
  for (const auto& [s, t] : p) out[s].push_back(t);
  std::vector<std::int64_t> depth(n, -1);
  std::queue<Vertex> q;
  depth[source] = 0;
  q.push(source);
  while (!q.empty()) {
    const Vertex v = q.front();
    q.pop();
    for (Vertex t : out[v]) {
      if (depth[t] < 0) {
        depth[t] = depth[v] + 1;
        q.push(t);
      }
    }
  }
  return depth;
}

// ---- R-MAT ----

TEST(GraphRmat, DegreeSumsMatchTheEdgesKept) {
  RmatOptions o;
  o.scale = 12;
  o.edge_factor = 8;
  const EdgeSource src = rmat_edges(o);
  BuildStats st;
  auto csr = build_csr(LocalStore{}, src, false, &st);
  ASSERT_TRUE(csr.ok()) << csr.status().to_string();
  std::vector<std::uint64_t> off(csr->vertices + 1);
  ASSERT_TRUE(csr->offsets.read(0, off).ok());
  std::uint64_t degree_sum = 0;
  for (std::uint64_t v = 0; v < csr->vertices; ++v) degree_sum += off[v + 1] - off[v];

  const Pairs simple = simple_graph(all_edges(src));
  EXPECT_EQ(st.edges_read, std::uint64_t{8} << 12);
  EXPECT_EQ(degree_sum, st.edges_kept);
  EXPECT_EQ(st.edges_kept, simple.size());
  EXPECT_EQ(st.edges_read, st.edges_kept + st.self_loops + st.duplicates);
  EXPECT_GT(st.duplicates, 0u);  // R-MAT's skew repeats edges among the hubs
  auto in_csr = build_csr(LocalStore{}, src, true, nullptr);
  ASSERT_TRUE(in_csr.ok());
  EXPECT_EQ(in_csr->edges, st.edges_kept);  // in-degrees sum to the same
}

TEST(GraphRmat, SameSeedSameGraphOtherSeedAnother) {
  RmatOptions o;
  o.scale = 10;
  o.edge_factor = 4;
  const auto a = all_edges(rmat_edges(o));
  EXPECT_EQ(a, all_edges(rmat_edges(o)));
  for (std::uint64_t i : {0ull, 17ull, 4095ull}) EXPECT_EQ(a[i], rmat_edge(o, i));
  o.seed = 2;
  EXPECT_NE(a, all_edges(rmat_edges(o)));
}

TEST(GraphRmat, DegreesAreSkewedAndQuadrantsFollowABC) {
  RmatOptions o;
  o.scale = 14;
  o.edge_factor = 16;
  const auto edges = all_edges(rmat_edges(o));
  std::vector<std::uint64_t> deg(std::uint64_t{1} << o.scale, 0);
  std::uint64_t top_half = 0;  // src's high bit 0: quadrants a and b
  for (const Edge& e : edges) {
    ++deg[e.src];
    top_half += (e.src >> (o.scale - 1)) == 0;
  }
  EXPECT_NEAR(double(top_half) / double(edges.size()), o.a + o.b, 0.01);
  const std::uint64_t max_deg = *std::max_element(deg.begin(), deg.end());
  EXPECT_GT(max_deg, 50u * o.edge_factor);  // a hub, where a uniform graph has ~16 +- 4 * 4
  EXPECT_GT(std::count(deg.begin(), deg.end(), 0u), 1000);  // and many vertices with none
}

TEST(GraphRmat, PermutationRenamesVerticesKeepingTheDegrees) {
  RmatOptions o;
  o.scale = 12;
  o.edge_factor = 8;
  const auto plain = all_edges(rmat_edges(o));
  o.permute = true;
  const auto renamed = all_edges(rmat_edges(o));
  std::vector<std::uint64_t> d1(std::uint64_t{1} << o.scale), d2(d1.size());
  for (const Edge& e : plain) ++d1[e.src];
  for (const Edge& e : renamed) ++d2[e.src];
  EXPECT_NE(d1, d2);
  EXPECT_EQ(std::max_element(d1.begin(), d1.end()) - d1.begin(), 0);  // unpermuted: hub is 0
  std::sort(d1.begin(), d1.end());
  std::sort(d2.begin(), d2.end());
  EXPECT_EQ(d1, d2);
  EXPECT_EQ(simple_graph(plain).size(), simple_graph(renamed).size());
}

// ---- edge lists ----

Status parse_error(const std::string& text) {
  std::istringstream in(text);
  return parse_edge_list(in, "g.txt").status();
}

TEST(GraphEdgeList, ReadsLinesSkipsCommentsIgnoresExtraFields) {
  std::istringstream in("# a comment\n% another\n\n0 1\n1\t2 0.5\n  7 3  \r\n");
  auto edges = parse_edge_list(in, "g.txt");
  ASSERT_TRUE(edges.ok()) << edges.status().to_string();
  EXPECT_EQ(*edges, (std::vector<Edge>{{0, 1}, {1, 2}, {7, 3}}));
  EXPECT_EQ(edges_in_memory(*edges).vertices, 8u);
}

TEST(GraphEdgeList, ErrorsNameTheFileAndLine) {
  Status s = parse_error("0 1\n# c\n2 x\n");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("g.txt:3: 'x' is not a vertex id"), std::string::npos) << s.to_string();
  s = parse_error("0 1\n5\n");
  EXPECT_NE(s.message().find("g.txt:2: expected 'SRC DST', found one field"), std::string::npos)
      << s.to_string();
  s = parse_error("\n\n\n-1 2\n");
  EXPECT_NE(s.message().find("g.txt:4: '-1'"), std::string::npos) << s.to_string();
  s = parse_error("0 4294967295\n");  // one past kMaxVertexId
  EXPECT_NE(s.message().find("g.txt:1: '4294967295'"), std::string::npos) << s.to_string();
  s = parse_error("12abc 3\n");
  EXPECT_NE(s.message().find("g.txt:1: '12abc'"), std::string::npos) << s.to_string();
  EXPECT_EQ(read_edge_list("/nonexistent/graph.txt").status().code(), StatusCode::kNotFound);
}

// ---- far memory ----

// A farmem-memserver on loopback for the whole suite.
class GraphFar : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new test::MemserverProcess;
    const Status s = server_->start({"--tcp", "127.0.0.1:0", "--token", test::kToken,
                                     "--capacity", "256M", "--log-level", "error"},
                                    {"tcp"});
    ASSERT_TRUE(s.ok()) << s.to_string();
    url_ = "tcp://127.0.0.1:" + std::to_string(server_->port("tcp"));
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  // A runtime on the memserver with `budget` bytes of local memory.
  static std::unique_ptr<Runtime> open(std::uint64_t budget) {
    RuntimeOptions r;
    r.servers = {url_};
    r.auth_token = test::kToken;
    r.cache_budget_bytes = budget;
    r.local_buffer_bytes = 1u << 20;
    r.slab_bytes = 8u << 20;
    auto rt = Runtime::open(r);
    EXPECT_TRUE(rt.ok()) << rt.status().to_string();
    return rt.ok() ? std::move(rt).value() : nullptr;
  }

  // Runs `o` all-local, then in far memory with an eighth of the kernel's bytes as the local
  // budget; checks the runs agree and that the far one did miss. Returns the far report.
  static Report run_at_an_eighth(GraphOptions o) {
    o.keep_values = true;
    auto local = run_graph(o, nullptr);
    EXPECT_TRUE(local.ok()) << local.status().to_string();
    if (!local.ok()) return {};
    const std::uint64_t bytes = local->json["graph"]["kernel_bytes"];
    const std::uint64_t budget = bytes / 8 / 4096 * 4096;
    auto rt = open(budget);
    if (rt == nullptr) return {};
    auto far = run_graph(o, rt.get());
    EXPECT_TRUE(far.ok()) << far.status().to_string();
    if (!far.ok()) return {};
    EXPECT_EQ(far->json["far"]["budget_bytes"], budget);
    EXPECT_LE(budget * 8, bytes);
    EXPECT_GT(far->json["far"]["misses"].get<std::uint64_t>(), bytes / 4096 / 2)
        << "an eighth of the graph fits: the far run must miss";
    EXPECT_EQ(far->json["graph"], local->json["graph"]);
    EXPECT_EQ(far->ranks, local->ranks);    // the same bits: sums are ordered by chunk
    EXPECT_EQ(far->depths, local->depths);
    return std::move(far).value();
  }

  static inline test::MemserverProcess* server_ = nullptr;
  static inline std::string url_;
};

TEST_F(GraphFar, PageRankAtAnEighthMatchesTheReference) {
  GraphOptions o;
  o.rmat.scale = 13;
  o.rmat.edge_factor = 16;
  o.rmat.permute = true;
  o.pagerank.max_iterations = 15;
  o.pagerank.tolerance = 0;
  const Report far = run_at_an_eighth(o);
  const auto ref = reference_pagerank(simple_graph(all_edges(rmat_edges(o.rmat))),
                                      std::uint64_t{1} << o.rmat.scale, 15, o.pagerank.damping);
  ASSERT_EQ(far.ranks.size(), ref.size());
  double sum = 0;
  for (std::size_t v = 0; v < ref.size(); ++v) {
    ASSERT_NEAR(far.ranks[v], ref[v], 1e-12) << "vertex " << v;
    sum += far.ranks[v];
  }
  EXPECT_NEAR(sum, 1.0, 1e-9);
  EXPECT_EQ(far.json["iterations"], 15);
}

TEST_F(GraphFar, BfsAtAnEighthMatchesTheReference) {
  GraphOptions o;
  o.algorithm = Algorithm::kBfs;
  o.rmat.scale = 13;
  o.rmat.edge_factor = 16;
  o.rmat.permute = true;
  const Report far = run_at_an_eighth(o);
  const Vertex source = far.json["bfs"]["source"];
  const auto ref = reference_bfs(simple_graph(all_edges(rmat_edges(o.rmat))),
                                 std::uint64_t{1} << o.rmat.scale, source);
  EXPECT_EQ(far.depths, ref);
  std::vector<std::uint64_t> hist;
  for (std::int64_t d : ref) {
    if (d < 0) continue;
    if (hist.size() <= std::size_t(d)) hist.resize(d + 1);
    ++hist[d];
  }
  EXPECT_EQ(far.json["bfs"]["depth_histogram"].get<std::vector<std::uint64_t>>(), hist);
  EXPECT_GT(hist.size(), 3u);
}

TEST_F(GraphFar, CsrDropsSelfLoopsAndDuplicatesAndSortsLists) {
  auto rt = open(64 << 10);
  ASSERT_NE(rt, nullptr);
  const EdgeSource src = edges_in_memory({{2, 0}, {0, 3}, {0, 1}, {0, 3}, {1, 1}, {2, 0}, {3, 0}, {0, 2}});
  BuildStats st;
  auto csr = build_csr(FarStore{rt.get()}, src, false, &st);
  ASSERT_TRUE(csr.ok()) << csr.status().to_string();
  std::vector<std::uint64_t> off(5);
  std::vector<Vertex> tgt(csr->edges);
  ASSERT_TRUE(csr->offsets.read(0, off).ok());
  ASSERT_TRUE(csr->targets.read(0, tgt).ok());
  EXPECT_EQ(off, (std::vector<std::uint64_t>{0, 3, 3, 4, 5}));
  EXPECT_EQ(tgt, (std::vector<Vertex>{1, 2, 3, 0, 0}));
  EXPECT_EQ(st.edges_read, 8u);
  EXPECT_EQ(st.self_loops, 1u);
  EXPECT_EQ(st.duplicates, 2u);
  EXPECT_EQ(st.edges_kept, 5u);
  auto in = build_csr(FarStore{rt.get()}, src, true, nullptr);
  ASSERT_TRUE(in.ok());
  auto outdeg = target_counts(FarStore{rt.get()}, *in);
  ASSERT_TRUE(outdeg.ok());
  std::vector<std::uint32_t> d(4);
  ASSERT_TRUE(outdeg->read(0, d).ok());
  EXPECT_EQ(d, (std::vector<std::uint32_t>{3, 0, 1, 1}));
}

// ---- the binary ----

class GraphBinary : public GraphFar {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("farmem-graph-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "token") << test::kToken << "\n";
    std::ofstream edges(dir_ / "edges.txt");
    edges << "# a ring of 6 with a chord, a self loop and a repeat\n";
    for (int v = 0; v < 6; ++v) edges << v << " " << (v + 1) % 6 << "\n";
    edges << "0 3\n2 2\n0 1\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs `args` (a shell command line after the program's name) with stderr joined to stdout.
  test::RunResult run(const std::string& args) {
    auto r = test::run_program({"/bin/sh", "-c", std::string(FARMEM_GRAPH_BIN) + " " + args + " 2>&1"},
                               std::chrono::seconds(120));
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : test::RunResult{};
  }
  std::filesystem::path dir_;
};

TEST_F(GraphBinary, HelpAndVersion) {
  const auto help = run("--help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--algorithm", "--mode", "--input", "--scale", "--edge-factor",
                           "--permute", "--iterations", "--tolerance", "--source", "--server",
                           "--registry", "--token-file", "--memory-limit"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
  const auto version = run("--version");
  EXPECT_EQ(version.out, std::string("farmem-graph ") + farmem::version() + "\n");
}

TEST_F(GraphBinary, FarRunOfAFileMatchesTheLocalRun) {
  const std::string common = "-a bfs --source 0 -i " + (dir_ / "edges.txt").string();
  const auto far = run("--server " + url_ + " --token-file " + (dir_ / "token").string() + " -m 1 " + common);
  ASSERT_EQ(far.exit_code, 0) << far.out;
  const auto local = run("--mode local " + common);
  ASSERT_EQ(local.exit_code, 0) << local.out;
  const auto jf = nlohmann::json::parse(far.out), jl = nlohmann::json::parse(local.out);
  EXPECT_EQ(jf["mode"], "far");
  EXPECT_EQ(jl["mode"], "local");
  EXPECT_EQ(jf["bfs"], jl["bfs"]);
  EXPECT_EQ(jf["bfs"]["depth_histogram"], nlohmann::json({1, 2, 2, 1}));
  EXPECT_EQ(jf["graph"]["edges_kept"], 7);
  EXPECT_EQ(jf["graph"]["self_loops_dropped"], 1);
  EXPECT_EQ(jf["graph"]["duplicates_dropped"], 1);
  // A budget that is not whole MiB: --budget, in bytes.
  const auto sized = run("--server " + url_ + " --token-file " + (dir_ / "token").string() +
                         " --budget 1536k " + common);
  ASSERT_EQ(sized.exit_code, 0) << sized.out;
  const auto js = nlohmann::json::parse(sized.out);
  EXPECT_EQ(js["far"]["budget_bytes"], 1536 * 1024);
  EXPECT_EQ(js["bfs"], jl["bfs"]);
}

TEST_F(GraphBinary, BadInputsSayWhatIsWrong) {
  std::ofstream(dir_ / "bad.txt") << "0 1\n1 2\n2 two\n";
  auto r = run("--mode local -i " + (dir_ / "bad.txt").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("bad.txt:3: 'two' is not a vertex id"), std::string::npos) << r.out;
  r = run("--mode local -a bfs --scale 4 --source 16");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--source 16 is not a vertex"), std::string::npos) << r.out;
  r = run("-m 2 --budget 2m --scale 4");
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("excludes"), std::string::npos) << r.out;
  r = run("--budget 100k --scale 4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--budget"), std::string::npos) << r.out;
  r = run("--mode elsewhere");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--mode"), std::string::npos) << r.out;
}

// Every "$ farmem-graph ..." line of docs/graph.md runs, with the memserver and files of this
// test in place of the page's examples, and prints a report of its mode and algorithm.
TEST_F(GraphBinary, EveryCommandOfTheDocsRuns) {
  std::ifstream doc(FARMEM_GRAPH_DOC);
  ASSERT_TRUE(doc) << FARMEM_GRAPH_DOC;
  std::string line;
  int commands = 0;
  while (std::getline(doc, line)) {
    if (line.rfind("$ farmem-graph ", 0) != 0) continue;
    std::string args = line.substr(std::string("$ farmem-graph ").size());
    args = std::regex_replace(args, std::regex("tcp://10\\.0\\.0\\.7:7472"), url_);
    args = std::regex_replace(args, std::regex("/etc/farmem/token"), (dir_ / "token").string());
    args = std::regex_replace(args, std::regex("(^| )edges\\.txt"), "$1" + (dir_ / "edges.txt").string());
    args = std::regex_replace(args, std::regex(" *\\|.*$"), "");  // a pipe to jq, if any
    SCOPED_TRACE(line);
    const auto r = run(args);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    ++commands;
    if (args.find("--help") != std::string::npos) continue;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["mode"], args.find("--mode local") != std::string::npos ? "local" : "far");
    EXPECT_EQ(j["algorithm"], args.find("bfs") != std::string::npos ? "bfs" : "pagerank");
    EXPECT_GT(j["graph"]["edges_kept"].get<std::uint64_t>(), 0u);
  }
  EXPECT_GE(commands, 4);
}

}  // namespace
}  // namespace farmem::graph
