// farmem-kv as a library: the runtime, the item store and the server, built and wired
// together from one options struct (main.cc reads them from flags; the tests build them).
#pragma once

#include <chrono>
#include <memory>

#include "kv/server.h"
#include "kv/store.h"

namespace farmem::kv {

struct KvOptions {
  RuntimeOptions runtime;  ///< servers, registry, budget (cache_budget_bytes), tier, security
  StoreOptions store;      ///< far capacity, item size limit
  ServerOptions server;    ///< listen address, port, threads, connections
};

class KvServer {
 public:
  /// Opens the runtime (with the embedded memserver sized for the items when it is the
  /// only server), then listens.
  static Result<std::unique_ptr<KvServer>> open(KvOptions options);
  ~KvServer();  // stops the server before the store and the runtime go
  KvServer(const KvServer&) = delete;
  KvServer& operator=(const KvServer&) = delete;

  std::uint16_t port() const { return server_->port(); }
  Runtime& runtime() { return *rt_; }
  Store& store() { return *store_; }
  void stop() { server_->stop(); }
  /// The general statistics, as "stats" lists them.
  StatList stats() const;

 private:
  KvServer() = default;
  void settings(StatList& out) const;

  KvOptions options_;
  std::unique_ptr<Runtime> rt_;
  std::unique_ptr<Store> store_;
  Context ctx_;
  std::unique_ptr<Server> server_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace farmem::kv
