# vmmlab_add_lab_checks(): the checks of a lab, built against the learner's exercises/ and the reference solutions/.
#
#   vmmlab_add_lab_checks(NAME <labNN> STAGE <stageNN>
#                         SOURCES <file.cpp>...            # present in both exercises/ and solutions/
#                         LIBRARIES <lib>...               # what that code links (PUBLIC)
#                         TEST_SOURCES <file.cpp>...       # the checks (GoogleTest, KIND kvm, also run in the rig)
#                         [RIG_ONLY_TEST_SOURCES <file>...]  # checks only a standard KVM can run
#                         STARTER_FAILS <regex>...)        # what the untouched exercises must print (no [ ] or ;)
#
# Defines the static libraries <NAME>_exercises and <NAME>_solutions (include directories exercises/ and guests/).
# If the lab defines a function <NAME>_configure_tests(target variant), it is called for every test binary, to link
# guests or add definitions that differ between the variants.
#
# Default build (and CI): <NAME>_tests_solutions runs the checks against solutions/, and <NAME>.starter-fails runs
# them against the untouched exercises/ and requires them to fail with STARTER_FAILS: so a check that could not fail
# is caught. With -DVMMLAB_EXERCISES=ON (the `lab` preset), <NAME>_tests_exercises runs the checks on the learner's
# code instead.

function(_vmmlab_lab_link target name variant)
  target_link_libraries(${target} PRIVATE ${name}_${variant})
  if(COMMAND ${name}_configure_tests)
    cmake_language(CALL ${name}_configure_tests ${target} ${variant})
  endif()
endfunction()

function(vmmlab_add_lab_checks)
  cmake_parse_arguments(PARSE_ARGV 0 L "" "NAME;STAGE"
                        "SOURCES;LIBRARIES;TEST_SOURCES;RIG_ONLY_TEST_SOURCES;STARTER_FAILS")
  if(NOT L_NAME OR NOT L_STAGE OR NOT L_SOURCES OR NOT L_TEST_SOURCES OR NOT L_STARTER_FAILS)
    message(FATAL_ERROR "vmmlab_add_lab_checks: NAME, STAGE, SOURCES, TEST_SOURCES and STARTER_FAILS are required")
  endif()
  foreach(variant IN ITEMS exercises solutions)
    list(TRANSFORM L_SOURCES PREPEND "${variant}/" OUTPUT_VARIABLE sources)
    add_library(${L_NAME}_${variant} STATIC ${sources})
    target_include_directories(${L_NAME}_${variant} PUBLIC "${CMAKE_CURRENT_SOURCE_DIR}/exercises"
                                                           "${CMAKE_CURRENT_SOURCE_DIR}/guests")
    target_link_libraries(${L_NAME}_${variant} PUBLIC ${L_LIBRARIES})
  endforeach()

  if(VMMLAB_EXERCISES)
    set(checked exercises)  # the learner's code: these fail until the exercises are done
  else()
    set(checked solutions)
  endif()
  vmmlab_add_gtest(NAME ${L_NAME}_tests_${checked} STAGE ${L_STAGE} KIND kvm LABELS lab RIG
                   SOURCES ${L_TEST_SOURCES})
  _vmmlab_lab_link(${L_NAME}_tests_${checked} ${L_NAME} ${checked})
  if(L_RIG_ONLY_TEST_SOURCES)
    vmmlab_add_gtest(NAME ${L_NAME}_rig_tests_${checked} STAGE ${L_STAGE} KIND kvm LABELS lab RIG_ONLY
                     SOURCES ${L_RIG_ONLY_TEST_SOURCES})
    _vmmlab_lab_link(${L_NAME}_rig_tests_${checked} ${L_NAME} ${checked})
  endif()

  if(NOT VMMLAB_EXERCISES)
    # The starting point must fail every exercise, with the messages the lab's README tells the learner to expect.
    add_executable(${L_NAME}_tests_exercises ${L_TEST_SOURCES})
    target_link_libraries(${L_NAME}_tests_exercises PRIVATE vmmlab::testing GTest::gtest GTest::gmock
                                                            GTest::gtest_main)
    _vmmlab_lab_link(${L_NAME}_tests_exercises ${L_NAME} exercises)
    vmmlab_add_command_test(NAME ${L_NAME}.starter-fails STAGE ${L_STAGE} KIND kvm LABELS lab STATUS 1
                            STDOUT_MATCHES ${L_STARTER_FAILS} COMMAND ${L_NAME}_tests_exercises)
  endif()
endfunction()
