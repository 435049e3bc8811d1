// farmem/farmem.h: the whole public API.
#pragma once

#include "farmem/far_hash_map.h"
#include "farmem/far_ptr.h"
#include "farmem/far_vector.h"
#include "farmem/options.h"
#include "farmem/region.h"
#include "farmem/runtime.h"
#include "farmem/stats.h"
#include "farmem/status.h"
#include "farmem/task.h"

namespace farmem {

/// "0.1.0": the version of the libfarmem this program runs with.
const char* version();

}  // namespace farmem
