# Driven by ctest (operator_kit_install): `cmake --install` into a scratch prefix puts the
# programs, the library and headers, the systemd unit, the example config, the logrotate file
# and the docs where an operator expects them; the unit, whose ExecStart names the installed
# binary, passes `systemd-analyze verify` without a warning; the installed memserver reads
# the installed config.
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")

include("${CMAKE_CURRENT_LIST_DIR}/run.cmake")

run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
foreach(f bin/farmem-memserver bin/farmemctl lib/systemd/system/farmem-memserver.service
    etc/farmem/memserver.conf etc/logrotate.d/farmem-memserver include/farmem/farmem.h
    share/doc/farmem/README.md share/doc/farmem/docs/operators.md)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()
file(GLOB libs "${prefix}/lib*/libfarmem.so" "${prefix}/lib/*/libfarmem.so")
if(NOT libs)
  message(FATAL_ERROR "libfarmem.so not installed under ${prefix}/lib*")
endif()

set(unit "${prefix}/lib/systemd/system/farmem-memserver.service")
file(READ "${unit}" text)
set(exec "ExecStart=${prefix}/bin/farmem-memserver --config ${prefix}/etc/farmem/memserver.conf")
string(FIND "${text}" "${exec}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the unit does not start the installed binary with the installed config "
    "(wanted '${exec}'):\n${text}")
endif()
if(text MATCHES "@[A-Z_]+@")
  message(FATAL_ERROR "unsubstituted placeholder in the unit: ${CMAKE_MATCH_0}")
endif()
foreach(line "Type=notify" "ExecReload=/bin/kill -HUP $MAINPID" "LimitMEMLOCK=infinity"
    "NoNewPrivileges=yes" "ProtectSystem=strict")
  string(FIND "${text}" "${line}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the unit lacks '${line}'")
  endif()
endforeach()

# verify checks every directive and that ExecStart's binary exists; it reports unknown or
# misspelt directives only as warnings, so any stderr fails the test.
run(systemd-analyze verify "${unit}")
if(NOT last_error STREQUAL "")
  message(FATAL_ERROR "systemd-analyze verify warned:\n${last_error}")
endif()

# The installed example config is one the installed memserver accepts (a misspelt option
# would be an error), and it says what the comments promise.
run("${prefix}/bin/farmem-memserver" --config "${prefix}/etc/farmem/memserver.conf" --print-config)
foreach(want "tcp=\"0.0.0.0:7472\"" "capacity=\"auto:0.5\"" "metrics=\"127.0.0.1:9472\""
    "log-file=\"/var/log/farmem/memserver.log\"")
  string(FIND "${last_output}" "${want}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "installed config does not set ${want}:\n${last_output}")
  endif()
endforeach()
run("${prefix}/bin/farmemctl" --version)
message(STATUS "operator's kit installed and verified under ${prefix}")
