// The paging core (see pager.h): frames, budget, CLOCK, batched dirty-only write-back and
// prefetch feedback. Its other rooms: chunks and the free list (pager_chunks.cc), the
// background evictor (pager_evictor.cc), the debug-build invariant check
// (pager_invariants.cc).
#include "paging/pager.h"

#include <algorithm>

#include "common/dcheck.h"
#include "common/log.h"

namespace farmem::paging {

namespace {
// A thread that found no free frame and could not evict any waits this long for one to be
// freed before it tries again (the evictor or another consumer may be mid-pass).
constexpr auto kFrameRetryWait = std::chrono::milliseconds(1);
// flush() retries a round whose pages the front end kept (the cache's grace period timed out
// under a long DerefScope) this many times before it gives up.
constexpr int kFlushRounds = 100;
// charge_pages keeps taking room it made past its deadline for at most this many rounds:
// enough to win against a few concurrent takers, bounded when many keep winning.
constexpr int kRoundsPastDeadline = 8;
}  // namespace

Pager::Pager(pool::FarIo& io, Budget& budget, Frontend& frontend, PagerOptions options)
    : io_(io), budget_(budget), frontend_(frontend), options_(std::move(options)),
      ref_(options_.frames), clock_(options_.frames) {
  // Tables and scratch are set up here, before another thread can see the pager (so no lock;
  // the analysis does not check constructors).
  const std::uint32_t n = options_.frames;
  reserve_ = std::clamp<std::uint32_t>(options_.reserve_frames, 1, std::max(1u, n / 4));
  state_ = std::make_unique<std::atomic<std::uint8_t>[]>(n);
  key_ = std::make_unique<std::atomic<std::uint64_t>[]>(n);
  dirty_ = std::make_unique<std::atomic<std::uint8_t>[]>(n);
  prefetched_ = std::make_unique<std::atomic<std::uint8_t>[]>(n);
  prefetch_stream_ = std::make_unique<std::atomic<std::uint32_t>[]>(n);
  wasted_pending_ = std::make_unique<std::atomic<std::uint32_t>[]>(options_.streams);
  free_.reserve(n);
  for (std::uint32_t f = 0; f < n; ++f) key_[f].store(kNoKey, std::memory_order_relaxed);
  const std::uint32_t chunks = chunk_count();
  chunk_active_ = std::make_unique<std::atomic<std::uint8_t>[]>(std::max(chunks, 1u));
  free_in_chunk_.assign(chunks, 0);
  if (chunks == 0) {
    // Frame 0 is taken first (ascending order is a min-heap already).
    for (std::uint32_t f = 0; f < n; ++f) free_.push_back(f);
    active_frames_.store(n, std::memory_order_relaxed);
  }
  picked_.reserve(options_.evict_batch);
  victims_.reserve(options_.evict_batch);
  sources_.resize(options_.write_back_batch);
}

Result<std::unique_ptr<Pager>> Pager::create(pool::FarIo& io, Budget& budget, Frontend& frontend,
                                             PagerOptions options) {
  if (options.frames < kMinFrames) {
    return InvalidArgument(options.name + ": " + std::to_string(options.frames) +
                           " frames; the pager needs at least " + std::to_string(kMinFrames));
  }
  if (options.page_bytes == 0 || options.evict_batch == 0 || options.write_back_batch == 0 ||
      options.streams == 0) {
    return InvalidArgument(options.name +
                           ": page_bytes, evict_batch, write_back_batch and streams must be > 0");
  }
  auto p = std::unique_ptr<Pager>(new Pager(io, budget, frontend, std::move(options)));
  p->start();
  if (p->options_.chunk_frames != 0 && p->reserve_ > 0) {
    // Chunks start retired (the front end registered none): enough of them for the reserve.
    Status st;
    MutexLock lock(p->evict_mu_);
    if (p->revive_chunks_locked(0, &st) == 0 && !st.ok()) {
      return st.with_context(p->options_.name + ": the first frames");
    }
  }
  return p;
}

void Pager::start() {
  budget_.add_reclaimer(this);
  registered_ = true;
  if (options_.background_evictor) evictor_ = std::thread([this] { run_evictor(); });
}

void Pager::stop() {
  {
    MutexLock lock(evictor_mu_);
    stopping_ = true;
  }
  evictor_cv_.notify_all();
  if (evictor_.joinable()) evictor_.join();
  if (registered_) {
    budget_.remove_reclaimer(this);  // waits for a reclaim() in progress
    registered_ = false;
  }
}

Pager::~Pager() {
  stop();
  {
    MutexLock lock(evict_mu_);
    check_invariants_locked();
  }
  budget_.uncharge(std::uint64_t{in_use_.load()} * options_.page_bytes);
}

// ---- frames ----

std::uint32_t Pager::free_slots() const {
  MutexLock lock(free_mu_);
  return static_cast<std::uint32_t>(free_.size() - charged_unbound_);
}

std::uint64_t Pager::budget_room() const {
  const std::uint64_t used = budget_.used();
  const std::uint64_t limit = budget_.limit();
  return used >= limit ? 0 : (limit - used) / options_.page_bytes;
}

std::uint32_t Pager::free_frames() const {
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(free_slots(), budget_room()));
}

