#include "bench/kvload/protocol.h"

#include <charconv>

namespace farmem::kvload {

namespace {

constexpr std::size_t kBinHeader = 24;
constexpr std::uint8_t kReqMagic = 0x80, kResMagic = 0x81;
constexpr std::uint8_t kOpGet = 0x00, kOpSet = 0x01;
constexpr std::uint16_t kStatusOk = 0x0000, kStatusNotFound = 0x0001;
constexpr std::size_t kSetExtras = 8;  // flags (4), expiry (4)
// A text reply line longer than this without its "\r\n" is not one of ours.
constexpr std::size_t kMaxReplyLine = 4096;

void put_be(std::string& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

std::uint64_t get_be(std::string_view s, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = v << 8 | static_cast<unsigned char>(s[at + i]);
  return v;
}

void bin_header(std::uint8_t op, std::size_t key, std::size_t extras, std::size_t value,
                std::uint32_t opaque, std::string& out) {
  out += static_cast<char>(kReqMagic);
  out += static_cast<char>(op);
  put_be(out, key, 2);
  out += static_cast<char>(extras);
  out += '\0';          // data type
  put_be(out, 0, 2);    // vbucket
  put_be(out, extras + key + value, 4);
  put_be(out, opaque, 4);
  put_be(out, 0, 8);    // cas
}

Reply make(Reply::Kind k, std::size_t used, std::string_view v = {}) {
  Reply r;
  r.kind = k;
  r.used = used;
  r.value = v;
  return r;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// "VALUE <key> <flags> <bytes>[ <cas>]" at the start of the line `line`.
Reply text_value(std::string_view key, std::string_view in, std::size_t line_end) {
  std::string_view rest = in.substr(6, line_end - 6);
  const std::size_t sp = rest.find(' ');
  if (sp == std::string_view::npos || rest.substr(0, sp) != key) {
    return make(Reply::Kind::kBroken, 0, in.substr(0, line_end));
  }
  rest.remove_prefix(sp + 1);
  const std::size_t sp2 = rest.find(' ');
  if (sp2 == std::string_view::npos) return make(Reply::Kind::kBroken, 0, in.substr(0, line_end));
  rest.remove_prefix(sp2 + 1);
  std::uint64_t bytes = 0;
  const auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), bytes);
  if (ec != std::errc()) return make(Reply::Kind::kBroken, 0, in.substr(0, line_end));
  const std::size_t data_at = line_end + 2;
  constexpr std::string_view kTail = "\r\nEND\r\n";
  if (in.size() < data_at + bytes + kTail.size()) return make(Reply::Kind::kNeedMore, 0);
  if (in.substr(data_at + bytes, kTail.size()) != kTail) {
    return make(Reply::Kind::kBroken, 0, in.substr(0, line_end));
  }
  return make(Reply::Kind::kHit, data_at + bytes + kTail.size(), in.substr(data_at, bytes));
}

Reply parse_text(OpKind op, std::string_view key, std::string_view in) {
  const std::size_t end = in.find("\r\n");
  if (end == std::string_view::npos) {
    return in.size() > kMaxReplyLine ? make(Reply::Kind::kBroken, 0, in.substr(0, 80))
                                     : make(Reply::Kind::kNeedMore, 0);
  }
  const std::string_view line = in.substr(0, end);
  const std::size_t used = end + 2;
  if (starts_with(line, "SERVER_ERROR") || starts_with(line, "CLIENT_ERROR") || line == "ERROR" ||
      line == "NOT_STORED" || line == "EXISTS" || line == "NOT_FOUND") {
    return make(Reply::Kind::kError, used, line);
  }
  if (op == OpKind::kSet) {
    return line == "STORED" ? make(Reply::Kind::kStored, used)
                            : make(Reply::Kind::kBroken, 0, line);
  }
  if (line == "END") return make(Reply::Kind::kMiss, used);
  if (starts_with(line, "VALUE ")) return text_value(key, in, end);
  return make(Reply::Kind::kBroken, 0, line);
}

Reply parse_binary(OpKind op, std::uint32_t opaque, std::string_view in) {
  if (in.size() < kBinHeader) return make(Reply::Kind::kNeedMore, 0);
  const auto magic = static_cast<std::uint8_t>(in[0]);
  const auto code = static_cast<std::uint8_t>(in[1]);
  const std::uint8_t want = op == OpKind::kGet ? kOpGet : kOpSet;
  if (magic != kResMagic || code != want || get_be(in, 12, 4) != opaque) {
    return make(Reply::Kind::kBroken, 0, "binary reply out of step (magic, opcode or opaque)");
  }
  const std::size_t keylen = get_be(in, 2, 2), extlen = get_be(in, 4, 1);
  const std::size_t body = get_be(in, 8, 4);
  if (keylen + extlen > body) return make(Reply::Kind::kBroken, 0, "binary reply lengths");
  if (in.size() < kBinHeader + body) return make(Reply::Kind::kNeedMore, 0);
  const auto status = static_cast<std::uint16_t>(get_be(in, 6, 2));
  const std::size_t used = kBinHeader + body;
  const std::string_view value = in.substr(kBinHeader + extlen + keylen, body - extlen - keylen);
  if (status == kStatusOk) {
    return op == OpKind::kGet ? make(Reply::Kind::kHit, used, value)
                              : make(Reply::Kind::kStored, used);
  }
  if (status == kStatusNotFound && op == OpKind::kGet) return make(Reply::Kind::kMiss, used);
  return make(Reply::Kind::kError, used, value);
}

}  // namespace

void encode_get(Protocol p, std::string_view key, std::uint32_t opaque, std::string& out) {
  if (p == Protocol::kBinary) {
    bin_header(kOpGet, key.size(), 0, 0, opaque, out);
    out += key;
    return;
  }
  out += "get ";
  out += key;
  out += "\r\n";
}

void encode_set(Protocol p, std::string_view key, std::string_view value, std::uint32_t opaque,
                std::string& out) {
  if (p == Protocol::kBinary) {
    bin_header(kOpSet, key.size(), kSetExtras, value.size(), opaque, out);
    put_be(out, 0, 4);  // flags
    put_be(out, 0, 4);  // expiry: never
    out += key;
    out += value;
    return;
  }
  out += "set ";
  out += key;
  out += " 0 0 ";
  out += std::to_string(value.size());
  out += "\r\n";
  out += value;
  out += "\r\n";
}

Reply parse_reply(Protocol p, OpKind op, std::string_view key, std::uint32_t opaque,
                  std::string_view in) {
  return p == Protocol::kBinary ? parse_binary(op, opaque, in) : parse_text(op, key, in);
}

}  // namespace farmem::kvload
