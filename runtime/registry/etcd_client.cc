#include "registry/etcd_client.h"

#include <curl/curl.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>

#include "registry/base64.h"

namespace farmem::registry {

using nlohmann::json;

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

std::string bracket_v6(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

Result<RegistryAddress> parse_registry_url(std::string_view url) {
  constexpr std::string_view kScheme = "etcd://";
  const auto bad = [&](const std::string& why) {
    return InvalidArgument("registry '" + std::string(url) + "': " + why +
                           " (expected etcd://HOST:PORT[/PREFIX])");
  };
  if (url.substr(0, kScheme.size()) != kScheme) return bad("not an etcd:// URL");
  std::string_view rest = url.substr(kScheme.size());
  const std::size_t slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  RegistryAddress a;
  std::string_view port;
  if (!hostport.empty() && hostport[0] == '[') {
    const std::size_t close = hostport.find(']');
    if (close == std::string_view::npos || close + 1 >= hostport.size() ||
        hostport[close + 1] != ':') {
      return bad("an IPv6 host needs [ADDR]:PORT");
    }
    a.host = std::string(hostport.substr(1, close - 1));
    port = hostport.substr(close + 2);
  } else {
    const std::size_t colon = hostport.rfind(':');
    if (colon == std::string_view::npos) return bad("no port");
    a.host = std::string(hostport.substr(0, colon));
    port = hostport.substr(colon + 1);
  }
  if (a.host.empty()) return bad("no host");
  unsigned p = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535) {
    return bad("port '" + std::string(port) + "' is not in 1..65535");
  }
  a.port = static_cast<std::uint16_t>(p);
  std::string prefix = slash == std::string_view::npos ? "" : std::string(rest.substr(slash));
  if (prefix.empty() || prefix == "/") {
    a.prefix = std::string(kDefaultPrefix);
  } else {
    a.prefix = prefix.back() == '/' ? prefix : prefix + "/";
  }
  return a;
}

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

void EtcdClient::CurlDeleter::operator()(void* handle) const {
  curl_easy_cleanup(static_cast<CURL*>(handle));
}

EtcdClient::EtcdClient(EtcdOptions options)
    : options_(std::move(options)),
      endpoint_(bracket_v6(options_.host) + ":" + std::to_string(options_.port)),
      base_url_("http://" + endpoint_) {
  static std::once_flag global_init;
  std::call_once(global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_.reset(curl_easy_init());
}

EtcdClient::~EtcdClient() = default;

Status EtcdClient::perform(std::string_view path, const std::string* body, long& http_status,
                           std::string& reply) {
  const std::string what = "etcd at " + endpoint_;
  std::lock_guard lock(mu_);
  CURL* c = static_cast<CURL*>(curl_.get());
  if (c == nullptr) return Internal(what + ": cannot create a libcurl handle");
  curl_easy_reset(c);  // keeps the live connection, drops the last request's options
  const std::string url = base_url_ + std::string(path);
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROXY, "");  // etcd is reached directly, whatever *_proxy say
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for timeouts: we are threaded
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.timeout.count()));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append_reply);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
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
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http_status);
  // The handle outlives this call: it must not keep pointers into this frame.
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, nullptr);
  curl_slist_free_all(headers);
  const std::string call = " (" + std::string(path) + ")";
  switch (rc) {
    case CURLE_OK:
      return Status::Ok();
    case CURLE_COULDNT_CONNECT:
      return Unavailable(what + ": " +
                         (os_errno != 0 ? lower_first(std::strerror(static_cast<int>(os_errno)))
                                        : std::string("cannot connect")) + call);
    case CURLE_COULDNT_RESOLVE_HOST:
      return Unavailable(what + ": cannot resolve the host" + call);
    case CURLE_OPERATION_TIMEDOUT:
      return TimedOut(what + ": no answer within " + std::to_string(options_.timeout.count()) +
                      " ms" + call);
    case CURLE_WRITE_ERROR:
      return ProtocolError(what + ": reply larger than " + std::to_string(kMaxReplyBytes) +
                           " bytes" + call);
    default:
      return Unavailable(what + ": " + (errbuf[0] != 0 ? errbuf : curl_easy_strerror(rc)) + call);
  }
}

