# transferd_target_warnings(<target>): the project's warning set, attached to
# one target (never global). TRANSFERD_WERROR=ON (CI) makes them errors.
function(transferd_target_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic
                                           -Wno-unused-parameter)
  if(TRANSFERD_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
