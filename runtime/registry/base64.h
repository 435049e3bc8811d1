// Base64 (RFC 4648, with padding): etcd's JSON gateway carries keys and values as base64
// strings (protobuf `bytes` fields in proto3's JSON mapping).
#pragma once

#include <string>
#include <string_view>

#include "farmem/status.h"

namespace farmem::registry {

std::string base64_encode(std::string_view bytes);
/// kProtocolError on a length that is not a multiple of 4 or a character outside the alphabet.
Result<std::string> base64_decode(std::string_view text);

}  // namespace farmem::registry
