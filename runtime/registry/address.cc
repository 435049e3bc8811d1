#include "registry/address.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace farmem::registry {

namespace {

constexpr std::string_view kScheme = "etcd://";
constexpr std::string_view kHttps = "https://";
constexpr std::string_view kHttp = "http://";
constexpr std::string_view kExpected =
    " (expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX], a member written HOST:PORT, "
    "http://HOST:PORT or https://HOST:PORT)";

/// Host names compare without case: "ETCD1:2379" and "etcd1:2379" are one member.
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// One member, "HOST:PORT" or "[V6]:PORT"; the reason when it is not one (no URL around it).
Result<EtcdEndpoint> parse_member(std::string_view m) {
  EtcdEndpoint e;
  std::string_view port;
  if (m[0] == '[') {
    const std::size_t close = m.find(']');
    if (close == std::string_view::npos || close + 1 >= m.size() || m[close + 1] != ':') {
      return InvalidArgument("an IPv6 host needs [ADDR]:PORT");
    }
    e.host = std::string(m.substr(1, close - 1));
    port = m.substr(close + 2);
  } else {
    const std::size_t colon = m.rfind(':');
    if (colon == std::string_view::npos) return InvalidArgument("no port");
    e.host = std::string(m.substr(0, colon));
    port = m.substr(colon + 1);
  }
  if (e.host.empty()) return InvalidArgument("no host");
  unsigned p = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535) {
    return InvalidArgument("port '" + std::string(port) + "' is not in 1..65535");
  }
  e.port = static_cast<std::uint16_t>(p);
  return e;
}

}  // namespace

std::string to_string(const EtcdEndpoint& e) {
  const std::string host = e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host;
  return (e.tls ? std::string(kHttps) : std::string()) + host + ":" + std::to_string(e.port);
}

Result<RegistryAddress> parse_registry_url(std::string_view url) {
  const auto bad = [&](const std::string& why) {
    return InvalidArgument("registry '" + std::string(url) + "': " + why + std::string(kExpected));
  };
  if (url.substr(0, kScheme.size()) != kScheme) return bad("not an etcd:// URL");
  // Members end at ',' (another follows) or '/' (the prefix follows); neither appears in a
  // member once its own scheme is taken off, not even in an IPv6 one.
  std::string_view rest = url.substr(kScheme.size());
  RegistryAddress a;
  std::vector<std::string> seen;  // lowered to_string() of the members so far
  for (std::size_t n = 1;; ++n) {
    std::string_view scheme;
    for (std::string_view s : {kHttps, kHttp}) {
      if (rest.substr(0, s.size()) == s) scheme = s;
    }
    rest.remove_prefix(scheme.size());
    const std::size_t end = rest.find_first_of(",/");
    const bool last = end == std::string_view::npos || rest[end] == '/';
    const std::string_view m = rest.substr(0, end);
    const std::string which = "member " + std::to_string(n) + " '" + std::string(scheme) +
                              std::string(m) + "'";
    if (m.empty()) {
      return bad(scheme.empty() ? "member " + std::to_string(n) + " is empty"
                                : which + " has no HOST:PORT");
    }
    if (n > kMaxEndpoints) {
      return bad("more than " + std::to_string(kMaxEndpoints) + " etcd endpoints");
    }
    auto e = parse_member(m);
    if (!e.ok()) return bad(n == 1 && last ? e.status().message()  // one member: as before
                                           : which + ": " + e.status().message());
    e->tls = scheme == kHttps;
    if (!a.endpoints.empty() && a.endpoints.front().tls != e->tls) {
      return bad(which + " and member 1 mix http and https: a fail-over must not leave TLS, "
                 "write every member with https://");
    }
    std::string id = lower(to_string(*e));
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) {
      return bad(to_string(*e) + " is listed twice");
    }
    seen.push_back(std::move(id));
    a.endpoints.push_back(std::move(e).value());
    if (last) {
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
      break;
    }
    rest.remove_prefix(end + 1);
  }
  const std::string prefix(rest);
  if (prefix.empty() || prefix == "/") {
    a.prefix = std::string(kDefaultPrefix);
  } else {
    a.prefix = prefix.back() == '/' ? prefix : prefix + "/";
  }
  return a;
}

}  // namespace farmem::registry
