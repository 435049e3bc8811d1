// farmem-kvload: a memcached load generator that checks every value it reads. Flags only;
// the run is runner.h. One JSON object on stdout, progress lines on stderr.
//
// Exit status: 0 done; 1 the run failed (refused, closed, no reply within --timeout, a reply
// out of step: the reason on stderr, no JSON); 3 done but some get returned a value never
// written for its key ("wrong" > 0); CLI11's codes for bad flags.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/kvload/runner.h"
#include "farmem/farmem.h"

namespace {

using farmem::kvload::LoadOptions;
using farmem::kvload::OpStats;
using farmem::kvload::Report;
using Json = nlohmann::ordered_json;

constexpr int kExitFailed = 1;
constexpr int kExitWrong = 3;

// "HOST:PORT" (or "[V6]:PORT", or "HOST" for port 11211) into the options.
bool parse_server(const std::string& s, LoadOptions& o) {
  std::string host = s, port;
  if (!s.empty() && s[0] == '[') {
    const auto close = s.find(']');
    if (close == std::string::npos) return false;
    host = s.substr(1, close - 1);
    if (close + 1 < s.size()) {
      if (s[close + 1] != ':') return false;
      port = s.substr(close + 2);
    }
  } else if (const auto colon = s.rfind(':'); colon != std::string::npos) {
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  o.host = host;
  if (port.empty()) return s.find(':') == std::string::npos || s[0] == '[';
  try {
    const unsigned long p = std::stoul(port);
    if (p == 0 || p > 65535) return false;
    o.port = static_cast<std::uint16_t>(p);
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

// "N" or "MIN-MAX" bytes.
bool parse_sizes(const std::string& s, LoadOptions& o) {
  try {
    const auto dash = s.find('-');
    o.value_min = static_cast<std::uint32_t>(std::stoul(s.substr(0, dash)));
    o.value_max = dash == std::string::npos
                      ? o.value_min
                      : static_cast<std::uint32_t>(std::stoul(s.substr(dash + 1)));
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

Json latency_us(const farmem::kvload::Histogram& h) {
  const auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
  return Json{{"p50", us(h.percentile(0.50))},   {"p99", us(h.percentile(0.99))},
              {"p999", us(h.percentile(0.999))}, {"mean", h.mean() / 1000.0},
              {"max", us(h.max())},              {"count", h.count()}};
}

Json report_json(const LoadOptions& o, const std::string& workload, const Report& r) {
  const OpStats& m = r.measured;
  farmem::kvload::Histogram all = m.get_ns;
  all.merge(m.set_ns);
  const std::uint64_t ops = m.gets + m.sets;
  Json j;
  j["server"] = o.host + ":" + std::to_string(o.port);
  j["protocol"] = o.protocol == farmem::kvload::Protocol::kBinary ? "binary" : "text";
  j["workload"] = workload;
  j["read_ratio"] = o.read_ratio;
  j["distribution"] = o.dist == farmem::kvload::KeyDist::kZipf ? "zipf" : "uniform";
  if (o.dist == farmem::kvload::KeyDist::kZipf) j["zipf_theta"] = o.zipf_theta;
  j["keys"] = o.keys;
  j["value_min"] = o.value_min;
  j["value_max"] = o.value_max;
  j["threads"] = r.threads;
  j["connections"] = o.connections;
  j["pipeline"] = o.pipeline;
  j["load"] = Json{{"keys", o.load ? o.keys : 0}, {"seconds", r.load_s},
                   {"errors", r.load.errors}};
  j["warmup_ops"] = r.warmup.gets + r.warmup.sets;
  j["seconds"] = r.measured_s;
  j["ops"] = ops;
  j["ops_per_sec"] = r.measured_s > 0 ? static_cast<double>(ops) / r.measured_s : 0.0;
  j["gets"] = m.gets;
  j["sets"] = m.sets;
  j["hits"] = m.hits;
  j["misses"] = m.misses;
  j["hit_ratio"] = m.gets ? static_cast<double>(m.hits) / static_cast<double>(m.gets) : 0.0;
  j["errors"] = m.errors;
  if (!m.first_error.empty()) j["first_error"] = m.first_error;
  j["wrong"] = r.wrong_total();
  j["latency_us"] = latency_us(all);
  j["get_latency_us"] = latency_us(m.get_ns);
  j["set_latency_us"] = latency_us(m.set_ns);
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"farmem-kvload: a memcached load generator (text and binary protocols, YCSB "
               "mixes, Zipf keys) that checks every value it reads back.\n"
               "Prints one JSON object on stdout; progress on stderr."};
  LoadOptions o;
  std::string server = "127.0.0.1:11211", protocol = "text", workload = "B", dist = "zipf";
  std::string sizes = "100";
  double read_ratio = -1;
  app.add_option("-s,--server", server, "memcached server, HOST:PORT")->capture_default_str();
  app.add_option("-P,--protocol", protocol, "text or binary")
      ->check(CLI::IsMember({"text", "binary"}))->capture_default_str();
  app.add_option("-w,--workload", workload,
                 "YCSB mix: A (50 % reads, 50 % updates), B (95/5), C (reads only)")
      ->check(CLI::IsMember({"A", "B", "C", "a", "b", "c"}))->capture_default_str();
  app.add_option("-r,--read-ratio", read_ratio, "Share of gets, 0 to 1 (overrides --workload)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("-d,--distribution", dist, "Key popularity: zipf (scrambled, as YCSB) or uniform")
      ->check(CLI::IsMember({"zipf", "uniform"}))->capture_default_str();
  app.add_option("--zipf-theta", o.zipf_theta, "Zipf skew, 0 <= theta < 1")
      ->capture_default_str();
  app.add_option("-k,--keys", o.keys, "Distinct keys")->capture_default_str();
  app.add_option("--key-prefix", o.key_prefix, "Keys are PREFIX + index")->capture_default_str();
  app.add_option("-v,--value-size", sizes,
                 "Value bytes: N, or MIN-MAX for lengths uniform in the range (at least 24)")
      ->capture_default_str();
  app.add_option("-t,--threads", o.threads, "Worker threads (each an epoll loop)")
      ->capture_default_str();
  app.add_option("-c,--connections", o.connections, "Connections in all, spread over threads")
      ->capture_default_str();
  app.add_option("-p,--pipeline", o.pipeline, "Requests outstanding per connection")
      ->capture_default_str();
  app.add_flag("--load,!--no-load", o.load, "Set every key once before the run (default on)");
  app.add_option("--warmup", o.warmup_s, "Seconds of unmeasured requests after the load")
      ->capture_default_str();
  auto* dur = app.add_option("--duration", o.duration_s, "Measured seconds")
                  ->capture_default_str();
  app.add_option("-n,--ops", o.ops, "Measured operations (instead of --duration)")
      ->excludes(dur);
  app.add_option("--timeout", o.timeout_s,
                 "Seconds to wait for a connect or any one reply before giving up")
      ->capture_default_str();
  app.add_option("--progress", o.progress_s, "Seconds between progress lines (0: none)")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the key and operation choices")
      ->capture_default_str();
  app.set_version_flag("--version", std::string("farmem-kvload ") + farmem::version());
  CLI11_PARSE(app, argc, argv);

  if (!parse_server(server, o)) {
    std::fprintf(stderr, "farmem-kvload: --server %s: expected HOST:PORT\n", server.c_str());
    return kExitFailed;
  }
  if (!parse_sizes(sizes, o)) {
    std::fprintf(stderr, "farmem-kvload: --value-size %s: expected N or MIN-MAX\n",
                 sizes.c_str());
    return kExitFailed;
  }
  o.protocol = protocol == "binary" ? farmem::kvload::Protocol::kBinary
                                    : farmem::kvload::Protocol::kText;
  o.dist = dist == "uniform" ? farmem::kvload::KeyDist::kUniform : farmem::kvload::KeyDist::kZipf;
  workload[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(workload[0])));
  o.read_ratio = workload == "A" ? 0.5 : workload == "B" ? 0.95 : 1.0;
  if (read_ratio >= 0) {
    o.read_ratio = read_ratio;
    workload = "custom";
  }
  auto r = farmem::kvload::run_load(o);
  if (!r.ok()) {
    std::fprintf(stderr, "farmem-kvload: %s\n", r.status().to_string().c_str());
    return kExitFailed;
  }
  std::printf("%s\n", report_json(o, workload, *r).dump().c_str());
  if (r->wrong_total() > 0) {
    std::fprintf(stderr, "farmem-kvload: %llu gets returned a value never written for their key\n",
                 static_cast<unsigned long long>(r->wrong_total()));
    return kExitWrong;
  }
  return 0;
}