std::uint32_t Pager::frames_in_use() const { return in_use_.load(std::memory_order_relaxed); }

bool Pager::charge_locked(std::uint32_t n) {
  if (free_.size() - charged_unbound_ < n) return false;
  if (!budget_.try_charge(std::uint64_t{n} * options_.page_bytes)) return false;
  charged_unbound_ += n;
  const std::uint32_t now = in_use_.fetch_add(n, std::memory_order_relaxed) + n;
  // Each charged page has a free frame of an active chunk waiting (charged_unbound_ of them).
  FARMEM_DCHECK_LE(now, active_frames_.load(std::memory_order_relaxed));
  std::uint32_t peak = peak_in_use_.load(std::memory_order_relaxed);
  while (now > peak && !peak_in_use_.compare_exchange_weak(peak, now)) {
  }
  return true;
}

std::uint32_t Pager::bind_locked() {
  FARMEM_DCHECK_GT(charged_unbound_, 0u);  // bound only after it was charged
  const std::uint32_t f = pop_free_locked();
  FARMEM_DCHECK_MSG(state(f) == FrameState::kFree, "frame {} on the free list in state {}", f,
                    +state_[f].load());
  FARMEM_DCHECK_MSG(options_.chunk_frames == 0 || chunk_active(f / options_.chunk_frames),
                    "frame {} on the free list is in a retired chunk", f);
  --charged_unbound_;
  state_[f].store(static_cast<std::uint8_t>(FrameState::kLoading), std::memory_order_relaxed);
  return f;
}

void Pager::after_take(bool got, std::size_t free_left) {
  // Low watermark: wake the evictor when half the reserve is gone (it refills all of it), so
  // a stream of takes costs one wake-up per reserve / 2 frames, not one each.
  // (2 * x < reserve_: below half, also for a reserve of one frame.)
  if (!got || 2 * free_left < reserve_ || 2 * budget_room() < reserve_) wake_evictor();
}

bool Pager::try_take_frame(std::uint32_t* frame) {
  bool got = false;
  std::size_t left = 0;
  {
    MutexLock lock(free_mu_);
    if (charge_locked(1)) {
      *frame = bind_locked();
      got = true;
    }
    left = free_.size() - charged_unbound_;
  }
  after_take(got, left);
  return got;
}

bool Pager::try_charge_pages(std::uint32_t n) {
  bool got = false;
  std::size_t left = 0;
  {
    MutexLock lock(free_mu_);
    got = charge_locked(n);
    left = free_.size() - charged_unbound_;
  }
  after_take(got, left);
  return got;
}

bool Pager::try_charge_spare(std::uint32_t n) {
  MutexLock lock(free_mu_);
  if (free_.size() - charged_unbound_ < std::size_t{n} + reserve_) return false;
  if (budget_room() < std::uint64_t{n} + reserve_) return false;
  return charge_locked(n);
}

