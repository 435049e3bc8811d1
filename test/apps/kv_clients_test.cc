// Stock memcached clients against farmem-kv, unchanged, at 25 % local memory (the page
// cache holds a quarter of the items' bytes or less), with values checked: memcaslap
// (--verify=1.0, text and binary), memcslap (every get must hit), pymemcache (a script that
// checks every value it reads), memccapable (libmemcached's protocol conformance cases); and
// the farmem-kv binary itself, started with its flags.
//
// The tools come from ci/install-deps (libmemcached-tools, python3-pymemcache). A missing tool
// skips its test with a message outside CI; under CI (CI=true) it fails: CI must run them.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "kv/kv.h"
#include "test/apps/kv_client.h"

namespace farmem::kv {
namespace {

// Local memory: the page cache's budget. The workloads below store 4x or more of it.
constexpr std::uint64_t kBudget = 4u << 20;
// Every tool run is cut off after this (the runs take seconds).
constexpr int kToolTimeoutSeconds = 240;

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

std::string find_tool(const std::string& name) {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    const std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

// Skips (outside CI) or fails (in CI) when `what` is absent.
#define REQUIRE_TOOL(present, what)                                                          \
  do {                                                                                       \
    if (!(present)) {                                                                        \
      if (in_ci()) FAIL() << what << " is missing under CI: ci/install-deps installs it";    \
      GTEST_SKIP() << what << " is not installed (ci/install-deps build installs it)";       \
    }                                                                                        \
  } while (0)

struct ToolRun {
  int rc = -1;
  std::string out;
};

ToolRun run(const std::string& cmd) {
  ToolRun r;
  const std::string full = "timeout " + std::to_string(kToolTimeoutSeconds) + " " + cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::uint64_t field(const std::string& out, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(name + ":\\s*(\\d+)"))) return ~0ull;
  return std::stoull(m[1]);
}

class KvClientsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KvOptions o;
    o.runtime.cache_budget_bytes = kBudget;
    o.runtime.local_buffer_bytes = 1u << 20;
    o.runtime.slab_bytes = 16u << 20;
    o.store.far_capacity = 512u << 20;
    o.server.port = 0;
    o.server.threads = 2;
    auto kv = KvServer::open(o);
    ASSERT_TRUE(kv.ok()) << kv.status().to_string();
    kv_ = std::move(*kv);
    addr_ = "127.0.0.1:" + std::to_string(kv_->port());
  }
  std::map<std::string, std::uint64_t> stats() {
    std::map<std::string, std::uint64_t> m;
    for (auto& [k, v] : kv_->stats()) {
      if (!v.empty() && std::isdigit(static_cast<unsigned char>(v[0])) &&
          v.find('.') == std::string::npos) {
        m[k] = std::stoull(v);
      }
    }
    return m;
  }
  // The items outgrew local memory 4x and the page cache had to fetch from far memory.
  void expect_quarter_local() {
    auto s = stats();
    EXPECT_GE(s["bytes"], 4 * kBudget) << "the workload must be 4x the local budget";
    EXPECT_LE(kv_->runtime().cache_stats().resident_bytes, kBudget);
    EXPECT_GT(kv_->runtime().cache_stats().misses, 100u) << "items were read from far memory";
    EXPECT_EQ(s["farmem_far_errors"], 0u);
  }
  std::unique_ptr<KvServer> kv_;
  std::string addr_;
};

void memcaslap_case(const std::string& addr, const std::string& extra, KvServer& kv) {
  // 16 concurrent clients x a 2k-key window of 1000-byte values (~20 MiB), 10 % sets, every
  // get's value verified (-v 1.0), multi-gets of 4 keys.
  const ToolRun r = run(find_tool("memcaslap") + " -s " + addr +
                    " -T 2 -c 16 -w 2k -X 1000 -x 200000 -v 1.0 -d 4 " + extra);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(field(r.out, "verify_failed"), 0u) << r.out;
  EXPECT_EQ(field(r.out, "verify_misses"), 0u) << r.out;
  EXPECT_EQ(field(r.out, "get_misses"), 0u) << r.out;
  EXPECT_GE(field(r.out, "cmd_get"), 150000u) << r.out;
  EXPECT_EQ(kv.store().stats().far_errors, 0u);
}

TEST_F(KvClientsTest, MemcaslapTextVerifiesEveryValue) {
  REQUIRE_TOOL(!find_tool("memcaslap").empty(), "memcaslap (libmemcached-tools)");
  memcaslap_case(addr_, "", *kv_);
  expect_quarter_local();
}

TEST_F(KvClientsTest, MemcaslapBinaryVerifiesEveryValue) {
  REQUIRE_TOOL(!find_tool("memcaslap").empty(), "memcaslap (libmemcached-tools)");
  memcaslap_case(addr_, "-B", *kv_);
  expect_quarter_local();
}

TEST_F(KvClientsTest, MemcslapEveryGetHits) {
  REQUIRE_TOOL(!find_tool("memcslap").empty(), "memcslap (libmemcached-tools)");
  const std::string slap = find_tool("memcslap") + " --servers=" + addr_ +
                           " --concurrency=4 --execute-number=5000";
  for (const std::string test : {"set", "get", "mget"}) {
    const ToolRun r = run(slap + " --test=" + test);
    ASSERT_EQ(r.rc, 0) << test << ": " << r.out;
    EXPECT_NE(r.out.find("Time total"), std::string::npos) << r.out;
  }
  const ToolRun b = run(slap + " --binary --test=get");
  ASSERT_EQ(b.rc, 0) << b.out;
  auto s = stats();
  EXPECT_GE(s["cmd_get"], 60000u);
  EXPECT_EQ(s["get_hits"], s["cmd_get"]) << "memcslap only gets keys it has set";
  EXPECT_EQ(s["get_misses"], 0u);
  expect_quarter_local();
}

