// A small etcd v3 client over etcd's JSON gateway (grpc-gateway: POST http://HOST:PORT/v3/...,
// protobuf JSON with base64 keys and values and int64 numbers as strings), on libcurl and
// nlohmann-json. It does what the registry needs: leases (grant, keep alive, revoke), put,
// range (one key or a prefix) and delete. Every call has a deadline and returns a Status
// naming the endpoint ("etcd at 127.0.0.1:2379: connection refused"); nothing throws.
//
// Thread safety: calls are serialized on one libcurl handle (which keeps the HTTP connection
// alive between calls), so a client may be shared, but concurrent callers wait for each other.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "farmem/status.h"

namespace farmem::registry {

/// Where a registry lives: "etcd://HOST:PORT[/PREFIX]".
struct RegistryAddress {
  std::string host;    ///< a name, an IPv4 address or an IPv6 address (without brackets)
  std::uint16_t port = 0;
  std::string prefix;  ///< key prefix of the memservers' records, "/" at both ends
};

/// The prefix used when a registry URL names none.
inline constexpr std::string_view kDefaultPrefix = "/farmem/memservers/";

/// Parses "etcd://HOST:PORT", "etcd://HOST:PORT/PREFIX" and "etcd://[V6]:PORT/PREFIX".
/// kInvalidArgument with the reason for anything else.
Result<RegistryAddress> parse_registry_url(std::string_view url);

/// The smallest key greater than every key starting with `prefix` (etcd's range_end for a
/// prefix); "\0" (every key) when the prefix is empty or all 0xff bytes.
std::string prefix_range_end(std::string_view prefix);

struct EtcdOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 2379;
  /// Deadline of one call, connecting included.
  std::chrono::milliseconds timeout{2000};
};

struct KeyValue {
  std::string key;
  std::string value;
  std::int64_t lease = 0;         ///< 0: no lease
  std::int64_t mod_revision = 0;
};

/// A range's keys and the store's revision when it was read.
struct RangeResult {
  std::int64_t revision = 0;
  std::vector<KeyValue> kvs;
};

class EtcdClient {
 public:
  explicit EtcdClient(EtcdOptions options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  /// "HOST:PORT", as errors name it.
  const std::string& endpoint() const { return endpoint_; }

  /// GET /health: ok when etcd answers that it is healthy.
  Status health();
  /// A new lease of `ttl`; returns its id.
  Result<std::int64_t> grant_lease(std::chrono::seconds ttl);
  /// Renews lease `id`; returns its TTL in seconds. kNotFound once it has expired.
  Result<std::int64_t> keep_alive(std::int64_t id);
  /// Revokes lease `id`: its keys go at once. kNotFound when it no longer exists.
  Status revoke_lease(std::int64_t id);
  /// Sets `key` to `value`, attached to `lease` (0: none); returns the new revision.
  /// kNotFound when the lease does not exist (any more).
  Result<std::int64_t> put(std::string_view key, std::string_view value, std::int64_t lease = 0);
  /// The key `key`, or every key starting with it when `prefix`.
  Result<RangeResult> range(std::string_view key, bool prefix);
  /// Deletes `key` (or every key starting with it); returns how many went.
  Result<std::int64_t> delete_range(std::string_view key, bool prefix);

 private:
  /// One POST of `body` (JSON) to `path`; the decoded reply, or the gateway's error.
  Result<nlohmann::json> post(std::string_view path, const nlohmann::json& body);
  /// One request; the reply's HTTP status and body.
  Status perform(std::string_view path, const std::string* body, long& http_status,
                 std::string& reply);

  const EtcdOptions options_;
  const std::string endpoint_;  ///< "host:port"
  const std::string base_url_;  ///< "http://host:port"
  struct CurlDeleter {
    void operator()(void* handle) const;
  };
  /// Guards curl_: an easy handle serves one transfer at a time.
  std::mutex mu_;
  std::unique_ptr<void, CurlDeleter> curl_;
};

}  // namespace farmem::registry
