# Install rules: libfarmem.so, the public headers, farmem-memserver, an exported
# farmemConfig.cmake (find_package(farmem) -> farmem::farmem) and farmem.pc.
include(CMakePackageConfigHelpers)

install(TARGETS farmem EXPORT farmemTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/farmem
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(EXPORT farmemTargets NAMESPACE farmem::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/farmem)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/farmemConfig.cmake.in
  ${PROJECT_BINARY_DIR}/farmemConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/farmem)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/farmemConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/farmemConfig.cmake
  ${PROJECT_BINARY_DIR}/farmemConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/farmem)

file(RELATIVE_PATH FARMEM_PC_RELATIVE_PREFIX "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig"
  "${CMAKE_INSTALL_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/farmem.pc.in ${PROJECT_BINARY_DIR}/farmem.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/farmem.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The operator's kit: the systemd unit, the example config, the logrotate file (placed at
# install time, see install_operator_kit.cmake) and the README as documentation.
install(CODE "
  set(SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")
  set(STAGE_DIR \"${PROJECT_BINARY_DIR}/operator-kit\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/install_operator_kit.cmake\")")
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/LICENSE
  DESTINATION ${CMAKE_INSTALL_DOCDIR})
# The README links into docs/: install them beside it, where those links resolve.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs
  FILES_MATCHING PATTERN "*.md")

# `cpack -G DEB` in the build folder: one .deb with the library, headers, programs and the
# operator's kit, installed under /usr (config in /etc/farmem, marked as a conffile).
set(CPACK_PACKAGE_NAME farmem)
set(CPACK_PACKAGE_VENDOR "farmem")
set(CPACK_PACKAGE_CONTACT "farmem maintainers <farmem@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}: libfarmem, farmem-memserver, farmemctl")
# The operator's kit installs to /etc by absolute path: stage through DESTDIR so that it lands
# in the package, never on the building host. With DESTDIR staging CPack installs to
# CPACK_INSTALL_PREFIX.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # RelWithDebInfo builds carry ~100 MB of debug info
set(CPACK_GENERATOR DEB)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "logrotate")
file(WRITE ${PROJECT_BINARY_DIR}/deb/conffiles
  "/etc/farmem/memserver.conf\n/etc/logrotate.d/farmem-memserver\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/deb/conffiles)
include(CPack)
