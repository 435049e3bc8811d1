// farmem-memserver --metrics: the Prometheus text (parsed back here), the HTTP responder's
// answers, and a live endpoint scraped with libcurl while a client leases and uses a slab.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <map>
#include <set>
#include <sstream>

#include "memserver/metrics.h"
#include "memserver/metrics_http.h"
#include "test/support/http_get.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"
#include "transport/tcp/socket.h"

namespace farmem::test {
namespace {

constexpr auto kTimeout = std::chrono::seconds(10);

/// A parsed exposition: sample values by name, and the names with HELP and TYPE lines.
struct Exposition {
  std::map<std::string, double> values;
  std::map<std::string, std::string> types;
  std::set<std::string> helped;
  std::string problem;  ///< the first line that is not valid text format, if any
};

Exposition parse(const std::string& text) {
  Exposition e;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string a, b, c;
    words >> a >> b;
    if (a == "#" && b == "HELP") {
      words >> c;
      e.helped.insert(c);
    } else if (a == "#" && b == "TYPE") {
      words >> c;
      e.types[b = c];
      words >> e.types[b];
    } else if (!a.empty() && a[0] != '#') {
      char* end = nullptr;
      const double v = std::strtod(b.c_str(), &end);
      // A labelled sample (name{label="v"}) has its family's TYPE.
      const std::string family = a.substr(0, a.find('{'));
      const bool labels_ok = family.size() == a.size() || a.back() == '}';
      if (b.empty() || *end != '\0' || e.types.count(family) == 0 || !labels_ok) {
        if (e.problem.empty()) e.problem = line;
        continue;
      }
      e.values[a] = v;
    }
  }
  return e;
}

const char* const kNames[] = {
    "farmem_memserver_capacity_bytes", "farmem_memserver_used_bytes",
    "farmem_memserver_free_bytes",     "farmem_memserver_sessions",
    "farmem_memserver_slabs",          "farmem_memserver_bytes_served_total",
    "farmem_memserver_rejected_requests_total",
    "farmem_memserver_tcp_refused_global_limit_total",
    "farmem_memserver_tcp_refused_per_host_limit_total",
    "farmem_memserver_tcp_closed_idle_total",
    "farmem_memserver_tcp_closed_frame_timeout_total",
    "farmem_memserver_rdma_closed_idle_total",
    "farmem_memserver_sessions_detached",
    "farmem_memserver_sessions_resumed_total",
    "farmem_memserver_sessions_expired_total"};

TEST(Metrics, TextFormatHasHelpTypeAndValueForEveryMetric) {
  memserver::MetricsSnapshot m;
  m.capacity_bytes = 100;
  m.used_bytes = 30;
  m.sessions = 2;
  m.slabs = 3;
  m.rejected = 4;
  m.bytes_served = 5;
  m.tcp_refused_global_limit = 6;
  m.tcp_refused_per_host_limit = 7;
  m.tcp_closed_idle = 8;
  m.tcp_closed_frame_timeout = 9;
  m.rdma_closed_idle = 10;
  m.sessions_detached = 11;
  m.sessions_resumed = 12;
  m.sessions_expired = 13;
  const auto e = parse(memserver::render_prometheus(m));
  EXPECT_EQ(e.problem, "");
  for (const char* name : kNames) {
    EXPECT_EQ(e.helped.count(name), 1u) << name;
    ASSERT_EQ(e.values.count(name), 1u) << name;
  }
  EXPECT_EQ(e.values.at("farmem_memserver_free_bytes"), 70);
  EXPECT_EQ(e.types.at("farmem_memserver_free_bytes"), "gauge");
  EXPECT_EQ(e.types.at("farmem_memserver_rejected_requests_total"), "counter");
  EXPECT_EQ(e.values.at("farmem_memserver_rejected_requests_total"), 4);
  EXPECT_EQ(e.values.at("farmem_memserver_tcp_refused_global_limit_total"), 6);
  EXPECT_EQ(e.values.at("farmem_memserver_tcp_refused_per_host_limit_total"), 7);
  EXPECT_EQ(e.values.at("farmem_memserver_tcp_closed_idle_total"), 8);
  EXPECT_EQ(e.values.at("farmem_memserver_tcp_closed_frame_timeout_total"), 9);
  EXPECT_EQ(e.types.at("farmem_memserver_tcp_closed_idle_total"), "counter");
  EXPECT_EQ(e.values.at("farmem_memserver_rdma_closed_idle_total"), 10);
  EXPECT_EQ(e.values.at("farmem_memserver_sessions_detached"), 11);
  EXPECT_EQ(e.types.at("farmem_memserver_sessions_detached"), "gauge");
  EXPECT_EQ(e.values.at("farmem_memserver_sessions_resumed_total"), 12);
  EXPECT_EQ(e.values.at("farmem_memserver_sessions_expired_total"), 13);
  m.used_bytes = 150;  // capacity auto fell below what is leased: free is 0, not a wrap
  EXPECT_EQ(parse(memserver::render_prometheus(m)).values.at("farmem_memserver_free_bytes"), 0);
}

TEST(Metrics, ResponderAnswersOnlyGetMetrics) {
  const memserver::MetricsServer::Render render = [] { return std::string("x 1\n"); };
  auto ok = memserver::answer_http("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", render);
  EXPECT_EQ(ok.code, 200);
  EXPECT_EQ(ok.body, "x 1\n");
  EXPECT_NE(ok.content_type.find("version=0.0.4"), std::string::npos);
  EXPECT_EQ(memserver::answer_http("GET /metrics?name[]=x HTTP/1.0\r\n\r\n", render).code, 200);
  EXPECT_EQ(memserver::answer_http("GET / HTTP/1.1\r\n\r\n", render).code, 404);
  EXPECT_EQ(memserver::answer_http("GET /metricsx HTTP/1.1\r\n\r\n", render).code, 404);
  EXPECT_EQ(memserver::answer_http("POST /metrics HTTP/1.1\r\n\r\n", render).code, 405);
  EXPECT_EQ(memserver::answer_http("GET /metrics\r\n\r\n", render).code, 400);
  EXPECT_EQ(memserver::answer_http("garbage", render).code, 400);
  EXPECT_EQ(memserver::answer_http("", render).code, 400);
}

class MetricsEndpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    memserver::CoreOptions o;
    o.capacity_bytes = 64u << 20;
    auto s = TestServer::start("tcp", o);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
    memserver::Core& core = server_->core();
    auto m = memserver::MetricsServer::start({"127.0.0.1", 0}, [&core] {
      return memserver::render_prometheus(memserver::snapshot(core));
    });
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    metrics_ = std::move(m).value();
    base_ = "http://127.0.0.1:" + std::to_string(metrics_->port());
  }
  Exposition scrape() {
    auto [code, body] = http_get(base_ + "/metrics");
    EXPECT_EQ(code, 200) << body;
    auto e = parse(body);
    EXPECT_EQ(e.problem, "");
    return e;
  }
  std::unique_ptr<TestServer> server_;
  std::unique_ptr<memserver::MetricsServer> metrics_;
  std::string base_;
};

