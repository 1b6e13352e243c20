# Reads a guest ELF's load address and entry point and writes them as "LOAD ENTRY" (hex).
# Called by vmmlab_add_guest() at build time.
#
# The load address is the lowest address of an allocated section with contents (PROGBITS): that is where
# `objcopy -O binary` starts the flat image. (The first LOAD program header is no good: the linker may map the ELF
# headers themselves in a segment below the code.)
find_program(READELF readelf REQUIRED)
execute_process(COMMAND "${READELF}" -hSW "${ELF}" OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "readelf failed on ${ELF}")
endif()
string(REGEX MATCH "Entry point address: +(0x[0-9a-fA-F]+)" _ "${out}")
set(entry "${CMAKE_MATCH_1}")

set(load "")
string(REPLACE "\n" ";" lines "${out}")
foreach(line IN LISTS lines)
  # "  [ 1] .text  PROGBITS  0000000000001000 001000 000026 00  AX  0   0  1"
  if(line MATCHES "^ +\\[ *[0-9]+\\] +[^ ]+ +PROGBITS +([0-9a-fA-F]+) +[0-9a-fA-F]+ +([0-9a-fA-F]+) +[0-9a-fA-F]+ +([A-Za-z]*A[A-Za-z]*) ")
    math(EXPR addr "0x${CMAKE_MATCH_1}" OUTPUT_FORMAT HEXADECIMAL)
    if(load STREQUAL "" OR addr LESS load)
      set(load "${addr}")
    endif()
  endif()
endforeach()
if(NOT entry OR load STREQUAL "")
  message(FATAL_ERROR "could not find the entry point or an allocated PROGBITS section in ${ELF}")
endif()
file(WRITE "${OUT}" "${load} ${entry}\n")
