# cmake -DPROGRAM=PATH -DEXPECTED="NAME VERSION" -P version_check.cmake: runs PROGRAM --version
# and fails unless it exits 0 and prints exactly EXPECTED on one line.
execute_process(COMMAND "${PROGRAM}" --version RESULT_VARIABLE rc OUTPUT_VARIABLE out
  ERROR_VARIABLE err TIMEOUT 30)
if(NOT rc STREQUAL "0")
  message(FATAL_ERROR "${PROGRAM} --version exited ${rc}: ${out}${err}")
endif()
if(NOT out STREQUAL "${EXPECTED}\n")
  message(FATAL_ERROR "${PROGRAM} --version printed '${out}', expected '${EXPECTED}'")
endif()
message(STATUS "${PROGRAM} --version: ${EXPECTED}")
