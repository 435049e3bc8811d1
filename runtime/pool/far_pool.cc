#include "pool/far_pool.h"

#include <mutex>

#include "common/log.h"

namespace farmem::pool {

FarPool::FarPool(std::vector<std::unique_ptr<transport::Connection>> conns, PoolOptions options)
    : conns_(std::move(conns)), options_(options) {}

FarPool::~FarPool() {
  std::unique_lock lock(mu_);
  for (Slab& s : slabs_) {
    if (s.live) release_slab_locked(s);
  }
}

Result<std::size_t> FarPool::lease_slab_locked(std::uint64_t bytes, bool dedicated) {
  if (slabs_.size() >= kMaxSlabs) return ResourceExhausted("slab table full");
  if (bytes > kMaxSlabBytes) {
    return InvalidArgument("allocation of " + std::to_string(bytes) + " bytes exceeds the " +
                           std::to_string(kMaxSlabBytes) + "-byte slab limit");
  }
  // Round-robin across servers; a full or failing server passes the request on.
  std::string why;
  for (std::size_t tried = 0; tried < conns_.size(); ++tried) {
    const std::size_t c = (next_conn_ + tried) % conns_.size();
    auto info = transport::alloc_slab(*conns_[c], bytes, options_.control_timeout);
    if (!info.ok()) {
      why += (why.empty() ? "" : "; ") + conns_[c]->peer() + ": " + info.status().to_string();
      continue;
    }
    next_conn_ = (c + 1) % conns_.size();
    Slab s;
    s.conn = c;
    s.server_slab_id = info->slab_id;
    s.remote_addr = info->addr;
    s.rkey = info->rkey;
    s.bytes = info->bytes;
    s.live = true;
    s.dedicated = dedicated;
    s.alloc = std::make_unique<SlabAllocator>(info->bytes);
    slabs_.push_back(std::move(s));
    return slabs_.size() - 1;
  }
  return ResourceExhausted("no memserver could lease a slab of " + std::to_string(bytes) +
                           " bytes: " + why);
}

void FarPool::release_slab_locked(Slab& s) {
  s.live = false;
  s.alloc.reset();
  auto st = transport::free_slab(*conns_[s.conn], s.server_slab_id, options_.control_timeout);
  if (!st.ok()) {
    log().warn("returning slab {} to {} failed ({}); the memserver reclaims it when this "
               "session ends", s.server_slab_id, conns_[s.conn]->peer(), st.to_string());
  }
}

Result<FarRange> FarPool::allocate(std::uint64_t bytes) {
  if (bytes == 0) return InvalidArgument("allocation of 0 bytes");
  std::unique_lock lock(mu_);
  const bool dedicated = bytes > options_.slab_bytes;
  if (!dedicated) {
    for (std::size_t i = 0; i < slabs_.size(); ++i) {
      Slab& s = slabs_[i];
      if (!s.live || s.dedicated) continue;
      if (auto off = s.alloc->allocate(bytes)) return FarRange{make_far_addr(i, *off), bytes};
    }
  }
  FARMEM_ASSIGN_OR_RETURN(std::size_t i,
                          lease_slab_locked(dedicated ? bytes : options_.slab_bytes, dedicated));
  auto off = slabs_[i].alloc->allocate(bytes);
  if (!off) return Internal("fresh slab cannot hold " + std::to_string(bytes) + " bytes");
  return FarRange{make_far_addr(i, *off), bytes};
}

Status FarPool::free(FarRange range) {
  if (range.addr.is_null()) return InvalidArgument("free of a null far address");
  std::unique_lock lock(mu_);
  const auto i = slab_index_of(range.addr);
  if (i >= slabs_.size() || !slabs_[i].live) {
    return InvalidArgument("free of a far address in no live slab (double free?)");
  }
  Slab& s = slabs_[i];
  const auto off = offset_of(range.addr);
  const auto len = s.alloc->block_bytes(off);
  if (len == 0) return InvalidArgument("free of a far address that is not an allocation");
  if (range.bytes > len) {
    return InvalidArgument("free of " + std::to_string(range.bytes) +
                           " bytes, but the allocation there holds " + std::to_string(len));
  }
  s.alloc->free(off);
  if (s.alloc->empty()) release_slab_locked(s);  // give the memory back to its server
  return Status::Ok();
}

Result<RemoteTarget> FarPool::resolve(FarAddr addr, std::uint64_t len) const {
  if (addr.is_null()) return InvalidArgument("access through a null far address");
  std::shared_lock lock(mu_);
  const auto i = slab_index_of(addr);
  if (i >= slabs_.size() || !slabs_[i].live) {
    return OutOfRange("far address names no live slab (freed?)");
  }
  const Slab& s = slabs_[i];
  const auto off = offset_of(addr);
  if (off >= s.bytes || len > s.bytes - off) {
    return OutOfRange("access of " + std::to_string(len) + " bytes at slab offset " +
                      std::to_string(off) + " runs past the slab's " + std::to_string(s.bytes) +
                      " bytes");
  }
  return RemoteTarget{s.conn, s.remote_addr + off, s.rkey};
}

std::uint64_t FarPool::slab_bytes(std::uint64_t index) const {
  std::shared_lock lock(mu_);
  return index < slabs_.size() && slabs_[index].live ? slabs_[index].bytes : 0;
}

std::uint64_t FarPool::slabs() const {
  std::shared_lock lock(mu_);
  std::uint64_t n = 0;
  for (const Slab& s : slabs_) n += s.live ? 1 : 0;
  return n;
}

std::uint64_t FarPool::leased_bytes() const {
  std::shared_lock lock(mu_);
  std::uint64_t n = 0;
  for (const Slab& s : slabs_) n += s.live ? s.bytes : 0;
  return n;
}

std::uint64_t FarPool::allocated_bytes() const {
  std::shared_lock lock(mu_);
  std::uint64_t n = 0;
  for (const Slab& s : slabs_) n += s.live ? s.alloc->used_bytes() : 0;
  return n;
}

}  // namespace farmem::pool
