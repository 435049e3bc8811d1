// farmem-kvload: its pieces (the Zipf generator, the latency histogram, the value stamps) and
// the binary itself, against farmem-kv in-process on loopback (text and binary, YCSB-B with
// Zipf keys), against tiny fake memcacheds of this file (one corrupts values, one hangs up,
// one never answers) and against a refused port; and the commands of docs/kvload.md, run
// as written against the farmem-memserver and farmem-kv binaries.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

#include "bench/kvload/histogram.h"
#include "bench/kvload/keys.h"
#include "bench/kvload/value.h"
#include "kv/kv.h"
#include "test/apps/kv_client.h"

namespace farmem::kvload {
namespace {

using Json = nlohmann::json;

// Every run of the binary is cut off after this (the runs take seconds).
constexpr int kRunTimeoutSeconds = 120;
// Draws for the distribution tests: enough that the bounds below are many sigmas wide.
constexpr int kDraws = 400000;
constexpr std::uint64_t kZipfKeys = 10000;

// Share of all draws that the most drawn 1 % of keys got.
double top_percent_share(const std::vector<std::uint64_t>& counts) {
  std::vector<std::uint64_t> c = counts;
  std::sort(c.rbegin(), c.rend());
  std::uint64_t top = 0;
  for (std::size_t i = 0; i < c.size() / 100; ++i) top += c[i];
  return static_cast<double>(top) / kDraws;
}

std::vector<std::uint64_t> draw(const KeyChooser& keys) {
  std::vector<std::uint64_t> counts(kZipfKeys);
  SplitMix rng(7);
  for (int i = 0; i < kDraws; ++i) ++counts[keys.next(rng)];
  return counts;
}

TEST(KvloadZipfTest, SkewedAtPointNineNine) {
  // Exact share of ranks 0..99 of 10^4 at theta 0.99: zeta(100)/zeta(10^4) = 0.53.
  const auto counts = draw(KeyChooser(KeyDist::kZipf, kZipfKeys, 0.99));
  EXPECT_GT(top_percent_share(counts), 0.40);
  EXPECT_LT(top_percent_share(counts), 0.70);
  // The ranks before the scramble: rank 0 is the hottest, about 1/zeta(10^4) = 10 %.
  ZipfRanks z(kZipfKeys, 0.99);
  SplitMix rng(3);
  std::vector<std::uint64_t> ranks(kZipfKeys);
  for (int i = 0; i < kDraws; ++i) ++ranks[z.rank(rng.unit())];
  EXPECT_EQ(std::max_element(ranks.begin(), ranks.end()) - ranks.begin(), 0);
  EXPECT_GT(ranks[0], kDraws / 20u);
  EXPECT_LT(ranks[0], kDraws / 6u);
  EXPECT_GT(ranks[0], 50 * ranks[999]) << "p(0)/p(999) is 1000^0.99 = 930";
}

TEST(KvloadZipfTest, NearUniformAtZero) {
  // Unscrambled ranks at theta 0 are uniform: the top 1 % get ~1 % (1.2 % with the noise of
  // 40 draws a key).
  ZipfRanks z(kZipfKeys, 0.0);
  SplitMix rng(5);
  std::vector<std::uint64_t> ranks(kZipfKeys);
  for (int i = 0; i < kDraws; ++i) ++ranks[z.rank(rng.unit())];
  EXPECT_LT(top_percent_share(ranks), 0.02);
  // Scrambled, keys hit by two or three ranks (the hash is not a bijection) get 2-3x.
  EXPECT_LT(top_percent_share(draw(KeyChooser(KeyDist::kZipf, kZipfKeys, 0.0))), 0.05);
  EXPECT_LT(top_percent_share(draw(KeyChooser(KeyDist::kUniform, kZipfKeys, 0.99))), 0.02);
}

TEST(KvloadZipfTest, ScrambleSpreadsTheHotKeys) {
  // The ten hottest keys are not the ten lowest indices (YCSB hashes ranks to keys).
  const auto counts = draw(KeyChooser(KeyDist::kZipf, kZipfKeys, 0.99));
  std::vector<std::uint64_t> idx(kZipfKeys);
  for (std::uint64_t i = 0; i < kZipfKeys; ++i) idx[i] = i;
  std::partial_sort(idx.begin(), idx.begin() + 10, idx.end(),
                    [&](auto a, auto b) { return counts[a] > counts[b]; });
  EXPECT_GT(*std::max_element(idx.begin(), idx.begin() + 10), 100u);
}

TEST(KvloadHistogramTest, PercentilesWithinABucket) {
  Histogram h;
  for (std::uint64_t v = 1; v <= 100000; ++v) h.record(v);
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.5)), 50000, 50000 * 0.016);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.99)), 99000, 99000 * 0.016);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.999)), 99900, 99900 * 0.016);
  EXPECT_EQ(h.percentile(1.0), 100000u);
  Histogram small;
  small.record(3);
  EXPECT_EQ(small.percentile(0.5), 3u);
  for (std::uint64_t v : {0ull, 127ull, 128ull, 1000ull, 123456789ull, ~0ull}) {
    EXPECT_GE(Histogram::upper_bound(Histogram::index(v)), v);
    EXPECT_LT(Histogram::index(v), Histogram::kBuckets);
  }
}

