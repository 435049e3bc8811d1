// SortJob: wiring and the three phases. Generation and verification stream the memory
// window by window (one run's worth), dropping each window behind them.
#include "sort/job.h"

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

namespace farmem::sort {
namespace {

using Clock = std::chrono::steady_clock;

// Runs are whole multiples of 1024 records = 102400 bytes = 25 pages of 4 KiB, so that every
// run starts on a page and dropping one never touches its neighbour's pages.
constexpr std::uint64_t kRunAlignRecords = 1024;
// Records a task of generation or verification handles (100 KiB: big enough to amortise a
// task, small enough to balance two threads over one window).
constexpr std::uint64_t kBlockRecords = 1024;
// Bytes a streaming merge stream hints ahead and drops behind at a time.
constexpr std::uint64_t kMaxWindowBytes = 1u << 20;
constexpr std::uint64_t kPage = 4096;  // hints apply to whole pages
// Writes of the output file (each prefaulted, then copied through a local buffer).
constexpr std::uint64_t kWriteBytes = 1u << 20;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One block's share of a verification pass.
struct BlockCheck {
  Checksum sum;
  KeyParts first{}, last{};
  bool sorted = true;
};

std::string hex(std::uint64_t v) {
  char b[20];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

const char* mode_name(Mode m) { return m == Mode::kFar ? "far" : "plain"; }
const char* algo_name(Algo a) { return a == Algo::kChunked ? "chunked" : "naive"; }

Result<std::unique_ptr<SortJob>> SortJob::open(SortOptions o) {
  if (o.records == 0) return InvalidArgument("the record count must be at least 1");
  if (o.threads == 0 || o.threads > 1024) return InvalidArgument("threads must be 1 to 1024");
  if (o.budget_bytes < (1u << 20)) return InvalidArgument("the local budget must be >= 1 MiB");
  const std::uint64_t run_bytes = o.run_bytes != 0 ? o.run_bytes : o.budget_bytes / 8 * 3;
  if (run_bytes < kRunAlignRecords * Record::kBytes) {
    return InvalidArgument("a run must be at least " +
                           std::to_string(kRunAlignRecords * Record::kBytes) + " bytes");
  }
  std::unique_ptr<SortJob> job(new SortJob());
  job->report_.records = o.records;
  job->report_.bytes = o.records * Record::kBytes;
  job->report_.budget_bytes = o.budget_bytes;
  job->report_.run_records = run_bytes / Record::kBytes / kRunAlignRecords * kRunAlignRecords;
  job->arena_ = std::make_unique<tbb::task_arena>(static_cast<int>(o.threads));
  const std::uint64_t bytes = job->report_.bytes;
  const bool two = o.algo == Algo::kChunked;
  if (o.mode == Mode::kFar) {
    RuntimeOptions& r = o.runtime;
    r.cache_budget_bytes = o.budget_bytes;
    r.local_buffer_bytes = 1u << 20;  // regions stage through their own memory
    if (r.servers.empty() && r.registry.empty()) r.servers = {"local"};
    if (std::find(r.servers.begin(), r.servers.end(), "local") != r.servers.end()) {
      r.local_server_capacity =
          std::max(r.local_server_capacity, (two ? 2 : 1) * (bytes + r.slab_bytes));
    }
    FARMEM_ASSIGN_OR_RETURN(job->rt_, Runtime::open(r));
    FARMEM_ASSIGN_OR_RETURN(job->in_, map_far(*job->rt_, bytes, o.region));
    if (two) {
      FARMEM_ASSIGN_OR_RETURN(job->out_, map_far(*job->rt_, bytes, o.region));
    }
  } else {
    FARMEM_ASSIGN_OR_RETURN(job->in_, allocate_plain(bytes));
    if (two) {
      FARMEM_ASSIGN_OR_RETURN(job->out_, allocate_plain(bytes));
    }
  }
  job->o_ = std::move(o);
  return job;
}

SortJob::~SortJob() {
  out_.reset();
  in_.reset();
  rt_.reset();
}

std::span<const Record> SortJob::output() const {
  return {reinterpret_cast<const Record*>(result_memory().data()), report_.records};
}

Status SortJob::generate() {
  const auto t0 = Clock::now();
  Record* base = reinterpret_cast<Record*>(in_->data());
  const std::uint64_t n = report_.records, window = report_.run_records;
  std::vector<Checksum> sums((n + kBlockRecords - 1) / kBlockRecords);
  if (o_.hints) FARMEM_RETURN_IF_ERROR(in_->advise(0, report_.bytes, Advice::kSequential));
  for (std::uint64_t w = 0; w < n; w += window) {
    const std::uint64_t w_end = std::min(n, w + window);
    arena_->execute([&] {
      tbb::parallel_for(w / kBlockRecords, (w_end + kBlockRecords - 1) / kBlockRecords,
                        [&](std::uint64_t b) {
        const std::uint64_t end = std::min(w_end, (b + 1) * kBlockRecords);
        for (std::uint64_t i = b * kBlockRecords; i < end; ++i) {
          generate_record(o_.seed, i, base[i]);
          sums[b].add(base[i]);
        }
      });
    });
    if (o_.hints) {
      FARMEM_RETURN_IF_ERROR(in_->advise(w * Record::kBytes, (w_end - w) * Record::kBytes,
                                         Advice::kDontNeed));
    }
  }
  for (const Checksum& c : sums) report_.input.merge(c);
  report_.gen_s = since(t0);
  return Status::Ok();
}

Status SortJob::sort() {
  const auto t0 = Clock::now();
  SortPlan plan;
  plan.records = report_.records;
  plan.run_records = report_.run_records;
  plan.hints = o_.hints;
  // A merge stream's window: a quarter of what the budget leaves each of threads x runs
  // input streams (plus one output stream a thread). A stream holds the window it reads and
  // the one being pulled, so the streams together keep half the budget at most: pulled
  // windows never crowd out the ones being read (with 64 KiB windows regardless, two
  // threads over 21 runs at a 4 MiB budget read 14 GB for 32 MB of records).
  const std::uint64_t runs = (plan.records + plan.run_records - 1) / plan.run_records;
  const std::uint64_t share = o_.budget_bytes / (4 * o_.threads * (runs + 1));
  plan.window_bytes = std::clamp(share / kPage * kPage, kPage, kMaxWindowBytes);
  if (o_.algo == Algo::kNaive) {
    FARMEM_RETURN_IF_ERROR(sort_naive(*in_, plan, *arena_, report_.counts));
  } else {
    FARMEM_RETURN_IF_ERROR(sort_chunked(*in_, *out_, plan, *arena_, report_.counts));
  }
  report_.sort_s = since(t0);
  return Status::Ok();
}

Status SortJob::verify() {
  const auto t0 = Clock::now();
  Memory& mem = result_memory();
  const Record* base = output().data();
  const std::uint64_t n = report_.records, window = report_.run_records;
  std::vector<BlockCheck> blocks((n + kBlockRecords - 1) / kBlockRecords);
  if (o_.hints) FARMEM_RETURN_IF_ERROR(mem.advise(0, report_.bytes, Advice::kSequential));
  for (std::uint64_t w = 0; w < n; w += window) {
    const std::uint64_t w_end = std::min(n, w + window);
    arena_->execute([&] {
      tbb::parallel_for(w / kBlockRecords, (w_end + kBlockRecords - 1) / kBlockRecords,
                        [&](std::uint64_t b) {
        BlockCheck& c = blocks[b];
        const std::uint64_t begin = b * kBlockRecords, end = std::min(w_end, begin + kBlockRecords);
        c.first = key_of(base[begin]);
        KeyParts prev = c.first;
        for (std::uint64_t i = begin; i < end; ++i) {
          const KeyParts k = key_of(base[i]);
          c.sorted = c.sorted && !(k < prev);
          prev = k;
          c.sum.add(base[i]);
        }
        c.last = prev;
      });
    });
    if (o_.hints) {
      FARMEM_RETURN_IF_ERROR(mem.advise(w * Record::kBytes, (w_end - w) * Record::kBytes,
                                        Advice::kDontNeed));
    }
  }
  report_.output = {};
  report_.sorted = true;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    report_.output.merge(blocks[b].sum);
    report_.sorted = report_.sorted && blocks[b].sorted &&
                     (b == 0 || !(blocks[b].first < blocks[b - 1].last));
  }
  report_.checksum_match = report_.output == report_.input;
  report_.verified = true;
  report_.verify_s = since(t0);
  return Status::Ok();
}

Status SortJob::write_output(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return IoError("cannot create " + path);
  Memory& mem = result_memory();
  Status st = Status::Ok();
  // Through a local buffer: with the faulting-thread mode (the default) the kernel's own
  // access to a page that is not resident fails with EFAULT, and a prefaulted page may be
  // evicted again before write(2) reaches it. A memcpy faults pages in like any access.
  std::vector<std::byte> bounce(kWriteBytes);
  for (std::uint64_t off = 0; off < report_.bytes && st.ok(); off += kWriteBytes) {
    const std::uint64_t len = std::min(kWriteBytes, report_.bytes - off);
    st = mem.prefault(off, len);  // one batch of faults ahead of the copy
    if (!st.ok()) break;
    std::memcpy(bounce.data(), mem.data() + off, len);
    if (std::fwrite(bounce.data(), 1, len, f) != len) st = IoError("cannot write " + path);
  }
  if (std::fclose(f) != 0 && st.ok()) st = IoError("cannot write " + path);
  return st;
}

Result<SortReport> SortJob::run(const std::string& path) {
  FARMEM_RETURN_IF_ERROR(generate());
  FARMEM_RETURN_IF_ERROR(sort());
  FARMEM_RETURN_IF_ERROR(verify());
  if (!path.empty()) FARMEM_RETURN_IF_ERROR(write_output(path));
  report_.cache = in_->stats();
  if (out_) report_.cache.merge(out_->stats());
  return report_;
}

std::string SortReport::to_json(const SortOptions& o) const {
  nlohmann::ordered_json j;
  j["records"] = records;
  j["bytes"] = bytes;
  j["mode"] = mode_name(o.mode);
  j["algo"] = algo_name(o.algo);
  j["threads"] = o.threads;
  j["seed"] = o.seed;
  j["budget_bytes"] = budget_bytes;
  j["run_records"] = o.algo == Algo::kChunked ? run_records : records;
  j["runs"] = counts.runs;
  j["gen_s"] = gen_s;
  j["sort_s"] = sort_s;
  j["run_sort_s"] = counts.run_s;
  j["merge_s"] = counts.merge_s;
  j["verify_s"] = verify_s;
  j["sorted"] = sorted;
  j["checksum_match"] = checksum_match;
  j["checksum_in"] = hex(input.sum_a) + hex(input.sum_b);
  j["checksum_out"] = hex(output.sum_a) + hex(output.sum_b);
  if (o.mode == Mode::kFar) {
    j["far"] = {{"misses", cache.misses},           {"evictions", cache.evictions},
                {"writebacks", cache.writebacks},   {"bytes_read", cache.bytes_read},
                {"bytes_written", cache.bytes_written},
                {"prefetches_issued", cache.prefetches_issued},
                {"fault_p50_ns", cache.fault_latency.percentile_ns(50)}};
  }
  return j.dump();
}

}  // namespace farmem::sort
