# Project-wide options: warnings for project code, sanitizers, and the lab mode.
#
# Warnings are errors for vmmlab's own C++ only. Guest programs are built by VmmlabGuest.cmake with their own flags,
# so host-only flags (sanitizers, -fPIE) never leak into freestanding guest code.

option(VMMLAB_SANITIZE_ADDRESS "Build host code with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(VMMLAB_SANITIZE_THREAD "Build host code with ThreadSanitizer" OFF)
option(VMMLAB_EXERCISES
       "Build lab tests against your own exercise code (labs/NN-*/exercises) instead of the reference solutions" OFF)

add_compile_options(
  "$<$<COMPILE_LANGUAGE:CXX>:-Wall;-Wextra;-Werror;-Wshadow;-Wnon-virtual-dtor;-Wold-style-cast;-Wcast-align>"
  "$<$<COMPILE_LANGUAGE:CXX>:-Wnull-dereference;-Wdouble-promotion;-Wformat=2;-Wimplicit-fallthrough>")
# -Wnull-dereference only has something to look at once the optimiser runs, and there GCC 12 also reports paths inside
# libstdc++ itself (std::string's _M_data, streambuf's pointers) that no caller can reach. Optimised builds (the
# release preset the benchmarks use) keep the warning but do not fail on it.
add_compile_options("$<$<AND:$<COMPILE_LANGUAGE:CXX>,$<NOT:$<CONFIG:Debug>>>:-Wno-error=null-dereference>")

if(VMMLAB_SANITIZE_ADDRESS AND VMMLAB_SANITIZE_THREAD)
  message(FATAL_ERROR "AddressSanitizer and ThreadSanitizer cannot be combined")
endif()
if(VMMLAB_SANITIZE_ADDRESS)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX,C>:-fsanitize=address,undefined;-fno-omit-frame-pointer;-fno-sanitize-recover=all>")
  add_link_options(-fsanitize=address,undefined)
endif()
if(VMMLAB_SANITIZE_THREAD)
  # -Wno-tsan: GCC warns that ThreadSanitizer does not model std::atomic_thread_fence. vmmlab's fences (stage05's
  # SplitQueue) order accesses to guest memory against the *guest*, which is not a host thread TSan could watch, so
  # there is nothing for it to check there; without this flag -Werror would make the tsan preset unbuildable.
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX,C>:-fsanitize=thread;-fno-omit-frame-pointer>"
                      "$<$<COMPILE_LANGUAGE:CXX>:-Wno-tsan>")
  add_link_options(-fsanitize=thread)
endif()
