# vmmlab_add_gtest(): one call per GoogleTest binary, with the labels every vmmlab test carries.
#
#   vmmlab_add_gtest(NAME <target> STAGE <stage01..stage08|final> KIND <unit|kvm>
#                    SOURCES <file>... [LIBRARIES <lib>...] [RIG | RIG_ONLY] [RIG_TIMEOUT <s>] [LABELS <extra>...])
#
# Labels: every test gets its stage label and its kind (see README.md, "Tests and labels"):
#   unit  no KVM needed          kvm  the host's /dev/kvm          rig  inside the QEMU/TCG rig (tools/rig)
#   gdb   a lab's gdb script     interop  a real peer process      bench-smoke, fuzz-smoke
#
# Each test case becomes its own CTest test, so `ctest -L kvm` counts cases.
# KIND kvm tests call VMMLAB_REQUIRE_KVM() (vmm/testing/kvm.hpp): without a usable /dev/kvm they skip with the reason,
# unless VMMLAB_REQUIRE_KVM=1 (set by CI), where they fail.
# RIG also registers `<target>.rig`, which runs the whole binary inside the rig, on a standard (non-nested) KVM.
# RIG_ONLY registers only `<target>.rig`: for guests the host's nested KVM cannot run (it emulates guest ring 0 and
# some things, such as triple faults, never come back from it; see ../shared/environment.md). Say why in a comment.

include(GoogleTest)

function(vmmlab_add_gtest)
  cmake_parse_arguments(PARSE_ARGV 0 T "RIG;RIG_ONLY" "NAME;STAGE;KIND;RIG_TIMEOUT" "SOURCES;LIBRARIES;LABELS")
  if(NOT T_NAME OR NOT T_STAGE OR NOT T_KIND OR NOT T_SOURCES)
    message(FATAL_ERROR "vmmlab_add_gtest: NAME, STAGE, KIND and SOURCES are required")
  endif()
  if(NOT T_KIND MATCHES "^(unit|kvm)$")
    message(FATAL_ERROR "vmmlab_add_gtest: KIND must be unit or kvm, not '${T_KIND}'")
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBRARIES} vmmlab::testing GTest::gtest GTest::gmock GTest::gtest_main)
  if(NOT T_RIG_ONLY)
    # gtest_add_tests finds TEST/TEST_F cases in the sources at configure time. (gtest_discover_tests would find them
    # at build time, but in CMake 3.25 it cannot give a test a list of labels.)
    gtest_add_tests(TARGET ${T_NAME} TEST_PREFIX "${T_NAME}." SOURCES ${T_SOURCES} TEST_LIST cases)
    set_tests_properties(${cases} PROPERTIES LABELS "${T_STAGE};${T_KIND};${T_LABELS}"
                                             SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT 120)
  endif()
  if(T_RIG OR T_RIG_ONLY)
    if(NOT T_KIND STREQUAL "kvm")
      message(FATAL_ERROR "vmmlab_add_gtest: RIG only makes sense for KIND kvm")
    endif()
    if(NOT T_RIG_TIMEOUT)
      set(T_RIG_TIMEOUT 300)
    endif()
    vmmlab_add_rig_test(NAME ${T_NAME}.rig STAGE ${T_STAGE} TIMEOUT ${T_RIG_TIMEOUT} LABELS ${T_LABELS}
                        COMMAND ${T_NAME} --gtest_brief=1)
  endif()
endfunction()

# vmmlab_add_command_test(): run a program (usually a demo) and check its exit status and output exactly.
#
#   vmmlab_add_command_test(NAME <test> STAGE <label> KIND <unit|kvm> [RIG | RIG_ONLY] [STATUS <n>] [STDIN <file>]
#                           [STDOUT_EQUALS <text> | STDOUT_FILE <file>] [STDOUT_MATCHES <regex>...]
#                           [STDERR_MATCHES <regex>...] [FILES <path>...]
#                           COMMAND <target-or-path> [ARGS...])
#
# KIND kvm: without /dev/kvm the test skips (77), or fails under VMMLAB_REQUIRE_KVM=1.
# Text arguments may contain \n (and no ";": use STDOUT_FILE for such output); regexes are extended regexes (grep -E) matched against the whole output. Avoid
# square brackets in them: CMake does not split a list inside [...] (use . to match a bracket).
# RIG also runs the same checks inside the rig as `<test>.rig`; RIG_ONLY only there (see vmmlab_add_gtest). FILES are
# other files the command needs there (a daemon it starts), copied to the same absolute paths.
function(vmmlab_add_command_test)
  cmake_parse_arguments(PARSE_ARGV 0 T "RIG;RIG_ONLY" "NAME;STAGE;KIND;STATUS;STDIN;STDOUT_EQUALS;STDOUT_FILE"
                        "STDOUT_MATCHES;STDERR_MATCHES;COMMAND;LABELS;FILES")
  if(NOT T_NAME OR NOT T_STAGE OR NOT T_KIND OR NOT T_COMMAND)
    message(FATAL_ERROR "vmmlab_add_command_test: NAME, STAGE, KIND and COMMAND are required")
  endif()
  if(NOT DEFINED T_STATUS)
    set(T_STATUS 0)
  endif()
  set(args --status ${T_STATUS})
  if(T_KIND STREQUAL "kvm")
    list(APPEND args --needs-kvm)
  endif()
  if(T_STDIN)
    list(APPEND args --stdin "${T_STDIN}")
  endif()
  if(DEFINED T_STDOUT_EQUALS)
    list(APPEND args --stdout-equals "${T_STDOUT_EQUALS}")
  endif()
  if(T_STDOUT_FILE)
    list(APPEND args --stdout-file "${T_STDOUT_FILE}")
  endif()
  foreach(re IN LISTS T_STDOUT_MATCHES)
    list(APPEND args --stdout-matches "${re}")
  endforeach()
  foreach(re IN LISTS T_STDERR_MATCHES)
    list(APPEND args --stderr-matches "${re}")
  endforeach()
  list(POP_FRONT T_COMMAND program)
  if(TARGET ${program})
    set(program "$<TARGET_FILE:${program}>")
  endif()
  if(NOT T_RIG_ONLY)
    add_test(NAME ${T_NAME} COMMAND "${PROJECT_SOURCE_DIR}/tools/check-output" ${args} -- "${program}" ${T_COMMAND})
    set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_STAGE};${T_KIND};${T_LABELS}" SKIP_RETURN_CODE 77
                                              TIMEOUT 120)
  endif()
  if(T_RIG OR T_RIG_ONLY)
    set(files "${program}")
    if(T_STDIN)
      list(APPEND files "${T_STDIN}")
    endif()
    if(T_STDOUT_FILE)
      list(APPEND files "${T_STDOUT_FILE}")
    endif()
    list(APPEND files ${T_FILES})
    vmmlab_add_rig_test(NAME ${T_NAME}.rig STAGE ${T_STAGE} FILES ${files} LABELS ${T_LABELS}
                        COMMAND "${PROJECT_SOURCE_DIR}/tools/check-output" ${args} -- "${program}" ${T_COMMAND})
  endif()
endfunction()