TEST(KvloadValueTest, OnlyWrittenValuesPass) {
  const ValueCodec codec(42, 24, 300);
  std::string v;
  codec.make(7, 3, v);
  EXPECT_GE(v.size(), 24u);
  EXPECT_EQ(codec.check(7, 4, v), ValueCodec::Verdict::kOk);
  EXPECT_EQ(codec.check(7, 3, v), ValueCodec::Verdict::kWrong) << "version 3 not issued yet";
  EXPECT_EQ(codec.check(8, 4, v), ValueCodec::Verdict::kWrong) << "another key's value";
  std::string flipped = v;
  flipped.back() ^= 1;
  EXPECT_EQ(codec.check(7, 4, flipped), ValueCodec::Verdict::kWrong);
  EXPECT_EQ(codec.check(7, 4, v.substr(0, v.size() - 1)), ValueCodec::Verdict::kWrong);
  EXPECT_EQ(codec.check(7, 4, "hello"), ValueCodec::Verdict::kWrong);
  // Another run's value: its key and filler are checked, not its version.
  const ValueCodec other(43, 24, 300);
  EXPECT_EQ(other.check(7, 0, v), ValueCodec::Verdict::kOk);
  EXPECT_EQ(other.check(7, 0, flipped), ValueCodec::Verdict::kWrong);
}

struct ToolRun : kv::test::ToolRun {
  std::string err;
  Json json;  ///< stdout parsed, null when it is not one JSON object
};

// Runs farmem-kvload with `args`, stdout and stderr apart.
ToolRun kvload(const std::string& args) {
  static std::atomic<int> seq{0};
  const auto err_file = std::filesystem::temp_directory_path() /
                        ("kvload_err_" + std::to_string(::getpid()) + "_" +
                         std::to_string(seq++));
  const std::string cmd = "timeout " + std::to_string(kRunTimeoutSeconds) + " " +
                          FARMEM_KVLOAD_BIN + " " + args + " 2>" + err_file.string();
  ToolRun r{kv::test::run_command(cmd)};
  std::ifstream e(err_file);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  std::filesystem::remove(err_file);
  r.json = Json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  return r;
}

// Local memory for the in-process farmem-kv: a quarter or less of the items' bytes.
constexpr std::uint64_t kBudget = 4u << 20;

class KvloadAgainstKvTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    kv::KvOptions o;
    o.runtime.cache_budget_bytes = kBudget;
    o.runtime.local_buffer_bytes = 1u << 20;
    o.runtime.slab_bytes = 16u << 20;
    o.store.far_capacity = 256u << 20;  // holds every key: no evictions, every get hits
    o.server.port = 0;
    o.server.threads = 2;
    auto kv = kv::KvServer::open(o);
    ASSERT_TRUE(kv.ok()) << kv.status().to_string();
    kv_ = std::move(*kv);
  }
  std::unique_ptr<kv::KvServer> kv_;
};

