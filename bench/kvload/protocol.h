// The client side of memcached's two protocols, as far as kvload needs them: a get and a set
// appended to a send buffer, and the reply at the front of a receive buffer parsed. Replies
// come back in request order on a connection (both protocols), so the caller matches each
// reply to the oldest request it has outstanding.
//
// text:   get <key>\r\n            -> VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n | END\r\n
//         set <key> 0 0 <bytes>\r\n<data>\r\n -> STORED\r\n | NOT_STORED | SERVER_ERROR ...
// binary: 24-byte header (binary_protocol.cc in apps/kv draws it); GET 0x00 (status 0 hit,
//         1 not found), SET 0x01 with 8 extra bytes (flags, expiry); opaque echoed back.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace farmem::kvload {

enum class Protocol { kText, kBinary };
enum class OpKind : std::uint8_t { kGet, kSet };

/// Appends a request to `out`. `opaque` is echoed in binary replies (text has none).
void encode_get(Protocol p, std::string_view key, std::uint32_t opaque, std::string& out);
void encode_set(Protocol p, std::string_view key, std::string_view value, std::uint32_t opaque,
                std::string& out);

struct Reply {
  enum class Kind {
    kNeedMore,  ///< the reply is not all there yet
    kHit,       ///< get: `value` holds its bytes (a view into the buffer)
    kMiss,      ///< get: no such key
    kStored,    ///< set: stored
    kError,     ///< the server refused the request (SERVER_ERROR, NOT_STORED, a status)
    kBroken,    ///< not a reply to this request: the stream cannot be followed further
  };
  Kind kind = Kind::kNeedMore;
  std::size_t used = 0;    ///< bytes of the buffer this reply took
  std::string_view value;  ///< kHit: the value; kError/kBroken: what the server said
};

/// The reply to the request (op, key, opaque) at the start of `in`.
Reply parse_reply(Protocol p, OpKind op, std::string_view key, std::uint32_t opaque,
                  std::string_view in);

}  // namespace farmem::kvload
