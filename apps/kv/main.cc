// farmem-kv: a memcached-compatible key-value server whose items live in far memory.
// Flags only: the server is kv.h.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/far_flags.h"
#include "kv/kv.h"

int main(int argc, char** argv) {
  CLI::App app{"farmem-kv: a memcached-compatible key-value server on far memory.\n"
               "Keys and values live in far memory (memservers, or an embedded one), behind a "
               "local page cache of -m MiB."};
  farmem::kv::KvOptions o;
  std::uint64_t memory_mib = 64;
  farmem::apps::FarFlags far;
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
  app.add_flag("--plain", o.store.plain_memory,
               "Items in plain malloc'd memory, no far memory (a baseline to run under kernel "
               "swap); -m and the far-memory flags are then not used");
  farmem::apps::add_far_flags(app, o.runtime, far);
  app.set_version_flag("--version", std::string("farmem-kv ") + farmem::version());
  CLI11_PARSE(app, argc, argv);
  if (auto st = farmem::apps::finish_far_flags(o.runtime, far); !st.ok()) {
    std::fprintf(stderr, "farmem-kv: %s\n", st.to_string().c_str());
    return 2;
  }
  o.runtime.cache_budget_bytes = memory_mib << 20;
  // Plain memory: no item goes through the page cache; keep it at its smallest.
  if (o.store.plain_memory) o.runtime.cache_budget_bytes = 1u << 20;
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
  if (o.store.plain_memory) {
    std::printf("farmem-kv %s: listening on %s:%u, %u threads, items in plain memory (up to "
                "%llu MiB)\n",
                farmem::version(), o.server.listen.c_str(), (*kv)->port(), o.server.threads,
                static_cast<unsigned long long>(o.store.far_capacity >> 20));
  } else {
    std::printf("farmem-kv %s: listening on %s:%u, %u threads, %llu MiB local, %llu MiB far\n",
                farmem::version(), o.server.listen.c_str(), (*kv)->port(), o.server.threads,
                static_cast<unsigned long long>(memory_mib),
                static_cast<unsigned long long>(o.store.far_capacity >> 20));
  }
  std::fflush(stdout);
  int sig = 0;
  sigwait(&sigs, &sig);
  std::printf("farmem-kv: signal %d, stopping\n", sig);
  return 0;
}