Result<json> EtcdClient::post(std::string_view path, const json& body) {
  const std::string text = body.dump();
  long http = 0;
  std::string reply;
  FARMEM_RETURN_IF_ERROR(perform(path, &text, http, reply));
  const std::string what = "etcd at " + endpoint_;
  json j = json::parse(reply, nullptr, /*allow_exceptions=*/false);
  if (http != 200) {
    // The gateway's error: {"error": "...", "code": N, "message": "..."}.
    if (!j.is_discarded() && j.is_object() && j.contains("message") && j["message"].is_string()) {
      auto code = int_field(j, "code");
      return Status(from_grpc(code.ok() ? *code : 0),
                    what + ": " + j["message"].get<std::string>() + " (" + std::string(path) + ")");
    }
    return Unavailable(what + ": HTTP " + std::to_string(http) + " (" + std::string(path) +
                       "); is this etcd's client port?");
  }
  if (j.is_discarded() || !j.is_object()) {
    return ProtocolError(what + ": reply to " + std::string(path) + " is not a JSON object");
  }
  return j;
}

Status EtcdClient::health() {
  long http = 0;
  std::string reply;
  FARMEM_RETURN_IF_ERROR(perform("/health", nullptr, http, reply));
  const json j = json::parse(reply, nullptr, false);
  if (http == 200 && !j.is_discarded() && j.is_object() && j.contains("health") &&
      j["health"] == "true") {
    return Status::Ok();
  }
  return Unavailable("etcd at " + endpoint_ + ": not healthy (HTTP " + std::to_string(http) +
                     ": " + reply.substr(0, 200) + ")");
}

Result<std::int64_t> EtcdClient::grant_lease(std::chrono::seconds ttl) {
  FARMEM_ASSIGN_OR_RETURN(json j, post("/v3/lease/grant", json{{"TTL", ttl.count()}}));
  FARMEM_ASSIGN_OR_RETURN(std::int64_t id, int_field(j, "ID"));
  if (id == 0) {
    const auto err = j.find("error");
    return Unavailable("etcd at " + endpoint_ + ": lease not granted" +
                       (err != j.end() && err->is_string() ? ": " + err->get<std::string>() : ""));
  }
  return id;
}

Result<std::int64_t> EtcdClient::keep_alive(std::int64_t id) {
  // A bidirectional stream through the gateway: one request in, one {"result": ...} out.
  FARMEM_ASSIGN_OR_RETURN(json j, post("/v3/lease/keepalive", json{{"ID", std::to_string(id)}}));
  const auto result = j.find("result");
  if (result == j.end() || !result->is_object()) {
    return ProtocolError("etcd at " + endpoint_ + ": keepalive reply without a result");
  }
  FARMEM_ASSIGN_OR_RETURN(std::int64_t ttl, int_field(*result, "TTL"));
  if (ttl <= 0) {
    return NotFound("etcd at " + endpoint_ + ": lease " + std::to_string(id) + " has expired");
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
    return ProtocolError("etcd at " + endpoint_ + ": put reply without a header");
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
    return ProtocolError("etcd at " + endpoint_ + ": range reply without a header");
  }
  FARMEM_ASSIGN_OR_RETURN(out.revision, int_field(*header, "revision"));
  const auto kvs = j.find("kvs");
  if (kvs == j.end()) return out;  // no key: proto3 leaves the empty list out
  if (!kvs->is_array()) return ProtocolError("etcd at " + endpoint_ + ": kvs is not a list");
  for (const json& kv : *kvs) {
    if (!kv.is_object()) return ProtocolError("etcd at " + endpoint_ + ": a kv is not an object");
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
