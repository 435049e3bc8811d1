// Discovery of memservers through the registry, for a runtime.
//
// Why polling and not etcd's watch stream: a memserver rewrites its record every refresh (its
// free bytes move), so a watch would deliver a steady stream of PUTs that carry no membership
// change, over a long-lived HTTP stream that needs cancelling, resuming from a revision and
// re-listing after compaction. And when etcd loses its data (a fresh data dir) revisions
// start again at 1, so a watch's start revision means nothing and a full re-list is needed
// anyway. A poll is one bounded range request with a deadline that always sees the whole
// membership; a leave is noticed within the memserver's lease TTL plus one interval.
//
// Membership (pure, tested without etcd) turns successive listings into joins and leaves.
// After etcd was unreachable, or came back with an older revision (its data was reset),
// leaves wait for a grace period of the largest TTL seen: live memservers re-register within
// their TTL, so one missing just after etcd came back is not yet gone.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/status.h"
#include "registry/etcd_client.h"
#include "registry/record.h"

namespace farmem::registry {

using Clock = std::chrono::steady_clock;

/// One registered memserver as a runtime sees it.
struct Member {
  std::string key;  ///< its registry key
  std::string url;  ///< the URL chosen from its record (choose_url)
  std::int64_t lease = 0;  ///< the lease its record rides on: a new one means it registered anew
  MemserverRecord record;
};

class Membership {
 public:
  /// Grace after etcd comes back when no member said its TTL.
  static constexpr std::chrono::seconds kDefaultGrace{10};

  struct Changes {
    /// Listed and not a member yet, listed under a new URL, or registered anew (a new
    /// lease: restarted under the same URL, or etcd lost its data). Joining a server the
    /// runtime knows reopens it, or reconnects when its old connection is dead.
    std::vector<Member> join;
    std::vector<Member> leave;  ///< members no longer listed (after any grace)
  };

  /// Compares a listing (taken at `now`, at etcd revision `revision`) with the members.
  /// The caller applies the changes and reports them with joined() and left().
  Changes diff(const std::vector<Member>& listing, std::int64_t revision, Clock::time_point now);
  /// etcd could not be listed at `now`.
  void lost(Clock::time_point now);
  void joined(const Member& m) { members_[m.key] = m; }
  void left(const Member& m) { members_.erase(m.key); }

  const std::map<std::string, Member>& members() const { return members_; }
  /// True while leaves wait (etcd came back recently).
  bool in_grace(Clock::time_point now) const { return now < grace_until_; }

 private:
  std::chrono::seconds grace() const;

  std::map<std::string, Member> members_;  ///< by key
  std::int64_t last_revision_ = 0;
  bool lost_ = false;                      ///< the last listing failed
  Clock::time_point grace_until_{};
};

struct DiscoveryOptions {
  RegistryAddress address;
  /// Files for https members (etcd_client.h).
  EtcdTls tls;
  /// URL schemes to connect with, in order of preference (see choose_url).
  std::vector<std::string> transports{"rdma", "tls", "tcp"};
  /// How often the registry is listed.
  std::chrono::milliseconds interval{1000};
  /// Deadline of one etcd call.
  std::chrono::milliseconds timeout{2000};
};

/// What discovery knows, for stats.
struct DiscoveryStats {
  std::vector<Member> members;
  std::uint64_t polls = 0;
  std::uint64_t failed_polls = 0;
  std::string last_error;  ///< of the last failed poll or join; empty when all is well
};

class Discovery {
 public:
  /// Makes a server eligible for new slabs (Runtime::add_server); an error leaves the member
  /// out, and it is tried again at the next poll.
  using JoinFn = std::function<Status(const Member&)>;
  /// Closes a server to new slabs (Runtime::close_server).
  using LeaveFn = std::function<void(const Member&)>;

  /// Checks that etcd answers and lists the registry once, applying the joins (a runtime's
  /// open: an unreachable etcd is an error, never an empty membership). Then polls from a
  /// thread of its own until destroyed; join and leave are called from that thread.
  static Result<std::unique_ptr<Discovery>> start(DiscoveryOptions options, JoinFn join,
                                                  LeaveFn leave);
  ~Discovery();
  Discovery(const Discovery&) = delete;
  Discovery& operator=(const Discovery&) = delete;

  DiscoveryStats stats() const;

 private:
  Discovery(DiscoveryOptions options, JoinFn join, LeaveFn leave);
  /// Lists the registry: the members it names, parsed and with a URL chosen.
  Result<std::vector<Member>> list(std::int64_t& revision);
  /// One poll: list, diff, apply. Runs on the polling thread (and once in start()).
  Status poll_on_poller();
  void run();

  const DiscoveryOptions options_;
  const JoinFn join_;
  const LeaveFn leave_;
  EtcdClient etcd_;
  /// Guards membership_, stats counters, warned_ and stopping_ (and the thread's sleep).
  mutable Mutex mu_;
  std::condition_variable cv_;
  Membership membership_ FARMEM_GUARDED_BY(mu_);
  std::uint64_t polls_ FARMEM_GUARDED_BY(mu_) = 0;
  std::uint64_t failed_polls_ FARMEM_GUARDED_BY(mu_) = 0;
  std::string last_error_ FARMEM_GUARDED_BY(mu_);
  /// Keys whose bad record or failed join was logged.
  std::set<std::string> warned_ FARMEM_GUARDED_BY(mu_);
  bool stopping_ FARMEM_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace farmem::registry
