// Where a registry lives: "etcd://H1:P1[,H2:P2...][/PREFIX]", parsed without any I/O.
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
};

/// "HOST:PORT", "[V6]:PORT" for an IPv6 host: how errors and logs name an endpoint.
std::string to_string(const EtcdEndpoint& e);

/// Endpoints one registry URL may list: a cluster rarely has more than 5 or 7 members, and
/// every dead one tried costs a share of a call's deadline, so a longer list is a mistake.
inline constexpr std::size_t kMaxEndpoints = 16;

/// Where a registry lives: "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]".
struct RegistryAddress {
  std::vector<EtcdEndpoint> endpoints;  ///< 1..kMaxEndpoints, distinct, in the URL's order
  std::string prefix;  ///< key prefix of the memservers' records, "/" at both ends
};

/// The prefix used when a registry URL names none.
inline constexpr std::string_view kDefaultPrefix = "/farmem/memservers/";

/// Parses "etcd://HOST:PORT", "etcd://HOST:PORT/PREFIX", "etcd://[V6]:PORT/PREFIX" and
/// comma-separated lists of members ("etcd://h1:2379,h2:2379,[::1]:2379/PREFIX").
/// kInvalidArgument with the reason for anything else: an empty member, a bad port, a member
/// listed twice, more than kMaxEndpoints.
Result<RegistryAddress> parse_registry_url(std::string_view url);

}  // namespace farmem::registry
