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