TEST_F(MetricsEndpoint, ValuesFollowALeaseDataAndARejection) {
  auto before = scrape();
  for (const char* name : kNames) ASSERT_EQ(before.values.count(name), 1u) << name;
  EXPECT_EQ(before.values["farmem_memserver_capacity_bytes"], 64u << 20);
  EXPECT_EQ(before.values["farmem_memserver_used_bytes"], 0);
  EXPECT_EQ(before.values["farmem_memserver_sessions"], 0);

  auto c = server_->connect();
  ASSERT_TRUE(c.ok());
  auto slab = transport::alloc_slab(**c, 4u << 20, kTimeout);
  ASSERT_TRUE(slab.ok()) << slab.status().to_string();
  std::vector<std::byte> buf(8192);
  auto reg = (*c)->register_memory(buf.data(), buf.size());
  ASSERT_TRUE(reg.ok());
  transport::Op w{transport::OpKind::kWrite, 8192, buf.data(), (*reg)->lkey(), slab->rkey, slab->addr};
  ASSERT_TRUE((*c)->execute(w, kTimeout).ok());
  transport::Op r{transport::OpKind::kRead, 4096, buf.data(), (*reg)->lkey(), slab->rkey, slab->addr};
  ASSERT_TRUE((*c)->execute(r, kTimeout).ok());
  EXPECT_FALSE(server_->connect("wrong-token").ok());

  auto after = scrape();
  EXPECT_EQ(after.values["farmem_memserver_used_bytes"], 4u << 20);
  EXPECT_EQ(after.values["farmem_memserver_free_bytes"], 60u << 20);
  EXPECT_EQ(after.values["farmem_memserver_slabs"], 1);
  EXPECT_EQ(after.values["farmem_memserver_sessions"], 1);
  EXPECT_EQ(after.values["farmem_memserver_bytes_served_total"],
            before.values["farmem_memserver_bytes_served_total"] + 8192 + 4096);
  EXPECT_EQ(after.values["farmem_memserver_rejected_requests_total"],
            before.values["farmem_memserver_rejected_requests_total"] + 1);
  EXPECT_EQ(after.values["farmem_memserver_auth_failures_total"],
            before.values["farmem_memserver_auth_failures_total"] + 1);
  // The --token tenant is the anonymous one: its use is labelled tenant="".
  EXPECT_EQ(after.values["farmem_memserver_tenant_used_bytes{tenant=\"\"}"], 4u << 20);
  EXPECT_EQ(after.values["farmem_memserver_tenant_connections{tenant=\"\"}"], 1);

  c->reset();  // the session ends: its slab goes back
  EXPECT_TRUE(eventually([&] { return scrape().values["farmem_memserver_used_bytes"] == 0; }));
}

TEST_F(MetricsEndpoint, OtherPathsAre404AndAStalledClientDoesNotBlockTheNextScrape) {
  EXPECT_EQ(http_get(base_ + "/").first, 404);
  EXPECT_EQ(http_get(base_ + "/metrics/x").first, 404);
  // A client that connects and sends half a request: the responder gives up on it after its
  // deadline and serves the next scraper.
  auto fd = net::connect_to("127.0.0.1", metrics_->port(), net::deadline_after(kTimeout));
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(net::write_full(fd->get(), "GET /met", 8, net::deadline_after(kTimeout), "t").ok());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(http_get(base_ + "/metrics").first, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // An oversized request is refused, not buffered without end.
  auto big = net::connect_to("127.0.0.1", metrics_->port(), net::deadline_after(kTimeout));
  ASSERT_TRUE(big.ok());
  const std::string junk = "GET /metrics HTTP/1.1\r\nX: " + std::string(16384, 'a');
  (void)net::write_full(big->get(), junk.data(), junk.size(), net::deadline_after(kTimeout), "t");
  std::string reply(64, '\0');
  ASSERT_TRUE(net::wait_ready(big->get(), POLLIN, net::deadline_after(kTimeout), "t").ok());
  const ssize_t n = ::recv(big->get(), reply.data(), reply.size(), 0);
  ASSERT_GT(n, 12);
  EXPECT_EQ(reply.substr(0, 12), "HTTP/1.1 431");
}

}  // namespace
}  // namespace farmem::test