void Pager::uncharge_pages(std::uint32_t n) {
  if (n == 0) return;
  {
    MutexLock lock(free_mu_);
    FARMEM_DCHECK_LE(n, charged_unbound_);  // only pages charged and not installed
    charged_unbound_ -= n;
    in_use_.fetch_sub(n, std::memory_order_relaxed);
  }
  budget_.uncharge(std::uint64_t{n} * options_.page_bytes);
  free_cv_.notify_all();
}

std::uint32_t Pager::install_charged(std::uint64_t key, bool dirty, bool referenced,
                                     std::uint32_t prefetch_stream) {
  std::uint32_t f = 0;
  {
    MutexLock lock(free_mu_);
    f = bind_locked();
  }
  install(f, key, dirty, referenced, prefetch_stream);
  return f;
}

Status Pager::charge_pages(std::uint32_t n, std::chrono::steady_clock::time_point deadline) {
  if (try_charge_pages(n)) return Status::Ok();  // the common case: the evictor kept a reserve
  inline_evictions_.fetch_add(1, std::memory_order_relaxed);
  Status last;
  for (int round = 0;; ++round) {
    if (try_charge_pages(n)) return Status::Ok();
    Status err;
    if (options_.chunk_frames != 0 && (free_slots() < n || short_of_frames())) {
      // The budget grew since chunks were given back: take one back rather than evict. With
      // no slot for these pages at all, one back even while the budget's other consumers hold
      // its room: charging below asks them for it only when slots are free.
      MutexLock lock(evict_mu_);
      if (revive_chunks_locked(n, &err) > 0) continue;
    }
    bool progress = evict(std::max<std::size_t>(n, options_.evict_batch), &err) > 0;
    if (!progress) {
      if (!err.ok()) last = err;
      // Nothing of ours to evict: if slots are free, the room is held by the budget's other
      // consumers, and charging asks them for it. (With no free slot, a charge that succeeds
      // proves nothing: retrying at once would spin over pinned pages until the deadline.)
      progress = free_slots() >= n && budget_.charge(std::uint64_t{n} * options_.page_bytes);
      if (progress) budget_.uncharge(std::uint64_t{n} * options_.page_bytes);
    }
    const bool late = std::chrono::steady_clock::now() >= deadline;
    // Room was just made: take it, even past the deadline (a caller passing "now" asks for
    // one round of eviction, not for a failure after it), but only a bounded number of
    // times, since other takers may keep winning the room.
    if (progress && (!late || round < kRoundsPastDeadline)) continue;
    if (late) break;
    UniqueLock lock(free_mu_);
    lock.wait_for(free_cv_, kFrameRetryWait);
  }
  return ResourceExhausted(
      options_.name + ": no room for " + std::to_string(n) + " page(s) before the deadline "
      "(every page in use, or write-back failing" +
      (last.ok() ? std::string(")") : ": " + last.to_string() + ")"));
}

Result<std::uint32_t> Pager::take_frame(std::chrono::steady_clock::time_point deadline) {
  FARMEM_RETURN_IF_ERROR(charge_pages(1, deadline));
  MutexLock lock(free_mu_);
  return bind_locked();
}

void Pager::give_back(std::uint32_t frame) {
  FARMEM_DCHECK_LT(frame, options_.frames);
  FARMEM_DCHECK_MSG(state(frame) == FrameState::kLoading,
                    "frame {} given back in state {}, not kLoading", frame, +state_[frame].load());
  release(frame);
}

void Pager::install(std::uint32_t frame, std::uint64_t key, bool dirty, bool referenced,
                    std::uint32_t prefetch_stream) {
  // kLoading -> kPresent only: a frame is installed once, by whoever took it.
  FARMEM_DCHECK_LT(frame, options_.frames);
  FARMEM_DCHECK_MSG(state(frame) == FrameState::kLoading,
                    "frame {} installed in state {}, not kLoading", frame, +state_[frame].load());
  FARMEM_DCHECK_NE(key, kNoKey);
  key_[frame].store(key, std::memory_order_relaxed);
  dirty_[frame].store(dirty ? 1 : 0, std::memory_order_relaxed);
  if (referenced) {
    ref_.mark(frame);
  } else {
    ref_.clear(frame);
  }
  const bool ahead = prefetch_stream != kDemand;
  prefetch_stream_[frame].store(prefetch_stream, std::memory_order_relaxed);
  prefetched_[frame].store(ahead ? 1 : 0, std::memory_order_relaxed);
  state_[frame].store(static_cast<std::uint8_t>(FrameState::kPresent), std::memory_order_release);
}

