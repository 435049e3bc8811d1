// --registry etcd://HOST:PORT[,HOST:PORT...][/PREFIX]: the memserver registers itself in etcd
// so runtimes can find it (runtime/registry/record.h has the key layout and the JSON record).
// With several members listed, a member that stops answering costs nothing: the lease is
// cluster-wide, so the calls, renewals included, go on through another member (etcd_client.h).
//
// It holds a lease of --registry-ttl seconds and renews it every refresh interval (a third of
// the TTL, at most a second); the record rides on the lease, so a memserver that dies leaves
// the registry within its TTL. The record is rewritten when its numbers change (capacity,
// use, sessions), and at least once a TTL (so a key deleted by hand comes back). When etcd
// is unreachable the memserver keeps serving its clients, logs once, and keeps trying; once etcd answers again (or its lease expired meanwhile, or etcd lost its
// data) it registers anew: a new lease, the record put again. On destruction the lease is
// revoked, so a clean shutdown removes the key at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/status.h"
#include "memserver/core.h"
#include "registry/etcd_client.h"
#include "registry/record.h"

namespace farmem::memserver {

struct RegistrationOptions {
  registry::RegistryAddress registry;
  /// --etcd-ca, --etcd-cert, --etcd-key: files for a registry whose members are https.
  registry::EtcdTls etcd_tls;
  /// Published URLs: "rdma://HOST:PORT", "tcp://HOST:PORT" (at least one; never a wildcard
  /// address such as 0.0.0.0, which no client can reach).
  std::vector<std::string> urls;
  std::string version;                    ///< farmem version, published in the record
  std::chrono::seconds ttl{10};           ///< lease TTL: how long a dead memserver stays listed
  /// How often the lease is renewed and the record checked; 0: a third of the TTL, at most 1 s.
  std::chrono::milliseconds refresh{0};
  std::chrono::milliseconds timeout{2000};  ///< deadline of one etcd call
};

/// Fails on a host no client can reach: empty or a wildcard (0.0.0.0, ::).
Status check_advertised_host(const std::string& host);
/// Fails on a malformed URL or one check_advertised_host refuses (kInvalidArgument naming it).
Status check_published_url(const std::string& url);

class Registration {
 public:
  /// Checks the options and registers once (an unreachable etcd is logged, not an error: the
  /// memserver serves anyway and registers when etcd answers), then renews from a thread.
  /// An etcd that refuses us (TLS: its certificate does not verify with --etcd-ca, it wants
  /// a client certificate; etcd's own permission errors) is an error: that is configuration,
  /// which no retry mends, and a memserver that never registers should say so at start.
  static Result<std::unique_ptr<Registration>> start(Core& core, RegistrationOptions options);
  ~Registration();  // stops renewing and revokes the lease (the key goes at once)
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;

  /// PREFIX + ID (the first published URL's host:port).
  const std::string& key() const { return key_; }
  /// True while the record is in etcd under a live lease, as far as the last call knows.
  bool registered() const;

 private:
  Registration(Core& core, RegistrationOptions options);
  registry::MemserverRecord record() const;
  /// One renewal: (re)registers when needed, renews the lease, rewrites a changed record.
  /// Runs on the renewing thread (and once in start()).
  Status tick_on_renewer();
  Status register_on_renewer();
  void run();

  Core& core_;
  const RegistrationOptions options_;
  const std::string key_;
  registry::EtcdClient etcd_;
  // Owned by the renewing thread (and start(), before it exists).
  std::int64_t lease_ = 0;  ///< 0: not registered
  std::string last_put_;    ///< the record as last written
  std::chrono::steady_clock::time_point last_put_at_{};
  /// Guards stopping_, registered_ (and the thread's sleep).
  mutable Mutex mu_;
  std::condition_variable cv_;
  bool stopping_ FARMEM_GUARDED_BY(mu_) = false;
  bool registered_ FARMEM_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace farmem::memserver
