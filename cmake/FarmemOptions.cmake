# Build switches, all prefixed FARMEM_, and the one place warnings and sanitizers are set.
option(FARMEM_TESTS "Build the GoogleTest suites" ON)
option(FARMEM_BENCHMARKS "Build the benchmarks" ON)
option(FARMEM_APPS "Build the example applications" ON)
option(FARMEM_WERROR "Treat warnings as errors" OFF)
set(FARMEM_SANITIZER "" CACHE STRING "Sanitizer to build with: '', address (ASan+UBSan), thread (TSan)")
set_property(CACHE FARMEM_SANITIZER PROPERTY STRINGS "" address thread)

# farmem_warnings: an interface target every farmem target links to pick up the flags.
add_library(farmem_warnings INTERFACE)
target_compile_options(farmem_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow
  -Wnon-virtual-dtor -Wno-missing-field-initializers $<$<BOOL:${FARMEM_WERROR}>:-Werror>)
# Clang checks the locking annotations (runtime/common/thread_annotations.h: which lock
# guards which field); GCC has no such analysis and the annotations expand to nothing there.
target_compile_options(farmem_warnings INTERFACE
  $<$<CXX_COMPILER_ID:Clang,AppleClang>:-Wthread-safety>)

if(FARMEM_SANITIZER STREQUAL "address")
  target_compile_options(farmem_warnings INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer)
  target_link_options(farmem_warnings INTERFACE -fsanitize=address,undefined)
elseif(FARMEM_SANITIZER STREQUAL "thread")
  target_compile_options(farmem_warnings INTERFACE -fsanitize=thread)
  target_link_options(farmem_warnings INTERFACE -fsanitize=thread)
elseif(NOT FARMEM_SANITIZER STREQUAL "")
  message(FATAL_ERROR "FARMEM_SANITIZER must be '', address or thread (got '${FARMEM_SANITIZER}')")
endif()
