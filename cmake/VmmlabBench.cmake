# Benchmarks: one program per figure of the benchmark report, under the stage it measures (stageNN-*/bench/).
#
#   vmmlab_add_benchmark(NAME <target> SOURCES <file>... [LIBS <lib>...])
#       A Google Benchmark program. It registers its benchmarks in pairs, vmmlab's first and the floor or peer second,
#       and tools/bench-report runs it several times (A B A B ...) and reports medians and ratios.
#
#   vmmlab_add_bench_smoke(FIGURE <n> STAGE <stage> KIND unit|kvm|rig [TIMEOUT <s>])
#       The CTest check that figure <n> still works: `tools/bench-report --smoke --figure <n>` runs its programs once,
#       briefly, and fails if any of them fails or counts something it must not (an exit that is not one syscall, a
#       kick that exits to userspace...). Timings are printed but never judged here: CI machines are too noisy and
#       benchmarks are not timed tests. Labels: bench, the stage, and kvm or rig (which CI requires, never skips).
#
include(VmmlabRig) # _vmmlab_rig_test_properties

# The full report: tools/bench-report --build-dir build/dev (README.md, "Benchmarks").

function(vmmlab_add_benchmark)
  cmake_parse_arguments(PARSE_ARGV 0 B "" "NAME" "SOURCES;LIBS")
  if(NOT B_NAME OR NOT B_SOURCES)
    message(FATAL_ERROR "vmmlab_add_benchmark: NAME and SOURCES are required")
  endif()
  add_executable(${B_NAME} ${B_SOURCES})
  target_link_libraries(${B_NAME} PRIVATE ${B_LIBS} benchmark::benchmark fmt::fmt)
endfunction()

function(vmmlab_add_bench_smoke)
  cmake_parse_arguments(PARSE_ARGV 0 S "" "FIGURE;STAGE;KIND;TIMEOUT" "DEPENDS")
  if(NOT S_FIGURE OR NOT S_STAGE OR NOT S_KIND)
    message(FATAL_ERROR "vmmlab_add_bench_smoke: FIGURE, STAGE and KIND are required")
  endif()
  if(NOT S_TIMEOUT)
    set(S_TIMEOUT 120)
  endif()
  set(name bench.${S_STAGE}.figure${S_FIGURE}.smoke)
  add_test(NAME ${name}
           COMMAND "${PROJECT_SOURCE_DIR}/tools/bench-report" --build-dir "${PROJECT_BINARY_DIR}" --figure ${S_FIGURE}
                   --smoke)
  if(S_KIND STREQUAL "rig")
    # Like every rig test: it takes a rig slot (one QEMU per core) and its timeout covers the rig's.
    _vmmlab_rig_test_properties(${name} ${S_STAGE} ${S_TIMEOUT} bench)
  else()
    set(labels bench ${S_STAGE})
    if(S_KIND STREQUAL "kvm")
      list(APPEND labels kvm)
    endif()
    set_tests_properties(${name} PROPERTIES LABELS "${labels}" SKIP_RETURN_CODE 77 TIMEOUT ${S_TIMEOUT})
  endif()
endfunction()
