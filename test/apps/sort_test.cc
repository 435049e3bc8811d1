// farmem-sort: at 12.5 % local memory (the budget an eighth of the records' bytes) against a
// farmem-memserver process on loopback, the output must be sorted and a permutation of the
// input. The test checks that itself: it generates the input again from the seed and
// compares both sides as multisets (each sorted by all 100 bytes, then compared byte for
// byte), and checks the key order with memcmp, not the app's key code. Plain mode must give
// the same bytes; the app's own verification must catch a broken output; the binary answers
// --help, refuses bad options with exit 2, and sorts for real (the commands of docs/sort.md).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "sort/job.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"

namespace farmem::sort {
namespace {

using Bytes = std::vector<unsigned char>;

constexpr std::uint64_t kRecords = 320'000;                // 32 MB of records
constexpr std::uint64_t kBudget = kRecords * Record::kBytes / 8;  // 12.5 % local: 4 MB
constexpr std::uint64_t kSeed = 42;
constexpr auto kRunDeadline = std::chrono::seconds(240);  // a run takes seconds

Bytes as_bytes(std::span<const Record> rs) {
  const auto* p = reinterpret_cast<const unsigned char*>(rs.data());
  return Bytes(p, p + rs.size_bytes());
}

// The records of `bytes` sorted by all their bytes: equal for two multisets of records
// exactly when they hold the same records.
std::vector<std::string> multiset_of(const Bytes& bytes) {
  std::vector<std::string> v;
  for (std::size_t i = 0; i + Record::kBytes <= bytes.size(); i += Record::kBytes) {
    v.emplace_back(reinterpret_cast<const char*>(bytes.data() + i), Record::kBytes);
  }
  std::sort(v.begin(), v.end());
  return v;
}

// The input the seed stands for, generated here again.
Bytes input_of(std::uint64_t seed, std::uint64_t n) {
  std::vector<Record> rs(n);
  for (std::uint64_t i = 0; i < n; ++i) generate_record(seed, i, rs[i]);
  return as_bytes(rs);
}

// Index of the first record whose key (bytes 0..9, unsigned) is below its predecessor's; or
// the record count when the keys never go down.
std::size_t first_unsorted(const Bytes& out) {
  const std::size_t n = out.size() / Record::kBytes;
  for (std::size_t i = 1; i < n; ++i) {
    if (std::memcmp(&out[i * Record::kBytes], &out[(i - 1) * Record::kBytes],
                    Record::kKeyBytes) < 0) {
      return i;
    }
  }
  return n;
}

// The test's own verdict on an output: sorted, and the input's records exactly.
void expect_sorted_permutation(const Bytes& out, std::uint64_t seed, std::uint64_t n) {
  ASSERT_EQ(out.size(), n * Record::kBytes);
  EXPECT_EQ(first_unsorted(out), n) << "keys go down there";
  EXPECT_TRUE(multiset_of(out) == multiset_of(input_of(seed, n)))
      << "the output is not a permutation of the input";
}

class SortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Far memory for the input and output regions (whole slabs) with room to spare.
    ASSERT_TRUE(ms_.start({"--tcp", "127.0.0.1:0", "--token", test::kToken, "--capacity",
                           "512M", "--log-level", "error"},
                          {"tcp"})
                    .ok());
    url_ = "tcp://127.0.0.1:" + std::to_string(ms_.port("tcp"));
  }
  SortOptions far_options(Algo algo) const {
    SortOptions o;
    o.mode = Mode::kFar;
    o.algo = algo;
    o.records = kRecords;
    o.seed = kSeed;
    o.threads = 2;
    o.budget_bytes = kBudget;
    o.runtime.servers = {url_};
    o.runtime.auth_token = test::kToken;
    o.runtime.slab_bytes = 16u << 20;
    return o;
  }
  test::MemserverProcess ms_;
  std::string url_;
};

