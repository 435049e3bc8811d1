// --capacity auto (see auto_capacity.h).
#include "memserver/auto_capacity.h"

#include <cmath>

#include "common/log.h"
#include "common/meminfo.h"

namespace farmem::memserver {

Result<double> parse_auto_capacity(const std::string& spec) {
  if (spec == "auto") return 0.5;
  if (spec.rfind("auto:", 0) != 0) return InvalidArgument("not an auto capacity: " + spec);
  const std::string f = spec.substr(5);
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(f, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != f.size() || !(v > 0 && v <= 1)) {
    return InvalidArgument("--capacity auto:FRACTION needs a fraction in (0, 1], got '" + f + "'");
  }
  return v;
}

std::uint64_t auto_capacity_bytes(std::uint64_t mem_available, std::uint64_t leased,
                                  const AutoCapacityOptions& o, std::uint64_t chunk) {
  const double lendable = o.fraction * static_cast<double>(mem_available + leased);
  const double after_reserve = lendable - static_cast<double>(o.reserve_bytes);
  if (after_reserve <= 0) return 0;
  const auto bytes = static_cast<std::uint64_t>(std::floor(after_reserve));
  return chunk == 0 ? bytes : bytes / chunk * chunk;
}

Result<std::unique_ptr<AutoCapacity>> AutoCapacity::start(Core& core, AutoCapacityOptions o) {
  if (!(o.fraction > 0 && o.fraction <= 1)) {
    return InvalidArgument("auto capacity fraction must be in (0, 1]");
  }
  if (o.interval.count() <= 0) return InvalidArgument("auto capacity interval must be > 0");
  auto a = std::unique_ptr<AutoCapacity>(new AutoCapacity(core, std::move(o)));
  FARMEM_RETURN_IF_ERROR(a->update());
  a->thread_ = std::thread([p = a.get()] { p->run(); });
  return a;
}

AutoCapacity::~AutoCapacity() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status AutoCapacity::update() {
  auto avail = read_mem_available(options_.meminfo_path);
  if (!avail.ok()) return avail.status().with_context("--capacity auto");
  const std::uint64_t leased = core_.used_bytes();
  const std::uint64_t cap =
      auto_capacity_bytes(*avail, leased, options_, core_.options().chunk_bytes);
  const std::uint64_t before = core_.capacity_bytes();
  core_.set_capacity(cap);
  if (cap != before) {
    log().info("capacity {} -> {} bytes (MemAvailable {}, leased {}{})", before, cap, *avail,
               leased, cap < leased ? ": refusing new slabs" : "");
  }
  return Status::Ok();
}

void AutoCapacity::run() {
  UniqueLock lock(mu_);
  while (!stopping_) {
    if (lock.wait_for(cv_, options_.interval, [&]() FARMEM_REQUIRES(mu_) { return stopping_; })) {
      break;
    }
    lock.unlock();
    if (Status st = update(); !st.ok()) {
      log().warn("{}; the capacity stays at {} bytes", st.to_string(), core_.capacity_bytes());
    }
    lock.lock();
  }
}

}  // namespace farmem::memserver
