# vmmlab_add_gdb_test(): run a lab's gdb script in batch mode and check its output with FileCheck.
#
#   vmmlab_add_gdb_test(SCRIPT <file.gdb> STAGE <label> COMMAND <target-or-path> [ARGS...] [LABELS <extra>...])
#
# The script holds its own expectations as comments that FileCheck reads:
#
#   break vmm::kvm::Vcpu::run
#   run
#   # CHECK: Breakpoint 1, vmm::kvm::Vcpu::run
#
# The test is named gdb.<lab directory>.<script name> and labelled "<stage>;gdb". The program under gdb usually runs a
# guest, so without /dev/kvm the test skips (exit 77) unless VMMLAB_REQUIRE_KVM=1.

find_program(VMMLAB_FILECHECK NAMES FileCheck FileCheck-14 PATHS /usr/lib/llvm-14/bin)
find_program(VMMLAB_GDB NAMES gdb)

function(vmmlab_add_gdb_test)
  cmake_parse_arguments(PARSE_ARGV 0 G "" "SCRIPT;STAGE" "COMMAND;LABELS")
  if(NOT G_SCRIPT OR NOT G_STAGE OR NOT G_COMMAND)
    message(FATAL_ERROR "vmmlab_add_gdb_test: SCRIPT, STAGE and COMMAND are required")
  endif()
  get_filename_component(script "${G_SCRIPT}" ABSOLUTE)
  get_filename_component(script_name "${G_SCRIPT}" NAME_WE)
  get_filename_component(lab "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
  list(POP_FRONT G_COMMAND program)
  if(TARGET ${program})
    set(program "$<TARGET_FILE:${program}>")
  endif()
  add_test(NAME gdb.${lab}.${script_name}
           COMMAND "${PROJECT_SOURCE_DIR}/labs/gdb/run-gdb-test" --gdb "${VMMLAB_GDB}" --filecheck "${VMMLAB_FILECHECK}"
                   "${script}" -- "${program}" ${G_COMMAND}
           WORKING_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}")
  set_tests_properties(gdb.${lab}.${script_name} PROPERTIES LABELS "${G_STAGE};gdb;${G_LABELS}" SKIP_RETURN_CODE 77
                                                            TIMEOUT 180)
endfunction()