// Runs a job to the end; its output's bytes, or empty after a failure.
Bytes run_job(const SortOptions& o, SortReport* report = nullptr) {
  auto job = SortJob::open(o);
  EXPECT_TRUE(job.ok()) << job.status().to_string();
  if (!job.ok()) return {};
  auto r = (*job)->run();
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  if (!r.ok()) return {};
  if (report != nullptr) *report = *r;
  return as_bytes((*job)->output());
}

void expect_far_memory_worked(const SortReport& r) {
  // An eighth of the records fits locally: the rest went to the memserver and came back.
  EXPECT_GE(r.cache.bytes_written, r.bytes) << "the records must have been written far";
  EXPECT_GE(r.cache.bytes_read, r.bytes) << "and read back from far memory";
  EXPECT_GT(r.cache.evictions, r.bytes / 4096 / 2);
  EXPECT_LE(r.cache.resident_bytes, kBudget) << "both regions together stay in the budget";
}

TEST_F(SortTest, ChunkedAtAnEighthLocalSortsAPermutation) {
  SortReport r;
  const Bytes out = run_job(far_options(Algo::kChunked), &r);
  expect_sorted_permutation(out, kSeed, kRecords);
  EXPECT_TRUE(r.sorted);
  EXPECT_TRUE(r.checksum_match);
  EXPECT_GE(r.counts.runs, 8u) << "runs of 3/8 of the budget: 8 / (3/8) of them at least";
  expect_far_memory_worked(r);
}

TEST_F(SortTest, NaiveAtAnEighthLocalSortsAPermutation) {
  SortOptions o = far_options(Algo::kNaive);
  o.records = kRecords / 2;  // the baseline is slower: half as much, still 8x the budget
  o.budget_bytes = o.records * Record::kBytes / 8;
  SortReport r;
  const Bytes out = run_job(o, &r);
  expect_sorted_permutation(out, kSeed, o.records);
  EXPECT_TRUE(r.sorted);
  EXPECT_TRUE(r.checksum_match);
  EXPECT_GE(r.cache.bytes_read, r.bytes);
}

TEST_F(SortTest, FaultingThreadModeSortsAPermutation) {
  SortOptions o = far_options(Algo::kChunked);
  o.region.fault_mode = FaultMode::kFaultingThread;
  SortReport r;
  const Bytes out = run_job(o, &r);
  expect_sorted_permutation(out, kSeed, kRecords);
  expect_far_memory_worked(r);
}

TEST_F(SortTest, PlainModeAndBothAlgorithmsAgreeByteForByte) {
  const Bytes far = run_job(far_options(Algo::kChunked));
  SortOptions plain = far_options(Algo::kChunked);
  plain.mode = Mode::kPlain;
  plain.runtime = {};
  SortReport r;
  const Bytes plain_out = run_job(plain, &r);
  EXPECT_TRUE(r.sorted && r.checksum_match);
  EXPECT_EQ(r.cache.bytes_read, 0u) << "plain memory has no far traffic";
  plain.algo = Algo::kNaive;
  plain.threads = 1;
  const Bytes naive = run_job(plain);
  ASSERT_EQ(far.size(), kRecords * Record::kBytes);
  // Keys are 80 random bits: no ties, so there is one sorted order.
  EXPECT_TRUE(far == plain_out) << "far and plain differ";
  EXPECT_TRUE(far == naive) << "chunked and naive differ";
}

TEST_F(SortTest, ADifferentSeedIsADifferentInput) {
  SortOptions o = far_options(Algo::kChunked);
  o.records = kRecords / 8;
  o.seed = kSeed + 1;
  const Bytes out = run_job(o);
  expect_sorted_permutation(out, o.seed, o.records);
  EXPECT_FALSE(multiset_of(out) == multiset_of(input_of(kSeed, o.records)));
}

