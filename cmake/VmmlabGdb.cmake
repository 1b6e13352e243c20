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

# vmmlab_add_guest_gdb_test(): a real gdb against a stage demo's gdb stub, checked with FileCheck.
#
#   vmmlab_add_guest_gdb_test(NAME <test> STAGE <label> SCRIPT <file.gdb> ELF <guest elf or ->
#                             [RIG] [FLAVOUR <rig flavour>] [TIMEOUT <s>] [FILES <more files for the rig>...]
#                             COMMAND <vmm target> [ARGS...])
#
# tools/gdb-guest-session starts the VMM with --gdb unix:SOCKET (the guest waits before its first instruction),
# attaches gdb with the guest's symbols and runs the script; FileCheck then reads the CHECK lines of the script
# against gdb's output followed by the VMM's ("vmm exit status: N" last). Labelled "<stage>;kvm;gdb", or with RIG
# "<stage>;rig;gdb" and run inside the rig, where gdb is copied in with Python's standard library and gdb's own
# Python modules (gdb embeds Python and prints no frames without them) and glibc's UTF-32 converter (symbol names).
file(GLOB VMMLAB_GDB_RIG_FILES LIST_DIRECTORIES true /usr/lib/python3.[0-9]* /usr/share/gdb/python
     /usr/lib/*-linux-gnu/gconv/gconv-modules /usr/lib/*-linux-gnu/gconv/gconv-modules.cache
     /usr/lib/*-linux-gnu/gconv/UTF-32.so)

function(vmmlab_add_guest_gdb_test)
  cmake_parse_arguments(PARSE_ARGV 0 G "RIG" "NAME;STAGE;SCRIPT;ELF;FLAVOUR;TIMEOUT" "FILES;COMMAND")
  if(NOT G_NAME OR NOT G_STAGE OR NOT G_SCRIPT OR NOT G_ELF OR NOT G_COMMAND)
    message(FATAL_ERROR "vmmlab_add_guest_gdb_test: NAME, STAGE, SCRIPT, ELF and COMMAND are required")
  endif()
  get_filename_component(script "${G_SCRIPT}" ABSOLUTE)
  # The VMM is a target of this project, possibly defined after its tests' directory: a generator expression.
  list(POP_FRONT G_COMMAND program)
  if(NOT program MATCHES "/")
    set(program "$<TARGET_FILE:${program}>")
  endif()
  cmake_path(SET session NORMALIZE "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/../tools/gdb-guest-session")
  # bash for pipefail (the rig's sh is dash): the session's status (gdb's) counts as well as FileCheck's.
  # No ';' in the script: CMake would split the argument there.
  set(command bash -c "set -o pipefail && s=$1 c=$2 && shift 2 && \"$s\" \"$@\" | \"$c\" \"$1\""
              bash "${session}" "${VMMLAB_FILECHECK}" "${script}" "${G_ELF}" -- "${program}" ${G_COMMAND})
  if(NOT G_TIMEOUT)
    set(G_TIMEOUT 300)
  endif()
  if(G_RIG)
    set(flavour)
    if(G_FLAVOUR)
      set(flavour FLAVOUR ${G_FLAVOUR})
    endif()
    set(elf_file)
    if(NOT G_ELF STREQUAL "-")
      set(elf_file "${G_ELF}")
    endif()
    vmmlab_add_rig_test(NAME ${G_NAME} STAGE ${G_STAGE} TIMEOUT ${G_TIMEOUT} ${flavour} LABELS gdb
                        FILES "${program}" ${elf_file} "${script}" "${session}" ${VMMLAB_GDB} "${VMMLAB_FILECHECK}"
                              ${VMMLAB_GDB_RIG_FILES} ${G_FILES}
                        COMMAND ${command})
  else()
    add_test(NAME ${G_NAME} COMMAND ${command})
    set_tests_properties(${G_NAME} PROPERTIES LABELS "${G_STAGE};kvm;gdb" TIMEOUT ${G_TIMEOUT})
  endif()
endfunction()
