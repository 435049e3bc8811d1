# FindRDMACM: locates librdmacm (Debian package librdmacm-dev) and defines the imported target RDMACM::RDMACM.
find_path(RDMACM_INCLUDE_DIR rdma/rdma_cma.h)
find_library(RDMACM_LIBRARY NAMES rdmacm)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(RDMACM
  REQUIRED_VARS RDMACM_LIBRARY RDMACM_INCLUDE_DIR
  REASON_FAILURE_MESSAGE "install librdmacm-dev (./ci/install-deps does)")
if(RDMACM_FOUND AND NOT TARGET RDMACM::RDMACM)
  add_library(RDMACM::RDMACM UNKNOWN IMPORTED)
  set_target_properties(RDMACM::RDMACM PROPERTIES
    IMPORTED_LOCATION "${RDMACM_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${RDMACM_INCLUDE_DIR}")
endif()
mark_as_advanced(RDMACM_INCLUDE_DIR RDMACM_LIBRARY)
