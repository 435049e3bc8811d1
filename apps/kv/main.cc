// farmem-kv: a memcached-compatible key-value server whose items live in far memory.
// Flags only: the server is kv.h.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <string>

#include "kv/kv.h"

int main(int argc, char** argv) {
  CLI::App app{"farmem-kv: a memcached-compatible key-value server on far memory.\n"
               "Keys and values live in far memory (memservers, or an embedded one), behind a "
               "local page cache of -m MiB."};
  farmem::kv::KvOptions o;
  std::uint64_t memory_mib = 64;
  std::string token_file;
  app.add_option("-p,--port", o.server.port, "TCP port to listen on (0: any free port)")
      ->capture_default_str();
  app.add_option("-l,--listen", o.server.listen, "Address to listen on")->capture_default_str();
  app.add_option("-t,--threads", o.server.threads, "Worker threads")
      ->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("-c,--conn-limit", o.server.max_connections, "Most simultaneous connections")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("-m,--memory-limit", memory_mib,
                 "Local memory for cached far pages, in MiB (the page cache's budget)")
      ->check(CLI::Range(1, 1 << 24))->capture_default_str();
  app.add_option("-I,--max-item-size", o.store.item_max,
                 "Largest item, key plus value (e.g. 1m; 1k to 1g)")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--far-capacity", o.store.far_capacity,
                 "Far memory items may use (e.g. 4g); past it, least recently used items are "
                 "evicted")
      ->transform(CLI::AsSizeValue(false))->capture_default_str();
  app.add_option("--server", o.runtime.servers,
                 "Memserver URL (rdma://, tcp://, tls://host:port, or local); repeatable. "
                 "None and no --registry: an embedded memserver");
  app.add_option("--registry", o.runtime.registry,
                 "etcd registry of memservers: etcd://host:port[/prefix]");
  app.add_option("--replicas", o.runtime.replicas, "Copies of far memory, on different memservers")
      ->check(CLI::Range(1, 3))->capture_default_str();
  app.add_option("--budget-floor", o.runtime.budget_floor,
                 "Tier: lowest local budget under memory pressure (e.g. 16m; with --budget-ceiling)")
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--budget-ceiling", o.runtime.budget_ceiling,
                 "Tier: highest local budget when memory is calm (e.g. 256m)")
      ->transform(CLI::AsSizeValue(false));
  auto* tok = app.add_option("--token", o.runtime.auth_token,
                             "Secret the memservers check (their --token, or the tenant's)");
  app.add_option("--token-file", token_file, "Read the secret from FILE")
      ->excludes(tok)->check(CLI::ExistingFile);
  app.add_option("--tenant", o.runtime.auth_tenant, "Tenant to authenticate as");
  app.add_option("--tls-ca", o.runtime.tls_ca, "CA file (PEM) tls:// memservers chain to");
  app.add_option("--tls-cert", o.runtime.tls_cert, "Client certificate (PEM) for tls://");
  app.add_option("--tls-key", o.runtime.tls_key, "Its private key (PEM)");
  app.set_version_flag("--version", std::string("farmem-kv ") + farmem::version());
  CLI11_PARSE(app, argc, argv);
  if (!token_file.empty()) std::getline(std::ifstream(token_file), o.runtime.auth_token);
  o.runtime.cache_budget_bytes = memory_mib << 20;
  // The runtime's own registered buffer is not used by the store (it goes through the page
  // cache): keep it small, so that -m is what local memory costs.
  o.runtime.local_buffer_bytes = 1u << 20;

  // Signals are taken by sigwait below, not by whichever thread they hit.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  auto kv = farmem::kv::KvServer::open(o);
  if (!kv.ok()) {
    std::fprintf(stderr, "farmem-kv: %s\n", kv.status().to_string().c_str());
    return 1;
  }
  std::printf("farmem-kv %s: listening on %s:%u, %u threads, %llu MiB local, %llu MiB far\n",
              farmem::version(), o.server.listen.c_str(), (*kv)->port(), o.server.threads,
              static_cast<unsigned long long>(memory_mib),
              static_cast<unsigned long long>(o.store.far_capacity >> 20));
  std::fflush(stdout);
  int sig = 0;
  sigwait(&sigs, &sig);
  std::printf("farmem-kv: signal %d, stopping\n", sig);
  return 0;
}
