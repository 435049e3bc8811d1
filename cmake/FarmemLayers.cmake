# Layers enforced by include paths. Each layer of libfarmem compiles against an include
# "farm": a folder under ${PROJECT_BINARY_DIR}/layers/<layer> holding symlinks to exactly the
# headers of its own and lower layers, at their usual paths ("pool/far_pool.h",
# "farmem/status.h"). An upward include ("cache/page_cache.h" from the pool) names a file the
# farm does not have, so it fails to compile. test/layers checks that it does.
#
#   farmem_layer_farm(<layer> <item>...)
#
# Each item is a path relative to the project's include roots: "runtime/<dir or file>",
# "include/<dir or file>" or "memserver/<file>"; it appears in the farm without its root's
# first component for runtime/ and include/ (runtime/pool -> pool, include/farmem/status.h ->
# farmem/status.h) and as is for memserver/. Returns the farm's path in FARMEM_LAYER_<layer>.
function(farmem_layer_farm layer)
  set(farm "${PROJECT_BINARY_DIR}/layers/${layer}")
  file(REMOVE_RECURSE "${farm}")
  foreach(item IN LISTS ARGN)
    set(src "${PROJECT_SOURCE_DIR}/${item}")
    if(NOT EXISTS "${src}")
      message(FATAL_ERROR "farmem_layer_farm(${layer}): ${item} does not exist")
    endif()
    string(REGEX REPLACE "^(runtime|include)/" "" rel "${item}")
    get_filename_component(parent "${farm}/${rel}" DIRECTORY)
    file(MAKE_DIRECTORY "${parent}")
    file(CREATE_LINK "${src}" "${farm}/${rel}" SYMBOLIC)
  endforeach()
  set(FARMEM_LAYER_${layer} "${farm}" PARENT_SCOPE)
endfunction()

# The layers, bottom up. A layer lists everything it may include: the lists repeat the lower
# layers' items so that each line reads as the whole of what that layer sees.
set(FARMEM_BASE_ITEMS
  include/farmem/status.h include/farmem/stats.h include/farmem/pressure.h include/farmem/far_addr.h
  runtime/common runtime/transport/proto runtime/transport/transport.h
  runtime/transport/tcp/socket.h runtime/transport/tcp/tls.h runtime/transport/verbs/ibv.h)
# The registry (etcd client, memserver records, discovery) sits on the base only: both the
# memserver binary and the composition root use it.
set(FARMEM_REGISTRY_ITEMS ${FARMEM_BASE_ITEMS} runtime/registry)
set(FARMEM_MEMSERVER_CORE_ITEMS ${FARMEM_BASE_ITEMS}
  memserver/core.h memserver/slab_pool.h)
# The transport layer holds every backend, so it sees its whole folder.
set(FARMEM_TRANSPORT_ITEMS
  include/farmem/status.h include/farmem/stats.h include/farmem/pressure.h include/farmem/far_addr.h
  runtime/common runtime/transport memserver/core.h memserver/slab_pool.h)
set(FARMEM_POOL_ITEMS ${FARMEM_TRANSPORT_ITEMS} include/farmem/io_batch.h runtime/pool)
# The paging core: frames, budget, CLOCK, the background evictor, write-back, prefetch
# feedback; shared by the cache and regions, which both sit on it.
set(FARMEM_PAGING_ITEMS ${FARMEM_POOL_ITEMS} runtime/paging)
set(FARMEM_CACHE_ITEMS ${FARMEM_PAGING_ITEMS}
  include/farmem/options.h include/farmem/detail runtime/cache)
set(FARMEM_HEAP_ITEMS ${FARMEM_POOL_ITEMS} runtime/heap)
# The tier (budget <-> memory pressure) steers the paging core's budget.
set(FARMEM_TIER_ITEMS ${FARMEM_PAGING_ITEMS} runtime/tier)
# Regions get the IoService and the Budget injected and page through the paging core, beside
# the cache (neither sees the other).
set(FARMEM_REGION_ITEMS ${FARMEM_PAGING_ITEMS}
  include/farmem/options.h include/farmem/detail include/farmem/region.h runtime/region)
# The memserver's listeners (not part of libfarmem): its core, the transport helpers they
# share with the clients, and their own folder.
set(FARMEM_MEMSERVER_NET_ITEMS
  include/farmem/status.h include/farmem/stats.h include/farmem/pressure.h include/farmem/far_addr.h
  runtime/common runtime/transport runtime/registry memserver)

foreach(layer BASE REGISTRY MEMSERVER_CORE TRANSPORT POOL PAGING CACHE HEAP REGION TIER MEMSERVER_NET)
  farmem_layer_farm(${layer} ${FARMEM_${layer}_ITEMS})
endforeach()