TEST_F(KvClientsTest, PymemcacheChecksEveryValue) {
  const bool have = ::access("/usr/bin/python3", X_OK) == 0 &&
                    run("/usr/bin/python3 -c 'import pymemcache'").rc == 0;
  REQUIRE_TOOL(have, "python3-pymemcache");
  const auto script = std::filesystem::temp_directory_path() /
                      ("farmem_kv_pymemcache_" + std::to_string(::getpid()) + ".py");
  std::ofstream(script) << R"PY(
import sys
from pymemcache.client.base import Client
port = int(sys.argv[1])
c = Client(('127.0.0.1', port), connect_timeout=10, timeout=30)
def val(i):
    return (('%08d' % i) * (1 + (i * 7919) % 700)).encode()  # 8 B to 5.6 KiB
N = 8000  # ~22 MiB of values
for i in range(0, N, 100):
    c.set_many({'py%d' % j: val(j) for j in range(i, i + 100)}, noreply=False)
bad = 0
for i in range(0, N, 50):
    got = c.get_many(['py%d' % j for j in range(i, i + 50)] + ['absent%d' % i])
    if len(got) != 50:
        bad += 1
    for j in range(i, i + 50):
        if got.get('py%d' % j) != val(j):
            bad += 1
for i in range(0, N, 7):
    if c.get('py%d' % i) != val(i):
        bad += 1
# cas: a stale token conflicts, a fresh one stores
v, tok = c.gets('py1')
assert c.cas('py1', b'new', tok) is True
assert c.cas('py1', b'stale', tok) is False
assert c.get('py1') == b'new'
assert c.add('py2', b'x', noreply=False) is False
assert c.add('fresh', b'x', noreply=False) is True
assert c.replace('nope', b'x', noreply=False) is False
assert c.append('fresh', b'yz', noreply=False) is True
assert c.prepend('fresh', b'w', noreply=False) is True
assert c.get('fresh') == b'wxyz'
c.set('n', b'41')
assert c.incr('n', 1) == 42
assert c.decr('n', 50) == 0
assert c.touch('n', 100, noreply=False) is True
assert c.delete('n', noreply=False) is True
assert c.get('n') is None
assert 'farmem_cache_hit_ratio'.encode() in c.stats() or 'farmem_cache_hit_ratio' in c.stats()
print('pymemcache OK, bad=%d' % bad)
sys.exit(1 if bad else 0)
)PY";
  const ToolRun r = run("/usr/bin/python3 " + script.string() + " " + std::to_string(kv_->port()));
  std::filesystem::remove(script);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("pymemcache OK, bad=0"), std::string::npos) << r.out;
  expect_quarter_local();
}

TEST_F(KvClientsTest, MemccapableConformance) {
  REQUIRE_TOOL(!find_tool("memccapable").empty(), "memccapable (libmemcached-tools)");
  const ToolRun r = run(find_tool("memccapable") + " -h 127.0.0.1 -p " + std::to_string(kv_->port()));
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("All tests passed"), std::string::npos) << r.out;
}

// The binary, as a user runs it: flags parsed, the port printed, stock requests served, and
// a clear error for a bad flag.
TEST(KvBinaryTest, StartsWithFlagsAndServes) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::close(pipe_fds[0]);
    ::execl(FARMEM_KV_BIN, FARMEM_KV_BIN, "-p", "0", "-l", "127.0.0.1", "-t", "2", "-m", "8",
            "-I", "2m", "--far-capacity", "64m", "-c", "16", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  FILE* out = ::fdopen(pipe_fds[0], "r");
  char line[512] = {};
  const bool got = std::fgets(line, sizeof line, out) != nullptr;  // ends when the child does
  std::smatch m;
  const std::string s = line;
  const bool found = std::regex_search(s, m, std::regex("listening on 127\\.0\\.0\\.1:(\\d+)"));
  if (got && found) {
    test::KvClient c(static_cast<std::uint16_t>(std::stoi(m[1])));
    EXPECT_EQ(c.cmd("set k 0 0 2\r\nhi\r\n"), "STORED\r\n");
    c.send("get k\r\n");
    EXPECT_EQ(c.read_until("END\r\n"), "VALUE k 0 2\r\nhi\r\nEND\r\n");
    c.send("stats settings\r\n");
    const std::string st = c.read_until("END\r\n");
    EXPECT_NE(st.find("STAT item_size_max 2097152\r\n"), std::string::npos) << st;
    EXPECT_NE(st.find("STAT maxconns 16\r\n"), std::string::npos) << st;
    EXPECT_NE(st.find("STAT num_threads 2\r\n"), std::string::npos) << st;
  }
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::fclose(out);
  ASSERT_TRUE(got && found) << "first line: " << line;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const ToolRun bad = run(std::string(FARMEM_KV_BIN) + " -I 10");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.out.find("item size max"), std::string::npos) << bad.out;
  // A token file without a secret is refused by name (the far-memory flags every app shares).
  const std::string empty = ::testing::TempDir() + "kv-empty-token";
  std::fclose(std::fopen(empty.c_str(), "w"));
  const ToolRun no_token = run(std::string(FARMEM_KV_BIN) + " --token-file " + empty);
  EXPECT_EQ(no_token.rc, 2) << no_token.out;
  EXPECT_NE(no_token.out.find("no secret on its first line"), std::string::npos) << no_token.out;
  std::remove(empty.c_str());
}

}  // namespace
}  // namespace farmem::kv
