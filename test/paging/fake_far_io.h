// FakeFarIo: far memory in a std::map, for unit tests of the paging core (and anything else
// written against pool::FarIo) without a transport, a memserver or a Runtime.
//
//   - Far memory is a map from page-aligned far address to one page of bytes (`page_bytes`,
//     given at construction); a page never written reads as zeros. Operations may span pages
//     and need not be aligned.
//   - submit() only records the batch's operations (and may fail, see below); the reads and
//     writes are EXECUTED IN wait(), all of them, in queue order, under the fake's mutex. A
//     wait() that fails executes none of them (the worst case a caller must survive: "we
//     cannot tell which writes landed" -- here, none did).
//   - Every executed operation is recorded (write ops, bytes, far addresses, read ops), so a
//     test can assert what was written and how it was coalesced.
//   - Failures can be injected: the next N submits or the next N waits (optionally after
//     letting some through) return a given Status. An optional delay runs in every wait()
//     (outside the mutex) to widen race windows.
//   - register_memory / unregister_memory succeed and track the ranges (unregistering a range
//     that was not registered with the same bounds returns kNotFound).
//   - Misuse is counted, not thrown: a wait() for a batch that was not successfully submitted
//     (`stray_waits()`), a submit() of a batch already in flight (`double_submits()`).
//
// Thread-safe: every member may be called from any thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "farmem/far_addr.h"
#include "farmem/io_batch.h"
#include "farmem/status.h"
#include "pool/far_io.h"

namespace farmem::test {

class FakeFarIo : public pool::FarIo {
 public:
  /// One executed write, as recorded.
  struct WriteRecord {
    FarAddr far;
    std::uint64_t bytes = 0;
  };

  explicit FakeFarIo(std::uint64_t page_bytes = 4096) : page_bytes_(page_bytes) {}

  // ---- FarIo ----

  Status register_memory(std::span<std::byte> memory) override {
    std::lock_guard lock(mu_);
    registered_.emplace_back(memory.data(), memory.size());
    return Status::Ok();
  }
  Status unregister_memory(std::span<std::byte> memory) override {
    std::lock_guard lock(mu_);
    auto it = std::find(registered_.begin(), registered_.end(),
                        std::pair<std::byte*, std::size_t>(memory.data(), memory.size()));
    if (it == registered_.end()) return NotFound("FakeFarIo: range was not registered");
    registered_.erase(it);
    return Status::Ok();
  }

  Status submit(IoBatch& batch) override {
    std::lock_guard lock(mu_);
    ++submits_;
    if (submit_fail_left_ > 0) {
      --submit_fail_left_;
      ++failed_submits_;
      return submit_fail_status_;
    }
    if (in_flight_.count(&batch) != 0) ++double_submits_;
    in_flight_[&batch] = ops_of(batch);
    return Status::Ok();
  }

  Status wait(IoBatch& batch) override {
    std::chrono::microseconds delay;
    {
      std::lock_guard lock(mu_);
      delay = delay_;
    }
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    std::lock_guard lock(mu_);
    ++waits_;
    auto it = in_flight_.find(&batch);
    if (it == in_flight_.end()) {
      ++stray_waits_;
      return Internal("FakeFarIo: wait() for a batch that was not submitted");
    }
    std::vector<BatchOp> ops = std::move(it->second);
    in_flight_.erase(it);
    if (wait_pass_left_ > 0) {
      --wait_pass_left_;  // let this one through, fail later ones
    } else if (wait_fail_left_ > 0) {
      --wait_fail_left_;
      ++failed_waits_;
      return wait_fail_status_;
    }
    for (const BatchOp& op : ops) {
      if (op.write) {
        store_locked(op.far.raw, op.local, op.bytes);
        ++write_ops_;
        write_bytes_ += op.bytes;
        writes_.push_back({op.far, op.bytes});
      } else {
        load_locked(op.far.raw, op.local, op.bytes);
        ++read_ops_;
        read_bytes_ += op.bytes;
      }
    }
    return Status::Ok();
  }

  // ---- failure injection ----

  /// The next `n` submit() calls return `st` (and start nothing).
  void fail_next_submits(int n, Status st) {
    std::lock_guard lock(mu_);
    submit_fail_left_ = n;
    submit_fail_status_ = std::move(st);
  }
  /// After `pass` more successful waits, the next `n` wait() calls return `st` and execute
  /// none of their batch's operations.
  void fail_next_waits(int n, Status st, int pass = 0) {
    std::lock_guard lock(mu_);
    wait_fail_left_ = n;
    wait_pass_left_ = pass;
    wait_fail_status_ = std::move(st);
  }
  /// Every wait() sleeps this long first (0: no delay).
  void set_delay(std::chrono::microseconds d) {
    std::lock_guard lock(mu_);
    delay_ = d;
  }
  /// Cancels any pending injected failures.
  void recover() {
    std::lock_guard lock(mu_);
    submit_fail_left_ = 0;
    wait_fail_left_ = 0;
    wait_pass_left_ = 0;
  }

