// A small etcd v3 client over etcd's JSON gateway (grpc-gateway: POST http://HOST:PORT/v3/...,
// protobuf JSON with base64 keys and values and int64 numbers as strings), on libcurl and
// nlohmann-json. It does what the registry needs: leases (grant, keep alive, revoke), put,
// range (one key or a prefix) and delete. Every call has a deadline and returns a Status
// naming the endpoint ("etcd at 127.0.0.1:2379: connection refused"); nothing throws.
//
// Several endpoints (members of one cluster): a call goes to the current endpoint; when that
// one does not answer (connection refused or reset, no reply in time) or answers UNAVAILABLE
// (no leader, stopping), the same call tries the next ones, within the same deadline, and
// the client stays with the endpoint that answered. Errors etcd decided (a lease not found,
// a bad argument) are answers: they are returned, never retried elsewhere. When every
// endpoint failed, the error names each and why: kTimedOut when none answered in time,
// kUnavailable otherwise. A request that timed out may still have been applied by the member
// that got it, so a retried call can run twice (see each call).
//
// https endpoints (address.h): certificate verification, of the chain and of the host name
// against the endpoint's host, is always on; there is no switch to turn it off. A TLS
// refusal, by us (etcd's certificate does not verify, a file cannot be used) or by the member
// (its alert: no client certificate, one it does not trust), is kPermissionDenied and is NOT
// tried on the next member: the member is up and said no, the members of a cluster share
// their CA and client-certificate policy, and passing over it would only bury a
// configuration error under "every member failed" (or, in a memserver, under retries that
// never succeed). A connection dropped during the handshake is a member down, as over http.
// Under TLS 1.3 a member refusing our certificate may only drop the connection after the
// handshake, its alert lost; such a drop is asked about once more over TLS 1.2 (a GET of
// /health), where the refusal is part of the handshake. A member that allows TLS 1.3 only
// cannot be asked so: there a refused certificate may look like a member down.
//
// Thread safety: calls are serialized on one libcurl handle (which keeps the HTTP connections
// alive between calls), so a client may be shared, but concurrent callers wait for each other.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/status.h"
#include "registry/address.h"

namespace farmem::registry {

/// The smallest key greater than every key starting with `prefix` (etcd's range_end for a
/// prefix); "\0" (every key) when the prefix is empty or all 0xff bytes.
std::string prefix_range_end(std::string_view prefix);

/// The client side of https endpoints: PEM files, which libcurl reads when it connects.
struct EtcdTls {
  /// CA certificates the members' server certificates must chain to; only these are trusted.
  /// Empty: the system's CA store.
  std::string ca_file;
  /// Client certificate, for an etcd started with --client-cert-auth. Empty: none is sent.
  std::string cert_file;
  /// Its private key (unencrypted PEM); given with cert_file and only with it.
  std::string key_file;

  bool empty() const { return ca_file.empty() && cert_file.empty() && key_file.empty(); }
};

/// kInvalidArgument, saying why, when `tls` cannot serve `endpoints`: files given while no
/// endpoint is https (they would go unused, and the traffic unencrypted), endpoints mixing
/// http and https, a certificate without its key or a key without its certificate, a file
/// that cannot be read. The files' contents are checked by the first connection.
Status check_etcd_tls(const std::vector<EtcdEndpoint>& endpoints, const EtcdTls& tls);

struct EtcdOptions {
  /// Members of one etcd cluster, tried in this order (at least one: without, every call is
  /// kInvalidArgument).
  std::vector<EtcdEndpoint> endpoints{{"127.0.0.1", 2379}};
  /// Deadline of one call, connecting and trying other endpoints included (counted once the
  /// call has the handle: see thread safety above).
  std::chrono::milliseconds timeout{2000};
  /// Files for https endpoints; refused (every call kInvalidArgument) unless check_etcd_tls
  /// accepts them with the endpoints.
  EtcdTls tls;
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
  /// Never fails: options that check_etcd_tls refuses make every call return its error.
  explicit EtcdClient(EtcdOptions options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  /// "HOST:PORT" of the endpoint the next call goes to first (the last one that answered),
  /// as errors name it.
  std::string endpoint() const;

  /// GET /health: ok when etcd answers that it is healthy (a member without a leader is not:
  /// the next endpoint is asked).
  Status health();
  /// A new lease of `ttl`; returns its id. Retried elsewhere after a timeout, so a lease may
  /// be granted twice: the one not returned is never used and expires after `ttl`.
  Result<std::int64_t> grant_lease(std::chrono::seconds ttl);
  /// Renews lease `id`; returns its TTL in seconds. kNotFound once it has expired.
  Result<std::int64_t> keep_alive(std::int64_t id);
  /// Revokes lease `id`: its keys go at once. kNotFound when it no longer exists (also when
  /// a try that timed out on another member revoked it).
  Status revoke_lease(std::int64_t id);
  /// Sets `key` to `value`, attached to `lease` (0: none); returns the new revision.
  /// kNotFound when the lease does not exist (any more). A put retried elsewhere may be
  /// applied twice: the same value twice, which only costs a revision.
  Result<std::int64_t> put(std::string_view key, std::string_view value, std::int64_t lease = 0);
  /// The key `key`, or every key starting with it when `prefix`.
  Result<RangeResult> range(std::string_view key, bool prefix);
  /// Deletes `key` (or every key starting with it); returns how many went. A retried delete
  /// may report 0 when its first try was applied.
  Result<std::int64_t> delete_range(std::string_view key, bool prefix);

 private:
  /// What one endpoint answered: its HTTP status and body.
  struct Reply {
    long http = 0;
    std::string body;
    std::string tls_refusal;  ///< why the member refused us at TLS level (empty: it did not)
  };
  /// Decodes one endpoint's reply into the call's result; its errors say "etcd at NAME".
  using Decode = std::function<Status(const std::string& name, Reply& reply)>;

  /// One call: `path` (POST of `body`, or GET without one) to the current endpoint, then the
  /// next ones while they fail over (see the top of this file), all within options_.timeout.
  Status call(std::string_view path, const std::string* body, const Decode& decode);
  /// One POST of `body` (JSON) to `path`; the decoded reply, or the gateway's error.
  Result<nlohmann::json> post(std::string_view path, const nlohmann::json& body);
  /// One request to endpoint `i` with `budget` to finish it. `tls12_probe`: at most TLS 1.2
  /// on a connection of its own, only to learn whether the member refuses our certificate
  /// (see needs_tls12_probe in the .cc).
  Status perform(std::size_t i, std::string_view path, const std::string* body,
                 std::chrono::milliseconds budget, Reply& reply, bool tls12_probe = false)
      FARMEM_REQUIRES(mu_);

  /// Sets the TLS options of a transfer to an https endpoint (verification on, the files).
  void set_tls(void* curl) const;

  const EtcdOptions options_;
  const Status config_;                      ///< check_etcd_tls: every call's error if not ok
  const std::vector<std::string> names_;     ///< to_string() of each endpoint
  const std::vector<std::string> base_urls_;  ///< "http(s)://host:port" of each endpoint
  struct CurlDeleter {
    void operator()(void* handle) const;
  };
  /// Guards curl_ (an easy handle serves one transfer at a time) and current_.
  mutable Mutex mu_;
  std::unique_ptr<void, CurlDeleter> curl_ FARMEM_GUARDED_BY(mu_);
  /// The endpoint tried first: the last one that answered.
  std::size_t current_ FARMEM_GUARDED_BY(mu_) = 0;
};

}  // namespace farmem::registry
