// What a memserver publishes in the registry, and how a runtime reads it.
//
//   key:   PREFIX + ID             e.g. /farmem/memservers/10.0.0.7:7472
//          (ID: the advertised host and the first listener's port, unique per memserver)
//   value: JSON, refreshed every few seconds under the memserver's lease:
//   {"format": 1, "version": "0.1.0",
//    "urls": ["rdma://10.0.0.7:7471", "tcp://10.0.0.7:7472"], "transports": ["rdma", "tcp"],
//    "capacity_bytes": 68719476736, "used_bytes": 134217728, "free_bytes": 68585259008,
//    "sessions": 2, "slabs": 2, "ttl_s": 10}
//
// "format" versions the layout: a reader refuses a record of a format it does not know.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "farmem/status.h"

namespace farmem::registry {

/// The record layout this build writes and reads.
inline constexpr int kRecordFormat = 1;

struct MemserverRecord {
  int format = kRecordFormat;
  std::string version;                  ///< farmem version of the memserver
  std::vector<std::string> urls;        ///< "rdma://host:port", "tcp://host:port"
  std::vector<std::string> transports;  ///< the URLs' schemes, in the same order
  std::uint64_t capacity_bytes = 0;
  std::uint64_t used_bytes = 0;
  std::uint64_t free_bytes = 0;
  std::uint64_t sessions = 0;
  std::uint64_t slabs = 0;
  std::uint64_t ttl_s = 0;              ///< its lease's TTL: it re-registers within this
};

std::string to_json(const MemserverRecord& record);
/// kProtocolError naming what is wrong (not JSON, unknown format, missing urls, ...).
Result<MemserverRecord> parse_record(std::string_view json_text);

/// The URL a runtime connects to: the first of `preference` (schemes, e.g. {"rdma", "tcp"})
/// the record offers. kNotFound when it offers none of them.
Result<std::string> choose_url(const MemserverRecord& record,
                               const std::vector<std::string>& preference);

}  // namespace farmem::registry