  // ---- far memory, for tests ----

  /// `bytes` bytes of far memory at `far` (zeros where never written).
  std::vector<std::byte> read_far(FarAddr far, std::uint64_t bytes) const {
    std::vector<std::byte> out(bytes);
    std::lock_guard lock(mu_);
    load_locked(far.raw, out.data(), bytes);
    return out;
  }
  /// Seeds far memory (not recorded as a write op).
  void write_far(FarAddr far, std::span<const std::byte> bytes) {
    std::lock_guard lock(mu_);
    store_locked(far.raw, bytes.data(), bytes.size());
  }
  /// Whether any byte of the page holding `far` was ever written.
  bool has_page(FarAddr far) const {
    std::lock_guard lock(mu_);
    return pages_.count(far.raw - far.raw % page_bytes_) != 0;
  }

  // ---- records ----

  std::uint64_t write_ops() const { return get(write_ops_); }
  std::uint64_t write_bytes() const { return get(write_bytes_); }
  std::uint64_t read_ops() const { return get(read_ops_); }
  std::uint64_t read_bytes() const { return get(read_bytes_); }
  std::uint64_t submits() const { return get(submits_); }
  std::uint64_t waits() const { return get(waits_); }
  std::uint64_t failed_submits() const { return get(failed_submits_); }
  std::uint64_t failed_waits() const { return get(failed_waits_); }
  std::uint64_t stray_waits() const { return get(stray_waits_); }
  std::uint64_t double_submits() const { return get(double_submits_); }
  std::size_t in_flight() const {
    std::lock_guard lock(mu_);
    return in_flight_.size();
  }
  std::size_t registered_ranges() const {
    std::lock_guard lock(mu_);
    return registered_.size();
  }
  /// Every executed write, in execution order.
  std::vector<WriteRecord> writes() const {
    std::lock_guard lock(mu_);
    return writes_;
  }
  /// The far addresses of the executed writes, in execution order.
  std::vector<std::uint64_t> written_addresses() const {
    std::lock_guard lock(mu_);
    std::vector<std::uint64_t> out;
    out.reserve(writes_.size());
    for (const WriteRecord& w : writes_) out.push_back(w.far.raw);
    return out;
  }
  /// Forgets the op records (not far memory, not injected failures).
  void reset_counters() {
    std::lock_guard lock(mu_);
    write_ops_ = write_bytes_ = read_ops_ = read_bytes_ = 0;
    submits_ = waits_ = failed_submits_ = failed_waits_ = 0;
    writes_.clear();
  }

 private:
  std::uint64_t get(const std::uint64_t& v) const {
    std::lock_guard lock(mu_);
    return v;
  }
  void store_locked(std::uint64_t far, const std::byte* src, std::uint64_t bytes) {
    while (bytes > 0) {
      const std::uint64_t page = far - far % page_bytes_;
      const std::uint64_t off = far - page;
      const std::uint64_t n = std::min(bytes, page_bytes_ - off);
      std::vector<std::byte>& p = pages_[page];
      if (p.empty()) p.resize(page_bytes_);
      std::memcpy(p.data() + off, src, n);
      far += n;
      src += n;
      bytes -= n;
    }
  }
  void load_locked(std::uint64_t far, std::byte* dst, std::uint64_t bytes) const {
    while (bytes > 0) {
      const std::uint64_t page = far - far % page_bytes_;
      const std::uint64_t off = far - page;
      const std::uint64_t n = std::min(bytes, page_bytes_ - off);
      auto it = pages_.find(page);
      if (it == pages_.end()) {
        std::memset(dst, 0, n);
      } else {
        std::memcpy(dst, it->second.data() + off, n);
      }
      far += n;
      dst += n;
      bytes -= n;
    }
  }

  const std::uint64_t page_bytes_;
  mutable std::mutex mu_;
  std::map<std::uint64_t, std::vector<std::byte>> pages_;
  std::map<const IoBatch*, std::vector<BatchOp>> in_flight_;
  std::vector<std::pair<std::byte*, std::size_t>> registered_;

  int submit_fail_left_ = 0;
  Status submit_fail_status_;
  int wait_fail_left_ = 0;
  int wait_pass_left_ = 0;
  Status wait_fail_status_;
  std::chrono::microseconds delay_{0};

  std::uint64_t write_ops_ = 0, write_bytes_ = 0, read_ops_ = 0, read_bytes_ = 0;
  std::uint64_t submits_ = 0, waits_ = 0, failed_submits_ = 0, failed_waits_ = 0;
  std::uint64_t stray_waits_ = 0, double_submits_ = 0;
  std::vector<WriteRecord> writes_;
};

}  // namespace farmem::test