TEST_P(KvloadAgainstKvTest, YcsbBZipfChecksEveryValue) {
  // 16k keys of 1000 bytes (~16 MiB of items, 4x the budget), YCSB-B, Zipf 0.99.
  const ToolRun r = kvload("-s 127.0.0.1:" + std::to_string(kv_->port()) + " -P " + GetParam() +
                       " -w B -d zipf -k 16000 -v 1000 -t 2 -c 16 -p 4 -n 40000"
                       " --warmup 0.2 --progress 0.5");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_TRUE(r.json.is_object()) << r.out;
  const Json& j = r.json;
  EXPECT_EQ(j["protocol"], GetParam());
  EXPECT_EQ(j["ops"].get<std::uint64_t>(), 40000u);
  EXPECT_GT(j["ops_per_sec"].get<double>(), 0);
  EXPECT_EQ(j["wrong"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(j["errors"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(j["load"]["keys"].get<std::uint64_t>(), 16000u);
  EXPECT_EQ(j["hit_ratio"].get<double>(), 1.0) << "every key was set by the load";
  EXPECT_EQ(j["misses"].get<std::uint64_t>(), 0u);
  EXPECT_GT(j["gets"].get<std::uint64_t>(), 30000u);  // 95 % of 40000
  EXPECT_GT(j["sets"].get<std::uint64_t>(), 500u);
  EXPECT_GT(j["latency_us"]["p50"].get<double>(), 0);
  EXPECT_GE(j["latency_us"]["p99"].get<double>(), j["latency_us"]["p50"].get<double>());
  EXPECT_GE(j["latency_us"]["p999"].get<double>(), j["latency_us"]["p99"].get<double>());
  EXPECT_NE(r.err.find("farmem-kvload:"), std::string::npos) << "progress lines on stderr";
  // The server saw it: the load's sets and the run's gets, items read from far memory.
  EXPECT_EQ(kv_->store().stats().far_errors, 0u);
  EXPECT_GT(kv_->runtime().cache_stats().misses, 100u);
  EXPECT_LE(kv_->runtime().cache_stats().resident_bytes, kBudget);
}

TEST_P(KvloadAgainstKvTest, NoLoadCountsMissesAndUniformKeys) {
  const ToolRun r = kvload("-s 127.0.0.1:" + std::to_string(kv_->port()) + " -P " + GetParam() +
                       " --no-load -r 0.7 -d uniform -k 5000 -v 24-2000 -t 1 -c 3 -p 8"
                       " -n 20000 --warmup 0 --progress 0");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  const Json& j = r.json;
  EXPECT_EQ(j["workload"], "custom");
  EXPECT_EQ(j["load"]["keys"].get<std::uint64_t>(), 0u);
  EXPECT_GT(j["misses"].get<std::uint64_t>(), 0u) << "nothing was loaded";
  EXPECT_GT(j["hits"].get<std::uint64_t>(), 0u) << "the run's sets are read back";
  EXPECT_EQ(j["wrong"].get<std::uint64_t>(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Protocols, KvloadAgainstKvTest, ::testing::Values("text", "binary"));

// A tiny text-protocol memcached on 127.0.0.1: set and get, one thread, every wait a poll
// with a deadline. Its misbehaviour is what the tests below want kvload to see.
class FakeMemcached {
 public:
  enum class Mode {
    kCorrupt,    ///< stores values, flips a byte of every value it returns
    kHangUp,     ///< closes a connection after kHangUpAfter requests
    kSilent,     ///< reads requests, never answers
  };
  static constexpr int kHangUpAfter = 500;

  explicit FakeMemcached(Mode mode) : mode_(mode) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(lfd_, 16) == 0 &&
        ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port_ = ntohs(a.sin_port);
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeMemcached() {
    stop_ = true;
    thread_.join();
    for (auto& [fd, c] : conns_) ::close(fd);
    ::close(lfd_);
  }
  std::uint16_t port() const { return port_; }

 private:
  struct Conn {
    std::string in;
    int served = 0;
  };
  void serve() {
    while (!stop_) {
      std::vector<pollfd> fds{{lfd_, POLLIN, 0}};
      for (auto& [fd, c] : conns_) fds.push_back({fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) conns_[fd];
      }
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents != 0) on_readable(fds[i].fd);
      }
    }
  }
  void on_readable(int fd) {
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      ::close(fd);
      conns_.erase(fd);
      return;
    }
    Conn& c = conns_[fd];
    c.in.append(buf, static_cast<std::size_t>(n));
    std::string out;
    while (mode_ != Mode::kSilent && answer(c, out)) {
      if (mode_ == Mode::kHangUp && ++c.served >= kHangUpAfter) {
        (void)::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
        ::close(fd);
        conns_.erase(fd);
        return;
      }
    }
    (void)::send(fd, out.data(), out.size(), MSG_NOSIGNAL);  // small replies: one send
  }
  // Answers the request at the front of c.in; false when it is not all there.
  bool answer(Conn& c, std::string& out) {
    const auto eol = c.in.find("\r\n");
    if (eol == std::string::npos) return false;
    std::istringstream line(c.in.substr(0, eol));
    std::string verb, key;
    line >> verb >> key;
    if (verb == "get") {
      c.in.erase(0, eol + 2);
      auto it = store_.find(key);
      if (it == store_.end()) {
        out += "END\r\n";
        return true;
      }
      std::string v = it->second;
      if (mode_ == Mode::kCorrupt) v[v.size() / 2] ^= 0x20;
      out += "VALUE " + key + " 0 " + std::to_string(v.size()) + "\r\n" + v + "\r\nEND\r\n";
      return true;
    }
    std::size_t flags = 0, exp = 0, bytes = 0;
    line >> flags >> exp >> bytes;
    if (c.in.size() < eol + 2 + bytes + 2) return false;
    store_[key] = c.in.substr(eol + 2, bytes);
    c.in.erase(0, eol + 2 + bytes + 2);
    out += "STORED\r\n";
    return true;
  }

  Mode mode_;
  int lfd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::map<int, Conn> conns_;  // the serving thread's only
  std::map<std::string, std::string> store_;
  std::thread thread_;
};

TEST(KvloadFakeServerTest, CorruptValuesAreWrong) {
  FakeMemcached fake(FakeMemcached::Mode::kCorrupt);
  ASSERT_NE(fake.port(), 0);
  const ToolRun r = kvload("-s 127.0.0.1:" + std::to_string(fake.port()) +
                       " -w B -k 500 -v 200 -t 1 -c 2 -p 4 -n 2000 --warmup 0 --progress 0");
  EXPECT_EQ(r.rc, 3) << r.out << r.err;
  ASSERT_TRUE(r.json.is_object()) << r.out << r.err;
  EXPECT_GT(r.json["wrong"].get<std::uint64_t>(), 1000u);
  EXPECT_NE(r.err.find("never written"), std::string::npos) << r.err;
}

TEST(KvloadFakeServerTest, ServerThatHangsUpIsAnError) {
  FakeMemcached fake(FakeMemcached::Mode::kHangUp);
  const auto t0 = std::chrono::steady_clock::now();
  const ToolRun r = kvload("-s 127.0.0.1:" + std::to_string(fake.port()) +
                       " -k 5000 -t 1 -c 1 --duration 60 --warmup 0 --progress 0");
  EXPECT_EQ(r.rc, 1) << r.out << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find("closed the connection"), std::string::npos) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30)) << "not the 60 s";
}

