#include "registry/etcd_client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "registry/base64.h"

namespace farmem::registry {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

/// Largest reply accepted: a registry of thousands of memservers is well under a megabyte;
/// anything near this is not etcd answering us.
constexpr std::size_t kMaxReplyBytes = 16u << 20;

/// gRPC status codes the gateway returns in {"code": N}, mapped onto ours.
StatusCode from_grpc(std::int64_t code) {
  switch (code) {
    case 3: return StatusCode::kInvalidArgument;   // INVALID_ARGUMENT
    case 4: return StatusCode::kTimedOut;          // DEADLINE_EXCEEDED
    case 5: return StatusCode::kNotFound;          // NOT_FOUND (e.g. lease not found)
    case 7:                                        // PERMISSION_DENIED
    case 16: return StatusCode::kPermissionDenied; // UNAUTHENTICATED
    case 8: return StatusCode::kResourceExhausted; // RESOURCE_EXHAUSTED
    case 14: return StatusCode::kUnavailable;      // UNAVAILABLE (no leader, stopping)
    default: return StatusCode::kInternal;
  }
}

/// An int64 field of a reply: the gateway writes int64 as a JSON string, int32 as a number;
/// an absent field is proto3's default, 0.
Result<std::int64_t> int_field(const json& j, const char* name) {
  if (!j.is_object()) return ProtocolError(std::string("expected an object holding ") + name);
  const auto it = j.find(name);
  if (it == j.end()) return std::int64_t{0};
  if (it->is_number_integer()) return it->get<std::int64_t>();
  if (it->is_string()) {
    const auto& s = it->get_ref<const std::string&>();
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && end == s.data() + s.size()) return v;
  }
  return ProtocolError(std::string("field ") + name + " is not an integer");
}

/// A base64 bytes field of a reply (absent: empty).
Result<std::string> bytes_field(const json& j, const char* name) {
  const auto it = j.find(name);
  if (it == j.end()) return std::string();
  if (!it->is_string()) return ProtocolError(std::string("field ") + name + " is not a string");
  return base64_decode(it->get_ref<const std::string&>());
}

std::size_t append_reply(char* data, std::size_t size, std::size_t n, void* out) {
  auto& reply = *static_cast<std::string*>(out);
  if (reply.size() + size * n > kMaxReplyBytes) return 0;  // aborts the transfer
  reply.append(data, size * n);
  return size * n;
}

std::string lower_first(std::string s) {
  if (!s.empty() && s[0] >= 'A' && s[0] <= 'Z') s[0] = static_cast<char>(s[0] - 'A' + 'a');
  return s;
}

/// Whether an endpoint's failure is the member's own (down, unreachable, too slow, without a
/// leader), so that another member may answer the same call. Anything else is etcd's answer.
bool fails_over(const Status& st) {
  return st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kTimedOut;
}

/// The time the `k`th try of a call (0 first) gets of the `left` of its deadline, with `n`
/// endpoints. The first try goes to the endpoint that answered last, most likely healthy, and
/// gets half when others remain, so that a slow but live member is not abandoned after a
/// third; later tries split what is left evenly, the last one taking all of it.
std::chrono::milliseconds share(std::chrono::milliseconds left, std::size_t k, std::size_t n) {
  const auto s = (k == 0 && n > 1) ? left / 2 : left / static_cast<long>(n - k);
  return std::max(s, std::chrono::milliseconds(1));  // libcurl reads 0 as "no timeout"
}

std::vector<std::string> names_of(const std::vector<EtcdEndpoint>& endpoints) {
  std::vector<std::string> out;
  for (const auto& e : endpoints) out.push_back(to_string(e));
  return out;
}

std::vector<std::string> base_urls_of(const std::vector<EtcdEndpoint>& endpoints) {
  std::vector<std::string> out;
  for (const auto& e : endpoints) out.push_back((e.tls ? "" : "http://") + to_string(e));
  return out;
}

