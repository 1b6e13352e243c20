#pragma once
/// @file
/// @brief `GuestImage`: a guest program built by `vmmlab_add_guest()` and embedded in the host binary.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace vmm {

/// @brief A flat guest image, where it was linked to run, and the ELF with its symbols (for gdb).
struct GuestImage {
  std::string_view name;             ///< The NAME given to vmmlab_add_guest().
  std::span<const std::byte> bytes;  ///< The flat image (objcopy -O binary).
  std::uint64_t load_address = 0;    ///< Guest-physical address of bytes[0], from the link step.
  std::uint64_t entry = 0;           ///< Entry point (ELF e_entry).
  std::string_view elf_path;         ///< The linked ELF in the build tree: `add-symbol-file` it in gdb.
};

}  // namespace vmm
