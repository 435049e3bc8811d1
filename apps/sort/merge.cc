// The k-way merge of sorted runs, split into key ranges so that every thread merges its own.
#include <algorithm>

#include "sort/sorter.h"

namespace farmem::sort {
namespace {

// Splitter samples per run and partition: the partitions' sizes vary by about a run's length
// over this many, which is small next to a partition, for a sort of a few thousand keys.
constexpr std::uint64_t kSamplesPerPart = 32;

struct Head {
  KeyParts key;
  std::uint32_t stream;
};

// Min-heap order on the key (the stream breaks ties, so the merge is deterministic).
bool after(const Head& a, const Head& b) {
  return b.key < a.key || (a.key == b.key && a.stream > b.stream);
}

// Restores the heap after the top changed.
void sift_down(std::vector<Head>& h) {
  const std::size_t n = h.size();
  std::size_t i = 0;
  const Head x = h[0];
  for (;;) {
    std::size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && after(h[c], h[c + 1])) ++c;
    if (!after(x, h[c])) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

// Hints for one sequential stream over `mem`: the window ahead is pulled, the ones behind
// dropped (written back first when dirty). Offsets are bytes.
class StreamHints {
 public:
  StreamHints(Memory& mem, std::uint64_t begin, std::uint64_t end, const SortPlan& plan,
              bool prefetch)
      : mem_(mem), end_(end), window_(plan.window_bytes), on_(plan.hints), prefetch_(prefetch),
        dropped_to_(begin), next_(begin) {}
  // Called with the stream's position; cheap unless it crossed into a new window.
  Status at(std::uint64_t pos) {
    if (!on_ || pos < next_) return Status::Ok();
    const std::uint64_t w = pos / window_ * window_;
    if (w > dropped_to_) {
      FARMEM_RETURN_IF_ERROR(mem_.advise(dropped_to_, w - dropped_to_, Advice::kDontNeed));
      dropped_to_ = w;
    }
    next_ = w + window_;
    if (prefetch_ && next_ < end_) {
      FARMEM_RETURN_IF_ERROR(
          mem_.advise(next_, std::min(window_, end_ - next_), Advice::kWillNeed));
    }
    return Status::Ok();
  }
  Status finish() {
    if (!on_ || end_ <= dropped_to_) return Status::Ok();
    return mem_.advise(dropped_to_, end_ - dropped_to_, Advice::kDontNeed);
  }

 private:
  Memory& mem_;
  std::uint64_t end_, window_;
  bool on_, prefetch_;
  std::uint64_t dropped_to_, next_;
};

}  // namespace

std::vector<Partition> plan_partitions(const Record* base, const std::vector<Run>& runs,
                                       unsigned parts) {
  parts = std::max(1u, parts);
  std::vector<KeyParts> samples;
  const std::uint64_t per_run = kSamplesPerPart * parts;
  for (const Run& r : runs) {
    const std::uint64_t n = r.end - r.begin;
    for (std::uint64_t j = 0; n > 0 && j < std::min(per_run, n); ++j) {
      samples.push_back(key_of(base[r.begin + (2 * j + 1) * n / (2 * std::min(per_run, n))]));
    }
  }
  std::sort(samples.begin(), samples.end());
  std::vector<Partition> out(parts);
  std::uint64_t out_pos = 0;
  for (unsigned p = 0; p < parts; ++p) {
    Partition& part = out[p];
    part.out_begin = out_pos;
    for (const Run& r : runs) {
      // Cut every run at the same splitter keys: all records of a key fall in one partition.
      auto cut = [&](unsigned q) -> std::uint64_t {
        if (q == 0) return r.begin;
        if (q == parts || samples.empty()) return r.end;
        const KeyParts s = samples[q * samples.size() / parts];
        const Record* it = std::lower_bound(base + r.begin, base + r.end, s,
                                            [](const Record& a, const KeyParts& k) {
                                              return key_of(a) < k;
                                            });
        return static_cast<std::uint64_t>(it - base);
      };
      part.first.push_back(cut(p));
      part.last.push_back(cut(p + 1));
      out_pos += part.last.back() - part.first.back();
    }
  }
  return out;
}

Status merge_partition(Memory& in, Memory& out, const Partition& p, const SortPlan& plan) {
  const auto* src = reinterpret_cast<const Record*>(in.data());
  auto* dst = reinterpret_cast<Record*>(out.data());
  std::vector<std::uint64_t> pos(p.first), end(p.last);
  std::vector<StreamHints> hints;
  std::vector<Head> heap;
  std::uint64_t total = 0;
  for (std::uint32_t s = 0; s < pos.size(); ++s) {
    hints.emplace_back(in, pos[s] * Record::kBytes, end[s] * Record::kBytes, plan, true);
    total += end[s] - pos[s];
    if (pos[s] < end[s]) {
      FARMEM_RETURN_IF_ERROR(hints[s].at(pos[s] * Record::kBytes));
      heap.push_back({key_of(src[pos[s]]), s});
    }
  }
  std::make_heap(heap.begin(), heap.end(), after);
  std::uint64_t o = p.out_begin;
  StreamHints out_hints(out, o * Record::kBytes, (o + total) * Record::kBytes, plan, false);
  while (!heap.empty()) {
    const std::uint32_t s = heap[0].stream;
    dst[o++] = src[pos[s]];
    FARMEM_RETURN_IF_ERROR(out_hints.at(o * Record::kBytes));
    if (++pos[s] < end[s]) {
      FARMEM_RETURN_IF_ERROR(hints[s].at(pos[s] * Record::kBytes));
      heap[0].key = key_of(src[pos[s]]);
    } else {
      FARMEM_RETURN_IF_ERROR(hints[s].finish());
      heap[0] = heap.back();
      heap.pop_back();
      if (heap.empty()) break;
    }
    sift_down(heap);
  }
  return out_hints.finish();
}

}  // namespace farmem::sort
