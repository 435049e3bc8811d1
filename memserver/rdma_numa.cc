#include "memserver/rdma_numa.h"

#include <hwloc.h>
#include <hwloc/openfabrics-verbs.h>
#include <netdb.h>

#include <cctype>
#include <filesystem>
#include <memory>

#include "common/log.h"
#include "transport/verbs/ibv.h"

namespace farmem::memserver {

namespace {

struct TopologyDeleter {
  void operator()(hwloc_topology* t) const { hwloc_topology_destroy(t); }
};
using Topology = std::unique_ptr<hwloc_topology, TopologyDeleter>;
struct BitmapDeleter {
  void operator()(hwloc_bitmap_s* b) const { hwloc_bitmap_free(b); }
};
using Bitmap = std::unique_ptr<hwloc_bitmap_s, BitmapDeleter>;

/// The RDMA device whose netdev carries `host`: rdma_cm binds to the address and tells which
/// device serves it, exactly as the listener's own bind will.
ibv_device* device_of_address(const std::string& host, ibv::CmId& id) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* ai = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &ai) != 0) return nullptr;
  const int rc = rdma_bind_addr(id.get(), ai->ai_addr);
  freeaddrinfo(ai);
  if (rc != 0 || id->verbs == nullptr) return nullptr;
  return id->verbs->device;
}

/// NUMA nodes the kernel knows, from sysfs: far cheaper than loading an hwloc topology
/// (hundreds of ms in a VM), and enough to skip hwloc on the common single-node machine.
int sysfs_numa_nodes() {
  namespace fs = std::filesystem;
  std::error_code ec;
  int n = 0;
  for (const auto& e : fs::directory_iterator("/sys/devices/system/node", ec)) {
    const auto name = e.path().filename().string();
    if (name.size() > 4 && name.starts_with("node") && std::isdigit(name[4])) ++n;
  }
  return n;
}

/// First NUMA node near `dev`; -1 when the machine has one node or the device is near all.
int node_of_device(ibv_device* dev) {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0) return -1;
  Topology topo(raw);
  if (hwloc_topology_load(topo.get()) != 0) return -1;
  const int nodes = hwloc_get_nbobjs_by_type(topo.get(), HWLOC_OBJ_NUMANODE);
  if (nodes <= 1) return -1;  // nothing to choose
  Bitmap cpus(hwloc_bitmap_alloc());
  Bitmap nodeset(hwloc_bitmap_alloc());
  if (!cpus || !nodeset || hwloc_ibv_get_device_cpuset(topo.get(), dev, cpus.get()) != 0) {
    return -1;
  }
  hwloc_cpuset_to_nodeset(topo.get(), cpus.get(), nodeset.get());
  // A device without locality (virtual, e.g. rxe) reports every CPU: no preference.
  if (hwloc_bitmap_weight(nodeset.get()) >= nodes) return -1;
  return hwloc_bitmap_first(nodeset.get());
}

}  // namespace

int numa_node_of_rdma_address(const std::string& host) {
  auto channel = ibv::create_event_channel();
  if (!channel.ok()) return -1;
  auto id = ibv::create_id(channel->get(), nullptr);
  if (!id.ok()) return -1;
  ibv_device* dev = device_of_address(host, *id);
  if (dev == nullptr) {
    log().debug("no RDMA device serves {}: slab memory stays unbound", host);
    return -1;
  }
  const int node = sysfs_numa_nodes() > 1 ? node_of_device(dev) : -1;
  log().info("RDMA device {} serves {}; NUMA node {}", ibv_get_device_name(dev), host, node);
  return node;
}

}  // namespace farmem::memserver
