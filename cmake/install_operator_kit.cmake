# Run by `cmake --install` (and by CPack): installs the systemd unit, the example config and
# the logrotate file with the paths of *this* install, which are known only now (--prefix,
# CPack's /usr). Expects SOURCE_DIR, BINDIR, DOCDIR (relative to the prefix) and
# STAGE_DIR (scratch in the build folder) from FarmemInstall.cmake. DESTDIR is honoured by file(INSTALL).
#
# Where, for a prefix P: the unit in P/lib/systemd/system; the config and logrotate files in
# /etc when P is /usr (a distribution package), else in P/etc, beside the rest of the install.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(etc "/etc")
else()
  set(etc "${CMAKE_INSTALL_PREFIX}/etc")
endif()
set(FARMEM_BINDIR "${CMAKE_INSTALL_PREFIX}/${BINDIR}")
set(FARMEM_DOCDIR "${CMAKE_INSTALL_PREFIX}/${DOCDIR}")
set(FARMEM_CONFDIR "${etc}/farmem")

set(staged "${STAGE_DIR}")
configure_file("${SOURCE_DIR}/packaging/farmem-memserver.service.in"
  "${staged}/farmem-memserver.service" @ONLY)
configure_file("${SOURCE_DIR}/packaging/logrotate.conf" "${staged}/farmem-memserver" COPYONLY)

file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system" TYPE FILE
  FILES "${staged}/farmem-memserver.service")
file(INSTALL DESTINATION "${FARMEM_CONFDIR}" TYPE FILE
  FILES "${SOURCE_DIR}/packaging/memserver.conf")
file(INSTALL DESTINATION "${etc}/logrotate.d" TYPE FILE FILES "${staged}/farmem-memserver")
