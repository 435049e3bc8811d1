// Session: memcached's binary protocol. Every request and response starts with this header
// (all fields big-endian):
//
//    byte 0        1        2        3
//       +--------+--------+--------+--------+
//     0 | magic  | opcode |   key length    |   magic: 0x80 request, 0x81 response
//       +--------+--------+--------+--------+
//     4 | extlen | dtype  | vbucket/status  |   status in responses
//       +--------+--------+--------+--------+
//     8 |        total body length          |   extras + key + value
//       +--------+--------+--------+--------+
//    12 |        opaque (echoed back)       |
//       +--------+--------+--------+--------+
//    16 |        cas (8 bytes)              |
//       +--------+--------+--------+--------+
//
// Quiet variants answer only on a miss-worth-reporting: GETQ/GETKQ/GATQ/GATKQ only on a hit,
// SETQ and the other mutations only on an error, QUITQ never.
#include <cstring>

#include "kv/protocol.h"

namespace farmem::kv {

namespace {

constexpr std::size_t kHeaderBytes = 24;
constexpr std::uint8_t kResponseMagic = 0x81;

enum Op : std::uint8_t {
  kGet = 0x00, kSet = 0x01, kAdd = 0x02, kReplace = 0x03, kDelete = 0x04, kIncr = 0x05,
  kDecr = 0x06, kQuit = 0x07, kFlush = 0x08, kGetQ = 0x09, kNoop = 0x0a, kVersion = 0x0b,
  kGetK = 0x0c, kGetKQ = 0x0d, kAppend = 0x0e, kPrepend = 0x0f, kStat = 0x10, kSetQ = 0x11,
  kAddQ = 0x12, kReplaceQ = 0x13, kDeleteQ = 0x14, kIncrQ = 0x15, kDecrQ = 0x16,
  kQuitQ = 0x17, kFlushQ = 0x18, kAppendQ = 0x19, kPrependQ = 0x1a, kVerbosity = 0x1b,
  kTouch = 0x1c, kGat = 0x1d, kGatQ = 0x1e, kGatK = 0x23, kGatKQ = 0x24,
};

enum Status16 : std::uint16_t {
  kOk = 0x0000, kKeyNotFound = 0x0001, kKeyExists = 0x0002, kTooLarge = 0x0003,
  kInvalid = 0x0004, kNotStored = 0x0005, kNonNumeric = 0x0006, kUnknownCommand = 0x0081,
  kOutOfMemory = 0x0082, kInternalError = 0x0084,
};

// Extras of the requests that carry them.
constexpr std::size_t kStoreExtras = 8;   // flags, expiration
constexpr std::size_t kArithExtras = 20;  // delta, initial, expiration
constexpr std::size_t kTouchExtras = 4;   // expiration
// An incr/decr expiration of all ones: do not create a missing key.
constexpr std::uint32_t kNoCreate = 0xffffffffu;
// The largest body accepted besides a value: extras plus the longest key.
constexpr std::size_t kMaxNonValueBody = kArithExtras + kMaxKeyBytes;

std::uint64_t be(std::string_view s, std::size_t at, std::size_t bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < bytes; ++i) v = v << 8 | static_cast<std::uint8_t>(s[at + i]);
  return v;
}

void put_be(std::string& out, std::uint64_t v, std::size_t bytes) {
  for (std::size_t i = bytes; i-- > 0;) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

struct Header {
  std::uint8_t op = 0;
  std::size_t keylen = 0, extlen = 0, body = 0;
  std::uint32_t opaque = 0;
  std::uint64_t cas = 0;
};

void respond(std::string& out, const Header& h, std::uint16_t status, std::string_view extras,
             std::string_view key, std::string_view value, std::uint64_t cas) {
  out += static_cast<char>(kResponseMagic);
  out += static_cast<char>(h.op);
  put_be(out, key.size(), 2);
  out += static_cast<char>(extras.size());
  out += '\0';  // data type: raw bytes
  put_be(out, status, 2);
  put_be(out, extras.size() + key.size() + value.size(), 4);
  put_be(out, h.opaque, 4);
  put_be(out, cas, 8);
  out += extras;
  out += key;
  out += value;
}

void error(std::string& out, const Header& h, std::uint16_t status) {
  std::string_view msg = "Internal error";
  switch (status) {
    case kKeyNotFound: msg = "Not found"; break;
    case kKeyExists: msg = "Data exists for key"; break;
    case kTooLarge: msg = "Too large"; break;
    case kInvalid: msg = "Invalid arguments"; break;
    case kNotStored: msg = "Not stored"; break;
    case kNonNumeric: msg = "Non-numeric server-side value for incr or decr"; break;
    case kUnknownCommand: msg = "Unknown command"; break;
    case kOutOfMemory: msg = "Out of memory"; break;
    default: break;
  }
  respond(out, h, status, {}, {}, msg, 0);
}

bool quiet(std::uint8_t op) {
  switch (op) {
    case kGetQ: case kGetKQ: case kSetQ: case kAddQ: case kReplaceQ: case kDeleteQ:
    case kIncrQ: case kDecrQ: case kQuitQ: case kFlushQ: case kAppendQ: case kPrependQ:
    case kGatQ: case kGatKQ:
      return true;
    default:
      return false;
  }
}

// The shape each opcode's request must have (memcached's checks): extras length, whether a
// key is required or forbidden, and whether a value may follow.
bool well_formed(const Header& h) {
  const std::size_t value = h.body - h.extlen - h.keylen;
  const bool key = h.keylen > 0 && h.keylen <= kMaxKeyBytes;
  switch (h.op) {
    case kGet: case kGetQ: case kGetK: case kGetKQ: case kDelete: case kDeleteQ:
      return h.extlen == 0 && key && value == 0;
    case kSet: case kSetQ: case kAdd: case kAddQ: case kReplace: case kReplaceQ:
      return h.extlen == kStoreExtras && key;
    case kAppend: case kAppendQ: case kPrepend: case kPrependQ:
      return h.extlen == 0 && key;
    case kIncr: case kIncrQ: case kDecr: case kDecrQ:
      return h.extlen == kArithExtras && key && value == 0;
    case kQuit: case kQuitQ: case kNoop: case kVersion:
      return h.body == 0;
    case kFlush: case kFlushQ:
      return (h.extlen == 0 || h.extlen == kTouchExtras) && h.keylen == 0 && value == 0;
    case kStat:
      return h.extlen == 0 && h.keylen <= kMaxKeyBytes && value == 0;
    case kVerbosity:
      return h.extlen == kTouchExtras && h.keylen == 0 && value == 0;
    case kTouch: case kGat: case kGatQ: case kGatK: case kGatKQ:
      return h.extlen == kTouchExtras && key && value == 0;
    default:
      return true;  // unknown opcodes are answered as such
  }
}

bool is_store(std::uint8_t op) {
  return op == kSet || op == kSetQ || op == kAdd || op == kAddQ || op == kReplace ||
         op == kReplaceQ || op == kAppend || op == kAppendQ || op == kPrepend || op == kPrependQ;
}

}  // namespace

std::size_t Session::binary_request(std::string_view in, std::string& out, bool* close) {
  if (in.size() < kHeaderBytes) return kNeedMore;
  Header h;
  h.op = static_cast<std::uint8_t>(in[1]);
  h.keylen = be(in, 2, 2);
  h.extlen = static_cast<std::uint8_t>(in[4]);
  h.body = be(in, 8, 4);
  h.opaque = static_cast<std::uint32_t>(be(in, 12, 4));
  h.cas = be(in, 16, 8);
  // A body larger than anything the opcode can carry is answered from the header and
  // skipped as it arrives, never buffered.
  const std::size_t limit = kMaxNonValueBody + (is_store(h.op) ? ctx_.item_max : 0);
  if (h.body > limit || h.keylen + h.extlen > h.body) {
    c_.add(c_.protocol_errors);
    error(out, h, is_store(h.op) && h.keylen + h.extlen <= h.body ? kTooLarge : kInvalid);
    swallow_ = h.body;
    return kHeaderBytes;
  }
  if (in.size() < kHeaderBytes + h.body) return kNeedMore;
  const std::size_t used = kHeaderBytes + h.body;
  const std::string_view extras = in.substr(kHeaderBytes, h.extlen);
  const std::string_view key = in.substr(kHeaderBytes + h.extlen, h.keylen);
  const std::string_view value = in.substr(kHeaderBytes + h.extlen + h.keylen,
                                           h.body - h.extlen - h.keylen);
  if (!well_formed(h)) {
    c_.add(c_.protocol_errors);
    error(out, h, kInvalid);
    return used;
  }
  const bool q = quiet(h.op);
  switch (h.op) {
    case kGet: case kGetQ: case kGetK: case kGetKQ:
    case kGat: case kGatQ: case kGatK: case kGatKQ: {
      const bool gat = h.op == kGat || h.op == kGatQ || h.op == kGatK || h.op == kGatKQ;
      std::optional<std::int64_t> touch;
      if (gat) touch = static_cast<std::int64_t>(be(extras, 0, 4));
      scratch_.clear();
      auto r = ctx_.store->get(key, &scratch_, touch);
      c_.add(c_.cmd_get);
      if (gat) c_.add(c_.cmd_touch);
      if (!r.ok()) {
        error(out, h, kInternalError);
      } else if (!r->has_value()) {
        c_.add(gat ? c_.touch_misses : c_.get_misses);
        if (!q) {
          const bool with_key = h.op == kGetK || h.op == kGatK;
          respond(out, h, kKeyNotFound, {}, with_key ? key : std::string_view{}, "Not found", 0);
        }
      } else {
        c_.add(gat ? c_.touch_hits : c_.get_hits);
        std::string flags;
        put_be(flags, (*r)->flags, 4);
        const bool with_key = h.op == kGetK || h.op == kGetKQ || h.op == kGatK || h.op == kGatKQ;
        respond(out, h, kOk, flags, with_key ? key : std::string_view{}, scratch_, (*r)->cas);
      }
      return used;
    }
    case kSet: case kSetQ: case kAdd: case kAddQ: case kReplace: case kReplaceQ:
    case kAppend: case kAppendQ: case kPrepend: case kPrependQ: {
      StoreMode mode = StoreMode::kSet;
      if (h.op == kAdd || h.op == kAddQ) mode = StoreMode::kAdd;
      if (h.op == kReplace || h.op == kReplaceQ) mode = StoreMode::kReplace;
      if (h.op == kAppend || h.op == kAppendQ) mode = StoreMode::kAppend;
      if (h.op == kPrepend || h.op == kPrependQ) mode = StoreMode::kPrepend;
      const bool has_extras = h.extlen == kStoreExtras;
      const auto flags = has_extras ? static_cast<std::uint32_t>(be(extras, 0, 4)) : 0u;
      const auto exptime = has_extras ? static_cast<std::int64_t>(be(extras, 4, 4)) : 0;
      c_.add(c_.cmd_set);
      std::uint64_t new_cas = 0;
      auto r = ctx_.store->store(mode, key, flags, exptime, value, h.cas, &new_cas);
      if (!r.ok()) {
        const auto code = r.status().code();
        error(out, h, code == StatusCode::kOutOfRange          ? kTooLarge
                      : code == StatusCode::kResourceExhausted ? kOutOfMemory
                                                               : kInternalError);
        return used;
      }
      if (h.cas != 0) {
        c_.add(*r == StoreOutcome::kStored   ? c_.cas_hits
               : *r == StoreOutcome::kExists ? c_.cas_badval
                                             : c_.cas_misses);
      }
      switch (*r) {
        case StoreOutcome::kStored:
          if (!q) respond(out, h, kOk, {}, {}, {}, new_cas);
          break;
        case StoreOutcome::kExists: error(out, h, kKeyExists); break;
        case StoreOutcome::kNotFound: error(out, h, kKeyNotFound); break;
        case StoreOutcome::kNotStored:
          // add of a present key: exists; replace of an absent one: not found.
          error(out, h, mode == StoreMode::kAdd       ? kKeyExists
                        : mode == StoreMode::kReplace ? kKeyNotFound
                                                      : kNotStored);
          break;
      }
      return used;
    }
    case kDelete: case kDeleteQ: {
      auto r = ctx_.store->remove(key, h.cas);
      if (!r.ok()) error(out, h, kInternalError);
      else if (*r == StoreOutcome::kStored) {
        c_.add(c_.delete_hits);
        if (!q) respond(out, h, kOk, {}, {}, {}, 0);
      } else {
        c_.add(c_.delete_misses);
        error(out, h, *r == StoreOutcome::kExists ? kKeyExists : kKeyNotFound);
      }
      return used;
    }
    case kIncr: case kIncrQ: case kDecr: case kDecrQ: {
      const bool incr = h.op == kIncr || h.op == kIncrQ;
      const std::uint64_t delta = be(extras, 0, 8), initial = be(extras, 8, 8);
      const auto exp = static_cast<std::uint32_t>(be(extras, 16, 4));
      std::uint64_t result = 0, new_cas = 0;
      auto r = ctx_.store->arith(key, incr, delta,
                                 exp == kNoCreate ? std::nullopt : std::optional(initial),
                                 static_cast<std::int64_t>(exp), h.cas, &result, &new_cas);
      if (!r.ok()) {
        error(out, h, r.status().code() == StatusCode::kResourceExhausted ? kOutOfMemory
                                                                          : kInternalError);
        return used;
      }
      switch (*r) {
        case ArithOutcome::kDone: {
          c_.add(incr ? c_.incr_hits : c_.decr_hits);
          std::string v;
          put_be(v, result, 8);
          if (!q) respond(out, h, kOk, {}, {}, v, new_cas);
          break;
        }
        case ArithOutcome::kNotFound:
          c_.add(incr ? c_.incr_misses : c_.decr_misses);
          error(out, h, kKeyNotFound);
          break;
        case ArithOutcome::kExists: error(out, h, kKeyExists); break;
        case ArithOutcome::kNonNumeric: error(out, h, kNonNumeric); break;
      }
      return used;
    }
    case kQuit: case kQuitQ:
      if (!q) respond(out, h, kOk, {}, {}, {}, 0);
      *close = true;
      return used;
    case kFlush: case kFlushQ:
      c_.add(c_.cmd_flush);
      ctx_.store->flush_all(h.extlen == kTouchExtras ? static_cast<std::int64_t>(be(extras, 0, 4))
                                                     : 0);
      if (!q) respond(out, h, kOk, {}, {}, {}, 0);
      return used;
    case kNoop:
      respond(out, h, kOk, {}, {}, {}, 0);
      return used;
    case kVersion:
      respond(out, h, kOk, {}, {}, kReportedVersion, 0);
      return used;
    case kVerbosity:
      ctx_.verbosity.store(static_cast<int>(be(extras, 0, 4)), std::memory_order_relaxed);
      respond(out, h, kOk, {}, {}, {}, 0);
      return used;
    case kTouch: {
      auto r = ctx_.store->touch(key, static_cast<std::int64_t>(be(extras, 0, 4)));
      c_.add(c_.cmd_touch);
      if (!r.ok()) error(out, h, kInternalError);
      else if (*r) {
        c_.add(c_.touch_hits);
        respond(out, h, kOk, {}, {}, {}, 0);
      } else {
        c_.add(c_.touch_misses);
        error(out, h, kKeyNotFound);
      }
      return used;
    }
    case kStat: {
      StatList list;
      if (key.empty()) {
        if (ctx_.stats) ctx_.stats(list);
      } else if (key == "settings") {
        if (ctx_.settings) ctx_.settings(list);
      } else if (key == "reset") {
        if (ctx_.reset_stats) ctx_.reset_stats();
      } else {
        error(out, h, kKeyNotFound);
        return used;
      }
      for (const auto& [name, v] : list) respond(out, h, kOk, {}, name, v, 0);
      respond(out, h, kOk, {}, {}, {}, 0);  // the end of the list
      return used;
    }
    default:
      c_.add(c_.protocol_errors);
      error(out, h, kUnknownCommand);
      return used;
  }
}

}  // namespace farmem::kv
