#pragma once
/// @file
/// @brief The zero page (`struct boot_params`) and the e820 memory map a Linux kernel reads at its 64-bit entry.

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "vmm/boot/linux_loader.hpp"
#include "vmm/error.hpp"
#include "vmm/memory/x86_layout.hpp"

namespace vmm::boot {

/// @brief e820 range types (ACPI 6.4, table 15.4 "Address Range Types"; the kernel's E820_TYPE_*).
enum class E820Type : std::uint32_t {
  Ram = 1,       ///< Usable RAM.
  Reserved = 2,  ///< Not for the OS: firmware data, the legacy VGA/BIOS hole.
};

/// @brief One e820 range.
struct E820Entry {
  std::uint64_t address = 0;      ///< First byte.
  std::uint64_t size = 0;         ///< Length.
  E820Type type = E820Type::Ram;  ///< What it is.
  /// @brief Equal when all fields are.
  bool operator==(const E820Entry&) const = default;
};

/// @brief The e820 map for `layout`: low RAM up to the EBDA, the EBDA and legacy hole [EBDA, 1 MiB) reserved, the
///        rest of low RAM from 1 MiB, and high RAM above 4 GiB. Sorted, non-overlapping; the PCI hole is absent
///        (neither RAM nor reserved: Linux allocates BAR space from such gaps).
[[nodiscard]] std::vector<E820Entry> e820_map(const memory::x86::Layout& layout);

/// @brief What goes into the zero page besides the kernel's setup header.
struct BootParamsInput {
  std::uint64_t cmdline_address = 0;               ///< Where the command line was written.
  std::uint32_t cmdline_size = 0;                  ///< Its length, without the NUL.
  std::optional<std::uint64_t> initramfs_address;  ///< Where the initramfs was written, if any.
  std::uint64_t initramfs_size = 0;                ///< Its size.
  std::vector<E820Entry> e820;                     ///< The memory map.
};

/// @brief Builds the zero page: the kernel's setup header with the loader's fields filled in (type_of_loader 0xff,
///        "undefined loader"; cmd_line_ptr; ramdisk_image/size, with the high halves in ext_* for addresses above
///        4 GiB), and the e820 map. Refused when the command line is longer than the kernel accepts (`cmdline_size`)
///        or the map has more entries than the zero page holds.
[[nodiscard]] Result<boot_params> make_boot_params(const LoadedKernel& kernel, const BootParamsInput& input);

/// @brief Writes the GDT the 64-bit boot protocol asks for at `at`: null, null, a flat 64-bit code segment at
///        __BOOT_CS (0x10) and a flat data segment at __BOOT_DS (0x18).
[[nodiscard]] Result<void> write_boot_gdt(const memory::GuestMemory& memory, memory::GuestAddress at);

}  // namespace vmm::boot
