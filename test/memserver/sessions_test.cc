// Client labels and the session list (SET_LABEL, LIST_SESSIONS) on every backend, the label a
// Runtime sends, and farmemctl's queries over them (memserver/ctl/query.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "farmem/farmem.h"
#include "memserver/ctl/query.h"
#include "test/support/core_session.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"
#include "transport/connect.h"

namespace farmem::test {
namespace {

constexpr auto kTimeout = std::chrono::seconds(10);

std::string label_of(const proto::SessionEntry& e) { return std::string(ctl::label_of(e)); }

class Sessions : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "verbs") FARMEM_REQUIRE_RDMA_OR_SKIP();
    memserver::CoreOptions o;
    o.capacity_bytes = 64u << 20;
    auto s = TestServer::start(GetParam(), o);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }
  std::unique_ptr<transport::Connection> connect() {
    auto c = server_->connect();
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    return c.ok() ? std::move(c).value() : nullptr;
  }
  std::unique_ptr<TestServer> server_;
};

TEST_P(Sessions, ListShowsEachSessionsLabelAndLease) {
  auto a = connect(), b = connect();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(transport::set_label(*a, "1234@node-a", kTimeout).ok());
  ASSERT_TRUE(transport::alloc_slab(*a, 4u << 20, kTimeout).ok());
  ASSERT_TRUE(transport::alloc_slab(*a, 2u << 20, kTimeout).ok());
  ASSERT_TRUE(transport::alloc_slab(*b, 2u << 20, kTimeout).ok());

  auto list = transport::list_sessions(*b, kTimeout);
  ASSERT_TRUE(list.ok()) << list.status().to_string();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_LT((*list)[0].session_id, (*list)[1].session_id);
  EXPECT_EQ(label_of((*list)[0]), "1234@node-a");
  EXPECT_EQ((*list)[0].leased_bytes, 6u << 20);
  EXPECT_EQ((*list)[0].slabs, 2u);
  EXPECT_EQ(label_of((*list)[1]), "");  // b never named itself
  EXPECT_EQ((*list)[1].leased_bytes, 2u << 20);

  a.reset();  // a closed session leaves the list
  ASSERT_TRUE(eventually([&] {
    auto l = transport::list_sessions(*b, kTimeout);
    return l.ok() && l->size() == 1;
  }));
}

