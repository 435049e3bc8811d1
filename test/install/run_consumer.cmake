# Driven by ctest (see CMakeLists.txt): install, then build and run the consumer.
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")

include("${CMAKE_CURRENT_LIST_DIR}/run.cmake")

run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
run(${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/build"
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/consumer")
if(NOT last_output MATCHES "consumer: wrote and read back 1048576 bytes")
  message(FATAL_ERROR "consumer output unexpected: ${last_output}")
endif()

# The same program through pkg-config and farmem.pc.
set(ENV{PKG_CONFIG_PATH} "${prefix}/lib/pkgconfig:${prefix}/lib/x86_64-linux-gnu/pkgconfig")
run(pkg-config --cflags --libs farmem)
string(STRIP "${last_output}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
run(c++ -std=c++20 "${SOURCE_DIR}/consumer.cc" ${flags} -o "${WORK_DIR}/consumer-pc")
execute_process(COMMAND "${WORK_DIR}/consumer-pc" RESULT_VARIABLE rc OUTPUT_VARIABLE out)
if(NOT rc EQUAL 0 OR NOT out MATCHES "wrote and read back")
  message(FATAL_ERROR "pkg-config consumer failed (${rc}): ${out}")
endif()
message(STATUS "consumer ok: ${last_output}")
