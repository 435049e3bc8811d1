#include "memserver/ctl/query.h"

#include <algorithm>
#include <cstdio>

#include "transport/connect.h"
#include "transport/transport.h"

namespace farmem::ctl {

namespace {

ServerReport query_one(const std::string& url, const QueryOptions& o) {
  ServerReport r;
  r.url = url;
  transport::ConnectOptions co;
  co.token = o.token;
  co.tenant = o.tenant;
  co.tls = o.tls;
  co.connect_timeout = o.timeout;
  co.control_timeout = o.timeout;
  auto conn = transport::connect(url, co);
  if (!conn.ok()) {
    r.status = conn.status();
    return r;
  }
  if (!o.own_label.empty()) {
    // Best effort: an older memserver takes no label (our session is then counted as a client).
    (void)transport::set_label(**conn, o.own_label, o.timeout);
  }
  auto stats = transport::server_stats(**conn, o.timeout);
  if (!stats.ok()) {
    r.status = stats.status();
    return r;
  }
  r.stats = *stats;
  if (r.stats.sessions > 0) --r.stats.sessions;  // this farmemctl's own session
  if (o.sessions) {
    auto list = transport::list_sessions(**conn, o.timeout);
    if (!list.ok()) {
      r.status = list.status();
      return r;
    }
    for (const auto& e : *list) {
      if (o.own_label.empty() || label_of(e) != o.own_label) r.sessions.push_back(e);
    }
  }
  return r;
}

}  // namespace

std::vector<ServerReport> query_servers(const std::vector<std::string>& urls,
                                        const QueryOptions& options) {
  std::vector<ServerReport> out;
  out.reserve(urls.size());
  for (const auto& url : urls) out.push_back(query_one(url, options));
  return out;
}

std::vector<Footprint> footprint(const std::vector<ServerReport>& reports,
                                 std::string_view label) {
  std::vector<Footprint> out;
  for (const auto& r : reports) {
    Footprint f;
    f.url = r.url;
    f.status = r.status;
    for (const auto& e : r.sessions) {
      if (label_of(e) != label) continue;
      f.leased_bytes += e.leased_bytes;
      f.slabs += e.slabs;
      ++f.sessions;
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::string_view label_of(const proto::SessionEntry& e) {
  return {e.label, std::min<std::size_t>(e.label_len, sizeof e.label)};
}

std::string human_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 5) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  return buf;
}

}  // namespace farmem::ctl