/// What an etcd client's options must satisfy before any call (see check_etcd_tls).
Status check_options(const EtcdOptions& o) {
  if (o.endpoints.empty()) return InvalidArgument("etcd client without an endpoint");
  return check_etcd_tls(o.endpoints, o.tls);
}

/// Why a failed transfer is a TLS refusal, or "" when it is not one (as far as it shows). A
/// refusal is our verification of the member's certificate, our own files, the member's TLS
/// alert (it is up and refuses us: no client certificate, one it does not trust) or a reply
/// that is not TLS at all (the port serves plain http): configuration errors every member
/// would repeat. See also needs_tls12_probe.
std::string tls_refusal(CURLcode rc, const std::string& reason) {
  switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
      return reason;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:  // TLS 1.3: the member's alert comes after our side's handshake
      return reason.find(" alert ") != std::string::npos ||
                     reason.find("wrong version number") != std::string::npos
                 ? reason
                 : std::string();
    default:
      return {};
  }
}

/// Under TLS 1.3 a member checks our certificate after our side of the handshake is done,
/// then sends its alert and closes at once; often the close wins and we see only a connection
/// that dropped (a failed write, an EOF), the alert lost: just what a member that dies looks
/// like. Over TLS 1.2 the same refusal is part of the handshake, so such a drop right after a
/// handshake is asked about once more, over TLS 1.2 (`handshook`: this transfer made one).
bool needs_tls12_probe(CURLcode rc, bool handshook) {
  return handshook &&
         (rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING);
}

Status refused(const std::string& what, const std::string& why, const std::string& call) {
  return PermissionDenied(what + ": TLS refused: " + why + call +
                          "; check the CA, client certificate and key (not tried elsewhere: a "
                          "configuration error)");
}

}  // namespace

std::string prefix_range_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

Status check_etcd_tls(const std::vector<EtcdEndpoint>& endpoints, const EtcdTls& tls) {
  const auto https = std::count_if(endpoints.begin(), endpoints.end(),
                                   [](const EtcdEndpoint& e) { return e.tls; });
  if (https != 0 && https != static_cast<long>(endpoints.size())) {
    return InvalidArgument("etcd endpoints mix http and https: a fail-over must not leave "
                           "TLS, write every member with https://");
  }
  if (tls.empty()) return Status::Ok();
  if (https == 0) {
    return InvalidArgument("an etcd CA, client certificate or key is given but no etcd "
                           "endpoint is https (write the members https://HOST:PORT)");
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return InvalidArgument(tls.cert_file.empty()
                               ? "an etcd client key is given without its certificate"
                               : "an etcd client certificate is given without its key");
  }
  const std::pair<const char*, const std::string*> files[] = {
      {"CA file", &tls.ca_file}, {"client certificate", &tls.cert_file},
      {"client key", &tls.key_file}};
  for (const auto& [what, path] : files) {
    if (path->empty()) continue;
    const int fd = ::open(path->c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ::close(fd);
    } else {
      return InvalidArgument(std::string("etcd ") + what + " '" + *path + "' cannot be read: " +
                             lower_first(std::strerror(errno)));
    }
  }
  return Status::Ok();
}

void EtcdClient::CurlDeleter::operator()(void* handle) const {
  curl_easy_cleanup(static_cast<CURL*>(handle));
}