TEST_P(Sessions, RejectsEmptyAndOversizedLabelsAndKeepsServing) {
  auto c = connect();
  ASSERT_TRUE(c);
  // The client helper refuses before sending; the server refuses what a raw client sends.
  EXPECT_EQ(transport::set_label(*c, std::string(proto::kMaxLabelBytes + 1, 'x'), kTimeout).code(),
            StatusCode::kInvalidArgument);
  proto::Message raw;
  raw.type = proto::MsgType::kSetLabel;
  auto reply = c->call(raw, kTimeout);
  EXPECT_EQ(reply.status().code(), StatusCode::kInvalidArgument) << reply.status().to_string();
  EXPECT_TRUE(transport::set_label(*c, std::string(proto::kMaxLabelBytes, 'y'), kTimeout).ok());
  EXPECT_TRUE(transport::server_stats(*c, kTimeout).ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, Sessions, ::testing::Values("local", "tcp", "verbs"),
                         BackendName());

TEST(SessionList, PagesThroughMoreSessionsThanOneReplyHolds) {
  memserver::Core core([] {
    memserver::CoreOptions o;
    o.token = "t";
    return o;
  }());
  const std::size_t n = proto::kMaxSessionsPerList * 2 + 3;
  std::vector<std::shared_ptr<memserver::Session>> open;
  for (std::size_t i = 0; i < n; ++i) open.push_back(*test::open_session(core, "t", "", "p"));
  core.close_session(*open[5]);  // a hole in the ids

  std::uint64_t after = 0;
  std::size_t seen = 0, pages = 0;
  for (bool more = true; more && pages < 10; ++pages) {  // bounded: 3 pages expected
    auto reply = core.handle(*open[0], proto::Message::of(proto::MsgType::kListSessions,
                                                          proto::ListSessions{after}));
    ASSERT_EQ(reply.type, proto::MsgType::kSessionList);
    proto::SessionListHead head;
    std::memcpy(&head, reply.payload.data(), sizeof head);
    ASSERT_LE(head.count, proto::kMaxSessionsPerList);
    ASSERT_EQ(reply.payload.size(), sizeof head + head.count * sizeof(proto::SessionEntry));
    for (std::uint32_t i = 0; i < head.count; ++i) {
      proto::SessionEntry e;
      std::memcpy(&e, reply.payload.data() + sizeof head + i * sizeof e, sizeof e);
      ASSERT_GT(e.session_id, after);
      EXPECT_NE(e.session_id, open[5]->id());
      after = e.session_id;
      ++seen;
    }
    more = head.more != 0;
  }
  EXPECT_EQ(seen, n - 1);
  EXPECT_EQ(pages, 3u);
}

TEST(RuntimeLabel, EachServerSeesTheRuntimesLabelAndFarmemctlSumsItsFootprint) {
  memserver::CoreOptions o;
  o.capacity_bytes = 256u << 20;
  auto s1 = TestServer::start("tcp", o), s2 = TestServer::start("tcp", o);
  ASSERT_TRUE(s1.ok() && s2.ok());
  RuntimeOptions ro;
  ro.servers = {(*s1)->url(), (*s2)->url()};
  ro.auth_token = kToken;
  ro.slab_bytes = 8u << 20;
  ro.local_buffer_bytes = 1u << 20;
  ro.cache_budget_bytes = 1u << 20;
  ro.client_label = "batch-job-7";
  auto rt = Runtime::open(ro);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  std::vector<FarRange> ranges;
  for (int i = 0; i < 6; ++i) {  // six slabs, spread by free space over both servers
    auto r = (*rt)->allocate(8u << 20);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    ranges.push_back(*r);
  }
  // A second runtime with the default label (PID@HOST) on one server.
  ro.servers = {(*s1)->url()};
  ro.client_label.clear();
  auto other = Runtime::open(ro);
  ASSERT_TRUE(other.ok()) << other.status().to_string();
  ASSERT_TRUE((*other)->allocate(8u << 20).ok());

  ctl::QueryOptions q;
  q.token = kToken;
  q.sessions = true;
  q.own_label = "farmemctl-test";
  const auto reports = ctl::query_servers({(*s1)->url(), (*s2)->url(), "tcp://127.0.0.1:1"}, q);
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_TRUE(reports[0].status.ok()) << reports[0].status.to_string();
  EXPECT_FALSE(reports[2].status.ok());  // nothing listens there
  EXPECT_EQ(reports[0].stats.sessions, 2u);  // the two runtimes; farmemctl's own not counted
  for (const auto& e : reports[0].sessions) EXPECT_NE(label_of(e), "farmemctl-test");

  const auto fp = ctl::footprint(reports, "batch-job-7");
  ASSERT_EQ(fp.size(), 3u);
  EXPECT_EQ(fp[0].leased_bytes + fp[1].leased_bytes, 6u * (8u << 20));
  EXPECT_EQ(fp[0].sessions + fp[1].sessions, 2u);
  EXPECT_EQ(fp[0].leased_bytes, (*s1)->core().used_bytes() - (8u << 20));  // minus `other`'s
  EXPECT_EQ(fp[1].leased_bytes, (*s2)->core().used_bytes());

  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  const std::string default_label = std::to_string(getpid()) + "@" + host;
  const auto mine = ctl::footprint(reports, default_label.substr(0, proto::kMaxLabelBytes));
  EXPECT_EQ(mine[0].leased_bytes, 8u << 20);
  EXPECT_EQ(mine[1].leased_bytes, 0u);

  for (const auto& r : ranges) ASSERT_TRUE((*rt)->free(r).ok());
  const auto after = ctl::footprint(ctl::query_servers({(*s1)->url(), (*s2)->url()}, q),
                                    "batch-job-7");
  EXPECT_EQ(after[0].leased_bytes + after[1].leased_bytes, 0u);  // empty slabs went back
}

TEST(RuntimeLabel, RefusesALabelLongerThanTheWireAllows) {
  RuntimeOptions ro;
  ro.client_label = std::string(proto::kMaxLabelBytes + 1, 'x');
  auto rt = Runtime::open(ro);
  EXPECT_EQ(rt.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(rt.status().message().find("client_label"), std::string::npos);
}

}  // namespace
}  // namespace farmem::test