TEST(KvloadFakeServerTest, ServerThatNeverAnswersTimesOut) {
  FakeMemcached fake(FakeMemcached::Mode::kSilent);
  const ToolRun r = kvload("-s 127.0.0.1:" + std::to_string(fake.port()) +
                       " -k 100 -t 1 -c 2 --timeout 1 --duration 60 --progress 0");
  EXPECT_EQ(r.rc, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("no reply within"), std::string::npos) << r.err;
}

TEST(KvloadFakeServerTest, RefusedPortIsAnError) {
  // A bound socket that does not listen: connects to its port are refused, and no other
  // program can take the port while the test holds it.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const ToolRun r = kvload("-s 127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + " --progress 0");
  ::close(fd);
  EXPECT_EQ(r.rc, 1) << r.out << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find("Connection refused"), std::string::npos) << r.err;
  const ToolRun bad = kvload("-v 10");
  EXPECT_EQ(bad.rc, 1);
  EXPECT_NE(bad.err.find("at least 24"), std::string::npos) << bad.err;
}

TEST(KvloadBinaryTest, VersionAndHelp) {
  const ToolRun v = kvload("--version");
  EXPECT_EQ(v.rc, 0);
  EXPECT_EQ(v.out.rfind("farmem-kvload ", 0), 0u) << v.out;
  const ToolRun h = kvload("--help");
  EXPECT_EQ(h.rc, 0);
  for (const char* flag : {"--protocol", "--workload", "--zipf-theta", "--pipeline", "--no-load"}) {
    EXPECT_NE(h.out.find(flag), std::string::npos) << flag;
  }
}