void Pager::release(std::uint32_t frame) {
  FARMEM_DCHECK_MSG(state(frame) != FrameState::kFree, "frame {} freed twice", frame);
  key_[frame].store(kNoKey, std::memory_order_relaxed);
  ref_.clear(frame);
  dirty_[frame].store(0, std::memory_order_relaxed);
  prefetched_[frame].store(0, std::memory_order_relaxed);
  {
    MutexLock lock(free_mu_);
    // Free in the same critical section as it goes on the list: under free_mu_, the kFree
    // frames of active chunks are exactly the listed ones (check_invariants_locked).
    state_[frame].store(static_cast<std::uint8_t>(FrameState::kFree), std::memory_order_relaxed);
    FARMEM_DCHECK_GT(in_use_.load(std::memory_order_relaxed), 0u);
    push_free_locked(frame);
    in_use_.fetch_sub(1, std::memory_order_relaxed);
  }
  budget_.uncharge(options_.page_bytes);
  free_cv_.notify_all();
}

std::uint32_t Pager::prefetched_by(std::uint32_t frame) const {
  if (prefetched_[frame].load(std::memory_order_relaxed) == 0) return kDemand;
  return prefetch_stream_[frame].load(std::memory_order_relaxed);
}

std::uint32_t Pager::note_access(std::uint32_t frame) {
  if (prefetched_[frame].load(std::memory_order_relaxed) == 0 ||
      prefetched_[frame].exchange(0, std::memory_order_relaxed) == 0) {
    return kDemand;
  }
  prefetch_used_.fetch_add(1, std::memory_order_relaxed);
  return prefetch_stream_[frame].load(std::memory_order_relaxed);
}

std::uint32_t Pager::take_wasted(std::uint32_t stream) {
  if (stream >= options_.streams) return 0;
  if (wasted_pending_[stream].load(std::memory_order_relaxed) == 0) return 0;
  return wasted_pending_[stream].exchange(0, std::memory_order_relaxed);
}

// ---- eviction and write-back ----

std::size_t Pager::evict(std::size_t want, Status* error) {
  MutexLock lock(evict_mu_);
  frontend_.lock_pages();
  std::size_t freed = 0;
  Status st;
  picked_.clear();
  // Pages in chunks the budget leaves unused go first: their chunks can then be given back.
  if (options_.chunk_frames != 0) pick_unused_locked(want, picked_);
  if (!picked_.empty()) freed = pass_picked_locked(&st);
  if (freed < want) {
    picked_.clear();
    clock_.pick(
        want - freed, ref_,
        [&](std::uint32_t f) {
          return state_[f].load(std::memory_order_acquire) ==
                 static_cast<std::uint8_t>(FrameState::kPresent);
        },
        [&](std::uint32_t f) { frontend_.on_second_chance(f, key_of(f)); }, picked_);
    Status st2;
    if (!picked_.empty()) freed += pass_picked_locked(&st2);
    if (st.ok()) st = st2;
  }
  frontend_.unlock_pages();
  check_invariants_locked();
  if (!st.ok() && error != nullptr) *error = st;
  return freed;
}

std::size_t Pager::pass_picked_locked(Status* error) {
  victims_.clear();
  for (std::uint32_t f : picked_) victims_.push_back({f, key_of(f)});
  std::size_t freed = 0;
  Status st = pass_locked(victims_, /*for_flush=*/false, /*count_wasted=*/true, &freed);
  if (!st.ok()) *error = st;
  return freed;
}

