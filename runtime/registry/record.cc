#include "registry/record.h"

#include <nlohmann/json.hpp>

namespace farmem::registry {

using nlohmann::json;

std::string to_json(const MemserverRecord& r) {
  return json{{"format", r.format},
              {"version", r.version},
              {"urls", r.urls},
              {"transports", r.transports},
              {"capacity_bytes", r.capacity_bytes},
              {"used_bytes", r.used_bytes},
              {"free_bytes", r.free_bytes},
              {"sessions", r.sessions},
              {"slabs", r.slabs},
              {"ttl_s", r.ttl_s}}
      .dump();
}

namespace {

Status read_count(const json& j, const char* name, std::uint64_t& out) {
  const auto it = j.find(name);
  if (it == j.end()) return Status::Ok();  // an older writer: stays 0
  if (!it->is_number_unsigned()) return ProtocolError(std::string(name) + " is not a count");
  out = it->get<std::uint64_t>();
  return Status::Ok();
}

Status read_strings(const json& j, const char* name, std::vector<std::string>& out) {
  const auto it = j.find(name);
  if (it == j.end() || !it->is_array()) return ProtocolError(std::string("no list ") + name);
  for (const json& s : *it) {
    if (!s.is_string()) return ProtocolError(std::string(name) + " holds a non-string");
    out.push_back(s.get<std::string>());
  }
  return Status::Ok();
}

}  // namespace

Result<MemserverRecord> parse_record(std::string_view text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return ProtocolError("record is not a JSON object");
  MemserverRecord r;
  const auto format = j.find("format");
  if (format == j.end() || !format->is_number_integer()) {
    return ProtocolError("record has no format");
  }
  r.format = format->get<int>();
  if (r.format != kRecordFormat) {
    return ProtocolError("record format " + std::to_string(r.format) + ", this build reads " +
                         std::to_string(kRecordFormat));
  }
  if (const auto v = j.find("version"); v != j.end() && v->is_string()) {
    r.version = v->get<std::string>();
  }
  FARMEM_RETURN_IF_ERROR(read_strings(j, "urls", r.urls));
  if (r.urls.empty()) return ProtocolError("record lists no urls");
  FARMEM_RETURN_IF_ERROR(read_strings(j, "transports", r.transports));
  FARMEM_RETURN_IF_ERROR(read_count(j, "capacity_bytes", r.capacity_bytes));
  FARMEM_RETURN_IF_ERROR(read_count(j, "used_bytes", r.used_bytes));
  FARMEM_RETURN_IF_ERROR(read_count(j, "free_bytes", r.free_bytes));
  FARMEM_RETURN_IF_ERROR(read_count(j, "sessions", r.sessions));
  FARMEM_RETURN_IF_ERROR(read_count(j, "slabs", r.slabs));
  FARMEM_RETURN_IF_ERROR(read_count(j, "ttl_s", r.ttl_s));
  return r;
}

Result<std::string> choose_url(const MemserverRecord& record,
                               const std::vector<std::string>& preference) {
  for (const auto& scheme : preference) {
    const std::string head = scheme + "://";
    for (const auto& url : record.urls) {
      if (url.compare(0, head.size(), head) == 0) return url;
    }
  }
  std::string offered;
  for (const auto& url : record.urls) offered += (offered.empty() ? "" : ", ") + url;
  std::string wanted;
  for (const auto& s : preference) wanted += (wanted.empty() ? "" : ", ") + s;
  return NotFound("memserver offers " + offered + ", none of the transports wanted (" + wanted +
                  ")");
}

}  // namespace farmem::registry
