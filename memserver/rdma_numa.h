// Where the RDMA device serving an address sits, so slab memory can live on its NUMA node.
#pragma once

#include <string>

namespace farmem::memserver {

/// The NUMA node of the RDMA device whose netdev carries IPv4 address `host`; -1 when
/// unknown (no such device, or a single-node machine where it does not matter).
int numa_node_of_rdma_address(const std::string& host);

}  // namespace farmem::memserver