// A server binary of the docs, started with its stdout on a pipe: its pid and the port its
// first "listening" line names.
struct Server {
  pid_t pid = -1;
  int port = 0;
  std::string said;  ///< what it printed before the port (for a failure's message)
};

Server spawn_server(std::vector<std::string> args, const std::regex& listening) {
  Server s;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return s;
  s.pid = ::fork();
  if (s.pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::smatch m;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[512];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;  // it exited
    s.said.append(buf, static_cast<std::size_t>(n));
    if (std::regex_search(s.said, m, listening)) {
      s.port = std::stoi(m[1]);
      break;
    }
  }
  ::close(fds[0]);  // later output goes to a closed pipe; both servers print only at exit
  return s;
}

void stop(const Server& s) {
  if (s.pid <= 0) return;
  ::kill(s.pid, SIGTERM);
  int st = 0;
  ::waitpid(s.pid, &st, 0);
}

std::vector<std::string> split(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// The "$ " lines of docs/kvload.md's sh blocks, in order, without "$ " and " &".
std::vector<std::string> doc_commands() {
  std::ifstream f(std::string(FARMEM_SOURCE_DIR) + "/docs/kvload.md");
  std::vector<std::string> out;
  bool in_sh = false;
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("```", 0) == 0) {
      in_sh = line == "```sh";
      continue;
    }
    if (!in_sh || line.rfind("$ ", 0) != 0) continue;
    line = line.substr(2);
    if (line.size() > 2 && line.substr(line.size() - 2) == " &") line.resize(line.size() - 2);
    out.push_back(line);
  }
  return out;
}

TEST(KvloadDocsTest, CommandsOfTheGuideRun) {
  const auto cmds = doc_commands();
  ASSERT_GE(cmds.size(), 5u) << "docs/kvload.md lost its commands";
  std::map<std::string, std::string> ports;  // the doc's port -> the real one
  std::vector<Server> servers;
  struct StopAll {  // on every way out, an ASSERT's too
    std::vector<Server>& s;
    ~StopAll() {
      for (auto it = s.rbegin(); it != s.rend(); ++it) stop(*it);
    }
  } stop_all{servers};
  int kvload_runs = 0;
  for (const std::string& cmd : cmds) {
    auto args = split(cmd);
    std::string doc_port;
    for (auto& a : args) {
      for (const auto& [doc, real] : ports) {
        const auto at = a.find(doc);
        if (at != std::string::npos) a.replace(at, doc.size(), real);
      }
    }
    if (args[0] == "farmem-memserver") {
      args[0] = FARMEM_MEMSERVER_BIN;
      for (auto& a : args) {
        if (a.rfind("127.0.0.1:", 0) == 0) {
          doc_port = a.substr(10);
          a = "127.0.0.1:0";
        }
      }
      servers.push_back(spawn_server(args, std::regex("port (\\d+)")));
    } else if (args[0] == "farmem-kv") {
      args[0] = FARMEM_KV_BIN;
      for (std::size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == "-p") {
          doc_port = args[i + 1];
          args[i + 1] = "0";
        }
      }
      servers.push_back(spawn_server(args, std::regex("listening on 127\\.0\\.0\\.1:(\\d+)")));
    } else {
      ASSERT_EQ(args[0], "farmem-kvload") << cmd;
      std::string line;
      for (std::size_t i = 1; i < args.size(); ++i) {
        line += (args[i - 1] == "--duration" ? std::string("1") : args[i]) + " ";
      }
      const ToolRun r = kvload(line + "--warmup 0.2 --progress 0");
      EXPECT_EQ(r.rc, 0) << cmd << "\n" << r.out << r.err;
      ASSERT_TRUE(r.json.is_object()) << cmd << "\n" << r.out << r.err;
      EXPECT_EQ(r.json["wrong"].get<std::uint64_t>(), 0u) << cmd;
      EXPECT_EQ(r.json["hit_ratio"].get<double>(), 1.0) << cmd;
      EXPECT_GT(r.json["ops"].get<std::uint64_t>(), 0u) << cmd;
      ++kvload_runs;
      continue;
    }
    ASSERT_GT(servers.back().port, 0) << cmd << " said: " << servers.back().said;
    ports["127.0.0.1:" + doc_port] = "127.0.0.1:" + std::to_string(servers.back().port);
  }
  EXPECT_EQ(kvload_runs, 3);
}

}  // namespace
}  // namespace farmem::kvload