Status Pager::pass_locked(std::vector<Victim>& victims, bool for_flush, bool count_wasted,
                          std::size_t* freed) {
  std::sort(victims.begin(), victims.end(),
            [](const Victim& a, const Victim& b) { return a.key < b.key; });
  // Under evict_mu_ a present frame stays present (only a pass frees one), and one page is
  // present in one frame: a pass never sees the same page twice.
  for (std::size_t i = 0; i < victims.size(); ++i) {
    FARMEM_DCHECK_MSG(state(victims[i].frame) == FrameState::kPresent,
                      "victim frame {} is not present", victims[i].frame);
    FARMEM_DCHECK_MSG(i == 0 || victims[i - 1].key != victims[i].key,
                      "page {} is in frames {} and {}", victims[i].key, victims[i - 1].frame,
                      victims[i].frame);
  }
  frontend_.isolate(victims, for_flush);
  Status st = write_back_locked(victims);
  if (for_flush) {
    frontend_.restore(victims);
    return st;
  }
  // Victims that are clean now go; the rest stay.
  std::vector<Victim>& going = going_;
  std::vector<Victim>& staying = staying_;
  going.clear();
  staying.clear();
  for (const Victim& v : victims) (v.keep ? staying : going).push_back(v);
  if (!going.empty()) frontend_.drop(going);
  std::size_t n = 0;
  for (const Victim& v : going) {
    if (v.keep) {
      staying.push_back(v);
      continue;
    }
    if (prefetched_[v.frame].load(std::memory_order_relaxed) != 0 && count_wasted) {
      prefetch_wasted_.fetch_add(1, std::memory_order_relaxed);
      const std::uint32_t s = prefetch_stream_[v.frame].load(std::memory_order_relaxed);
      if (s < options_.streams) wasted_pending_[s].fetch_add(1, std::memory_order_relaxed);
    }
    release(v.frame);
    ++n;
  }
  if (!staying.empty()) frontend_.restore(staying);
  evictions_.fetch_add(n, std::memory_order_relaxed);
  if (freed != nullptr) *freed = n;
  return st;
}

Status Pager::write_back_locked(std::vector<Victim>& victims) {
  std::vector<Victim*>& dirty = dirty_scratch_;
  std::vector<Victim>& chunk = chunk_;
  dirty.clear();
  for (Victim& v : victims) {
    if (!v.keep && this->dirty(v.frame)) dirty.push_back(&v);
  }
  const std::size_t per_batch = options_.write_back_batch;
  for (std::size_t base = 0; base < dirty.size(); base += per_batch) {
    const std::size_t n = std::min(per_batch, dirty.size() - base);
    chunk.clear();
    for (std::size_t i = 0; i < n; ++i) chunk.push_back(*dirty[base + i]);
    frontend_.stage(chunk, std::span(sources_.data(), n));
    for (std::size_t i = 0; i < n; ++i) {  // Frontend::stage: a page's bytes, at most a page
      FARMEM_DCHECK_MSG(!sources_[i].empty() && sources_[i].size() <= options_.page_bytes,
                        "page {} staged as {} bytes", chunk[i].key, sources_[i].size());
    }
    // Pages adjacent both in far memory and in the staged bytes go as one operation.
    wb_batch_.clear();
    std::uint64_t bytes = 0;
    for (std::size_t i = 0; i < n;) {
      std::size_t j = i + 1;
      std::size_t len = sources_[i].size();
      const FarAddr far = frontend_.far_of(chunk[i].key);
      while (j < n && sources_[j - 1].size() == options_.page_bytes &&
             frontend_.far_of(chunk[j].key).raw == far.raw + len &&
             sources_[j].data() == sources_[i].data() + len) {
        len += sources_[j].size();
        ++j;
      }
      wb_batch_.write(far, {sources_[i].data(), len});
      bytes += len;
      i = j;
    }
    Status st = io_.submit(wb_batch_);
    if (st.ok()) st = io_.wait(wb_batch_);
    if (!st.ok()) {
      // We cannot tell which writes landed: every page not yet written stays dirty, resident.
      for (std::size_t k = base; k < dirty.size(); ++k) dirty[k]->keep = true;
      writeback_errors_.fetch_add(1, std::memory_order_relaxed);
      log().error("{}: write-back of {} page(s) failed, they stay resident and dirty: {}",
                  options_.name, dirty.size() - base, st.to_string());
      return st.with_context("write-back");
    }
    for (std::size_t i = 0; i < n; ++i) {
      dirty_[dirty[base + i]->frame].store(0, std::memory_order_relaxed);
    }
    writebacks_.fetch_add(n, std::memory_order_relaxed);
    bytes_written_.fetch_add(bytes, std::memory_order_relaxed);
  }
  return Status::Ok();
}

