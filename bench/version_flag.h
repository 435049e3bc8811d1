// --version for the benchmark binaries whose flags Google Benchmark parses (it has no such
// flag of its own). The CLI11 programs use CLI::App::set_version_flag instead.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "farmem/farmem.h"

namespace farmem::bench {

/// Prints "NAME VERSION" and exits 0 when argv holds --version; call first thing in main.
inline void handle_version_flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--version") {
      std::printf("%s %s\n", name, farmem::version());
      std::exit(0);
    }
  }
}

}  // namespace farmem::bench
