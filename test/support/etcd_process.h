// A real etcd for tests, started, killed, restarted and cleaned up by its owner: one member
// alone (EtcdProcess::start) or a cluster of several (EtcdCluster). Every wait is bounded.
// (farmem-memserver processes: memserver_process.h.)
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "farmem/status.h"
#include "registry/address.h"
#include "registry/etcd_client.h"
#include "test/support/test_certs.h"

namespace farmem::test {

/// An etcd serving its clients over https on 127.0.0.1 (its peers stay on plain http).
struct EtcdTlsSetup {
  std::string ca;                ///< --trusted-ca-file: what client certificates chain to
  std::string server_cert;       ///< --cert-file (needs SAN IP:127.0.0.1)
  std::string server_key;        ///< --key-file
  bool client_cert_auth = true;  ///< --client-cert-auth: refuse clients without a certificate
  /// What the owner's own health checks use: the CA, a client certificate and its key.
  registry::EtcdTls client;

  /// make_test_certs' CA, server certificate and client certificate.
  static EtcdTlsSetup from(const TestCerts& certs, bool client_cert_auth = true);
};

/// A real etcd on 127.0.0.1 with free ports and a data dir of its own, removed at the end.
/// Fails (never skips) when the etcd binary is missing: ci/install-deps installs it.
class EtcdProcess {
 public:
  /// Starts it and waits until it answers /health (at most 30 s); with `tls`, it serves
  /// https only.
  static Result<std::unique_ptr<EtcdProcess>> start(std::optional<EtcdTlsSetup> tls = {});
  ~EtcdProcess();  // SIGKILL, reap, remove the data dir
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  /// SIGKILLs it and reaps it (the ports stay reserved for restart()).
  void kill_now();
  /// Starts it again on the same ports; with `fresh_data`, on an empty data dir (every key
  /// and lease gone, revisions from 1 again; a lone etcd only: a cluster member with no data
  /// would have to be re-added to its cluster). Waits for /health.
  Status restart(bool fresh_data);
  bool running() const { return pid_ > 0; }

  std::uint16_t client_port() const { return client_port_; }
  /// "etcd://127.0.0.1:PORT", "etcd://https://127.0.0.1:PORT" with TLS (the registry URL,
  /// default prefix).
  std::string registry_url() const;
  /// Its client address, for an EtcdClient.
  registry::EtcdEndpoint endpoint() const { return {"127.0.0.1", client_port_, tls_.has_value()}; }
  /// Where its output goes (read it when a test fails).
  std::filesystem::path log_path() const { return dir_ / "etcd.log"; }

 private:
  friend class EtcdCluster;
  EtcdProcess() = default;
  /// A data dir of its own and two free ports (none of `taken`, which gets them).
  static Result<std::unique_ptr<EtcdProcess>> prepare(std::vector<std::uint16_t>& taken);
  std::string peer_url() const;
  Status launch();            // spawn() then wait_healthy()
  Status spawn();
  /// Waits until it answers /health, at most until `deadline`.
  Status wait_healthy(std::chrono::steady_clock::time_point deadline);

  std::filesystem::path dir_;
  std::uint16_t client_port_ = 0;
  std::uint16_t peer_port_ = 0;
  pid_t pid_ = -1;
  // A cluster member's identity; a lone etcd leaves the defaults.
  std::string name_ = "farmem-test";
  std::string initial_cluster_;  ///< "NAME=PEER_URL,...": empty for a lone etcd
  std::string cluster_token_;    ///< --initial-cluster-token: keeps test clusters apart
  std::optional<EtcdTlsSetup> tls_;  ///< https clients; none: plain http
};

/// A cluster of real etcd members on 127.0.0.1 (what production runs: losing one of three
/// keeps a quorum), each with ports and a data dir of its own; destroyed, it kills them all.
class EtcdCluster {
 public:
  /// Starts `members` (1..7) and waits until every one answers /health, which needs an
  /// elected leader (at most 30 s in all).
  static Result<std::unique_ptr<EtcdCluster>> start(std::size_t members = 3);

  std::size_t size() const { return members_.size(); }
  EtcdProcess& member(std::size_t i) { return *members_.at(i); }
  /// "etcd://127.0.0.1:P1,127.0.0.1:P2,..." (every member, member `first` first, then the
  /// others in order; default prefix). Clients use the first member of a URL until it fails.
  std::string registry_url(std::size_t first = 0) const;
  /// The member that is the leader now (its /metrics says etcd_server_is_leader 1), waiting
  /// up to 10 s for one.
  Result<std::size_t> leader() const;
  /// Every member's client address, in order.
  std::vector<registry::EtcdEndpoint> endpoints() const;

 private:
  EtcdCluster() = default;
  std::vector<std::unique_ptr<EtcdProcess>> members_;
};

/// A TCP port on 127.0.0.1 that was free a moment ago.
Result<std::uint16_t> free_loopback_port();

}  // namespace farmem::test
