// What farmemctl asks memservers: their stats and open sessions, and one client's far
// footprint summed from them. Where the list of memservers comes from (URLs today, a
// registry later) is the caller's business: everything here takes a list of URLs.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "farmem/status.h"
#include "transport/proto/wire.h"
#include "transport/tcp/tls.h"

namespace farmem::ctl {

struct QueryOptions {
  std::string token;                            ///< the memservers' auth token (or tenant secret)
  std::string tenant;                           ///< the tenant to authenticate as ("": anonymous)
  net::TlsClientConfig tls;                     ///< for tls:// URLs
  std::chrono::milliseconds timeout{5000};      ///< connect and each control call
  bool sessions = false;                        ///< also list every server's sessions
  /// farmemctl's own session is labelled this on each server and left out of the results.
  std::string own_label;
};

/// One memserver as farmemctl saw it. `status` not ok: it could not be asked (the rest is 0).
struct ServerReport {
  std::string url;
  Status status;
  proto::ServerStats stats{};                 ///< `sessions` there excludes farmemctl's own
  std::vector<proto::SessionEntry> sessions;  ///< with QueryOptions::sessions, minus our own
};

/// Asks each server in turn (one connection each, closed before the next).
std::vector<ServerReport> query_servers(const std::vector<std::string>& urls,
                                        const QueryOptions& options);

/// One client's far memory on one server: the sessions labelled with its label.
struct Footprint {
  std::string url;
  Status status;                 ///< the server's, when it could not be asked
  std::uint64_t leased_bytes = 0;
  std::uint64_t slabs = 0;
  std::uint64_t sessions = 0;    ///< sessions with the label (normally 0 or 1)
};
/// Sums, per server, the sessions whose label is exactly `label`.
std::vector<Footprint> footprint(const std::vector<ServerReport>& reports,
                                 std::string_view label);

std::string_view label_of(const proto::SessionEntry& e);
/// "1.5 GiB", "64.0 MiB", "512 B".
std::string human_bytes(std::uint64_t bytes);

}  // namespace farmem::ctl