EtcdClient::EtcdClient(EtcdOptions options)
    : options_(std::move(options)),
      config_(check_options(options_)),
      names_(names_of(options_.endpoints)),
      base_urls_(base_urls_of(options_.endpoints)) {
  static std::once_flag global_init;
  std::call_once(global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_.reset(curl_easy_init());
}

EtcdClient::~EtcdClient() = default;

std::string EtcdClient::endpoint() const {
  MutexLock lock(mu_);
  return names_.empty() ? std::string("(no endpoint)") : names_[current_];
}

Status EtcdClient::call(std::string_view path, const std::string* body, const Decode& decode) {
  MutexLock lock(mu_);
  // From here, not from the call: a caller queued behind another's call gets its own time.
  const auto deadline = Clock::now() + options_.timeout;
  const std::size_t n = names_.size();
  FARMEM_RETURN_IF_ERROR(config_);
  std::string errors;  // every endpoint tried, and why it failed
  bool all_timed_out = true;
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = (current_ + k) % n;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    Status st;
    if (left.count() <= 0) {
      st = TimedOut("etcd at " + names_[i] + ": not tried, the call's " +
                    std::to_string(options_.timeout.count()) + " ms were spent");
    } else {
      Reply reply;
      st = perform(i, path, body, share(left, k, n), reply);
      if (st.ok()) st = decode(names_[i], reply);
      if (!fails_over(st)) {
        if (i != current_) {
          log().warn("registry: {}; using etcd at {} now", errors, names_[i]);
          current_ = i;
        }
        return st;
      }
    }
    if (st.code() != StatusCode::kTimedOut) all_timed_out = false;
    errors += (errors.empty() ? "" : "; ") + st.message();
  }
  return Status(all_timed_out ? StatusCode::kTimedOut : StatusCode::kUnavailable, errors);
}

Status EtcdClient::perform(std::size_t i, std::string_view path, const std::string* body,
                           std::chrono::milliseconds budget, Reply& out, bool tls12_probe) {
  const std::string what = "etcd at " + names_[i];
  std::string& reply = out.body;
  long& http_status = out.http;
  CURL* c = static_cast<CURL*>(curl_.get());
  if (c == nullptr) return Internal(what + ": cannot create a libcurl handle");
  curl_easy_reset(c);  // keeps the live connection, drops the last request's options
  const std::string url = base_urls_[i] + std::string(path);
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROXY, "");  // etcd is reached directly, whatever *_proxy say
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for timeouts: we are threaded
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(budget.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(budget.count()));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append_reply);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  if (options_.endpoints[i].tls) set_tls(c);
  if (tls12_probe) {
    curl_easy_setopt(c, CURLOPT_SSLVERSION,
                     static_cast<long>(CURL_SSLVERSION_TLSv1_2) | static_cast<long>(CURL_SSLVERSION_MAX_TLSv1_2));
    curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);  // a handshake of its own ...
    curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);   // ... not kept for the calls after it
  }
  if (body != nullptr) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body->size()));
  } else {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  }
  reply.clear();
  const CURLcode rc = curl_easy_perform(c);
  long os_errno = 0;
  curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
  curl_off_t handshake_us = 0;  // 0: no TLS handshake in this transfer (plain, or reused)
  curl_easy_getinfo(c, CURLINFO_APPCONNECT_TIME_T, &handshake_us);
  curl_off_t spent_us = 0;
  curl_easy_getinfo(c, CURLINFO_TOTAL_TIME_T, &spent_us);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http_status);
  // The handle outlives this call: it must not keep pointers into this frame.
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, nullptr);
  curl_slist_free_all(headers);
  const std::string call = " (" + std::string(path) + ")";
  const std::string reason = errbuf[0] != 0 ? errbuf : curl_easy_strerror(rc);
  if (std::string why = tls_refusal(rc, reason); !why.empty()) {
    out.tls_refusal = why;
    return refused(what, why, call);
  }
  if (!tls12_probe && needs_tls12_probe(rc, handshake_us > 0)) {
    const auto left = budget - std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::microseconds(spent_us));
    Reply probe;
    (void)perform(i, "/health", nullptr, std::max(left, std::chrono::milliseconds(1)), probe,
                  /*tls12_probe=*/true);
    if (!probe.tls_refusal.empty()) {
      return refused(what, probe.tls_refusal + " (over TLS 1.2, asked because a TLS 1.3 "
                     "connection dropped right after its handshake: " + reason + ")", call);
    }
  }
  switch (rc) {
    case CURLE_OK:
      return Status::Ok();
    case CURLE_GOT_NOTHING:  // what etcd does to plain http on its https port
      return Unavailable(what + ": empty reply" + call +
                         (options_.endpoints[i].tls
                              ? std::string()
                              : "; if it serves https, write the member https://" + names_[i]));
    case CURLE_COULDNT_CONNECT:
      return Unavailable(what + ": " +
                         (os_errno != 0 ? lower_first(std::strerror(static_cast<int>(os_errno)))
                                        : std::string("cannot connect")) + call);
    case CURLE_COULDNT_RESOLVE_HOST:
      return Unavailable(what + ": cannot resolve the host" + call);
    case CURLE_OPERATION_TIMEDOUT:
      return TimedOut(what + ": no answer within " + std::to_string(budget.count()) + " ms" +
                      call);
    case CURLE_WRITE_ERROR:
      return ProtocolError(what + ": reply larger than " + std::to_string(kMaxReplyBytes) +
                           " bytes" + call);
    default:
      return Unavailable(what + ": " + reason + call);
  }
}

