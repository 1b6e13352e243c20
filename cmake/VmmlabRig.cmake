# VmmlabRig.cmake -- register CTest tests that run inside "the rig" (tools/rig).
#
# The rig boots a small QEMU (TCG) virtual machine whose kernel has KVM loaded and runs
# one command in it, so KVM tests work on machines without a usable /dev/kvm.  See
# `tools/rig --help`.
#
#   vmmlab_add_rig_test(NAME <test-name> STAGE <label, e.g. stage01>
#                       [FLAVOUR kvm|vfio] [TIMEOUT <seconds, default 300>]
#                       [FILES <path>...] [STDIN <file>] [ENV <NAME=VALUE>...]
#                       [MODULES <kernel module>...] [CPUS <n>]
#                       [PASS_REGULAR_EXPRESSION <regex>] [LABELS <extra>...]
#                       COMMAND <target-or-path> [ARGS...])
#
# COMMAND is a CMake target (the test runs $<TARGET_FILE:target>) or a path.  Everything
# after COMMAND is passed to it unchanged.  FILES are extra files or directories the
# command needs inside the VM (copied to the same absolute path); STDIN is fed to its
# standard input; ENV sets environment variables inside the VM; MODULES are extra kernel
# modules the rig loads (tun, for a tap device); CPUS gives the rig more than one CPU.
#
# The test gets the labels "<STAGE>;rig;<LABELS...>", so `ctest -L rig` runs every rig
# test and `ctest -L stage01` one stage.  It is skipped (exit code 77) where the rig's
# prerequisites are missing -- unless VMMLAB_REQUIRE_KVM=1, as in CI, where that is a
# failure.
#
# Example:
#   vmmlab_add_rig_test(NAME stage01.trace STAGE stage01
#                       PASS_REGULAR_EXPRESSION "KVM_EXIT_HLT"
#                       COMMAND stage01-kvm-api --trace)

include_guard(GLOBAL)

# Each rig test keeps about one core busy for several seconds (QEMU emulates the CPU
# in software).  Rig tests take turns on this many "slots" -- CTest resource locks
# assigned round-robin -- so `ctest -j8` on a 2-core machine still runs at most two
# VMs at once instead of timing out eight.
set(VMMLAB_RIG_PARALLEL 2 CACHE STRING "How many rig tests (QEMU VMs) may run at the same time")

# _vmmlab_rig_test_properties(<test> <stage> <rig-timeout> [<extra-label>...])
# Properties shared by every test that boots the rig (also used by tools/CMakeLists.txt).
function(_vmmlab_rig_test_properties test stage rig_timeout)
  get_property(count GLOBAL PROPERTY _VMMLAB_RIG_TEST_COUNT)
  if(NOT count)
    set(count 0)
  endif()
  math(EXPR slot "${count} % ${VMMLAB_RIG_PARALLEL}")
  math(EXPR count "${count} + 1")
  set_property(GLOBAL PROPERTY _VMMLAB_RIG_TEST_COUNT ${count})

  # CTest's timeout is a safety net above the rig's own, which reports better.
  math(EXPR ctest_timeout "${rig_timeout} + 60")
  set(labels ${stage} rig ${ARGN})
  set_tests_properties(${test} PROPERTIES
    LABELS "${labels}"
    SKIP_RETURN_CODE 77
    TIMEOUT ${ctest_timeout}
    RESOURCE_LOCK "vmmlab-rig-slot-${slot}")
endfunction()

function(vmmlab_add_rig_test)
  cmake_parse_arguments(PARSE_ARGV 0 RIG
    ""
    "NAME;STAGE;FLAVOUR;TIMEOUT;STDIN;CPUS;PASS_REGULAR_EXPRESSION"
    "FILES;ENV;MODULES;LABELS;COMMAND")

  if(NOT RIG_NAME OR NOT RIG_STAGE OR NOT RIG_COMMAND)
    message(FATAL_ERROR "vmmlab_add_rig_test: NAME, STAGE and COMMAND are required")
  endif()
  if(RIG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "vmmlab_add_rig_test(${RIG_NAME}): unexpected arguments: ${RIG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT RIG_TIMEOUT)
    set(RIG_TIMEOUT 300)
  endif()

  set(rig_args --timeout ${RIG_TIMEOUT})
  if(RIG_FLAVOUR)
    list(APPEND rig_args --flavour ${RIG_FLAVOUR})
  endif()
  foreach(file IN LISTS RIG_FILES)
    list(APPEND rig_args --file ${file})
  endforeach()
  foreach(env IN LISTS RIG_ENV)
    list(APPEND rig_args --env ${env})
  endforeach()
  # Extra host-kernel modules for the rig (final-vmm's tap needs tun) and more CPUs for SMP guests.
  foreach(module IN LISTS RIG_MODULES)
    list(APPEND rig_args --module ${module})
  endforeach()
  if(RIG_CPUS)
    list(APPEND rig_args --cpus ${RIG_CPUS})
  endif()
  if(RIG_STDIN)
    list(APPEND rig_args --stdin ${RIG_STDIN})
  endif()

  # COMMAND <program> [ARGS...]: the program may be a target of this project.  Swap
  # it for the target's file with a string replacement: list operations such as
  # list(POP_FRONT) would split an argument like "a; b" in two.
  list(GET RIG_COMMAND 0 program)
  if(TARGET ${program})
    string(REGEX REPLACE "^[^;]+" "$<TARGET_FILE:${program}>" RIG_COMMAND "${RIG_COMMAND}")
  endif()

  # tools/rig, found from this file (the variable works in any directory scope).
  cmake_path(SET rig NORMALIZE "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/../tools/rig")
  add_test(NAME ${RIG_NAME}
    COMMAND ${rig} ${rig_args} -- ${RIG_COMMAND}
    WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  _vmmlab_rig_test_properties(${RIG_NAME} ${RIG_STAGE} ${RIG_TIMEOUT} ${RIG_LABELS})
  if(DEFINED RIG_PASS_REGULAR_EXPRESSION)
    set_tests_properties(${RIG_NAME} PROPERTIES
      PASS_REGULAR_EXPRESSION "${RIG_PASS_REGULAR_EXPRESSION}")
  endif()
endfunction()
