// farmem-sort's records: sortbenchmark-style fixed-size records, their generator (a pure
// function of the seed and the record's index) and an order-independent checksum.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace farmem::sort {

/// One record, as gensort lays them out: a 10-byte key compared as unsigned bytes, then a
/// 90-byte payload. Ours carries the record's index in its first 8 bytes (so that no two
/// records are equal, and a lost or duplicated record changes the multiset), then filler.
///
///   0          10         18                                                   100
///   +----------+----------+-----------------------------------------------------+
///   | key (10) | index(8) | filler (82): a function of the seed and the index   |
///   +----------+----------+-----------------------------------------------------+
struct Record {
  static constexpr std::size_t kKeyBytes = 10;
  static constexpr std::size_t kBytes = 100;
  std::byte key[kKeyBytes];
  std::byte payload[kBytes - kKeyBytes];
};
static_assert(sizeof(Record) == Record::kBytes && alignof(Record) == 1);

/// The key as two big-endian integers, so that integer order is byte order.
struct KeyParts {
  std::uint64_t hi;  ///< key bytes 0..7
  std::uint16_t lo;  ///< key bytes 8..9
  friend bool operator<(const KeyParts& a, const KeyParts& b) {
    return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
  }
  friend bool operator==(const KeyParts&, const KeyParts&) = default;
};

inline KeyParts key_of(const Record& r) {
  std::uint64_t hi;
  std::uint16_t lo;
  std::memcpy(&hi, r.key, 8);
  std::memcpy(&lo, r.key + 8, 2);
  if constexpr (std::endian::native == std::endian::little) {
    hi = __builtin_bswap64(hi);
    lo = __builtin_bswap16(lo);
  }
  return {hi, lo};
}

/// The sort order: by key only (ties, which random 80-bit keys practically never have, in
/// any order).
struct KeyLess {
  bool operator()(const Record& a, const Record& b) const { return key_of(a) < key_of(b); }
};

/// Record `index` of the input generated from `seed`.
void generate_record(std::uint64_t seed, std::uint64_t index, Record& out);

/// An order-independent checksum of a multiset of records: the count and two sums (mod 2^64)
/// of independent 64-bit hashes of each record's 100 bytes. Equal multisets give equal
/// checksums whatever their order; a changed, lost or duplicated record changes both sums
/// (barring a 2^-128 coincidence). Sums of parts add up to the sum of the whole.
struct Checksum {
  std::uint64_t count = 0;
  std::uint64_t sum_a = 0;
  std::uint64_t sum_b = 0;

  void add(const Record& r);
  void add(std::span<const Record> rs) {
    for (const Record& r : rs) add(r);
  }
  void merge(const Checksum& o) {
    count += o.count;
    sum_a += o.sum_a;
    sum_b += o.sum_b;
  }
  friend bool operator==(const Checksum&, const Checksum&) = default;
};

}  // namespace farmem::sort
