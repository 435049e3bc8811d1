#include "memserver/tenants.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "memserver/server.h"

namespace farmem::memserver {

namespace {

Result<std::uint64_t> size_of(const nlohmann::json& v, const std::string& what) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_string()) {
    auto n = parse_size(v.get<std::string>());
    if (!n.ok()) return InvalidArgument(what + ": " + n.status().message());
    return *n;
  }
  return InvalidArgument(what + ": expected bytes (a number, or a size such as \"4G\")");
}

}  // namespace

Result<std::vector<TenantConfig>> parse_tenants(const std::string& text, const std::string& what) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return InvalidArgument(what + ": not JSON: " + e.what());
  }
  if (!doc.is_object() || !doc.contains("tenants") || !doc["tenants"].is_array()) {
    return InvalidArgument(what + ": expected {\"tenants\": [ ... ]}");
  }
  for (const auto& [key, value] : doc.items()) {
    if (key != "tenants") return InvalidArgument(what + ": unknown key '" + key + "'");
  }
  std::vector<TenantConfig> out;
  std::set<std::string> names;
  std::size_t i = 0;
  for (const auto& t : doc["tenants"]) {
    const std::string where = what + ": tenant #" + std::to_string(++i);
    if (!t.is_object()) return InvalidArgument(where + ": expected an object");
    TenantConfig c;
    for (const auto& [key, value] : t.items()) {
      if (key == "name" && value.is_string()) {
        c.name = value.get<std::string>();
      } else if (key == "secret" && value.is_string()) {
        c.secret = value.get<std::string>();
      } else if (key == "quota") {
        FARMEM_ASSIGN_OR_RETURN(c.quota_bytes, size_of(value, where + " quota"));
      } else if (key == "max_connections" && value.is_number_unsigned() &&
                 value.get<std::uint64_t>() <= 1000000) {
        c.max_connections = value.get<std::uint32_t>();
      } else if (key == "name" || key == "secret" || key == "max_connections") {
        return InvalidArgument(where + ": '" + key + "' has the wrong type or range");
      } else {
        return InvalidArgument(where + ": unknown key '" + key +
                               "' (name, secret, quota, max_connections)");
      }
    }
    if (c.name.empty() || c.name.size() > proto::kMaxTenantBytes) {
      return InvalidArgument(where + ": a name of 1.." + std::to_string(proto::kMaxTenantBytes) +
                             " bytes is required");
    }
    if (c.secret.empty() || c.secret.size() > proto::kMaxSecretBytes) {
      return InvalidArgument(where + " ('" + c.name + "'): a secret of 1.." +
                             std::to_string(proto::kMaxSecretBytes) + " bytes is required");
    }
    if (!names.insert(c.name).second) {
      return InvalidArgument(where + ": tenant '" + c.name + "' is listed twice");
    }
    out.push_back(std::move(c));
  }
  if (out.empty()) return InvalidArgument(what + ": no tenants");
  return out;
}

Result<std::vector<TenantConfig>> read_tenants_file(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) {
    return InvalidArgument("--tenants " + path + ": " + std::strerror(errno));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return InvalidArgument("--tenants " + path + ": holds secrets but its mode is " + mode +
                           " (readable by group or others): chmod 600 it");
  }
  std::ifstream in(path);
  if (!in) return InvalidArgument("--tenants " + path + ": cannot open it");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_tenants(text.str(), "--tenants " + path);
}

}  // namespace farmem::memserver
