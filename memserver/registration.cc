// --registry (see registration.h).
#include "memserver/registration.h"

#include <algorithm>

#include "common/log.h"

namespace farmem::memserver {

namespace {

/// "rdma://10.0.0.7:7471" -> "10.0.0.7:7471".
std::string without_scheme(const std::string& url) {
  const auto p = url.find("://");
  return p == std::string::npos ? url : url.substr(p + 3);
}

std::chrono::milliseconds refresh_of(const RegistrationOptions& o) {
  if (o.refresh.count() > 0) return o.refresh;
  return std::min<std::chrono::milliseconds>(std::chrono::seconds(1), o.ttl / 3);
}

}  // namespace

Status check_advertised_host(const std::string& host) {
  if (host.empty()) return InvalidArgument("no host to publish in the registry");
  if (host == "0.0.0.0" || host == "::" || host == "[::]" || host == "*") {
    return InvalidArgument(host + " is a wildcard address no client can reach: give "
                           "--advertise HOST with this host's reachable name or address");
  }
  return Status::Ok();
}

Status check_published_url(const std::string& url) {
  const auto bad = [&](const std::string& why) {
    return InvalidArgument("cannot publish " + url + " in the registry: " + why);
  };
  const bool rdma = url.rfind("rdma://", 0) == 0;
  if (!rdma && url.rfind("tcp://", 0) != 0) return bad("not an rdma:// or tcp:// URL");
  const std::string hostport = without_scheme(url);
  const auto colon = hostport.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == hostport.size()) {
    return bad("expected HOST:PORT");
  }
  if (Status st = check_advertised_host(hostport.substr(0, colon)); !st.ok()) {
    return bad(st.message());
  }
  if (hostport.substr(colon + 1) == "0") return bad("port 0");
  return Status::Ok();
}

Registration::Registration(Core& core, RegistrationOptions options)
    : core_(core),
      options_(std::move(options)),
      key_(options_.registry.prefix + without_scheme(options_.urls.front())),
      etcd_(registry::EtcdOptions{options_.registry.endpoints, options_.timeout,
                                  options_.etcd_tls}) {}

Result<std::unique_ptr<Registration>> Registration::start(Core& core, RegistrationOptions o) {
  if (o.urls.empty()) {
    return InvalidArgument("--registry: the memserver has no listener to publish");
  }
  for (const auto& url : o.urls) FARMEM_RETURN_IF_ERROR(check_published_url(url));
  if (o.ttl.count() < 2) {
    return InvalidArgument("--registry-ttl must be at least 2 seconds (got " +
                           std::to_string(o.ttl.count()) + "): the lease is renewed within it");
  }
  if (o.timeout.count() <= 0) return InvalidArgument("registry call timeout must be > 0");
  FARMEM_RETURN_IF_ERROR(registry::check_etcd_tls(o.registry.endpoints, o.etcd_tls)
                             .with_context("--etcd-ca, --etcd-cert, --etcd-key"));
  auto r = std::unique_ptr<Registration>(new Registration(core, std::move(o)));
  if (Status st = r->tick_on_renewer(); st.code() == StatusCode::kPermissionDenied ||
                                        st.code() == StatusCode::kInvalidArgument) {
    return st;
  } else if (!st.ok()) {
    log().warn("registry: {}; serving anyway and registering as {} when etcd answers",
               st.to_string(), r->key_);
  } else {
    log().info("registered in etcd at {} as {} (lease {}, TTL {} s)", r->etcd_.endpoint(),
               r->key_, r->lease_, r->options_.ttl.count());
  }
  r->thread_ = std::thread([p = r.get()] { p->run(); });
  return r;
}

Registration::~Registration() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (lease_ == 0) return;
  if (Status st = etcd_.revoke_lease(lease_); !st.ok()) {
    log().info("registry: revoking lease {}: {}; {} goes when the lease expires", lease_,
               st.to_string(), key_);
  }
}

bool Registration::registered() const {
  MutexLock lock(mu_);
  return registered_;
}

registry::MemserverRecord Registration::record() const {
  const proto::ServerStats s = core_.stats();
  registry::MemserverRecord r;
  r.version = options_.version;
  r.urls = options_.urls;
  for (const auto& url : r.urls) r.transports.push_back(url.substr(0, url.find("://")));
  r.capacity_bytes = s.capacity_bytes;
  r.used_bytes = s.used_bytes;
  r.free_bytes = s.capacity_bytes > s.used_bytes ? s.capacity_bytes - s.used_bytes : 0;
  r.sessions = s.sessions;
  r.slabs = s.slabs;
  r.ttl_s = static_cast<std::uint64_t>(options_.ttl.count());
  return r;
}

Status Registration::register_on_renewer() {
  FARMEM_ASSIGN_OR_RETURN(lease_, etcd_.grant_lease(options_.ttl));
  last_put_.clear();
  const std::string rec = registry::to_json(record());
  // On failure the lease stays: the next tick renews it (or finds it expired) and puts again.
  FARMEM_RETURN_IF_ERROR(etcd_.put(key_, rec, lease_).status());
  last_put_ = rec;
  last_put_at_ = std::chrono::steady_clock::now();
  return Status::Ok();
}

Status Registration::tick_on_renewer() {
  Status st;
  if (lease_ == 0) {
    st = register_on_renewer();
  } else if (auto ttl = etcd_.keep_alive(lease_); !ttl.ok()) {
    st = ttl.status();
    if (st.code() == StatusCode::kNotFound) {  // expired, or etcd lost its data
      log().info("registry: lease {} is gone ({}); registering again", lease_, st.to_string());
      lease_ = 0;
      st = register_on_renewer();
    }
  } else if (const std::string rec = registry::to_json(record());
             rec != last_put_ || std::chrono::steady_clock::now() - last_put_at_ >= options_.ttl) {
    st = etcd_.put(key_, rec, lease_).status();
    if (st.ok()) {
      last_put_ = rec;
      last_put_at_ = std::chrono::steady_clock::now();
    } else if (st.code() == StatusCode::kNotFound) {  // the lease went between the two calls
      lease_ = 0;
      st = register_on_renewer();
    }
  }
  MutexLock lock(mu_);
  registered_ = st.ok();
  return st;
}

void Registration::run() {
  const auto refresh = refresh_of(options_);
  bool down = !registered();  // start() already said so
  UniqueLock lock(mu_);
  while (!stopping_) {
    if (lock.wait_for(cv_, refresh, [&]() FARMEM_REQUIRES(mu_) { return stopping_; })) break;
    lock.unlock();
    const Status st = tick_on_renewer();
    if (!st.ok() && !down) {
      log().warn("registry: {}; still serving, retrying every {} ms", st.to_string(),
                 refresh.count());
    } else if (st.ok() && down) {
      log().info("registered in etcd at {} again as {} (lease {})", etcd_.endpoint(), key_,
                 lease_);
    }
    down = !st.ok();
    lock.lock();
  }
}

}  // namespace farmem::memserver
