// The checks Runtime::open makes of its options (runtime_options.cc).
#pragma once

#include "farmem/options.h"
#include "farmem/status.h"

namespace farmem {

/// Every option combination that would only fail later (at the first allocation, the first
/// DerefScope, a fault), with what to change.
Status check_runtime_options(const RuntimeOptions& o);

}  // namespace farmem
