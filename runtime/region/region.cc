// Region: the public facade, the factory, setup and teardown, and the API calls that run on
// application threads (flush, advise, pull order, stats).
#include "region/region.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "common/log.h"
#include "common/in_farmem.h"
#include "region/region_constants.h"

namespace farmem::region {

Result<std::unique_ptr<Region>> make_region(pool::IoService& io, paging::Budget& budget, FarRange far,
                                            RegionOptions options) {
  if (far.bytes == 0 || far.addr.is_null()) return InvalidArgument("region of an empty far range");
  if (far.bytes / kPageSize >= (std::uint64_t{1} << 32)) {
    return InvalidArgument("region larger than 2^32 pages (16 TiB)");  // page indices are u32
  }
  if (options.max_prefetch_pages > kMaxPrefetchPagesLimit) {
    return InvalidArgument("max_prefetch_pages above " + std::to_string(kMaxPrefetchPagesLimit));
  }
  auto impl = std::make_unique<Region::Impl>(io, budget, far, options);
  FARMEM_RETURN_IF_ERROR(impl->start());
  return std::make_unique<Region>(std::move(impl));
}

}  // namespace farmem::region

namespace farmem {

using region::kPageSize;

// ---- Region: forwards to Impl; a moved-from Region answers like an empty one ----

Region::Region(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Region::~Region() = default;
Region::Region(Region&&) noexcept = default;
Region& Region::operator=(Region&&) noexcept = default;

std::byte* Region::data() const { return impl_ ? impl_->mem.data() : nullptr; }
std::size_t Region::size() const { return impl_ ? impl_->far.bytes : 0; }
FarRange Region::far() const { return impl_ ? impl_->far : FarRange{}; }
Status Region::flush() { return impl_ ? impl_->flush() : InvalidArgument("moved-from Region"); }
Status Region::advise(std::size_t offset, std::size_t length, Advice advice) {
  return impl_ ? impl_->advise(offset, length, advice) : InvalidArgument("moved-from Region");
}
Status Region::set_pull_order(std::vector<std::size_t> page_indices) {
  return impl_ ? impl_->set_pull_order(std::move(page_indices))
               : InvalidArgument("moved-from Region");
}
Status Region::prefault(std::size_t offset, std::size_t bytes) {
  return impl_ ? impl_->prefault(offset, bytes) : InvalidArgument("moved-from Region");
}
CacheStats Region::stats() const { return impl_ ? impl_->stats() : CacheStats{}; }

// ---- setup and teardown ----

Region::Impl::Impl(pool::IoService& io_service, paging::Budget& b, FarRange range,
                   region::RegionOptions opts)
    : io(io_service),
      budget(b),
      far(range),
      options(opts),
      pages((range.bytes + kPageSize - 1) / kPageSize),
      table(pages, options.fresh),
      prefetcher(paging::PrefetchDepth(paging::PrefetchDepth::kDefaultMinDepth,
                                      paging::PrefetchDepth::kDefaultInitialDepth,
                                      std::max<std::uint32_t>(opts.max_prefetch_pages, 1))) {}

Status Region::Impl::start() {
  FARMEM_ASSIGN_OR_RETURN(mem, region::Mapping::anonymous(pages * kPageSize));
  const bool faulting = options.fault_mode == FaultMode::kFaultingThread;
  const std::uint64_t required =
      UFFD_FEATURE_PAGEFAULT_FLAG_WP | (faulting ? UFFD_FEATURE_SIGBUS : 0);
  FARMEM_ASSIGN_OR_RETURN(uffd, region::Uffd::open(required, UFFD_FEATURE_THREAD_ID));
  constexpr std::uint64_t kNeeded =
      (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_WRITEPROTECT) | (1ull << _UFFDIO_WAKE);
  FARMEM_RETURN_IF_ERROR(uffd.register_range(
      mem.data(), mem.size(), UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, kNeeded));
  wake_fd = region::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd.valid()) return Internal("eventfd for a region handler failed");

  const std::size_t fetch_pages = 1 + std::max<std::size_t>(options.max_prefetch_pages,
                                                            region::kPullBatchPages);
  const std::size_t wb_pages = region::kWriteBackBatchPages;
  const std::size_t slot_pages = 1 + options.max_prefetch_pages;
  const std::size_t faulter_pages = faulting ? region::kFaulterSlots * slot_pages : 0;
  FARMEM_ASSIGN_OR_RETURN(staging, region::Mapping::anonymous(
                                       (fetch_pages + wb_pages + faulter_pages) * kPageSize));
  fetch_staging = staging.span().first(fetch_pages * kPageSize);
  wb_staging = staging.span().subspan(fetch_pages * kPageSize, wb_pages * kPageSize);
  for (std::size_t i = 0; faulting && i < region::kFaulterSlots; ++i) {
    faulter_slots[i].staging =
        staging.span().subspan((fetch_pages + wb_pages + i * slot_pages) * kPageSize,
                               slot_pages * kPageSize);
  }
  FARMEM_RETURN_IF_ERROR(io.register_memory(staging.span()).with_context("region staging"));
  staging_registered = true;

  // The pager: a frame for each page the budget can hold, but no more than the region's
  // pages plus the reserve (a region that fits whole then never evicts).
  const std::uint64_t budget_pages = budget.ceiling() / kPageSize;  // the most it can grow to
  const std::uint64_t reserve = std::min<std::uint64_t>(
      region::kReservePagesMax, budget_pages / region::kReserveShareOfBudget);
  paging::PagerOptions po;
  po.page_bytes = kPageSize;
  po.frames = static_cast<std::uint32_t>(std::max<std::uint64_t>(
      paging::kMinFrames, std::min<std::uint64_t>(budget_pages, pages + reserve)));
  po.reserve_frames = static_cast<std::uint32_t>(reserve);
  po.evict_batch = static_cast<std::uint32_t>(
      std::max<std::size_t>(region::kMinReclaimPages, po.reserve_frames / 2));
  po.write_back_batch = static_cast<std::uint32_t>(region::kWriteBackBatchPages);
  po.streams = 1;
  po.evictor_period = region::kEvictorIdleWait;
  po.name = "region";
  FARMEM_ASSIGN_OR_RETURN(pager, paging::Pager::create(io, budget, *this, std::move(po)));
  handler = std::thread([this] { run_on_handler(); });
  if (faulting) FARMEM_RETURN_IF_ERROR(start_faulting_mode());
  return Status::Ok();
}

Region::Impl::~Impl() {
  // No pass of the pager (evictor, another consumer's reclaim) reaches us from here on.
  if (pager) pager->stop();
  if (handler.joinable()) {
    // Flush while the handler still runs: a thread writing concurrently needs it.
    if (Status st = flush(); !st.ok()) {
      log().error("region of {} bytes at far 0x{:x}: dirty pages NOT written back at unmap: {}",
                  far.bytes, far.addr.raw, st.to_string());
    }
    // Before the helper stops: a signal handler inside this region may wait for it.
    if (sigbus_registered) region::unregister_sigbus_range(this);
    stop.store(true, std::memory_order_release);
    wake_handler();
    handler.join();
  }
  mem = region::Mapping{};  // unmap before uncharging: the budget covers mapped memory
  pager.reset();            // uncharges the frames of the pages that were mapped
  if (staging_registered) {
    if (Status st = io.unregister_memory(staging.span()); !st.ok()) {
      log().warn("region: unregistering staging memory: {}", st.to_string());
    }
  }
}

std::size_t Region::Impl::page_bytes(std::size_t p) const {
  const std::uint64_t start = static_cast<std::uint64_t>(p) * kPageSize;
  return static_cast<std::size_t>(std::min<std::uint64_t>(kPageSize, far.bytes - start));
}

std::size_t Region::Impl::page_of(std::uint64_t address) const {
  return static_cast<std::size_t>((address - reinterpret_cast<std::uintptr_t>(mem.data())) /
                                  kPageSize);
}

void Region::Impl::wake_handler() {
  const std::uint64_t one = 1;
  // A full eventfd counter (never, in practice) still leaves it readable: nothing is lost.
  [[maybe_unused]] const ssize_t n = ::write(wake_fd.get(), &one, sizeof one);
}

// ---- application-thread API ----

Status Region::Impl::flush() {
  InFarmemScope in_farmem;
  return pager->flush();
}

Status Region::Impl::advise(std::size_t offset, std::size_t length, Advice advice) {
  InFarmemScope in_farmem;
  if (offset > far.bytes || length > far.bytes - offset) {
    return OutOfRange("advise range beyond the region's " + std::to_string(far.bytes) + " bytes");
  }
  const std::size_t first = offset / kPageSize;
  const std::size_t end = (offset + length + kPageSize - 1) / kPageSize;
  switch (advice) {
    case Advice::kNormal: wanted_hint.store(paging::Hint::kNormal); return Status::Ok();
    case Advice::kSequential: wanted_hint.store(paging::Hint::kSequential); return Status::Ok();
    case Advice::kRandom: wanted_hint.store(paging::Hint::kRandom); return Status::Ok();
    case Advice::kWillNeed: {
      MutexLock lock(pull_mu_);
      for (std::size_t p = end; p > first; --p) {
        pull_queue.push_front(static_cast<std::uint32_t>(p - 1));
      }
      wake_handler();
      return Status::Ok();
    }
    case Advice::kDontNeed: return drop_range(first, end);
  }
  return InvalidArgument("unknown Advice");
}

Status Region::Impl::drop_range(std::size_t first, std::size_t end) {
  InFarmemScope in_farmem;
  std::vector<std::uint32_t> frames;
  {
    MutexLock lock(page_mu_);
    for (std::size_t p = first; p < end; ++p) {
      if (table.has(p, region::kResident)) frames.push_back(table.frame(p));
    }
  }
  // A frame that changed page since is still written back before it is dropped: safe.
  return pager->drop_frames(frames).with_context("DontNeed");
}

Status Region::Impl::set_pull_order(std::vector<std::size_t> order) {
  std::deque<std::uint32_t> queue;
  for (std::size_t p : order) {
    if (p >= pages) {
      return OutOfRange("pull order names page " + std::to_string(p) + " of a " +
                        std::to_string(pages) + "-page region");
    }
    queue.push_back(static_cast<std::uint32_t>(p));
  }
  {
    MutexLock lock(pull_mu_);
    pull_queue.swap(queue);
  }
  wake_handler();
  return Status::Ok();
}

Status Region::Impl::prefault(std::size_t offset, std::size_t bytes) {
  if (offset > far.bytes || bytes > far.bytes - offset) {
    return OutOfRange("prefault range beyond the region's " + std::to_string(far.bytes) +
                      " bytes");
  }
  const std::size_t first = offset / kPageSize;
  const std::size_t end = (offset + bytes + kPageSize - 1) / kPageSize;
  if ((end - first) * kPageSize > budget.limit()) {
    return InvalidArgument("prefault of " + std::to_string(end - first) +
                           " pages cannot fit the local budget at once");
  }
  if (options.fault_mode == FaultMode::kFaultingThread) return prefault_faulting(first, end);
  // Handler mode: touching is enough, the handler maps what is missing.
  for (std::size_t p = first; p < end; ++p) {
    const std::byte v = *reinterpret_cast<volatile const std::byte*>(page_addr(p));
    (void)v;
  }
  return Status::Ok();
}

CacheStats Region::Impl::stats() const {
  CacheStats s = counters.snapshot();
  const paging::PagerStats p = pager->stats();
  s.prefetches_issued = p.prefetches_issued;
  s.prefetches_used = p.prefetches_used;
  s.prefetches_wasted = p.prefetches_wasted;
  s.evictions = p.evictions;
  s.writebacks = p.writebacks;
  s.bytes_written = p.bytes_written;
  s.inline_evictions = p.inline_evictions;
  s.resident_bytes = table.resident_pages() * kPageSize;
  s.budget_bytes = budget.limit();
  return s;
}

}  // namespace farmem
