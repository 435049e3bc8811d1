// farmemctl: an operator's view of farmem memservers.
//   farmemctl servers URL...                     capacity, use and clients of each memserver
//   farmemctl sessions URL...                    every client session, its label and lease
//   farmemctl footprint --client LABEL URL...    one runtime's far memory on each server
// Memservers are named by URL (tcp:// or rdma://). Exit status: 0 when every server
// answered (and, for footprint, the client was found), 1 otherwise, 2 on bad usage.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "farmem/farmem.h"
#include "memserver/ctl/query.h"

namespace {

using farmem::ctl::Footprint;
using farmem::ctl::ServerReport;
using farmem::ctl::human_bytes;
using nlohmann::json;

std::uint64_t free_bytes(const farmem::proto::ServerStats& s) {
  return s.capacity_bytes - std::min(s.capacity_bytes, s.used_bytes);
}

int print_servers(const std::vector<ServerReport>& reports, bool as_json) {
  int rc = 0;
  json all = json::array();
  if (!as_json) {
    std::printf("%-32s %12s %12s %12s %6s %8s\n", "SERVER", "CAPACITY", "USED", "FREE",
                "SLABS", "CLIENTS");
  }
  for (const auto& r : reports) {
    if (!r.status.ok()) rc = 1;
    if (as_json) {
      json j = {{"url", r.url}, {"ok", r.status.ok()}};
      if (!r.status.ok()) j["error"] = r.status.to_string();
      else j.update({{"capacity_bytes", r.stats.capacity_bytes}, {"used_bytes", r.stats.used_bytes},
                     {"free_bytes", free_bytes(r.stats)}, {"slabs", r.stats.slabs},
                     {"clients", r.stats.sessions}});
      all.push_back(j);
    } else if (!r.status.ok()) {
      std::printf("%-32s unreachable: %s\n", r.url.c_str(), r.status.to_string().c_str());
    } else {
      std::printf("%-32s %12s %12s %12s %6llu %8llu\n", r.url.c_str(),
                  human_bytes(r.stats.capacity_bytes).c_str(), human_bytes(r.stats.used_bytes).c_str(),
                  human_bytes(free_bytes(r.stats)).c_str(),
                  static_cast<unsigned long long>(r.stats.slabs),
                  static_cast<unsigned long long>(r.stats.sessions));
    }
  }
  if (as_json) std::cout << all.dump() << "\n";
  return rc;
}

int print_sessions(const std::vector<ServerReport>& reports, bool as_json) {
  int rc = 0;
  json all = json::array();
  if (!as_json) std::printf("%-32s %8s %-48s %12s %6s\n", "SERVER", "SESSION", "CLIENT", "LEASED", "SLABS");
  for (const auto& r : reports) {
    if (!r.status.ok()) {
      rc = 1;
      if (as_json) all.push_back({{"url", r.url}, {"ok", false}, {"error", r.status.to_string()}});
      else std::printf("%-32s unreachable: %s\n", r.url.c_str(), r.status.to_string().c_str());
      continue;
    }
    for (const auto& e : r.sessions) {
      const std::string label(farmem::ctl::label_of(e));
      if (as_json) {
        all.push_back({{"url", r.url}, {"ok", true}, {"session", e.session_id}, {"client", label},
                       {"leased_bytes", e.leased_bytes}, {"slabs", e.slabs}});
      } else {
        std::printf("%-32s %8llu %-48s %12s %6u\n", r.url.c_str(),
                    static_cast<unsigned long long>(e.session_id),
                    label.empty() ? "-" : label.c_str(), human_bytes(e.leased_bytes).c_str(), e.slabs);
      }
    }
  }
  if (as_json) std::cout << all.dump() << "\n";
  return rc;
}

int print_footprint(const std::vector<Footprint>& fps, const std::string& label, bool as_json) {
  int rc = 0;
  std::uint64_t total = 0, slabs = 0, found = 0;
  json per = json::array();
  if (!as_json) {
    std::printf("client %s\n%-32s %12s %6s %8s\n", label.c_str(), "SERVER", "LEASED", "SLABS",
                "SESSIONS");
  }
  for (const auto& f : fps) {
    if (!f.status.ok()) rc = 1;
    total += f.leased_bytes;
    slabs += f.slabs;
    found += f.sessions;
    if (as_json) {
      json j = {{"url", f.url}, {"ok", f.status.ok()}, {"leased_bytes", f.leased_bytes},
                {"slabs", f.slabs}, {"sessions", f.sessions}};
      if (!f.status.ok()) j["error"] = f.status.to_string();
      per.push_back(j);
    } else if (!f.status.ok()) {
      std::printf("%-32s unreachable: %s\n", f.url.c_str(), f.status.to_string().c_str());
    } else {
      std::printf("%-32s %12s %6llu %8llu\n", f.url.c_str(), human_bytes(f.leased_bytes).c_str(),
                  static_cast<unsigned long long>(f.slabs),
                  static_cast<unsigned long long>(f.sessions));
    }
  }
  if (as_json) {
    std::cout << json{{"client", label}, {"servers", per}, {"leased_bytes", total},
                      {"slabs", slabs}, {"sessions", found}}.dump() << "\n";
  } else {
    std::printf("%-32s %12s %6llu %8llu\n", "total", human_bytes(total).c_str(),
                static_cast<unsigned long long>(slabs), static_cast<unsigned long long>(found));
  }
  if (found == 0) {
    std::fprintf(stderr, "farmemctl: no session labelled '%s' on the servers asked\n", label.c_str());
    rc = 1;
  }
  return rc;
}

std::string own_label() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '?';
  std::string l = "farmemctl:" + std::to_string(getpid()) + "@" + host;
  l.resize(std::min(l.size(), farmem::proto::kMaxLabelBytes));
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"farmemctl: capacity, use and clients of farmem memservers, and one runtime's "
               "far footprint on each"};
  app.set_version_flag("--version", std::string("farmemctl ") + farmem::version());
  app.require_subcommand(1);
  std::string token, token_file, tenant, client;
  int timeout_ms = 5000;
  bool as_json = false;
  std::vector<std::string> urls;
  auto* tok = app.add_option("--token", token,
                             "The memservers' auth token, or the --tenant's secret (prefer "
                             "--token-file)");
  app.add_option("--token-file", token_file, "Read the secret from the first line of FILE")
      ->excludes(tok)->check(CLI::ExistingFile);
  app.add_option("--tenant", tenant,
                 "Authenticate as this tenant of the memservers' --tenants file (it sees only "
                 "its own sessions); default: the anonymous tenant of --token");
  std::string tls_ca, tls_cert, tls_key;
  app.add_option("--tls-ca", tls_ca,
                 "For tls:// URLs: the CA file the memservers' certificates chain to (default: "
                 "the system's trust store)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", tls_cert,
                 "For tls:// URLs: this client's certificate, for memservers that require one")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", tls_key, "The private key of --tls-cert")->check(CLI::ExistingFile);
  app.add_option("--timeout-ms", timeout_ms, "Deadline of connecting and of each request")
      ->capture_default_str()->check(CLI::Range(1, 600000));
  app.add_flag("--json", as_json, "One JSON document on stdout instead of a table");
  // Memservers come from URLs; a registry (etcd) source would fill the same list.
  auto* servers = app.add_subcommand("servers", "Capacity, used and free bytes, slabs and clients of each memserver");
  auto* sessions = app.add_subcommand("sessions", "Every client session of each memserver: its label and lease");
  auto* fp = app.add_subcommand("footprint", "One client's far memory on each memserver, by its label (RuntimeOptions::client_label, default PID@HOST)");
  fp->add_option("--client", client, "The client's label")->required();
  for (auto* sub : {servers, sessions, fp}) {
    sub->add_option("urls", urls, "Memserver URLs: tcp://HOST:PORT, tls://HOST:PORT or rdma://HOST:PORT")->required();
  }
  CLI11_PARSE(app, argc, argv);

  if (!token_file.empty()) {
    std::ifstream in(token_file);
    if (!in || !std::getline(in, token) || token.empty()) {
      std::fprintf(stderr, "farmemctl: --token-file %s: cannot read a token from it\n", token_file.c_str());
      return 2;
    }
  }
  farmem::ctl::QueryOptions qo;
  qo.token = token;
  qo.tenant = tenant;
  qo.tls = {tls_ca, tls_cert, tls_key};
  qo.timeout = std::chrono::milliseconds(timeout_ms);
  qo.sessions = !servers->parsed();
  qo.own_label = own_label();
  const auto reports = farmem::ctl::query_servers(urls, qo);
  if (servers->parsed()) return print_servers(reports, as_json);
  if (sessions->parsed()) return print_sessions(reports, as_json);
  return print_footprint(farmem::ctl::footprint(reports, client), client, as_json);
}