// The app's own verification is not vacuous: an output broken after the sort fails it.
TEST_F(SortTest, VerificationCatchesABrokenOutput) {
  SortOptions o = far_options(Algo::kChunked);
  o.records = kRecords / 8;
  auto job = SortJob::open(o);
  ASSERT_TRUE(job.ok()) << job.status().to_string();
  ASSERT_TRUE((*job)->generate().ok());
  ASSERT_TRUE((*job)->sort().ok());
  ASSERT_TRUE((*job)->verify().ok());
  EXPECT_TRUE((*job)->report().sorted && (*job)->report().checksum_match);
  auto* out = const_cast<Record*>((*job)->output().data());
  std::swap(out[10], out[o.records - 10]);  // the same records, out of order
  ASSERT_TRUE((*job)->verify().ok());
  EXPECT_FALSE((*job)->report().sorted);
  EXPECT_TRUE((*job)->report().checksum_match);
  std::swap(out[10], out[o.records - 10]);
  out[o.records / 2].payload[40] ^= std::byte{1};  // order kept, one record changed
  ASSERT_TRUE((*job)->verify().ok());
  EXPECT_TRUE((*job)->report().sorted);
  EXPECT_FALSE((*job)->report().checksum_match);
}

// ---- the binary ----

struct Ran {
  int rc = -1;
  std::string out;  // stdout and stderr
};

Ran run_sort(const std::string& args) {
  auto r = test::run_program({"/bin/sh", "-c", std::string(FARMEM_SORT_BIN) + " " + args + " 2>&1"},
                             kRunDeadline);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? Ran{r->exit_code, r->out} : Ran{};
}

Bytes read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

TEST(SortBinaryTest, HelpListsTheOptions) {
  const Ran r = run_sort("--help");
  EXPECT_EQ(r.rc, 0);
  for (const char* flag : {"--mode", "--algo", "--records", "--bytes", "--seed", "--threads",
                           "--budget", "--server", "--registry", "--token-file", "--output",
                           "--fault-mode", "--version"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag << " missing from:\n" << r.out;
  }
}

TEST(SortBinaryTest, BadOptionsExitTwoSayingWhy) {
  const std::pair<const char*, const char*> cases[] = {
      {"--records 0", "--records"},
      {"--mode swap", "--mode"},
      {"--algo bubble", "--algo"},
      {"--bytes 99", "at least one record"},
      {"--records 10 --bytes 1000", "excludes"},
      {"--threads 0", "--threads"},
      {"--budget 100k", "budget must be >= 1 MiB"},
      {"--run-bytes 1000", "a run must be at least"},
      {"--mode plain --server tcp://127.0.0.1:1", "--mode far only"},
      {"--fault-mode sometimes", "--fault-mode"},
      {"--token-file /nonexistent/token", "--token-file"},
      {"--no-such-flag", "no-such-flag"},
  };
  for (const auto& [args, why] : cases) {
    const Ran r = run_sort(args);
    EXPECT_EQ(r.rc, 2) << args << ":\n" << r.out;
    EXPECT_NE(r.out.find(why), std::string::npos) << args << " should say " << why << ":\n"
                                                  << r.out;
  }
}

TEST(SortBinaryTest, BytesAreRoundedDownToWholeRecords) {
  const Ran r = run_sort("--mode plain --bytes 1m --budget 1m -t 1");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("\"records\":10485,\"bytes\":1048500,"), std::string::npos) << r.out;
}

// The commands of docs/sort.md ("How to run it"), with the test's memserver and files.
TEST_F(SortTest, BinarySortsForRealAndPlainModeAgrees) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("farmem_sort_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string token = (dir / "token").string();
  std::ofstream(token) << test::kToken << "\n";
  const std::string far_out = (dir / "sorted.dat").string();
  const std::string plain_out = (dir / "sorted-plain.dat").string();

  const Ran far = run_sort("--server " + url_ + " --token-file " + token +
                           " --records 320000 --budget 4m --seed 42 -o " + far_out);
  ASSERT_EQ(far.rc, 0) << far.out;
  EXPECT_NE(far.out.find("\"records\":320000"), std::string::npos) << far.out;
  EXPECT_NE(far.out.find("\"sorted\":true"), std::string::npos) << far.out;
  EXPECT_NE(far.out.find("\"checksum_match\":true"), std::string::npos) << far.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(far.out, m, std::regex("\"bytes_read\":(\\d+)"))) << far.out;
  EXPECT_GE(std::stoull(m[1]), 32'000'000ull) << "the records came back from far memory";
  const Bytes far_bytes = read_file(far_out);
  expect_sorted_permutation(far_bytes, 42, 320'000);

  const Ran plain = run_sort("--mode plain --records 320000 --budget 4m --seed 42 -o " + plain_out);
  ASSERT_EQ(plain.rc, 0) << plain.out;
  EXPECT_NE(plain.out.find("\"mode\":\"plain\""), std::string::npos) << plain.out;
  EXPECT_TRUE(read_file(plain_out) == far_bytes) << "plain and far outputs differ";
  std::filesystem::remove_all(dir);
}

