// farmem/options.h: what a Runtime is opened with.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "farmem/pressure.h"
#include "farmem/status.h"

namespace farmem {

/// How an application expects to use a range of far memory (madvise-like).
enum class Advice : std::uint8_t {
  kNormal,      ///< detect access trends and prefetch along them
  kSequential,  ///< prefetch ahead at full depth
  kRandom,      ///< do not prefetch
  kWillNeed,    ///< fetch the range now, in the background
  kDontNeed,    ///< write the range back if dirty and drop it from local memory
};

/// Options of Runtime::open. Every field has a usable default: a default-constructed
/// RuntimeOptions opens a runtime on an embedded in-process memserver. Runtime::open checks
/// every combination that could only fail later and says which field to change.
struct RuntimeOptions {
  /// Memservers, as URLs: "rdma://host:port", "tcp://host:port", "tls://host:port" (tcp with
  /// TLS: see tls_ca), or "local" (an in-process
  /// memserver, for tests and single-host use). A new slab goes to the roomier of two servers
  /// picked at random (power of two choices over their free bytes); a full, unreachable or
  /// closed (Runtime::close_server) server is skipped. Empty (the default): {"local"} without
  /// a registry, none besides the registered ones with one.
  std::vector<std::string> servers;
  /// Memservers registered in etcd (farmem-memserver --registry): "etcd://HOST:PORT[/PREFIX]",
  /// or "etcd://H1:P1,H2:P2,H3:P3[/PREFIX]", an etcd cluster's members, the next used when one
  /// does not answer (default prefix /farmem/memservers/). Runtime::open lists and connects to
  /// them (besides `servers`), then lists them every registry_interval: a new one is added, one
  /// whose record is gone (it died) closed to new slabs. No etcd answering at open: an error.
  /// Members written "https://HOST:PORT" ("etcd://https://H1:P1,https://H2:P2/PREFIX") are
  /// reached over TLS, verifying etcd's certificate and host name (always); all or none.
  std::string registry;
  /// With an https registry: CA certificates (PEM file) etcd's certificate must chain to.
  /// Empty: the system's CA store. Set with an http registry: Runtime::open refuses.
  std::string etcd_ca;
  /// With an https registry: client certificate (PEM file), for an etcd that requires one
  /// (etcd --client-cert-auth). Empty: none.
  std::string etcd_cert;
  /// etcd_cert's private key (PEM file, unencrypted); set with etcd_cert and only with it.
  std::string etcd_key;
  /// Transports for registered memservers, by preference: each is reached with the first of
  /// these its record offers ("rdma", "tls", "tcp"); no fallback after a failure. {"tls",
  /// "tcp"} on a host without RDMA; {"tls"} to refuse clear-text tcp.
  std::vector<std::string> registry_transports{"rdma", "tls", "tcp"};
  /// How often the registry is listed after open.
  std::chrono::milliseconds registry_interval{1000};
  /// The secret every memserver checks at connect: the --token of memservers started with
  /// one, or this runtime's tenant's secret (`auth_tenant`). It never crosses the wire: both
  /// sides prove they hold it (HMAC-SHA256 challenge-response). Empty: only memservers
  /// started with --insecure serve this runtime; with a secret, such memservers are refused.
  std::string auth_token;
  /// tls:// memservers: the CA file (PEM) their certificates must chain to; empty: the
  /// system's trust store. A memserver's certificate must also name the host of its URL (a
  /// DNS name, or the IP address in its subjectAltName). Verification cannot be turned off.
  std::string tls_ca;
  /// This runtime's certificate and key (PEM), presented to tls:// memservers that require
  /// client certificates (farmem-memserver --tls-ca). Both or neither.
  std::string tls_cert;
  std::string tls_key;
  /// A tcp connection that breaks (a stall past op_timeout, a reset, a cut link) reconnects
  /// with backoff and resumes its memserver session, whose far memory the memserver keeps
  /// for its --lease-grace; batches in flight are sent again. Off: a broken connection's far
  /// memory is lost to this runtime.
  bool resume_sessions = true;
  /// How often an idle tcp connection PINGs its memserver (with resume_sessions): it keeps
  /// the session known to the memserver and finds a vanished one early. 0: never.
  std::chrono::milliseconds heartbeat_interval{2000};
  /// The tenant this runtime authenticates as (at most 32 bytes; memserver --tenants FILE).
  /// Empty: the anonymous tenant of a memserver started with --token.
  std::string auth_tenant;
  /// How this runtime names itself to every memserver (at most 48 bytes), so that operators
  /// can find its far footprint (`farmemctl footprint --client LABEL`). Empty (the default):
  /// "PID@HOSTNAME". A memserver too old to take a label is used all the same.
  std::string client_label;
  /// Size of the registered local buffer (Runtime::local_buffer()); RDMA lands in it directly.
  std::size_t local_buffer_bytes = 64u << 20;
  /// Far memory is leased from memservers in slabs of this size (allocations larger than a
  /// slab get a slab of their own).
  std::uint64_t slab_bytes = 64u << 20;
  /// Capacity of the embedded memserver behind "local".
  std::uint64_t local_server_capacity = 1ull << 30;
  /// Deadline of one read, write or batch; past it the operation fails with kTimedOut.
  std::chrono::milliseconds op_timeout{10'000};
  /// Local memory for cached far pages (far_ptr, containers) and mapped regions together.
  /// With the tier on (budget_floor and budget_ceiling set) it is where the budget starts.
  std::uint64_t cache_budget_bytes = 256u << 20;
  /// The swap-like tier: with both set, the local budget follows memory pressure between
  /// them, shrinking (dirty pages written back, memory returned to the OS) when the host or
  /// the process's cgroup is under pressure and growing back slowly when it is calm. Both 0
  /// (the default): the budget stays cache_budget_bytes.
  std::uint64_t budget_floor = 0;
  std::uint64_t budget_ceiling = 0;
  /// How often the tier reads memory pressure.
  std::chrono::milliseconds tier_interval{100};
  /// Where the tier's readings come from. Empty (the default): PSI memory.pressure and the
  /// limits of the process's cgroup v2 (else /proc/pressure/memory) and the host's
  /// MemAvailable. An application (or a test) may supply its own; it is called from the
  /// tier's thread.
  std::function<Result<MemoryPressure>()> pressure_source;
  /// Overflow to a local swap file (off when empty): a slab no memserver can lease (all full
  /// or unreachable) is leased from this file instead, which grows on demand in whole slabs up
  /// to swap_file_max_bytes and gives blocks back (holes punched) as slabs leave it. Every
  /// swap_file_interval, slabs in the file move back to memservers that have room again.
  /// The file is created exclusively (an existing file is an error, never overwritten) and
  /// removed when the runtime closes.
  std::string swap_file;
  std::uint64_t swap_file_max_bytes = 0;
  std::chrono::milliseconds swap_file_interval{1000};
  /// Page size of the far_ptr cache: a power of two from 4 KiB to 2 MiB, dividing slab_bytes.
  std::uint32_t page_bytes = 4096;
  /// Trend-driven prefetch for the far_ptr cache.
  bool prefetch = true;
  /// Most pages one stream prefetches ahead.
  std::uint32_t max_prefetch_pages = 32;
  /// Deadline of connecting to one memserver (address resolution + handshake).
  std::chrono::milliseconds connect_timeout{5'000};
  /// Threads that may be inside the far_ptr cache (a DerefScope) at once, 1..65536. Each
  /// holds a slot the evictor scans; a thread beyond the limit gets kResourceExhausted from
  /// every translation (far_ptr::try_deref, container calls) until another thread exits.
  std::uint32_t max_cache_threads = 256;
  /// Copies of every slab of far memory, each on a different memserver (on different hosts
  /// where the servers' URLs name different hosts and there is a choice): 1 (the default, no
  /// replication), 2 or 3. Writes go to every copy, reads to one, failing over to another
  /// when its memserver dies; a background thread rebuilds lost copies on the other servers.
  /// When every copy of some far memory is lost, its reads and writes fail with kDataLoss.
  /// Needs at least this many memservers at open; not combined with swap_file.
  std::uint32_t replicas = 1;
  /// With replicas > 1: a memserver that does not answer a probe within this is judged dead
  /// (as is one whose connection broke), and its copies are rebuilt elsewhere. Probes go out
  /// every quarter of it (at least every 50 ms, at most every second).
  std::chrono::milliseconds replica_grace{3000};
  /// With replicas > 1: the most bytes a second that rebuilding lost copies may move. Below
  /// it the rebuild adapts: while the application's reads and writes run it copies 16 KiB at
  /// a time and pauses between copies, keeping at most a quarter of the time it measures its
  /// own copies to take (less when they slow down, a sign of a busy link); once the
  /// application has been idle for 100 ms it copies 256 KiB at a time, the next read
  /// overlapping the last write, up to this pace.
  std::uint64_t replica_copy_bytes_per_sec = 32u << 20;
};

}  // namespace farmem
