// apps/common/far_flags.h: the far-memory flags every farmem app takes, spelled once: where
// the memservers are (--server, --registry), how many copies (--replicas), the tier's bounds
// (--budget-floor, --budget-ceiling), and who we are (--token or --token-file, --tenant,
// --tls-*). Each app keeps its own local-budget flag (its unit differs: -m MiB, --budget).
#pragma once

#include <CLI/CLI.hpp>
#include <fstream>
#include <string>

#include "farmem/options.h"
#include "farmem/status.h"

namespace farmem::apps {

/// What the flags fill besides RuntimeOptions.
struct FarFlags {
  std::string token_file;
};

inline void add_far_flags(CLI::App& app, RuntimeOptions& r, FarFlags& f) {
  app.add_option("--server", r.servers,
                 "Memserver URL (rdma://, tcp://, tls://host:port, or local); repeatable. "
                 "None and no --registry: an embedded memserver");
  app.add_option("--registry", r.registry,
                 "etcd registry of memservers: etcd://host:port[/prefix]");
  app.add_option("--replicas", r.replicas, "Copies of far memory, on different memservers")
      ->check(CLI::Range(1, 3))->capture_default_str();
  app.add_option("--budget-floor", r.budget_floor,
                 "Tier: lowest local budget under memory pressure (e.g. 16m; with --budget-ceiling)")
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--budget-ceiling", r.budget_ceiling,
                 "Tier: highest local budget when memory is calm (e.g. 256m)")
      ->transform(CLI::AsSizeValue(false));
  auto* tok = app.add_option("--token", r.auth_token,
                             "Secret the memservers check (their --token, or the tenant's)");
  app.add_option("--token-file", f.token_file, "Read the secret from FILE (its first line)")
      ->excludes(tok)->check(CLI::ExistingFile);
  app.add_option("--tenant", r.auth_tenant, "Tenant to authenticate as");
  app.add_option("--tls-ca", r.tls_ca, "CA file (PEM) tls:// memservers chain to");
  app.add_option("--tls-cert", r.tls_cert, "Client certificate (PEM) for tls://");
  app.add_option("--tls-key", r.tls_key, "Its private key (PEM)");
}

/// After parsing: the token from --token-file. kInvalidArgument when the file gives none.
inline Status finish_far_flags(RuntimeOptions& r, const FarFlags& f) {
  if (f.token_file.empty()) return Status::Ok();
  std::ifstream in(f.token_file);
  if (!std::getline(in, r.auth_token) || r.auth_token.empty()) {
    return InvalidArgument("--token-file " + f.token_file + ": no secret on its first line");
  }
  return Status::Ok();
}

}  // namespace farmem::apps