// Every "$ farmem-..." line of docs/sort.md, run as shown but at a twelfth of the size (still
// 12.5 % local), with this test's memserver port, token file and output folder.
TEST(SortDocsTest, DocsCommandsRun) {
  std::ifstream doc(FARMEM_SORT_DOC);
  ASSERT_TRUE(doc.good()) << FARMEM_SORT_DOC;
  std::vector<std::vector<std::string>> memservers, sorts;
  for (std::string line; std::getline(doc, line);) {
    if (line.rfind("$ farmem-", 0) != 0) continue;
    std::istringstream words(line.substr(2));
    std::vector<std::string> argv{std::istream_iterator<std::string>(words), {}};
    (argv[0] == "farmem-memserver" ? memservers : sorts).push_back(argv);
  }
  ASSERT_EQ(memservers.size(), 1u) << "the page starts one memserver";
  ASSERT_GE(sorts.size(), 6u) << "the page shows the far, plain and comparison runs";

  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("farmem_sort_docs_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string token = (dir / "token").string();
  std::ofstream(token) << test::kToken << "\n";
  // The value after `flag` in argv, replaced through `swap` (which sees the old value).
  auto substitute = [](std::vector<std::string>& argv, const std::string& flag, auto swap) {
    for (std::size_t i = 1; i + 1 < argv.size(); ++i) {
      if (argv[i] == flag) argv[i + 1] = swap(argv[i + 1]);
    }
  };
  auto same = [](const std::string& want, const std::string& to) {
    return [want, to](const std::string& v) {
      EXPECT_EQ(v, want) << "docs/sort.md changed: update this test's substitutions";
      return to;
    };
  };
  std::vector<std::string> ms_args(memservers[0].begin() + 1, memservers[0].end());
  if (!ms_args.empty() && ms_args.back() == "&") ms_args.pop_back();
  substitute(ms_args, "--tcp", same("127.0.0.1:7472", "127.0.0.1:0"));
  substitute(ms_args, "--token-file", same("token", token));
  substitute(ms_args, "--capacity", same("2G", "512M"));
  ms_args.insert(ms_args.end(), {"--log-level", "error"});
  test::MemserverProcess ms;
  ASSERT_TRUE(ms.start(ms_args, {"tcp"}).ok());
  const std::string url = "tcp://127.0.0.1:" + std::to_string(ms.port("tcp"));

  for (auto argv : sorts) {
    ASSERT_EQ(argv[0], "farmem-sort");
    substitute(argv, "--server", same("tcp://127.0.0.1:7472", url));
    substitute(argv, "--token-file", same("token", token));
    substitute(argv, "--records", same("4000000", "320000"));
    substitute(argv, "--budget", same("50m", "4m"));
    substitute(argv, "-o", [&](const std::string& v) { return (dir / v).string(); });
    std::string args;
    for (std::size_t i = 1; i < argv.size(); ++i) args += argv[i] + " ";
    const Ran r = run_sort(args);
    EXPECT_EQ(r.rc, 0) << args << ":\n" << r.out;
    EXPECT_NE(r.out.find("\"sorted\":true,\"checksum_match\":true"), std::string::npos)
        << args << ":\n" << r.out;
  }
  // The page says the far and plain outputs are equal: sorted, and the input's records.
  const Bytes far = read_file((dir / "sorted.dat").string());
  EXPECT_TRUE(far == read_file((dir / "sorted-plain.dat").string()));
  expect_sorted_permutation(far, 1, 320'000);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace farmem::sort
