#include "registry/discovery.h"

#include <algorithm>

#include "common/log.h"

namespace farmem::registry {

// ---- Membership ----

std::chrono::seconds Membership::grace() const {
  std::uint64_t ttl = 0;
  for (const auto& [key, m] : members_) ttl = std::max(ttl, m.record.ttl_s);
  return ttl == 0 ? kDefaultGrace : std::chrono::seconds(ttl);
}

void Membership::lost(Clock::time_point) { lost_ = true; }

Membership::Changes Membership::diff(const std::vector<Member>& listing, std::int64_t revision,
                                     Clock::time_point now) {
  // etcd back after an outage, or with its data reset: members may not have re-registered.
  if (lost_ || revision < last_revision_) grace_until_ = now + grace();
  lost_ = false;
  last_revision_ = revision;
  Changes c;
  std::set<std::string> listed;
  for (const Member& l : listing) {
    listed.insert(l.key);
    auto it = members_.find(l.key);
    if (it == members_.end()) {
      c.join.push_back(l);
    } else if (it->second.url != l.url) {  // re-registered elsewhere under the same key
      c.leave.push_back(it->second);
      c.join.push_back(l);
    } else if (it->second.lease != l.lease) {  // registered anew: maybe a new process
      c.join.push_back(l);
    } else {
      it->second.record = l.record;  // fresh capacity and use
    }
  }
  if (!in_grace(now)) {
    for (const auto& [key, m] : members_) {
      if (!listed.contains(key)) c.leave.push_back(m);
    }
  }
  return c;
}

// ---- Discovery ----

Discovery::Discovery(DiscoveryOptions options, JoinFn join, LeaveFn leave)
    : options_(std::move(options)),
      join_(std::move(join)),
      leave_(std::move(leave)),
      etcd_(EtcdOptions{options_.address.endpoints, options_.timeout, options_.tls}) {}

Result<std::unique_ptr<Discovery>> Discovery::start(DiscoveryOptions options, JoinFn join,
                                                    LeaveFn leave) {
  if (options.interval.count() <= 0) return InvalidArgument("registry poll interval must be > 0");
  if (options.transports.empty()) return InvalidArgument("no registry transports to connect with");
  FARMEM_RETURN_IF_ERROR(check_etcd_tls(options.address.endpoints, options.tls));
  auto d = std::unique_ptr<Discovery>(new Discovery(std::move(options), std::move(join),
                                                    std::move(leave)));
  FARMEM_RETURN_IF_ERROR(d->poll_on_poller());
  d->thread_ = std::thread([p = d.get()] { p->run(); });
  return d;
}

Discovery::~Discovery() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Result<std::vector<Member>> Discovery::list(std::int64_t& revision) {
  FARMEM_ASSIGN_OR_RETURN(RangeResult r, etcd_.range(options_.address.prefix, /*prefix=*/true));
  revision = r.revision;
  std::vector<Member> out;
  for (KeyValue& kv : r.kvs) {
    Member m;
    m.key = std::move(kv.key);
    m.lease = kv.lease;
    auto record = parse_record(kv.value);
    Result<std::string> url = record.ok() ? choose_url(*record, options_.transports)
                                          : Result<std::string>(record.status());
    if (!url.ok()) {
      MutexLock lock(mu_);
      if (warned_.insert(m.key).second) {
        log().warn("registry key {}: {}; skipping it", m.key, url.status().to_string());
      }
      continue;
    }
    m.url = std::move(url).value();
    m.record = std::move(record).value();
    out.push_back(std::move(m));
  }
  return out;
}

Status Discovery::poll_on_poller() {
  std::int64_t revision = 0;
  auto listing = list(revision);
  const auto now = Clock::now();
  Membership::Changes changes;
  {
    MutexLock lock(mu_);
    if (!listing.ok()) {
      membership_.lost(now);
      ++failed_polls_;
      last_error_ = listing.status().to_string();
      return listing.status();
    }
    ++polls_;
    last_error_.clear();  // a join failing again below says so again
    changes = membership_.diff(*listing, revision, now);
  }
  for (const Member& m : changes.leave) {
    log().info("memserver {} ({}) left the registry: no new slabs go to it", m.url, m.key);
    leave_(m);
    MutexLock lock(mu_);
    membership_.left(m);
  }
  for (const Member& m : changes.join) {
    Status st = join_(m);
    MutexLock lock(mu_);
    if (st.ok()) {
      log().info("memserver {} ({}) joined from the registry", m.url, m.key);
      membership_.joined(m);
      warned_.erase(m.key);
    } else {
      last_error_ = st.to_string();
      if (warned_.insert(m.key).second) {
        log().warn("memserver {} from the registry: {}; retrying every {} ms", m.url,
                   st.to_string(), options_.interval.count());
      }
    }
  }
  return Status::Ok();
}

void Discovery::run() {
  bool down = false;
  UniqueLock lock(mu_);
  while (!stopping_) {
    if (lock.wait_for(cv_, options_.interval, [&]() FARMEM_REQUIRES(mu_) { return stopping_; })) {
      break;
    }
    lock.unlock();
    const Status st = poll_on_poller();
    if (!st.ok() && !down) {
      log().warn("registry: {}; keeping the memservers known so far, retrying every {} ms",
                 st.to_string(), options_.interval.count());
    } else if (st.ok() && down) {
      log().info("registry: etcd at {} answers again", etcd_.endpoint());
    }
    down = !st.ok();
    lock.lock();
  }
}

DiscoveryStats Discovery::stats() const {
  MutexLock lock(mu_);
  DiscoveryStats s;
  for (const auto& [key, m] : membership_.members()) s.members.push_back(m);
  s.polls = polls_;
  s.failed_polls = failed_polls_;
  s.last_error = last_error_;
  return s;
}

}  // namespace farmem::registry
