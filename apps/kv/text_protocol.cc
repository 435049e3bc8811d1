// Session: the text protocol (memcached's doc/protocol.txt), and the loop that tells text
// requests from binary ones.
#include <charconv>
#include <optional>

#include "kv/protocol.h"

namespace farmem::kv {

namespace {

constexpr std::uint8_t kBinaryRequestMagic = 0x80;
// Most tokens any non-retrieval command takes ("cas k f e b c noreply"), plus one to notice
// a longer line.
constexpr std::size_t kMaxCommandTokens = 8;
constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kBadFormat = "CLIENT_ERROR bad command line format\r\n";

template <typename T>
bool parse_number(std::string_view s, T* v) {
  if (s.empty() || (s[0] == '-' && !std::is_signed_v<T>)) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), *v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

void split(std::string_view line, std::vector<std::string_view>& tok, std::size_t max) {
  tok.clear();
  std::size_t i = 0;
  while (i < line.size() && tok.size() < max) {
    while (i < line.size() && line[i] == ' ') ++i;
    if (i == line.size()) break;
    const std::size_t j = std::min(line.find(' ', i), line.size());
    tok.push_back(line.substr(i, j - i));
    i = j;
  }
}

bool take_noreply(std::vector<std::string_view>& tok) {
  if (!tok.empty() && tok.back() == "noreply") {
    tok.pop_back();
    return true;
  }
  return false;
}

std::string_view line_at(std::string_view in, std::size_t line_end) {
  std::string_view line = in.substr(0, line_end);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

bool is_retrieval(std::string_view cmd) {
  return cmd == "get" || cmd == "gets" || cmd == "gat" || cmd == "gats";
}

}  // namespace

std::size_t Session::process(std::string_view in, std::string& out, bool* close) {
  std::size_t pos = 0;
  while (pos < in.size() && !*close && out.size() < kMaxPendingReplyBytes) {
    if (swallow_ > 0) {  // the rest of a value too large to store
      const std::size_t n = std::min<std::uint64_t>(swallow_, in.size() - pos);
      pos += n;
      swallow_ -= n;
      continue;
    }
    const std::string_view rest = in.substr(pos);
    std::size_t used;
    if (long_get_) {
      used = long_get(rest, out);
    } else if (static_cast<std::uint8_t>(rest[0]) == kBinaryRequestMagic) {
      used = binary_request(rest, out, close);
    } else {
      const std::size_t nl = rest.find('\n');
      if (nl == std::string_view::npos) {
        if (rest.size() > kMaxLineBytes && (used = long_get(rest, out)) != kNeedMore) {
          pos += used;
          continue;
        }
        if (rest.size() > kMaxLineBytes) {
          out += "CLIENT_ERROR line too long\r\n";
          c_.add(c_.protocol_errors);
          *close = true;
          return in.size();
        }
        break;
      }
      used = text_request(rest, nl, out, close);
    }
    if (used == kNeedMore) break;
    pos += used;
  }
  return pos;
}

std::size_t Session::text_request(std::string_view in, std::size_t line_end, std::string& out,
                                  bool* close) {
  const std::string_view line = line_at(in, line_end);
  thread_local std::vector<std::string_view> tok;
  split(line, tok, is_retrieval(line.substr(0, line.find(' '))) ? line.size() : kMaxCommandTokens);
  const std::size_t used = line_end + 1;
  if (tok.empty()) {
    out += "ERROR\r\n";
    return used;
  }
  const std::string_view cmd = tok[0];
  if (cmd == "get" || cmd == "gets") {
    text_get(tok, 1, cmd == "gets", std::nullopt, out);
  } else if (cmd == "gat" || cmd == "gats") {
    std::int64_t exptime = 0;
    if (tok.size() < 3) out += "ERROR\r\n";
    else if (!parse_number(tok[1], &exptime)) out += "CLIENT_ERROR invalid exptime argument\r\n";
    else text_get(tok, 2, cmd == "gats", exptime, out);
  } else if (cmd == "set" || cmd == "add" || cmd == "replace" || cmd == "append" ||
             cmd == "prepend" || cmd == "cas") {
    const std::size_t data = text_store(tok, in.substr(used), out);
    return data == kNeedMore ? kNeedMore : used + data;
  } else if (cmd == "delete") {
    const bool noreply = take_noreply(tok);
    // "delete <key> 0" is an old form memcached still accepts.
    if (tok.size() < 2 || tok.size() > 3 || (tok.size() == 3 && tok[2] != "0") ||
        tok[1].size() > kMaxKeyBytes) {
      out += "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
      return used;
    }
    auto r = ctx_.store->remove(tok[1]);
    if (!r.ok()) {
      out += "SERVER_ERROR " + r.status().message() + "\r\n";
    } else {
      c_.add(*r == StoreOutcome::kStored ? c_.delete_hits : c_.delete_misses);
      if (!noreply) out += *r == StoreOutcome::kStored ? "DELETED\r\n" : "NOT_FOUND\r\n";
    }
  } else if (cmd == "incr" || cmd == "decr") {
    text_arith(tok, cmd == "incr", out);
  } else if (cmd == "touch") {
    const bool noreply = take_noreply(tok);
    std::int64_t exptime = 0;
    if (tok.size() != 3 || tok[1].size() > kMaxKeyBytes) {
      out += "ERROR\r\n";
    } else if (!parse_number(tok[2], &exptime)) {
      out += "CLIENT_ERROR invalid exptime argument\r\n";
    } else {
      auto r = ctx_.store->touch(tok[1], exptime);
      c_.add(c_.cmd_touch);
      if (!r.ok()) out += "SERVER_ERROR " + r.status().message() + "\r\n";
      else {
        c_.add(*r ? c_.touch_hits : c_.touch_misses);
        if (!noreply) out += *r ? "TOUCHED\r\n" : "NOT_FOUND\r\n";
      }
    }
  } else if (cmd == "flush_all") {
    const bool noreply = take_noreply(tok);
    std::int64_t delay = 0;
    if (tok.size() > 2 || (tok.size() == 2 && !parse_number(tok[1], &delay))) {
      out += kBadFormat;
    } else {
      c_.add(c_.cmd_flush);
      ctx_.store->flush_all(delay);
      if (!noreply) out += "OK\r\n";
    }
  } else if (cmd == "stats") {
    text_stats(tok, out);
  } else if (cmd == "version") {  // memcached 1.6 ignores arguments (and noreply) here
    out += std::string("VERSION ") + kReportedVersion + "\r\n";
  } else if (cmd == "verbosity") {
    const bool noreply = take_noreply(tok);
    int level = 0;
    if (noreply && tok.size() <= 2) {
      // "verbosity noreply" included: no reply at all, as memcached.
      if (tok.size() == 2 && parse_number(tok[1], &level)) {
        ctx_.verbosity.store(level, std::memory_order_relaxed);
      }
    } else if (tok.size() != 2 || !parse_number(tok[1], &level)) {
      out += "ERROR\r\n";
    } else {
      ctx_.verbosity.store(level, std::memory_order_relaxed);
      if (!noreply) out += "OK\r\n";
    }
  } else if (cmd == "quit" && tok.size() == 1) {
    *close = true;
  } else {
    c_.add(c_.protocol_errors);
    out += "ERROR\r\n";
  }
  return used;
}

std::size_t Session::text_store(std::vector<std::string_view>& tok, std::string_view data,
                                std::string& out) {
  const bool noreply = take_noreply(tok);
  const bool is_cas = tok[0] == "cas";
  std::uint32_t flags = 0;
  std::int64_t exptime = 0, bytes = 0;
  std::uint64_t cas = 0;
  if (tok.size() != (is_cas ? 6u : 5u) || tok[1].size() > kMaxKeyBytes ||
      !parse_number(tok[2], &flags) || !parse_number(tok[3], &exptime) ||
      !parse_number(tok[4], &bytes) || bytes < 0 || bytes > 0x7ffffff0 ||
      (is_cas && !parse_number(tok[5], &cas))) {
    // The value's length is unknown: what follows is read as commands, as memcached does.
    c_.add(c_.protocol_errors);
    out += kBadFormat;
    return 0;
  }
  const auto need = static_cast<std::uint64_t>(bytes) + 2;
  if (tok[1].size() + static_cast<std::uint64_t>(bytes) > ctx_.item_max) {
    out += "SERVER_ERROR object too large for cache\r\n";
    swallow_ = need;  // the value is skipped as it arrives, never buffered whole
    return 0;
  }
  if (data.size() < need) return kNeedMore;
  if (data.substr(bytes, 2) != kCrlf) {
    c_.add(c_.protocol_errors);
    out += "CLIENT_ERROR bad data chunk\r\n";
    return need;
  }
  StoreMode mode = StoreMode::kSet;
  if (tok[0] == "add") mode = StoreMode::kAdd;
  else if (tok[0] == "replace") mode = StoreMode::kReplace;
  else if (tok[0] == "append") mode = StoreMode::kAppend;
  else if (tok[0] == "prepend") mode = StoreMode::kPrepend;
  else if (is_cas) mode = StoreMode::kCas;
  c_.add(c_.cmd_set);
  std::uint64_t new_cas = 0;
  auto r = ctx_.store->store(mode, tok[1], flags, exptime, data.substr(0, bytes), cas, &new_cas);
  if (!r.ok()) {
    if (r.status().code() == StatusCode::kOutOfRange) {
      out += "SERVER_ERROR object too large for cache\r\n";
    } else if (r.status().code() == StatusCode::kResourceExhausted) {
      out += "SERVER_ERROR out of memory storing object\r\n";
    } else {
      out += "SERVER_ERROR " + r.status().message() + "\r\n";
    }
    return need;
  }
  if (is_cas) {
    c_.add(*r == StoreOutcome::kStored   ? c_.cas_hits
           : *r == StoreOutcome::kExists ? c_.cas_badval
                                         : c_.cas_misses);
  }
  if (noreply) return need;
  switch (*r) {
    case StoreOutcome::kStored: out += "STORED\r\n"; break;
    case StoreOutcome::kNotStored: out += "NOT_STORED\r\n"; break;
    case StoreOutcome::kExists: out += "EXISTS\r\n"; break;
    case StoreOutcome::kNotFound: out += "NOT_FOUND\r\n"; break;
  }
  return need;
}

std::size_t Session::long_get(std::string_view in, std::string& out) {
  thread_local std::vector<std::string_view> tok;
  const std::size_t nl = in.find('\n');
  if (!long_get_) {  // the start of such a line: get/gets/gat/gats and its first keys
    const std::size_t space = in.rfind(' ');
    if (space == std::string_view::npos) return kNeedMore;
    split(in.substr(0, space), tok, space);
    if (tok.empty() || !is_retrieval(tok[0])) return kNeedMore;
    LongGet g;
    g.with_cas = tok[0] == "gets" || tok[0] == "gats";
    std::size_t first = 1;
    if (tok[0] == "gat" || tok[0] == "gats") {
      std::int64_t exptime = 0;
      if (tok.size() < 2 || !parse_number(tok[1], &exptime)) return kNeedMore;
      g.touch = exptime;
      first = 2;
    }
    long_get_ = g;
    text_get(tok, first, g.with_cas, g.touch, out, /*last=*/false);
    return space + 1;
  }
  // A continuation: keys up to the newline (the end of the request), or up to the last
  // space when the line goes on beyond the buffer.
  std::size_t end = nl;
  if (nl == std::string_view::npos) {
    if (in.size() <= kMaxLineBytes) return kNeedMore;
    end = in.rfind(' ');
    if (end == std::string_view::npos) {  // one "key" longer than a line: not a key
      out += kBadFormat;
      long_get_->failed = true;
      return in.size();
    }
  }
  split(line_at(in, end), tok, end);
  tok.insert(tok.begin(), "get");
  if (!long_get_->failed) {
    text_get(tok, 1, long_get_->with_cas, long_get_->touch, out, nl != std::string_view::npos);
  }
  if (nl != std::string_view::npos) long_get_.reset();
  return end + 1;
}

void Session::text_get(std::vector<std::string_view>& tok, std::size_t first_key, bool with_cas,
                       std::optional<std::int64_t> touch, std::string& out, bool last) {
  if (tok.size() <= first_key && long_get_) {  // the tail of a long line: no keys left
    if (last && !long_get_->failed) out += "END\r\n";
    return;
  }
  if (tok.size() <= first_key) {
    out += "ERROR\r\n";
    return;
  }
  for (std::size_t i = first_key; i < tok.size(); ++i) {
    if (tok[i].size() > kMaxKeyBytes) {
      c_.add(c_.protocol_errors);
      out += kBadFormat;
      if (long_get_) long_get_->failed = true;
      return;
    }
  }
  const std::size_t start = out.size();
  for (std::size_t i = first_key; i < tok.size(); ++i) {
    scratch_.clear();
    auto r = ctx_.store->get(tok[i], &scratch_, touch);
    c_.add(c_.cmd_get);
    if (touch) c_.add(c_.cmd_touch);
    if (!r.ok()) {  // nothing half-sent: the items so far are dropped with the error
      out.resize(start);
      out += "SERVER_ERROR " + r.status().message() + "\r\n";
      if (long_get_) long_get_->failed = true;
      return;
    }
    if (!r->has_value()) {
      c_.add(touch ? c_.touch_misses : c_.get_misses);
      continue;
    }
    c_.add(touch ? c_.touch_hits : c_.get_hits);
    out += "VALUE ";
    out += tok[i];
    out += ' ';
    out += std::to_string((*r)->flags);
    out += ' ';
    out += std::to_string(scratch_.size());
    if (with_cas) {
      out += ' ';
      out += std::to_string((*r)->cas);
    }
    out += kCrlf;
    out += scratch_;
    out += kCrlf;
  }
  if (last) out += "END\r\n";
}

void Session::text_arith(std::vector<std::string_view>& tok, bool incr, std::string& out) {
  const bool noreply = take_noreply(tok);
  std::uint64_t delta = 0;
  if (tok.size() != 3 || tok[1].size() > kMaxKeyBytes) {
    out += "ERROR\r\n";
    return;
  }
  if (!parse_number(tok[2], &delta)) {
    out += "CLIENT_ERROR invalid numeric delta argument\r\n";
    return;
  }
  std::uint64_t value = 0, cas = 0;
  auto r = ctx_.store->arith(tok[1], incr, delta, std::nullopt, 0, 0, &value, &cas);
  if (!r.ok()) {
    out += r.status().code() == StatusCode::kResourceExhausted
               ? std::string("SERVER_ERROR out of memory\r\n")
               : "SERVER_ERROR " + r.status().message() + "\r\n";
    return;
  }
  switch (*r) {
    case ArithOutcome::kDone:
      c_.add(incr ? c_.incr_hits : c_.decr_hits);
      if (!noreply) out += std::to_string(value) + "\r\n";
      break;
    case ArithOutcome::kNotFound:
    case ArithOutcome::kExists:  // lost every race to concurrent writers: as if gone
      c_.add(incr ? c_.incr_misses : c_.decr_misses);
      if (!noreply) out += "NOT_FOUND\r\n";
      break;
    case ArithOutcome::kNonNumeric:
      out += "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
      break;
  }
}

void Session::text_stats(std::vector<std::string_view>& tok, std::string& out) {
  StatList list;
  if (tok.size() == 1) {
    if (ctx_.stats) ctx_.stats(list);
  } else if (tok.size() == 2 && tok[1] == "reset") {
    if (ctx_.reset_stats) ctx_.reset_stats();
    out += "RESET\r\n";
    return;
  } else if (tok.size() == 2 && tok[1] == "settings") {
    if (ctx_.settings) ctx_.settings(list);
  } else if (tok.size() == 2 && (tok[1] == "items" || tok[1] == "slabs" || tok[1] == "sizes" ||
                                 tok[1] == "conns")) {
    // memcached's per-slab-class views: farmem-kv has no slab classes; nothing to list.
  } else {
    out += "ERROR\r\n";
    return;
  }
  for (const auto& [name, value] : list) out += "STAT " + name + " " + value + "\r\n";
  out += "END\r\n";
}

void Session::collect_get_keys(std::string_view in, std::vector<std::string_view>& keys) {
  std::size_t pos = 0;
  thread_local std::vector<std::string_view> tok;
  // Bounded by the input: every step moves pos forward or stops.
  while (pos < in.size()) {
    const std::string_view rest = in.substr(pos);
    if (static_cast<std::uint8_t>(rest[0]) == kBinaryRequestMagic) {
      if (rest.size() < 24) return;
      const auto u8 = [&](std::size_t i) { return static_cast<std::uint8_t>(rest[i]); };
      const std::uint8_t op = u8(1);
      const std::size_t keylen = std::size_t{u8(2)} << 8 | u8(3);
      const std::size_t extlen = u8(4);
      const std::size_t body = std::size_t{u8(8)} << 24 | std::size_t{u8(9)} << 16 |
                               std::size_t{u8(10)} << 8 | u8(11);
      if (rest.size() < 24 + body || extlen + keylen > body) return;
      // GET, GETQ, GETK, GETKQ, GAT, GATQ, GATK, GATKQ
      const bool get = op == 0x00 || op == 0x09 || op == 0x0c || op == 0x0d || op == 0x1d ||
                       op == 0x1e || op == 0x23 || op == 0x24;
      if (get && keylen > 0) keys.push_back(rest.substr(24 + extlen, keylen));
      pos += 24 + body;
      continue;
    }
    const std::size_t nl = rest.find('\n');
    if (nl == std::string_view::npos) return;
    const std::string_view line = line_at(rest, nl);
    const std::string_view cmd = line.substr(0, line.find(' '));
    pos += nl + 1;
    if (is_retrieval(cmd)) {
      split(line, tok, line.size());
      const std::size_t first = cmd[1] == 'a' ? 2 : 1;  // gat/gats: the exptime first
      for (std::size_t i = first; i < tok.size(); ++i) keys.push_back(tok[i]);
    } else if (cmd == "set" || cmd == "add" || cmd == "replace" || cmd == "append" ||
               cmd == "prepend" || cmd == "cas") {
      split(line, tok, kMaxCommandTokens);
      std::uint64_t bytes = 0;
      if (tok.size() < 5 || !parse_number(tok[4], &bytes)) return;  // process() will say
      pos += bytes + 2;  // skip the value
    }
  }
}

}  // namespace farmem::kv
