# Build identification, compiled into server/core/build_info.cc.
find_package(Git QUIET)
set(TRANSFERD_REVISION "unknown")
if(GIT_FOUND AND EXISTS "${CMAKE_SOURCE_DIR}/.git")
  execute_process(
    COMMAND "${GIT_EXECUTABLE}" describe --always --dirty --tags
    WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}"
    OUTPUT_VARIABLE _rev
    OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_QUIET)
  if(_rev)
    set(TRANSFERD_REVISION "${_rev}")
  endif()
endif()
