# Renders one Graphviz diagram to SVG, failing on anything dot complains about.
#
#   cmake -DDOT=<dot> -DINPUT=<x.dot> -DOUTPUT=<x.svg> -P render-diagram.cmake
#
# dot exits non-zero only on a syntax error; for many mistakes (an unknown shape, a bad colour, an attribute with an
# unusable value) it prints "Warning: ..." and draws something else. Those fail too, so the docs build catches them.
# Other stderr output (fontconfig's complaints about its cache, say) is passed through without failing.

foreach(var IN ITEMS DOT INPUT OUTPUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "render-diagram.cmake: -D${var}=... is required")
  endif()
endforeach()

get_filename_component(output_dir "${OUTPUT}" DIRECTORY)
file(MAKE_DIRECTORY "${output_dir}")
execute_process(
  COMMAND "${DOT}" -Tsvg "${INPUT}" -o "${OUTPUT}.tmp"
  RESULT_VARIABLE status
  ERROR_VARIABLE errors)

if(NOT status EQUAL 0 OR errors MATCHES "(^|\n)(Error|Warning)")
  file(REMOVE "${OUTPUT}.tmp")
  message(FATAL_ERROR "dot rejected ${INPUT} (exit status ${status}):\n${errors}")
endif()
if(errors)
  message("${errors}")
endif()
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