Status Pager::flush() {
  MutexLock lock(evict_mu_);
  for (int round = 0; round < kFlushRounds; ++round) {
    frontend_.lock_pages();
    std::vector<Victim> victims;
    for (std::uint32_t f = 0; f < options_.frames; ++f) {
      if (dirty(f) && state(f) == FrameState::kPresent) victims.push_back({f, key_of(f)});
    }
    if (victims.empty()) {
      frontend_.unlock_pages();
      check_invariants_locked();
      MutexLock elock(error_mu_);
      background_error_ = Status::Ok();  // everything is durable now
      return Status::Ok();
    }
    Status st = pass_locked(victims, /*for_flush=*/true, false, nullptr);
    frontend_.unlock_pages();
    if (!st.ok()) return st.with_context("flush");
  }
  return TimedOut(options_.name + ": flush: dirty pages stayed in use; flush outside DerefScopes");
}

Status Pager::drop_frames(std::span<const std::uint32_t> frames) {
  MutexLock lock(evict_mu_);
  frontend_.lock_pages();
  std::vector<Victim> victims;
  for (std::uint32_t f : frames) {
    if (f < options_.frames && state(f) == FrameState::kPresent) victims.push_back({f, key_of(f)});
  }
  // A frame named twice is one victim: freed twice, it would sit twice on the free list.
  std::sort(victims.begin(), victims.end(),
            [](const Victim& a, const Victim& b) { return a.frame < b.frame; });
  victims.erase(std::unique(victims.begin(), victims.end(),
                            [](const Victim& a, const Victim& b) { return a.frame == b.frame; }),
                victims.end());
  std::size_t freed = 0;
  Status st;
  if (!victims.empty()) st = pass_locked(victims, false, /*count_wasted=*/false, &freed);
  frontend_.unlock_pages();
  check_invariants_locked();
  if (st.ok() && freed < victims.size()) {
    return TimedOut(options_.name + ": " + std::to_string(victims.size() - freed) +
                    " page(s) stayed resident: in use");
  }
  return st;
}

std::uint64_t Pager::reclaim(std::uint64_t bytes) {
  const std::size_t pages = (bytes + options_.page_bytes - 1) / options_.page_bytes;
  Status err;
  return evict(std::max<std::size_t>(pages, options_.evict_batch), &err) * options_.page_bytes;
}

// ---- observation ----

PagerStats Pager::stats() const {
  PagerStats s;
  s.evictions = evictions_.load(std::memory_order_relaxed);
  s.writebacks = writebacks_.load(std::memory_order_relaxed);
  s.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  s.writeback_errors = writeback_errors_.load(std::memory_order_relaxed);
  s.inline_evictions = inline_evictions_.load(std::memory_order_relaxed);
  s.background_passes = background_passes_.load(std::memory_order_relaxed);
  s.prefetches_issued = prefetch_issued_.load(std::memory_order_relaxed);
  s.prefetches_used = prefetch_used_.load(std::memory_order_relaxed);
  s.prefetches_wasted = prefetch_wasted_.load(std::memory_order_relaxed);
  s.frames_in_use = in_use_.load(std::memory_order_relaxed);
  s.peak_frames_in_use = peak_in_use_.load(std::memory_order_relaxed);
  s.chunks_retired = chunks_retired_.load(std::memory_order_relaxed);
  s.chunks_revived = chunks_revived_.load(std::memory_order_relaxed);
  s.active_frames = active_frames_.load(std::memory_order_relaxed);
  return s;
}

Status Pager::background_error() const {
  MutexLock lock(error_mu_);
  return background_error_;
}

}  // namespace farmem::paging
