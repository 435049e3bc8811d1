// The memserver's --tenants FILE: who may lease memory, with what secret, quota and
// connection cap.
//
//   {"tenants": [
//     {"name": "kv", "secret": "…", "quota": "8G", "max_connections": 16},
//     {"name": "graph", "secret": "…"}
//   ]}
//
// `quota` is bytes (a number, or a size like "512M"; absent or 0: only the capacity bounds
// it); `max_connections` is sessions at once (absent or 0: no cap). The file holds secrets,
// so it must not be readable by group or others (like ssh's keys).
#pragma once

#include <string>
#include <vector>

#include "farmem/status.h"
#include "memserver/core.h"

namespace farmem::memserver {

/// Reads and checks the file: kInvalidArgument naming the file and what is wrong (unreadable,
/// readable by others, not JSON, unknown keys, a bad name, secret, quota or cap).
Result<std::vector<TenantConfig>> read_tenants_file(const std::string& path);

/// The same for the text of such a file (`what` names it in errors).
Result<std::vector<TenantConfig>> parse_tenants(const std::string& text, const std::string& what);

}  // namespace farmem::memserver
