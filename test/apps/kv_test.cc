// farmem-kv's protocol suite: the server in-process on 127.0.0.1:0, driven over TCP with
// raw text and binary requests (every command, noreply, malformed input, multi-gets across
// far and local items, cas conflicts, eviction when far memory is full, over-long values).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>

#include "kv/kv.h"
#include "test/apps/kv_client.h"

namespace farmem::kv {
namespace {

using test::KvClient;

std::map<std::string, std::string> stats_of(KvServer& kv) {
  std::map<std::string, std::string> m;
  for (auto& [k, v] : kv.stats()) m[k] = v;
  return m;
}
std::uint64_t stat(KvServer& kv, const std::string& name) {
  auto m = stats_of(kv);
  return m.count(name) ? std::stoull(m[name]) : ~0ull;
}

// A page-cache budget of 1 MiB: items beyond it live only in far memory.
constexpr std::uint64_t kSmallBudget = 1u << 20;

KvOptions small_options(std::uint64_t far_capacity = 64u << 20) {
  KvOptions o;
  o.runtime.cache_budget_bytes = kSmallBudget;
  o.runtime.local_buffer_bytes = 1u << 20;
  o.runtime.slab_bytes = 8u << 20;
  o.store.far_capacity = far_capacity;
  o.store.item_max = 64u << 10;
  o.server.port = 0;
  o.server.threads = 2;
  return o;
}

class KvTest : public ::testing::Test {
 protected:
  void SetUp() override { open(small_options()); }
  void open(KvOptions o) {
    kv_.reset();
    auto kv = KvServer::open(std::move(o));
    ASSERT_TRUE(kv.ok()) << kv.status().to_string();
    kv_ = std::move(*kv);
  }
  std::unique_ptr<KvClient> client() {
    auto c = std::make_unique<KvClient>(kv_->port());
    EXPECT_TRUE(c->connected());
    return c;
  }
  std::unique_ptr<KvServer> kv_;
};

std::string set_cmd(const std::string& verb, const std::string& key, const std::string& value,
                    std::uint32_t flags = 0, const std::string& extra = "") {
  return verb + " " + key + " " + std::to_string(flags) + " 0 " + std::to_string(value.size()) +
         extra + "\r\n" + value + "\r\n";
}

std::string value_for(std::size_t i, std::size_t len) {
  std::string v(len, '\0');
  std::uint64_t x = i * 0x9e3779b97f4a7c15ull + 1;
  for (auto& ch : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    ch = static_cast<char>('a' + x % 26);
  }
  return v;
}

// ---- text protocol ----

TEST_F(KvTest, TextStorageCommands) {
  auto c = client();
  EXPECT_EQ(c->cmd(set_cmd("set", "k", "hello", 42)), "STORED\r\n");
  c->send("get k\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE k 42 5\r\nhello\r\nEND\r\n");
  EXPECT_EQ(c->cmd(set_cmd("add", "k", "x")), "NOT_STORED\r\n");
  EXPECT_EQ(c->cmd(set_cmd("add", "k2", "x")), "STORED\r\n");
  EXPECT_EQ(c->cmd(set_cmd("replace", "nope", "x")), "NOT_STORED\r\n");
  EXPECT_EQ(c->cmd(set_cmd("replace", "k2", "yy", 7)), "STORED\r\n");
  EXPECT_EQ(c->cmd(set_cmd("append", "k", " world")), "STORED\r\n");
  EXPECT_EQ(c->cmd(set_cmd("prepend", "k", ">> ")), "STORED\r\n");
  EXPECT_EQ(c->cmd(set_cmd("append", "nope", "x")), "NOT_STORED\r\n");
  EXPECT_EQ(c->cmd(set_cmd("prepend", "nope", "x")), "NOT_STORED\r\n");
  c->send("get k k2 nope\r\n");
  // append/prepend keep the item's flags
  EXPECT_EQ(c->read_until("END\r\n"),
            "VALUE k 42 14\r\n>> hello world\r\nVALUE k2 7 2\r\nyy\r\nEND\r\n");
  EXPECT_EQ(c->cmd(set_cmd("set", "empty", "")), "STORED\r\n");
  c->send("get empty\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE empty 0 0\r\n\r\nEND\r\n");
  // binary-safe values: CR, LF and NUL inside
  const std::string bin("a\r\nb\0c\r\n", 8);
  EXPECT_EQ(c->cmd(set_cmd("set", "bin", bin)), "STORED\r\n");
  c->send("get bin\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE bin 0 8\r\n" + bin + "\r\nEND\r\n");
}

TEST_F(KvTest, TextCasConflicts) {
  auto c = client();
  EXPECT_EQ(c->cmd(set_cmd("set", "c", "v1")), "STORED\r\n");
  c->send("gets c\r\n");
  const std::string r = c->read_until("END\r\n");
  ASSERT_EQ(r.rfind("VALUE c 0 2 ", 0), 0u) << r;
  const std::string cas = r.substr(12, r.find("\r\n") - 12);
  // another client changes it: the first client's cas now conflicts
  auto other = client();
  EXPECT_EQ(other->cmd(set_cmd("cas", "c", "v2", 0, " " + cas)), "STORED\r\n");
  EXPECT_EQ(c->cmd(set_cmd("cas", "c", "v3", 0, " " + cas)), "EXISTS\r\n");
  EXPECT_EQ(c->cmd(set_cmd("cas", "missing", "v", 0, " 1")), "NOT_FOUND\r\n");
  c->send("gets c\r\n");
  const std::string r2 = c->read_until("END\r\n");
  EXPECT_NE(r2.find("\r\nv2\r\n"), std::string::npos) << r2;
  EXPECT_EQ(r2.find(" " + cas + "\r\n"), std::string::npos) << "cas must change on store";
  EXPECT_EQ(stat(*kv_, "cas_hits"), 1u);
  EXPECT_EQ(stat(*kv_, "cas_badval"), 1u);
  EXPECT_EQ(stat(*kv_, "cas_misses"), 1u);
}

TEST_F(KvTest, TextDeleteIncrDecrTouchGat) {
  auto c = client();
  EXPECT_EQ(c->cmd(set_cmd("set", "n", "10")), "STORED\r\n");
  EXPECT_EQ(c->cmd("incr n 5\r\n"), "15\r\n");
  EXPECT_EQ(c->cmd("decr n 100\r\n"), "0\r\n");  // stops at 0
  EXPECT_EQ(c->cmd(set_cmd("set", "n", "18446744073709551615")), "STORED\r\n");
  EXPECT_EQ(c->cmd("incr n 2\r\n"), "1\r\n");  // wraps at 2^64
  EXPECT_EQ(c->cmd("incr missing 1\r\n"), "NOT_FOUND\r\n");
  EXPECT_EQ(c->cmd("incr n -1\r\n"), "CLIENT_ERROR invalid numeric delta argument\r\n");
  EXPECT_EQ(c->cmd(set_cmd("set", "s", "abc")), "STORED\r\n");
  EXPECT_EQ(c->cmd("incr s 1\r\n"),
            "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
  EXPECT_EQ(c->cmd("delete s\r\n"), "DELETED\r\n");
  EXPECT_EQ(c->cmd("delete s\r\n"), "NOT_FOUND\r\n");
  EXPECT_EQ(c->cmd("touch n 1000\r\n"), "TOUCHED\r\n");
  EXPECT_EQ(c->cmd("touch s 1000\r\n"), "NOT_FOUND\r\n");
  c->send("gat 0 n s\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE n 0 1\r\n1\r\nEND\r\n");
  c->send("gats 0 n\r\n");
  EXPECT_EQ(c->read_until("END\r\n").rfind("VALUE n 0 1 ", 0), 0u);
  // an expiry in the past (negative) expires at once; gat with one expires what it returns
  EXPECT_EQ(c->cmd("touch n -1\r\n"), "TOUCHED\r\n");
  c->send("get n\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "END\r\n");
  EXPECT_EQ(c->cmd("set e 0 -1 1\r\nx\r\n"), "STORED\r\n");
  c->send("get e\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "END\r\n");
}

TEST_F(KvTest, TextFlushAllNowAndDelayed) {
  auto c = client();
  for (int i = 0; i < 50; ++i) EXPECT_EQ(c->cmd(set_cmd("set", "f" + std::to_string(i), "v")), "STORED\r\n");
  EXPECT_EQ(c->cmd("flush_all\r\n"), "OK\r\n");
  c->send("get f0 f49\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "END\r\n");
  EXPECT_EQ(stat(*kv_, "curr_items"), 0u);
  EXPECT_EQ(c->cmd(set_cmd("set", "after", "v")), "STORED\r\n");  // later items survive
  c->send("get after\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE after 0 1\r\nv\r\nEND\r\n");
  EXPECT_EQ(c->cmd("flush_all 2\r\n"), "OK\r\n");
  c->send("get after\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE after 0 1\r\nv\r\nEND\r\n");  // not yet
  // The delayed flush takes effect within ~3 s (whole seconds): poll against a deadline.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::string r;
  while (std::chrono::steady_clock::now() < deadline) {
    c->send("get after\r\n");
    r = c->read_until("END\r\n");
    if (r == "END\r\n") break;
    std::this_thread::yield();
  }
  EXPECT_EQ(r, "END\r\n");
  EXPECT_EQ(c->cmd("flush_all bogus\r\n"), "CLIENT_ERROR bad command line format\r\n");
}

TEST_F(KvTest, TextNoreplyAnswersNothingButErrors) {
  auto c = client();
  c->send(set_cmd("set", "q", "1", 0, " noreply"));
  c->send(set_cmd("add", "q", "2", 0, " noreply"));
  c->send(set_cmd("replace", "q", "3", 0, " noreply"));
  c->send(set_cmd("append", "q", "4", 0, " noreply"));
  c->send(set_cmd("prepend", "q", "5", 0, " noreply"));
  c->send(set_cmd("cas", "q", "6", 0, " 12345 noreply"));
  c->send("incr q 1 noreply\r\ndecr q 2 noreply\r\ntouch q 100 noreply\r\n");
  c->send(set_cmd("set", "d", "x", 0, " noreply"));
  c->send("delete d noreply\r\nflush_all 0 noreply\r\nverbosity 1 noreply\r\n");
  c->send(set_cmd("set", "q2", "7", 0, " noreply"));
  // errors are still reported with noreply: the client could not parse a silent failure
  c->send("incr q2 x noreply\r\n");
  EXPECT_EQ(c->line(), "CLIENT_ERROR invalid numeric delta argument\r\n");
  EXPECT_EQ(c->cmd("version\r\n").rfind("VERSION ", 0), 0u);
  c->send("get q2\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE q2 0 1\r\n7\r\nEND\r\n");
  EXPECT_EQ(stat(*kv_, "cmd_flush"), 1u);
}

TEST_F(KvTest, TextMalformedInputGetsErrorsAndServingGoesOn) {
  auto c = client();
  EXPECT_EQ(c->cmd("bogus\r\n"), "ERROR\r\n");
  EXPECT_EQ(c->cmd("\r\n"), "ERROR\r\n");
  EXPECT_EQ(c->cmd("GET k\r\n"), "ERROR\r\n");  // commands are case-sensitive
  EXPECT_EQ(c->cmd("get\r\n"), "ERROR\r\n");
  EXPECT_EQ(c->cmd("set k 0 0\r\n"), "CLIENT_ERROR bad command line format\r\n");
  EXPECT_EQ(c->cmd("set k x 0 1\r\n"), "CLIENT_ERROR bad command line format\r\n");
  EXPECT_EQ(c->cmd("set k 0 0 -1\r\n"), "CLIENT_ERROR bad command line format\r\n");
  EXPECT_EQ(c->cmd("set k 0 0 99999999999\r\n"), "CLIENT_ERROR bad command line format\r\n");
  const std::string long_key(251, 'k');
  EXPECT_EQ(c->cmd("get " + long_key + "\r\n"), "CLIENT_ERROR bad command line format\r\n");
  EXPECT_EQ(c->cmd(set_cmd("set", long_key, "v")), "CLIENT_ERROR bad command line format\r\n");
  EXPECT_EQ(c->line(), "ERROR\r\n");  // its value line, read as a command
  EXPECT_EQ(c->cmd("set k 0 0 2\r\nabcd\r\n"), "CLIENT_ERROR bad data chunk\r\n");
  EXPECT_EQ(c->line(), "ERROR\r\n");  // the rest of that line
  EXPECT_EQ(c->cmd("delete\r\n").rfind("CLIENT_ERROR bad command line format", 0), 0u);
  EXPECT_EQ(c->cmd("delete a b c\r\n").rfind("CLIENT_ERROR bad command line format", 0), 0u);
  EXPECT_EQ(c->cmd("touch k\r\n"), "ERROR\r\n");
  EXPECT_EQ(c->cmd("touch k x\r\n"), "CLIENT_ERROR invalid exptime argument\r\n");
  EXPECT_EQ(c->cmd("gat x k\r\n"), "CLIENT_ERROR invalid exptime argument\r\n");
  EXPECT_EQ(c->cmd("incr k\r\n"), "ERROR\r\n");
  EXPECT_EQ(c->cmd("verbosity\r\n"), "ERROR\r\n");
  EXPECT_EQ(c->cmd("stats nonsense\r\n"), "ERROR\r\n");
  // the connection still works
  EXPECT_EQ(c->cmd(set_cmd("set", "ok", "1")), "STORED\r\n");
  // a line longer than any command, without its newline, ends that connection only
  auto bad = client();
  bad->send("set " + std::string(kMaxLineBytes + 10, 'x'));
  EXPECT_EQ(bad->line(), "CLIENT_ERROR line too long\r\n");
  EXPECT_TRUE(bad->closed_by_peer());
  // a get that long is read as its keys arrive: one "key" that long is refused, and the
  // connection goes on after its line
  auto lk = client();
  lk->send("get " + std::string(kMaxLineBytes + 10, 'x'));
  EXPECT_EQ(lk->line(), "CLIENT_ERROR bad command line format\r\n");
  lk->send("yyy\r\nversion\r\n");
  EXPECT_EQ(lk->line().rfind("VERSION ", 0), 0u);
  c->send("get ok\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE ok 0 1\r\n1\r\nEND\r\n");
  EXPECT_EQ(stat(*kv_, "farmem_far_errors"), 0u);
}

TEST_F(KvTest, TextOverLongValuesAreRefusedAndSkipped) {
  auto c = client();
  const std::uint64_t max = 64u << 10;  // small_options().store.item_max
  const std::string big(max + 1, 'v');
  // the value is read and dropped, and the next command is understood
  c->send(set_cmd("set", "big", big) + "get big\r\n");
  EXPECT_EQ(c->line(), "SERVER_ERROR object too large for cache\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "END\r\n");
  // key + value counts: exactly the limit fits
  const std::string fits(max - 3, 'w');
  EXPECT_EQ(c->cmd(set_cmd("set", "fit", fits)), "STORED\r\n");
  c->send("get fit\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE fit 0 " + std::to_string(fits.size()) + "\r\n" +
                                          fits + "\r\nEND\r\n");
  // an append that would pass the limit is refused and leaves the item as it was
  EXPECT_EQ(c->cmd(set_cmd("append", "fit", "xy")), "SERVER_ERROR object too large for cache\r\n");
  c->send("get fit\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE fit 0 " + std::to_string(fits.size()) + "\r\n" +
                                          fits + "\r\nEND\r\n");
}

TEST_F(KvTest, MultiGetAcrossFarAndLocalItems) {
  auto c = client();
  // 4 MiB of 2 KiB items behind a 1 MiB cache: most are far only.
  constexpr int kItems = 2048;
  std::string batch;
  for (int i = 0; i < kItems; ++i) {
    batch += set_cmd("set", "m" + std::to_string(i), value_for(i, 2000), i, " noreply");
  }
  c->send(batch);
  EXPECT_EQ(c->cmd("version\r\n").rfind("VERSION ", 0), 0u);
  const auto misses_before = kv_->runtime().cache_stats().misses;
  const auto prefetched_before = stat(*kv_, "farmem_prefetch_items");
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    std::string line = "get";
    std::vector<int> ids;
    for (int k = 0; k < 40; ++k) {
      const int id = static_cast<int>(rng() % (kItems + 100));  // some never stored
      ids.push_back(id);
      line += " m" + std::to_string(id);
    }
    c->send(line + " m" + std::to_string(kItems - 1) + "\r\n");  // a recent one, likely local
    ids.push_back(kItems - 1);
    std::string expect;
    for (int id : ids) {
      if (id >= kItems) continue;
      const std::string v = value_for(id, 2000);
      expect += "VALUE m" + std::to_string(id) + " " + std::to_string(id) + " 2000\r\n" + v +
                "\r\n";
    }
    ASSERT_EQ(c->read_until("END\r\n"), expect + "END\r\n") << "round " << round;
  }
  EXPECT_GT(kv_->runtime().cache_stats().misses, misses_before) << "items came from far";
  // every multi-get was prefetched as one batch
  EXPECT_GE(stat(*kv_, "farmem_prefetch_items") - prefetched_before, 20u * 30u);
  EXPECT_LE(kv_->runtime().cache_stats().resident_bytes, kSmallBudget);
}

TEST_F(KvTest, MultiGetLongerThanALineIsAnsweredAsItArrives) {
  auto c = client();
  // 3000 keys of 60 bytes: a 180 KiB get line, beyond kMaxLineBytes (memcached streams those)
  std::string batch, line = "gets", expect;
  for (int i = 0; i < 3000; ++i) {
    std::string key = "long" + std::to_string(i);
    key += std::string(60 - key.size(), '_');
    if (i % 3 != 0) batch += set_cmd("set", key, std::to_string(i), 0, " noreply");
    line += " " + key;
  }
  c->send(batch);
  EXPECT_EQ(c->cmd("version\r\n").rfind("VERSION ", 0), 0u);
  ASSERT_GT(line.size(), kMaxLineBytes);
  c->send(line.substr(0, line.size() / 2));  // in two parts, split inside a key
  c->send(line.substr(line.size() / 2) + "\r\nget long1" + std::string(55, '_') + "\r\n");
  const std::string r = c->read_until("END\r\n");
  std::size_t values = 0;
  for (std::size_t at = r.find("VALUE "); at != std::string::npos; at = r.find("VALUE ", at + 1)) {
    ++values;
  }
  EXPECT_EQ(values, 2000u);
  EXPECT_NE(r.find("VALUE long2" + std::string(55, '_') + " 0 1 "), std::string::npos);
  EXPECT_EQ(r.find("VALUE long3" + std::string(55, '_') + " "), std::string::npos);
  // the request after it is understood
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE long1" + std::string(55, '_') + " 0 1\r\n1\r\nEND\r\n");
}

TEST_F(KvTest, PipelinedGetsOfManyConnectionsAreBatched) {
  std::vector<std::unique_ptr<KvClient>> cs;
  for (int i = 0; i < 8; ++i) cs.push_back(client());
  std::string batch;
  for (int i = 0; i < 1000; ++i) batch += set_cmd("set", "p" + std::to_string(i), value_for(i, 3000), 0, " noreply");
  cs[0]->send(batch);
  EXPECT_EQ(cs[0]->cmd("version\r\n").rfind("VERSION ", 0), 0u);
  const auto batched_before = stat(*kv_, "farmem_batched_rounds");
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 8; ++i) {
      std::string pipe;
      for (int k = 0; k < 5; ++k) pipe += "get p" + std::to_string((round * 97 + i * 13 + k * 7) % 1000) + "\r\n";
      cs[i]->send(pipe);
    }
    for (int i = 0; i < 8; ++i) {
      for (int k = 0; k < 5; ++k) {
        const int id = (round * 97 + i * 13 + k * 7) % 1000;
        ASSERT_EQ(cs[i]->read_until("END\r\n"), "VALUE p" + std::to_string(id) + " 0 3000\r\n" +
                                                    value_for(id, 3000) + "\r\nEND\r\n");
      }
    }
  }
  EXPECT_GT(stat(*kv_, "farmem_batched_rounds"), batched_before);
}

TEST_F(KvTest, LruEvictionWhenFarMemoryIsFull) {
  open(small_options(/*far_capacity=*/2u << 20));  // 2 MiB of far memory for items
  auto c = client();
  // 1 MiB of 4 KiB-charged items fit; then keep one hot while 6 MiB more go in.
  const std::string v(3000, 'x');
  c->send(set_cmd("set", "hot", v));
  EXPECT_EQ(c->line(), "STORED\r\n");
  for (int i = 0; i < 2000; ++i) {
    ASSERT_EQ(c->cmd(set_cmd("set", "e" + std::to_string(i), v)), "STORED\r\n") << i;
    if (i % 64 == 0) {  // a use moves it to the head of the LRU
      c->send("get hot\r\n");
      ASSERT_EQ(c->read_until("END\r\n"), "VALUE hot 0 3000\r\n" + v + "\r\nEND\r\n");
    }
  }
  const auto st = stats_of(*kv_);
  EXPECT_GT(std::stoull(st.at("evictions")), 1000u);
  EXPECT_LE(std::stoull(st.at("farmem_item_far_bytes")), 2u << 20);
  c->send("get e0 e1999 hot\r\n");
  const std::string r = c->read_until("END\r\n");
  EXPECT_EQ(r.find("VALUE e0 "), std::string::npos) << "the oldest item was evicted";
  EXPECT_NE(r.find("VALUE e1999 "), std::string::npos) << "the newest was kept";
  EXPECT_NE(r.find("VALUE hot "), std::string::npos) << "a recently used one was kept";
  EXPECT_EQ(stat(*kv_, "curr_items") * 4096, stat(*kv_, "farmem_item_far_bytes"));
}

// --plain (StoreOptions::plain_memory): the same server with its items in malloc'd memory,
// the baseline e2e runs under kernel swap. Items read back right, nothing reaches the page
// cache or far memory, and capacity still evicts in LRU order.
TEST_F(KvTest, PlainMemoryStoreServesWithoutFarMemory) {
  auto o = small_options(/*far_capacity=*/2u << 20);
  o.store.plain_memory = true;
  open(o);
  auto c = client();
  const std::string v(3000, 'p');
  c->send(set_cmd("set", "hot", v));
  EXPECT_EQ(c->line(), "STORED\r\n");
  for (int i = 0; i < 2000; ++i) {
    ASSERT_EQ(c->cmd(set_cmd("set", "e" + std::to_string(i), value_for(i, 3000))), "STORED\r\n");
    if (i % 64 == 0) {
      c->send("get hot\r\n");
      ASSERT_EQ(c->read_until("END\r\n"), "VALUE hot 0 3000\r\n" + v + "\r\nEND\r\n");
    }
  }
  c->send("get e0 e1999 hot\r\n");
  const std::string r = c->read_until("END\r\n");
  EXPECT_EQ(r.find("VALUE e0 "), std::string::npos) << "the oldest item was evicted";
  EXPECT_NE(r.find("VALUE e1999 0 3000\r\n" + value_for(1999, 3000)), std::string::npos);
  EXPECT_NE(r.find("VALUE hot "), std::string::npos) << "a recently used one was kept";
  EXPECT_GT(stat(*kv_, "evictions"), 1000u);
  EXPECT_EQ(stat(*kv_, "curr_items") * 4096, stat(*kv_, "farmem_item_far_bytes"));
  // append and incr rewrite records: also in plain memory
  EXPECT_EQ(c->cmd(set_cmd("set", "n", "41")), "STORED\r\n");
  EXPECT_EQ(c->cmd("incr n 1\r\n"), "42\r\n");
  EXPECT_EQ(c->cmd(set_cmd("append", "n", "x")), "STORED\r\n");
  c->send("get n\r\n");
  EXPECT_EQ(c->read_until("END\r\n"), "VALUE n 0 3\r\n42x\r\nEND\r\n");
  const auto cs = kv_->runtime().cache_stats();
  EXPECT_EQ(cs.misses, 0u) << "no item went through the page cache";
  EXPECT_EQ(cs.resident_bytes, 0u);
  EXPECT_EQ(stat(*kv_, "farmem_prefetch_items"), 0u);
}

TEST_F(KvTest, ManyClientsAtOnceReadTheirOwnWrites) {
  constexpr int kClients = 8, kOps = 300;
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      KvClient c(kv_->port());
      for (int i = 0; i < kOps; ++i) {
        const std::string key = "t" + std::to_string(t) + "_" + std::to_string(i % 50);
        const std::string v = value_for(t * 1000 + i, 100 + (i * 37) % 3000);
        if (c.cmd(set_cmd("set", key, v)) != "STORED\r\n") ++wrong;
        c.send("get " + key + "\r\n");
        if (c.read_until("END\r\n") != "VALUE " + key + " 0 " + std::to_string(v.size()) +
                                           "\r\n" + v + "\r\nEND\r\n") {
          ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(stat(*kv_, "curr_items"), kClients * 50u);
}

TEST_F(KvTest, StatsReportMemcachedAndFarmemFigures) {
  auto c = client();
  EXPECT_EQ(c->cmd(set_cmd("set", "a", "1")), "STORED\r\n");
  c->send("get a b\r\n");
  c->read_until("END\r\n");
  c->send("stats\r\n");
  const std::string r = c->read_until("END\r\n");
  for (const char* name : {"pid", "uptime", "curr_connections", "cmd_get", "get_hits",
                           "get_misses", "curr_items", "evictions", "limit_maxbytes",
                           "farmem_cache_hit_ratio", "farmem_item_far_bytes",
                           "farmem_far_bytes_leased", "farmem_prefetch_items",
                           "farmem_fault_p50_ns", "farmem_local_budget_bytes",
                           "farmem_misses_in_flight"}) {
    EXPECT_NE(r.find(std::string("STAT ") + name + " "), std::string::npos) << name;
  }
  EXPECT_NE(r.find("STAT get_hits 1\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("STAT get_misses 1\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("STAT curr_items 1\r\n"), std::string::npos) << r;
  c->send("stats settings\r\n");
  EXPECT_NE(c->read_until("END\r\n").find("STAT item_size_max 65536\r\n"), std::string::npos);
  EXPECT_EQ(c->cmd("stats reset\r\n"), "RESET\r\n");
  EXPECT_EQ(stat(*kv_, "get_hits"), 0u);
}

TEST_F(KvTest, ConnectionsBeyondTheLimitAreRefused) {
  auto o = small_options();
  o.server.max_connections = 2;
  open(o);
  auto a = client(), b = client();
  EXPECT_EQ(a->cmd("version\r\n").rfind("VERSION", 0), 0u);
  EXPECT_EQ(b->cmd("version\r\n").rfind("VERSION", 0), 0u);
  KvClient third(kv_->port());
  EXPECT_EQ(third.line(), "SERVER_ERROR Too many open connections\r\n");
  EXPECT_TRUE(third.closed_by_peer());
  EXPECT_EQ(stat(*kv_, "rejected_connections"), 1u);
  EXPECT_EQ(a->cmd("quit\r\n"), "");  // quit closes without a reply
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (stat(*kv_, "curr_connections") > 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  KvClient fourth(kv_->port());
  EXPECT_EQ(fourth.cmd("version\r\n").rfind("VERSION", 0), 0u);
}

// ---- binary protocol ----

constexpr std::uint8_t kGet = 0x00, kSet = 0x01, kAdd = 0x02, kReplace = 0x03, kDelete = 0x04,
                       kIncr = 0x05, kDecr = 0x06, kQuit = 0x07, kFlush = 0x08, kGetQ = 0x09,
                       kNoop = 0x0a, kVersion = 0x0b, kGetK = 0x0c, kGetKQ = 0x0d,
                       kAppend = 0x0e, kPrepend = 0x0f, kStat = 0x10, kSetQ = 0x11,
                       kAddQ = 0x12, kReplaceQ = 0x13, kDeleteQ = 0x14, kIncrQ = 0x15,
                       kTouch = 0x1c, kGat = 0x1d, kGatQ = 0x1e, kFlushQ = 0x18;

std::string store_extras(std::uint32_t flags, std::uint32_t exptime) {
  std::string e;
  KvClient::put(e, flags, 4);
  KvClient::put(e, exptime, 4);
  return e;
}
std::string arith_extras(std::uint64_t delta, std::uint64_t initial, std::uint32_t exptime) {
  std::string e;
  KvClient::put(e, delta, 8);
  KvClient::put(e, initial, 8);
  KvClient::put(e, exptime, 4);
  return e;
}
std::string u32(std::uint32_t v) {
  std::string e;
  KvClient::put(e, v, 4);
  return e;
}

TEST_F(KvTest, BinaryGetSetAddReplaceDelete) {
  auto c = client();
  c->send(KvClient::frame(kSet, "b", store_extras(9, 0), "value", 0, 77));
  auto r = c->response();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.magic, 0x81);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.opaque, 77u);
  const std::uint64_t cas = r.cas;
  EXPECT_NE(cas, 0u);
  c->send(KvClient::frame(kGet, "b"));
  r = c->response();
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(KvClient::get(r.extras, 0, 4), 9u);
  EXPECT_EQ(r.key, "");
  EXPECT_EQ(r.value, "value");
  EXPECT_EQ(r.cas, cas);
  c->send(KvClient::frame(kGetK, "b"));
  r = c->response();
  EXPECT_EQ(r.key, "b");
  EXPECT_EQ(r.value, "value");
  c->send(KvClient::frame(kGet, "missing"));
  EXPECT_EQ(c->response().status, 0x0001);
  c->send(KvClient::frame(kAdd, "b", store_extras(0, 0), "x"));
  EXPECT_EQ(c->response().status, 0x0002);
  c->send(KvClient::frame(kReplace, "missing", store_extras(0, 0), "x"));
  EXPECT_EQ(c->response().status, 0x0001);
  // set with a stale cas conflicts; with the current one it stores
  c->send(KvClient::frame(kSet, "b", store_extras(0, 0), "v2", cas + 1000));
  EXPECT_EQ(c->response().status, 0x0002);
  c->send(KvClient::frame(kSet, "b", store_extras(0, 0), "v2", cas));
  EXPECT_EQ(c->response().status, 0);
  c->send(KvClient::frame(kAppend, "b", "", "+a"));
  EXPECT_EQ(c->response().status, 0);
  c->send(KvClient::frame(kPrepend, "b", "", "p+"));
  EXPECT_EQ(c->response().status, 0);
  c->send(KvClient::frame(kAppend, "missing", "", "x"));
  EXPECT_EQ(c->response().status, 0x0005);
  c->send(KvClient::frame(kGet, "b"));
  EXPECT_EQ(c->response().value, "p+v2+a");
  c->send(KvClient::frame(kDelete, "b"));
  EXPECT_EQ(c->response().status, 0);
  c->send(KvClient::frame(kDelete, "b"));
  EXPECT_EQ(c->response().status, 0x0001);
}

TEST_F(KvTest, BinaryQuietCommandsAnswerOnlyWhatMatters) {
  auto c = client();
  // quiet stores say nothing on success; a failing one answers; noop flushes the pipeline
  std::string pipe = KvClient::frame(kSetQ, "q1", store_extras(0, 0), "one", 0, 1) +
                     KvClient::frame(kSetQ, "q2", store_extras(0, 0), "two", 0, 2) +
                     KvClient::frame(kAddQ, "q1", store_extras(0, 0), "x", 0, 3) +
                     KvClient::frame(kReplaceQ, "q2", store_extras(0, 0), "TWO", 0, 4) +
                     KvClient::frame(kGetQ, "q1", "", "", 0, 5) +
                     KvClient::frame(kGetQ, "nope", "", "", 0, 6) +
                     KvClient::frame(kGetKQ, "q2", "", "", 0, 7) +
                     KvClient::frame(kDeleteQ, "nope", "", "", 0, 8) +
                     KvClient::frame(kIncrQ, "q1", arith_extras(1, 0, 0), "", 0, 9) +
                     KvClient::frame(kNoop, "", "", "", 0, 10);
  c->send(pipe);
  auto r = c->response();
  EXPECT_EQ(r.opaque, 3u);
  EXPECT_EQ(r.status, 0x0002);  // addq of a present key
  r = c->response();
  EXPECT_EQ(r.opaque, 5u);
  EXPECT_EQ(r.value, "one");
  r = c->response();
  EXPECT_EQ(r.opaque, 7u);
  EXPECT_EQ(r.key, "q2");
  EXPECT_EQ(r.value, "TWO");
  r = c->response();
  EXPECT_EQ(r.opaque, 8u);
  EXPECT_EQ(r.status, 0x0001);  // deleteq of a missing key
  r = c->response();
  EXPECT_EQ(r.opaque, 9u);
  EXPECT_EQ(r.status, 0x0006);  // incrq of "one": non-numeric
  r = c->response();
  EXPECT_EQ(r.opaque, 10u);
  EXPECT_EQ(r.op, kNoop);
  c->send(KvClient::frame(kFlushQ, "") + KvClient::frame(kGet, "q1", "", "", 0, 11));
  r = c->response();
  EXPECT_EQ(r.opaque, 11u);
  EXPECT_EQ(r.status, 0x0001);  // flushed, and flushq said nothing
}

TEST_F(KvTest, BinaryIncrDecrTouchGatFlushVersionStatQuit) {
  auto c = client();
  c->send(KvClient::frame(kIncr, "ctr", arith_extras(5, 100, 0)));  // created at initial
  auto r = c->response();
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(KvClient::get(r.value, 0, 8), 100u);
  c->send(KvClient::frame(kIncr, "ctr", arith_extras(5, 100, 0)));
  EXPECT_EQ(KvClient::get(c->response().value, 0, 8), 105u);
  c->send(KvClient::frame(kDecr, "ctr", arith_extras(1000, 0, 0)));
  EXPECT_EQ(KvClient::get(c->response().value, 0, 8), 0u);
  c->send(KvClient::frame(kIncr, "nocreate", arith_extras(1, 0, 0xffffffffu)));
  EXPECT_EQ(c->response().status, 0x0001);
  c->send(KvClient::frame(kTouch, "ctr", u32(1000)));
  EXPECT_EQ(c->response().status, 0);
  c->send(KvClient::frame(kTouch, "nocreate", u32(1000)));
  EXPECT_EQ(c->response().status, 0x0001);
  c->send(KvClient::frame(kGat, "ctr", u32(0)));
  r = c->response();
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.value, "0");
  c->send(KvClient::frame(kGatQ, "nocreate", u32(0)) + KvClient::frame(kNoop, ""));
  EXPECT_EQ(c->response().op, kNoop);  // gatq of a miss: silent
  c->send(KvClient::frame(kVersion, ""));
  r = c->response();
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.value.rfind("1.6", 0), 0u);
  c->send(KvClient::frame(kStat, ""));
  int stats = 0;
  bool saw_farmem = false;
  for (int i = 0; i < 500; ++i) {
    r = c->response();
    ASSERT_TRUE(r.ok);
    if (r.key.empty()) break;
    ++stats;
    saw_farmem = saw_farmem || r.key == "farmem_cache_hit_ratio";
  }
  EXPECT_GT(stats, 30);
  EXPECT_TRUE(saw_farmem);
  c->send(KvClient::frame(kFlush, ""));
  EXPECT_EQ(c->response().status, 0);
  c->send(KvClient::frame(kGet, "ctr"));
  EXPECT_EQ(c->response().status, 0x0001);
  c->send(KvClient::frame(kQuit, ""));
  EXPECT_EQ(c->response().status, 0);
  EXPECT_TRUE(c->closed_by_peer());
}

TEST_F(KvTest, BinaryMalformedAndOverLongRequests) {
  auto c = client();
  c->send(KvClient::frame(0x7f, "k"));  // an opcode nobody defined
  EXPECT_EQ(c->response().status, 0x0081);
  c->send(KvClient::frame(kSet, "k", "abc", "v"));  // 3 bytes of extras, not 8
  EXPECT_EQ(c->response().status, 0x0004);
  c->send(KvClient::frame(kGet, ""));  // no key
  EXPECT_EQ(c->response().status, 0x0004);
  c->send(KvClient::frame(kGet, std::string(251, 'k')));  // key too long
  EXPECT_EQ(c->response().status, 0x0004);
  // a value over -I: E2BIG, the body skipped, the next request served
  c->send(KvClient::frame(kSet, "big", store_extras(0, 0), std::string((64u << 10) + 1, 'b')) +
          KvClient::frame(kSet, "k", store_extras(0, 0), "ok") + KvClient::frame(kGet, "k"));
  EXPECT_EQ(c->response().status, 0x0003);
  EXPECT_EQ(c->response().status, 0);
  EXPECT_EQ(c->response().value, "ok");
  // key + extras longer than the body: invalid, and the connection survives it
  std::string bad = KvClient::frame(kGet, "kk");
  bad[11] = 1;  // body length 1 < key length 2
  c->send(bad.substr(0, 25));
  EXPECT_EQ(c->response().status, 0x0004);
  c->send(KvClient::frame(kNoop, ""));
  EXPECT_EQ(c->response().op, kNoop);
  // text and binary requests may share a connection
  EXPECT_EQ(c->cmd("version\r\n").rfind("VERSION ", 0), 0u);
}

}  // namespace
}  // namespace farmem::kv