void EtcdClient::set_tls(void* curl) const {
  // Every endpoint shares the files: one cluster, one CA, one client identity.
  CURL* c = static_cast<CURL*>(curl);
  // libcurl's defaults, set anyway: verification is what https is for, never switched off.
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  const EtcdTls& t = options_.tls;
  if (!t.ca_file.empty()) {
    curl_easy_setopt(c, CURLOPT_CAINFO, t.ca_file.c_str());
    // Only this CA: without this, the system's CA directory would be trusted as well.
    curl_easy_setopt(c, CURLOPT_CAPATH, static_cast<char*>(nullptr));
  }
  if (!t.cert_file.empty()) {
    curl_easy_setopt(c, CURLOPT_SSLCERT, t.cert_file.c_str());
    curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(c, CURLOPT_SSLKEY, t.key_file.c_str());
    curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
  }
}

Result<json> EtcdClient::post(std::string_view path, const json& body) {
  const std::string text = body.dump();
  json out;
  FARMEM_RETURN_IF_ERROR(call(path, &text, [&](const std::string& name, Reply& r) -> Status {
    const std::string what = "etcd at " + name;
    json j = json::parse(r.body, nullptr, /*allow_exceptions=*/false);
    if (r.http != 200) {
      // The gateway's error: {"error": "...", "code": N, "message": "..."}.
      if (!j.is_discarded() && j.is_object() && j.contains("message") &&
          j["message"].is_string()) {
        auto code = int_field(j, "code");
        return Status(from_grpc(code.ok() ? *code : 0), what + ": " +
                      j["message"].get<std::string>() + " (" + std::string(path) + ")");
      }
      return Unavailable(what + ": HTTP " + std::to_string(r.http) + " (" + std::string(path) +
                         "); is this etcd's client port?");
    }
    if (j.is_discarded() || !j.is_object()) {
      return ProtocolError(what + ": reply to " + std::string(path) + " is not a JSON object");
    }
    out = std::move(j);
    return Status::Ok();
  }));
  return out;
}

Status EtcdClient::health() {
  return call("/health", nullptr, [](const std::string& name, Reply& r) {
    const json j = json::parse(r.body, nullptr, false);
    if (r.http == 200 && !j.is_discarded() && j.is_object() && j.contains("health") &&
        j["health"] == "true") {
      return Status::Ok();
    }
    return Unavailable("etcd at " + name + ": not healthy (HTTP " + std::to_string(r.http) +
                       ": " + r.body.substr(0, 200) + ")");
  });
}

