// What the paging core's tests share: a fake front end over a local arena (FakeFrontend) that
// checks the Frontend contract as it is called, and small helpers. The fake far memory is
// fake_far_io.h.
#pragma once

#include "paging/pager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <thread>
#include <vector>

#include "paging/budget.h"
#include "test/paging/fake_far_io.h"

namespace farmem::paging::pager_test {

using farmem::test::FakeFarIo;
using std::chrono::milliseconds;
using Clk = std::chrono::steady_clock;

constexpr std::uint32_t kPage = 4096;
constexpr std::uint64_t kFarBase = std::uint64_t{1} << 32;
constexpr std::uint64_t kBigBudget = std::uint64_t{1} << 40;

/// The bytes of page `key` after its `version`-th write; version 0 is "never written": zeros,
/// which is what the fake's far memory reads where nothing was written.
inline std::vector<std::byte> pattern(std::uint64_t key, std::uint32_t version) {
  std::vector<std::byte> out(kPage);
  if (version == 0) return out;
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>((key * 131 + version * 29 + i * 7 + 1) & 0xff);
  }
  return out;
}

/// A front end over a local arena of `frames` pages. Page `key` lives at far address
/// base + key * page. Models a region: lock_pages() takes a page mutex that accessors hold
/// too (page_mutex()), isolate() keeps pinned keys, drop() may refuse keys, and `resident`
/// (guarded by the page mutex) maps keys to frames for tests that fault pages in and out.
/// Records every call and counts breaches of the Frontend contract.
class FakeFrontend : public Frontend {
 public:
  FakeFrontend(std::uint32_t frames, std::uint64_t far_base = kFarBase,
               std::uint32_t write_back_batch = 32)
      : base_(far_base), wb_batch_(write_back_batch),
        arena_(std::size_t{frames} * kPage) {}

  std::span<std::byte> frame_bytes(std::uint32_t f) {
    return {arena_.data() + std::size_t{f} * kPage, kPage};
  }
  void fill(std::uint32_t f, std::uint64_t key, std::uint32_t version) {
    auto p = pattern(key, version);
    std::copy(p.begin(), p.end(), frame_bytes(f).begin());
  }
  bool frame_holds(std::uint32_t f, std::uint64_t key, std::uint32_t version) {
    auto p = pattern(key, version);
    return std::equal(p.begin(), p.end(), frame_bytes(f).begin());
  }

  // ---- Frontend ----

