// farmem-memserver: lends this host's spare memory to farmem clients over RDMA and TCP.
// Flags only; the server itself is memserver/server.h.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>

#include "common/log.h"
#include "farmem/farmem.h"
#include "common/meminfo.h"
#include "memserver/auto_capacity.h"
#include "memserver/daemon.h"
#include "memserver/metrics.h"
#include "memserver/metrics_http.h"
#include "memserver/registration.h"
#include "memserver/server.h"
#include "memserver/tenants.h"

namespace {

std::string read_token_file(const std::string& path) {
  std::ifstream in(path);
  std::string token;
  if (!in || !std::getline(in, token) || token.empty()) {
    std::fprintf(stderr, "farmem-memserver: --token-file %s: cannot read a token from it\n",
                 path.c_str());
    std::exit(2);
  }
  return token;
}

template <typename T>
T or_exit(farmem::Result<T> r, const char* what) {
  if (!r.ok()) {
    std::fprintf(stderr, "farmem-memserver: %s: %s\n", what, r.status().to_string().c_str());
    std::exit(2);
  }
  return std::move(r).value();
}

void or_exit_status(const farmem::Status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "farmem-memserver: %s: %s\n", what, st.to_string().c_str());
    std::exit(2);
  }
}

/// "tcp://HOST:PORT" (an IPv6 HOST in brackets).
std::string url_of(const char* scheme, const std::string& host, unsigned port) {
  const bool v6 = host.find(':') != std::string::npos;
  return std::string(scheme) + "://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"farmem-memserver: serves far memory to farmem clients (RDMA and/or TCP).\n"
               "Slabs are mapped only when a client asks for one and unmapped when it frees\n"
               "them or disconnects; an idle memserver holds almost no memory."};
  std::string tcp, rdma, capacity = "1G", chunk = "2M", token, token_file, level = "info";
  std::string capacity_reserve = "256M", meminfo = "/proc/meminfo";
  std::string metrics, log_file, tenants_file;
  bool print_config = false, insecure = false;
  int numa = -1;
  app.set_config("--config", "",
                 "Read options from FILE (TOML: one `name = value` a line, names as the long "
                 "flags without --); flags on the command line win");
  // A misspelt name in the file must stop the server, not leave the option at its default.
  app.allow_config_extras(CLI::config_extras_mode::error);
  std::string registry, advertise;
  int registry_ttl = 10;
  farmem::memserver::TcpListenerOptions tcp_opts;
  double idle_timeout = 60, frame_timeout = 10;
  app.add_option("--tcp", tcp, "Serve TCP clients on HOST:PORT (e.g. 127.0.0.1:7472)");
  app.add_option("--max-connections", tcp_opts.max_connections,
                 "Most TCP connections open at once; more are refused")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-connections-per-host", tcp_opts.max_connections_per_host,
                 "Most TCP connections from one source address (0: a quarter of "
                 "--max-connections)")
      ->capture_default_str();
  app.add_option("--idle-timeout", idle_timeout,
                 "Close a TCP connection that sends nothing, or an RDMA connection that sends "
                 "no control request, for this many seconds (0: never); its session is then "
                 "kept for --lease-grace. Runtimes PING every 2 s "
                 "(RuntimeOptions::heartbeat_interval), so this finds clients whose network "
                 "vanished")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--frame-timeout", frame_timeout,
                 "Close a TCP connection whose frame is not complete this many seconds after "
                 "it began (half a header, a stalled WRITE body; 0: never)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--tcp-workers", tcp_opts.workers,
                 "Threads serving TCP connections (0: twice the CPUs, at least 8; at most 64)")
      ->capture_default_str();
  std::string tls_cert, tls_key, tls_ca;
  app.add_option("--tls-cert", tls_cert,
                 "Serve --tcp over TLS with this certificate (PEM, then any intermediates): "
                 "clients connect with tls://HOST:PORT, and plain tcp:// clients are refused")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", tls_key, "The private key of --tls-cert (PEM)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-ca", tls_ca,
                 "With --tls-cert: require every TCP client to present a certificate signed "
                 "by one of these CAs (PEM; mutual TLS)")
      ->check(CLI::ExistingFile);
  app.add_option("--rdma", rdma,
                 "Serve RDMA clients on HOST:PORT via rdma_cm; HOST must be the IP of an "
                 "RDMA-capable netdev (e.g. 10.99.0.1:7471)");
  app.add_option("--capacity", capacity,
                 "Most memory leased to clients at once, all clients together (e.g. 512M, 4G), "
                 "or auto[:FRACTION]: lend FRACTION (default 0.5) of what the host can spare "
                 "(MemAvailable plus what is leased, minus --capacity-reserve), re-read every "
                 "second; when the host needs memory back, new slabs are refused")
      ->capture_default_str();
  app.add_option("--capacity-reserve", capacity_reserve,
                 "With --capacity auto: memory always left to the host beyond the fraction")
      ->capture_default_str();
  app.add_option("--meminfo", meminfo,
                 "With --capacity auto: where MemAvailable is read (a container's own meminfo)")
      ->capture_default_str();
  app.add_option("--chunk", chunk,
                 "Slab granularity: every slab is a multiple of it (power of two, >= 4K)")
      ->capture_default_str();
  auto* tok = app.add_option("--token", token,
                             "The secret of the anonymous tenant: clients prove they hold it "
                             "(HMAC-SHA256 challenge-response; it never crosses the wire); "
                             "prefer --token-file, since arguments are visible to other users");
  app.add_option("--token-file", token_file, "Read the token from the first line of FILE")
      ->excludes(tok)
      ->check(CLI::ExistingFile);
  app.add_option("--tenants", tenants_file,
                 "Tenants (JSON, mode 0600): {\"tenants\": [{\"name\": N, \"secret\": S, "
                 "\"quota\": \"4G\", \"max_connections\": 16}, ...]}; each runtime "
                 "authenticates as one and sees only its own slabs and sessions")
      ->check(CLI::ExistingFile);
  int lease_grace = 60;
  app.add_option("--lease-grace", lease_grace,
                 "Seconds a client's session outlives its connection (its slabs kept) so that "
                 "the client can reconnect and resume it; 0: reclaim at once")
      ->capture_default_str()
      ->check(CLI::Range(0, 86400));
  app.add_flag("--insecure", insecure,
               "Serve without a token or tenants: anyone who can reach this memserver may "
               "lease, read and write its memory (without this flag, it refuses to start so)");
  app.add_option("--numa", numa,
                 "Bind slab memory to this NUMA node (default: the RDMA device's node, or "
                 "none for TCP only)");
  app.add_option("--registry", registry,
                 "Register in etcd so runtimes find this memserver: etcd://HOST:PORT[/PREFIX], "
                 "or every member of an etcd cluster, etcd://H1:P1,H2:P2,H3:P3[/PREFIX] (the "
                 "next is used when one does not answer; default prefix /farmem/memservers/); "
                 "the record lives under a lease. Members written https://HOST:PORT (all or "
                 "none) are reached over TLS (--etcd-ca, --etcd-cert, --etcd-key)");
  app.add_option("--registry-ttl", registry_ttl,
                 "Seconds a memserver that died stays in the registry (its lease's TTL)")
      ->capture_default_str()
      ->check(CLI::Range(2, 3600));
  farmem::registry::EtcdTls etcd_tls;
  auto* registry_flag = app.get_option("--registry");
  app.add_option("--etcd-ca", etcd_tls.ca_file,
                 "With an https --registry: CA certificates (PEM) etcd's certificate must chain "
                 "to (default: the system's); etcd's host name is always verified")
      ->needs(registry_flag);
  app.add_option("--etcd-cert", etcd_tls.cert_file,
                 "With an https --registry: client certificate (PEM) for an etcd started with "
                 "--client-cert-auth")
      ->needs(registry_flag);
  app.add_option("--etcd-key", etcd_tls.key_file,
                 "The --etcd-cert's private key (PEM, unencrypted)")
      ->needs(registry_flag);
  app.add_option("--advertise", advertise,
                 "Host published in the registry (default: the --tcp/--rdma host; required "
                 "when listening on 0.0.0.0)");
  app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.add_option("--log-file", log_file,
                 "Append the log to FILE instead of stderr; SIGHUP reopens it (logrotate)");
  app.add_option("--metrics", metrics,
                 "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9472)");
  app.add_flag("--print-config", print_config,
               "Print the options given (flags and --config file) as a config file, and exit")
      ->configurable(false);
  app.set_version_flag("--version", std::string("farmem-memserver ") + farmem::version());
  CLI11_PARSE(app, argc, argv);
  if (print_config) {
    std::cout << app.config_to_str(false, true);
    return 0;
  }

  if (!token_file.empty()) token = read_token_file(token_file);
  if (!farmem::set_log_level(level)) {
    std::fprintf(stderr, "farmem-memserver: unknown --log-level '%s'\n", level.c_str());
    return 2;
  }
  if (!log_file.empty()) {
    if (auto st = farmem::log_to_file(log_file); !st.ok()) {
      std::fprintf(stderr, "farmem-memserver: --log-file: %s\n", st.to_string().c_str());
      return 2;
    }
  }
  farmem::memserver::ServerOptions opts;
  opts.core.chunk_bytes = or_exit(farmem::memserver::parse_size(chunk), "--chunk");
  std::optional<farmem::memserver::AutoCapacityOptions> auto_capacity;
  if (capacity.rfind("auto", 0) == 0) {
    farmem::memserver::AutoCapacityOptions ao;
    ao.fraction = or_exit(farmem::memserver::parse_auto_capacity(capacity), "--capacity");
    ao.reserve_bytes = or_exit(farmem::memserver::parse_size(capacity_reserve), "--capacity-reserve");
    ao.meminfo_path = meminfo;
    const auto avail = or_exit(farmem::read_mem_available(meminfo), "--capacity auto");
    opts.core.capacity_bytes =
        farmem::memserver::auto_capacity_bytes(avail, 0, ao, opts.core.chunk_bytes);
    auto_capacity = ao;
    opts.auto_capacity = true;
  } else {
    opts.core.capacity_bytes = or_exit(farmem::memserver::parse_size(capacity), "--capacity");
  }
  const auto c = opts.core.chunk_bytes;
  if (c < 4096 || (c & (c - 1)) != 0) {
    std::fprintf(stderr, "farmem-memserver: --chunk must be a power of two >= 4K\n");
    return 2;
  }
  opts.core.token = token;
  if (!tenants_file.empty()) {
    opts.core.tenants = or_exit(farmem::memserver::read_tenants_file(tenants_file), "--tenants");
  }
  opts.insecure = insecure;
  opts.core.lease_grace = std::chrono::seconds(lease_grace);
  or_exit_status(farmem::memserver::check_credentials(opts), "credentials");
  opts.core.numa_node = numa;
  if (!tcp.empty()) opts.tcp = or_exit(farmem::memserver::parse_listen_address(tcp), "--tcp");
  const auto to_ms = [](double s) { return std::chrono::milliseconds(std::llround(s * 1000)); };
  tcp_opts.idle_timeout = to_ms(idle_timeout);
  opts.rdma_options.idle_timeout = tcp_opts.idle_timeout;
  tcp_opts.frame_timeout = to_ms(frame_timeout);
  if (!tls_cert.empty() || !tls_key.empty() || !tls_ca.empty()) {
    if (tls_cert.empty() || tls_key.empty()) {
      std::fprintf(stderr, "farmem-memserver: --tls-cert and --tls-key go together "
                           "(--tls-ca needs both)\n");
      return 2;
    }
    if (!opts.tcp) {
      std::fprintf(stderr, "farmem-memserver: --tls-cert applies to --tcp, which is not given "
                           "(RDMA traffic is not encrypted)\n");
      return 2;
    }
    tcp_opts.tls = or_exit(farmem::net::TlsContext::for_server({tls_cert, tls_key, tls_ca}),
                           "--tls-cert");
  }
  opts.tcp_options = tcp_opts;
  if (!rdma.empty()) opts.rdma = or_exit(farmem::memserver::parse_listen_address(rdma), "--rdma");
  std::optional<farmem::memserver::ListenAddress> metrics_at;
  if (!metrics.empty()) {
    metrics_at = or_exit(farmem::memserver::parse_listen_address(metrics), "--metrics");
  }

  // Every thread the server starts inherits the mask: only main receives these signals.
  const sigset_t signals = farmem::memserver::block_service_signals();
  std::signal(SIGPIPE, SIG_IGN);

  // --registry is checked before anything listens: a wildcard host needs --advertise.
  const std::string tcp_host = !opts.tcp ? "" : advertise.empty() ? opts.tcp->host : advertise;
  const std::string rdma_host = !opts.rdma ? "" : advertise.empty() ? opts.rdma->host : advertise;
  std::optional<farmem::memserver::RegistrationOptions> registration_opts;
  if (!registry.empty()) {
    registration_opts.emplace();
    registration_opts->registry =
        or_exit(farmem::registry::parse_registry_url(registry), "--registry");
    registration_opts->etcd_tls = etcd_tls;
    or_exit_status(farmem::registry::check_etcd_tls(registration_opts->registry.endpoints,
                                                    etcd_tls),
                   "--etcd-ca, --etcd-cert, --etcd-key");
    registration_opts->ttl = std::chrono::seconds(registry_ttl);
    registration_opts->version = farmem::version();
    using farmem::memserver::check_advertised_host;
    if (opts.tcp) or_exit_status(check_advertised_host(tcp_host), "--registry, --tcp");
    if (opts.rdma) or_exit_status(check_advertised_host(rdma_host), "--registry, --rdma");
  }
  const bool opts_tls = opts.tcp_options.tls != nullptr;
  auto server = or_exit(farmem::memserver::Server::start(std::move(opts)), "cannot start");
  std::unique_ptr<farmem::memserver::AutoCapacity> lender;
  if (auto_capacity) {
    lender = or_exit(farmem::memserver::AutoCapacity::start(server->core(), *auto_capacity),
                     "--capacity auto");
  }
  std::unique_ptr<farmem::memserver::MetricsServer> exporter;
  if (metrics_at) {
    farmem::memserver::Core& core = server->core();
    exporter = or_exit(farmem::memserver::MetricsServer::start(*metrics_at, [&core] {
      return farmem::memserver::render_prometheus(farmem::memserver::snapshot(core));
    }), "--metrics");
  }
  std::unique_ptr<farmem::memserver::Registration> registration;
  if (registration_opts) {
    if (server->rdma_port() != 0) {
      registration_opts->urls.push_back(url_of("rdma", rdma_host, server->rdma_port()));
    }
    if (server->tcp_port() != 0) {
      registration_opts->urls.push_back(
          url_of(opts_tls ? "tls" : "tcp", tcp_host, server->tcp_port()));
    }
    registration = or_exit(farmem::memserver::Registration::start(
                               server->core(), std::move(*registration_opts)), "--registry");
  }
  std::string status = "serving";
  if (server->tcp_port() != 0) {
    std::printf("listening %s %s port %u\n", opts_tls ? "tls" : "tcp", tcp.c_str(),
                server->tcp_port());
    status += " tcp port " + std::to_string(server->tcp_port());
  }
  if (server->rdma_port() != 0) {
    std::printf("listening rdma %s port %u\n", rdma.c_str(), server->rdma_port());
    status += " rdma port " + std::to_string(server->rdma_port());
  }
  if (registration) status += ", registered in " + registry;
  if (exporter) std::printf("listening metrics %s port %u\n", metrics.c_str(), exporter->port());
  std::fflush(stdout);
  farmem::memserver::notify_ready(status);

  const int sig = farmem::memserver::wait_for_stop(signals, [&log_file] {
    if (log_file.empty()) farmem::log().info("SIGHUP: no --log-file to reopen");
    else if (auto st = farmem::reopen_log_file(); !st.ok()) farmem::log().error("SIGHUP: {}", st.to_string());
    else farmem::log().info("SIGHUP: log reopened");
  }, status);
  farmem::log().info("signal {}: shutting down", sig);
  registration.reset();  // revokes the lease: the key goes before the listeners do
  exporter.reset();
  lender.reset();
  server.reset();
  return 0;
}
