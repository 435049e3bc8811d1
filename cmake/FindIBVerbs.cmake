# FindIBVerbs: locates libibverbs (Debian package libibverbs-dev) and defines the imported target IBVerbs::IBVerbs.
find_path(IBVerbs_INCLUDE_DIR infiniband/verbs.h)
find_library(IBVerbs_LIBRARY NAMES ibverbs)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(IBVerbs
  REQUIRED_VARS IBVerbs_LIBRARY IBVerbs_INCLUDE_DIR
  REASON_FAILURE_MESSAGE "install libibverbs-dev (./ci/install-deps does)")
if(IBVerbs_FOUND AND NOT TARGET IBVerbs::IBVerbs)
  add_library(IBVerbs::IBVerbs UNKNOWN IMPORTED)
  set_target_properties(IBVerbs::IBVerbs PROPERTIES
    IMPORTED_LOCATION "${IBVerbs_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${IBVerbs_INCLUDE_DIR}")
endif()
mark_as_advanced(IBVerbs_INCLUDE_DIR IBVerbs_LIBRARY)
