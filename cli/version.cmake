# Run at build time (cli/CMakeLists.txt): writes OUT, a header naming the version and the commit the
# binary is built from, and touches it only when that changed, so a new commit rebuilds one file.
execute_process(COMMAND git -C "${SRC}" describe --always --dirty --abbrev=12
                OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR commit STREQUAL "")
  set(commit "unknown commit")
endif()
set(text "#define QSYNC_VERSION \"${VERSION}\"\n#define QSYNC_COMMIT \"${commit}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE "${OUT}" "${text}")
endif()
