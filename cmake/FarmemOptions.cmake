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

# FARMEM_FUZZ: the libFuzzer targets of test/fuzz (ci/fuzz runs them). libFuzzer is clang's,
# so the build must be clang's. Every target of the build is compiled with ASan+UBSan and
# libFuzzer's coverage (fuzzer-no-link), so the code under test guides the fuzzer; only the
# targets link libFuzzer's main. UBSan halts at the first report: a fuzz run must stop at the
# input that caused it, not print and go on.
option(FARMEM_FUZZ "Build the libFuzzer targets of test/fuzz (clang only; ASan+UBSan)" OFF)
if(FARMEM_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "FARMEM_FUZZ needs clang (libFuzzer is part of it), not "
      "${CMAKE_CXX_COMPILER_ID}: configure a fresh build folder with CXX=clang++ (ci/fuzz does)")
  endif()
  if(NOT FARMEM_SANITIZER STREQUAL "" AND NOT FARMEM_SANITIZER STREQUAL "address")
    message(FATAL_ERROR "FARMEM_FUZZ builds with ASan+UBSan; it cannot be combined with "
      "FARMEM_SANITIZER=${FARMEM_SANITIZER}")
  endif()
  target_compile_options(farmem_warnings INTERFACE -fsanitize=fuzzer-no-link
    -fno-sanitize-recover=undefined)
endif()

if(FARMEM_SANITIZER STREQUAL "address" OR FARMEM_FUZZ)
  target_compile_options(farmem_warnings INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer)
  target_link_options(farmem_warnings INTERFACE -fsanitize=address,undefined)
elseif(FARMEM_SANITIZER STREQUAL "thread")
  target_compile_options(farmem_warnings INTERFACE -fsanitize=thread)
  target_link_options(farmem_warnings INTERFACE -fsanitize=thread)
elseif(NOT FARMEM_SANITIZER STREQUAL "")
  message(FATAL_ERROR "FARMEM_SANITIZER must be '', address or thread (got '${FARMEM_SANITIZER}')")
endif()

# FARMEM_DCHECK: executable invariants (runtime/common/dcheck.h). AUTO turns them on in builds
# made to find bugs (a sanitizer, the fuzz targets, or the Debug configuration) and leaves
# release builds (Release, RelWithDebInfo, MinSizeRel) without them. Passed as FARMEM_DCHECK_ON=0/1 through
# farmem_warnings, which every farmem target links, so that all of a build agrees.
set(FARMEM_DCHECK "AUTO" CACHE STRING
  "Invariant checks (FARMEM_DCHECK): AUTO (on with FARMEM_SANITIZER, FARMEM_FUZZ or in Debug), ON, OFF")
set_property(CACHE FARMEM_DCHECK PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${FARMEM_DCHECK}" farmem_dcheck_mode)
if(farmem_dcheck_mode STREQUAL "AUTO")
  if(NOT FARMEM_SANITIZER STREQUAL "" OR FARMEM_FUZZ)
    set(farmem_dcheck_on 1)
  else()
    # A generator expression, so that multi-config generators decide per configuration.
    set(farmem_dcheck_on "$<IF:$<CONFIG:Debug>,1,0>")
  endif()
elseif(farmem_dcheck_mode STREQUAL "ON")
  set(farmem_dcheck_on 1)
elseif(farmem_dcheck_mode STREQUAL "OFF")
  set(farmem_dcheck_on 0)
else()
  message(FATAL_ERROR "FARMEM_DCHECK must be AUTO, ON or OFF (got '${FARMEM_DCHECK}')")
endif()
target_compile_definitions(farmem_warnings INTERFACE FARMEM_DCHECK_ON=${farmem_dcheck_on})