Result<std::int64_t> EtcdClient::grant_lease(std::chrono::seconds ttl) {
  // Not idempotent: a grant that timed out on one member may have been applied before the
  // next member grants another. The first lease then has no key and nobody renews it, so it
  // leaks only until its TTL runs out; etcd reclaims it.
  FARMEM_ASSIGN_OR_RETURN(json j, post("/v3/lease/grant", json{{"TTL", ttl.count()}}));
  FARMEM_ASSIGN_OR_RETURN(std::int64_t id, int_field(j, "ID"));
  if (id == 0) {
    const auto err = j.find("error");
    return Unavailable("etcd at " + endpoint() + ": lease not granted" +
                       (err != j.end() && err->is_string() ? ": " + err->get<std::string>() : ""));
  }
  return id;
}

Result<std::int64_t> EtcdClient::keep_alive(std::int64_t id) {
  // A bidirectional stream through the gateway: one request in, one {"result": ...} out.
  FARMEM_ASSIGN_OR_RETURN(json j, post("/v3/lease/keepalive", json{{"ID", std::to_string(id)}}));
  const auto result = j.find("result");
  if (result == j.end() || !result->is_object()) {
    return ProtocolError("etcd at " + endpoint() + ": keepalive reply without a result");
  }
  FARMEM_ASSIGN_OR_RETURN(std::int64_t ttl, int_field(*result, "TTL"));
  if (ttl <= 0) {
    return NotFound("etcd at " + endpoint() + ": lease " + std::to_string(id) + " has expired");
  }
  return ttl;
}

Status EtcdClient::revoke_lease(std::int64_t id) {
  return post("/v3/lease/revoke", json{{"ID", std::to_string(id)}}).status();
}

Result<std::int64_t> EtcdClient::put(std::string_view key, std::string_view value,
                                     std::int64_t lease) {
  json body{{"key", base64_encode(key)}, {"value", base64_encode(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  FARMEM_ASSIGN_OR_RETURN(json j, post("/v3/kv/put", body));
  const auto header = j.find("header");
  if (header == j.end()) {
    return ProtocolError("etcd at " + endpoint() + ": put reply without a header");
  }
  return int_field(*header, "revision");
}

Result<RangeResult> EtcdClient::range(std::string_view key, bool prefix) {
  json body{{"key", base64_encode(key)}};
  if (prefix) body["range_end"] = base64_encode(prefix_range_end(key));
  FARMEM_ASSIGN_OR_RETURN(json j, post("/v3/kv/range", body));
  RangeResult out;
  const auto header = j.find("header");
  if (header == j.end()) {
    return ProtocolError("etcd at " + endpoint() + ": range reply without a header");
  }
  FARMEM_ASSIGN_OR_RETURN(out.revision, int_field(*header, "revision"));
  const auto kvs = j.find("kvs");
  if (kvs == j.end()) return out;  // no key: proto3 leaves the empty list out
  if (!kvs->is_array()) return ProtocolError("etcd at " + endpoint() + ": kvs is not a list");
  for (const json& kv : *kvs) {
    if (!kv.is_object()) return ProtocolError("etcd at " + endpoint() + ": a kv is not an object");
    KeyValue v;
    FARMEM_ASSIGN_OR_RETURN(v.key, bytes_field(kv, "key"));
    FARMEM_ASSIGN_OR_RETURN(v.value, bytes_field(kv, "value"));
    FARMEM_ASSIGN_OR_RETURN(v.lease, int_field(kv, "lease"));
    FARMEM_ASSIGN_OR_RETURN(v.mod_revision, int_field(kv, "mod_revision"));
    out.kvs.push_back(std::move(v));
  }
  return out;
}

Result<std::int64_t> EtcdClient::delete_range(std::string_view key, bool prefix) {
  json body{{"key", base64_encode(key)}};
  if (prefix) body["range_end"] = base64_encode(prefix_range_end(key));
  FARMEM_ASSIGN_OR_RETURN(json j, post("/v3/kv/deleterange", body));
  return int_field(j, "deleted");
}

}  // namespace farmem::registry