  void lock_pages() override {
    page_mu_.lock();
    in_pass_ = true;
  }
  void unlock_pages() override {
    in_pass_ = false;
    page_mu_.unlock();
  }
  FarAddr far_of(std::uint64_t key) const override { return FarAddr{base_ + key * kPage}; }
  void on_second_chance(std::uint32_t frame, std::uint64_t key) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_) ++violations_;
    (void)frame;
    second_chances_.push_back(key);
  }
  void isolate(std::span<Victim> victims, bool for_flush) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_ || !sorted(victims)) ++violations_;
    ++isolate_calls_;
    if (for_flush) ++flush_isolates_;
    for (Victim& v : victims) {
      if (retired_.contains(v.frame)) ++violations_;
      if (pinned_.contains(v.key)) v.keep = true;
    }
  }
  void stage(std::span<const Victim> victims,
             std::span<std::span<const std::byte>> sources) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_ || !sorted(victims) || victims.size() > wb_batch_ ||
        sources.size() != victims.size()) {
      ++violations_;
    }
    ++stage_calls_;
    for (std::size_t i = 0; i < victims.size(); ++i) {
      if (victims[i].keep) ++violations_;
      staged_.push_back(victims[i].key);
      sources[i] = frame_bytes(victims[i].frame);
    }
  }
  void drop(std::span<Victim> victims) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_ || !sorted(victims)) ++violations_;
    for (Victim& v : victims) {
      if (v.keep) ++violations_;  // kept victims must not reach drop()
      if (refuse_drop_.contains(v.key)) {
        v.keep = true;
        continue;
      }
      dropped_.push_back(v.key);
      resident_.erase(v.key);
    }
  }
  void restore(std::span<Victim> victims) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_) ++violations_;
    for (const Victim& v : victims) restored_.push_back(v.key);
  }
  // Retired frames model memory given back: their bytes are scribbled over, and any pass
  // that names one is a violation (isolate and drop check it too, through retired()).
  Status retire_frames(std::uint32_t first, std::uint32_t n) override {
    std::lock_guard lock(rec_mu_);
    if (fail_retire_) return Unavailable("FakeFrontend: retire refused");
    for (std::uint32_t f = first; f < first + n; ++f) {
      if (retired_.contains(f)) ++violations_;  // retired twice
      retired_.insert(f);
      std::fill(frame_bytes(f).begin(), frame_bytes(f).end(), std::byte{0xa5});
    }
    retire_calls_.push_back(first);
    return Status::Ok();
  }
  Status revive_frames(std::uint32_t first, std::uint32_t n) override {
    std::lock_guard lock(rec_mu_);
    if (fail_revive_) return Unavailable("FakeFrontend: revive refused");
    for (std::uint32_t f = first; f < first + n; ++f) {
      if (!retired_.contains(f)) ++violations_;  // revived while in use
      retired_.erase(f);
    }
    revive_calls_.push_back(first);
    return Status::Ok();
  }

  // ---- test controls ----

  void pin(std::uint64_t key) {
    std::lock_guard lock(rec_mu_);
    pinned_.insert(key);
  }
  void unpin(std::uint64_t key) {
    std::lock_guard lock(rec_mu_);
    pinned_.erase(key);
  }
  /// A chunked pager starts with every frame retired (the front end registered none).
  void retire_all() {
    std::lock_guard lock(rec_mu_);
    for (std::uint32_t f = 0; f < arena_.size() / kPage; ++f) retired_.insert(f);
  }
  bool retired(std::uint32_t f) {
    std::lock_guard lock(rec_mu_);
    return retired_.contains(f);
  }
  void fail_retire(bool on) {
    std::lock_guard lock(rec_mu_);
    fail_retire_ = on;
  }
  void fail_revive(bool on) {
    std::lock_guard lock(rec_mu_);
    fail_revive_ = on;
  }
  std::vector<std::uint32_t> retire_calls() { return get(retire_calls_); }
  std::vector<std::uint32_t> revive_calls() { return get(revive_calls_); }
  void refuse_drop(std::uint64_t key) {
    std::lock_guard lock(rec_mu_);
    refuse_drop_.insert(key);
  }
  void clear_records() {
    std::lock_guard lock(rec_mu_);
    second_chances_.clear();
    staged_.clear();
    dropped_.clear();
    restored_.clear();
  }

  /// Held by accessors of pages (and by every pager pass, through lock_pages()).
  std::mutex& page_mutex() { return page_mu_; }
  /// Caller holds page_mutex().
  std::optional<std::uint32_t> resident_frame(std::uint64_t key) {
    std::lock_guard lock(rec_mu_);
    auto it = resident_.find(key);
    if (it == resident_.end()) return std::nullopt;
    return it->second;
  }
  void set_resident(std::uint64_t key, std::uint32_t frame) {
    std::lock_guard lock(rec_mu_);
    resident_[key] = frame;
  }
  std::size_t resident_count() {
    std::lock_guard lock(rec_mu_);
    return resident_.size();
  }

  std::vector<std::uint64_t> second_chances() { return get(second_chances_); }
  std::vector<std::uint64_t> staged() { return get(staged_); }
  std::vector<std::uint64_t> dropped() { return get(dropped_); }
  std::vector<std::uint64_t> restored() { return get(restored_); }
  std::uint64_t isolate_calls() { return get(isolate_calls_); }
  std::uint64_t flush_isolates() { return get(flush_isolates_); }
  std::uint64_t stage_calls() { return get(stage_calls_); }
  std::uint64_t violations() { return get(violations_); }

 private:
  template <class T>
  T get(const T& v) {
    std::lock_guard lock(rec_mu_);
    return v;
  }
  template <class V>
  static bool sorted(std::span<V> v) {
    return std::is_sorted(v.begin(), v.end(),
                          [](const Victim& a, const Victim& b) { return a.key < b.key; });
  }

  const std::uint64_t base_;
  const std::uint32_t wb_batch_;
  std::vector<std::byte> arena_;
  std::mutex page_mu_;
  bool in_pass_ = false;  // written and read with page_mu_ held

  std::mutex rec_mu_;  // guards everything below
  std::set<std::uint64_t> pinned_, refuse_drop_;
  std::set<std::uint32_t> retired_;
  std::vector<std::uint32_t> retire_calls_, revive_calls_;
  bool fail_retire_ = false, fail_revive_ = false;
  std::map<std::uint64_t, std::uint32_t> resident_;
  std::vector<std::uint64_t> second_chances_, staged_, dropped_, restored_;
  std::uint64_t isolate_calls_ = 0, flush_isolates_ = 0, stage_calls_ = 0, violations_ = 0;
};

inline PagerOptions manual(std::uint32_t frames) {
  PagerOptions o;
  o.page_bytes = kPage;
  o.frames = frames;
  o.background_evictor = false;
  return o;
}

inline std::unique_ptr<Pager> make(FakeFarIo& io, Budget& budget, FakeFrontend& fe, PagerOptions o) {
  auto r = Pager::create(io, budget, fe, std::move(o));
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return std::move(r).value();  // throws (failing the test) on an error
}

// Faults in keys 0 .. n-1: a frame each, filled with pattern(key, 1) and installed; a clean
// page's far copy is made current first (as after a fetch). Returns key -> frame.
inline std::map<std::uint64_t, std::uint32_t> load_keys(
    Pager& p, FakeFrontend& fe, FakeFarIo& io, std::uint64_t n,
    const std::function<bool(std::uint64_t)>& dirty) {
  std::map<std::uint64_t, std::uint32_t> frame_of;
  for (std::uint64_t key = 0; key < n; ++key) {
    auto f = p.take_frame(Clk::now() + milliseconds(1000));
    EXPECT_TRUE(f.ok()) << f.status().to_string();
    if (!f.ok()) break;
    frame_of[key] = *f;
    fe.fill(*f, key, 1);
    if (!dirty(key)) io.write_far(fe.far_of(key), pattern(key, 1));
    p.install(*f, key, dirty(key), false);
  }
  return frame_of;
}

/// Takes every frame of `p` and returns them sorted (frame f holds arena page f).
inline std::vector<std::uint32_t> take_all(Pager& p) {
  std::vector<std::uint32_t> out;
  std::uint32_t f = 0;
  while (p.try_take_frame(&f)) out.push_back(f);
  std::sort(out.begin(), out.end());
  return out;
}

inline std::vector<std::byte> far_page(FakeFarIo& io, FakeFrontend& fe, std::uint64_t key) {
  return io.read_far(fe.far_of(key), kPage);
}

inline std::vector<std::uint64_t> sorted_copy(std::vector<std::uint64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
template <class Cond>
bool eventually(Cond&& cond, milliseconds limit = milliseconds(10000)) {
  const auto deadline = Clk::now() + limit;
  while (!cond()) {
    if (Clk::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

}  // namespace farmem::paging::pager_test
