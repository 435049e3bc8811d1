#include "farmem/farmem.h"

namespace farmem {

// FARMEM_VERSION_STRING comes from project(VERSION) in the top-level CMakeLists.txt.
const char* version() { return FARMEM_VERSION_STRING; }

}  // namespace farmem
