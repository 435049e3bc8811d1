# Driven by ctest (package_deb): `cpack -G DEB` builds a .deb that installs under /usr, with
# the unit in /usr/lib/systemd/system starting /usr/bin/farmem-memserver with
# /etc/farmem/memserver.conf, and the config marked as a conffile (dpkg keeps an operator's
# edits on upgrade).
file(REMOVE_RECURSE "${WORK_DIR}")

include("${CMAKE_CURRENT_LIST_DIR}/run.cmake")

run(${CPACK_COMMAND} -G DEB --config "${BUILD_DIR}/CPackConfig.cmake" -B "${WORK_DIR}")
file(GLOB debs "${WORK_DIR}/*.deb")
list(LENGTH debs n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "expected one .deb in ${WORK_DIR}, found: ${debs}")
endif()
run(dpkg-deb -c "${debs}")
foreach(f ./usr/bin/farmem-memserver ./usr/bin/farmemctl ./usr/include/farmem/farmem.h
    ./usr/lib/systemd/system/farmem-memserver.service ./etc/farmem/memserver.conf
    ./etc/logrotate.d/farmem-memserver)
  string(FIND "${last_output}" " ${f}\n" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${f} is not in the package:\n${last_output}")
  endif()
endforeach()
if(last_output MATCHES "/usr/local/")
  message(FATAL_ERROR "the package installs under /usr/local:\n${last_output}")
endif()
run(dpkg-deb -f "${debs}" Package Depends)
if(NOT last_output MATCHES "Package: farmem" OR NOT last_output MATCHES "libsystemd0")
  message(FATAL_ERROR "unexpected control fields:\n${last_output}")
endif()
run(dpkg-deb -e "${debs}" "${WORK_DIR}/control")
file(READ "${WORK_DIR}/control/conffiles" conffiles)
if(NOT conffiles MATCHES "/etc/farmem/memserver.conf")
  message(FATAL_ERROR "memserver.conf is not a conffile: ${conffiles}")
endif()
run(dpkg-deb -x "${debs}" "${WORK_DIR}/root")
file(READ "${WORK_DIR}/root/usr/lib/systemd/system/farmem-memserver.service" unit)
string(FIND "${unit}" "ExecStart=/usr/bin/farmem-memserver --config /etc/farmem/memserver.conf" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the packaged unit does not start /usr/bin/farmem-memserver:\n${unit}")
endif()
message(STATUS "package ok: ${debs}")
