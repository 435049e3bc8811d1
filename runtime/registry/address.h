// Where a registry lives: "etcd://H1:P1[,H2:P2...][/PREFIX]", parsed without any I/O.
// A member written "https://HOST:PORT" is reached over TLS ("http://HOST:PORT" and a bare
// "HOST:PORT" are plain http); the members of one URL all use the same scheme, so that a
// fail-over never moves the registry's traffic (and its client certificate's use) off TLS.
//
// Several endpoints name members of one etcd cluster (a production etcd has three): the
// client (etcd_client.h) uses one at a time and moves to the next when it does not answer.
// They are listed in the URL rather than found through etcd's member list because the
// member list is exactly what an unreachable first member cannot give.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "farmem/status.h"

namespace farmem::registry {

/// One etcd member's client address.
struct EtcdEndpoint {
  std::string host;  ///< a name, an IPv4 address or an IPv6 address (without brackets)
  std::uint16_t port = 0;
  bool tls = false;  ///< https: written "https://HOST:PORT" (see etcd_client.h for the files)
};

/// "HOST:PORT", "[V6]:PORT" for an IPv6 host, with "https://" in front for a TLS endpoint:
/// how errors and logs name an endpoint (and how a registry URL writes it).
std::string to_string(const EtcdEndpoint& e);

/// Endpoints one registry URL may list: a cluster rarely has more than 5 or 7 members, and
/// every dead one tried costs a share of a call's deadline, so a longer list is a mistake.
inline constexpr std::size_t kMaxEndpoints = 16;

/// Where a registry lives: "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]".
struct RegistryAddress {
  /// 1..kMaxEndpoints, distinct, in the URL's order, all https or all plain http.
  std::vector<EtcdEndpoint> endpoints;
  std::string prefix;  ///< key prefix of the memservers' records, "/" at both ends
};

/// The prefix used when a registry URL names none.
inline constexpr std::string_view kDefaultPrefix = "/farmem/memservers/";

/// Parses "etcd://HOST:PORT", "etcd://HOST:PORT/PREFIX", "etcd://[V6]:PORT/PREFIX" and
/// comma-separated lists of members ("etcd://h1:2379,h2:2379,[::1]:2379/PREFIX"); each member
/// may carry a scheme, "https://" for TLS ("etcd://https://h1:2379,https://h2:2379/PREFIX").
/// kInvalidArgument with the reason for anything else: an empty member, a bad port, a member
/// listed twice, more than kMaxEndpoints, members mixing http and https.
Result<RegistryAddress> parse_registry_url(std::string_view url);

}  // namespace farmem::registry
