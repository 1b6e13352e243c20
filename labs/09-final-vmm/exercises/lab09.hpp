#pragma once
/// @file
/// @brief Lab 09's exercise interface: the functions you write (exercises/) and the reference (solutions/) share it.

#include <asm/bootparam.h>
#include <linux/kvm.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "vmm/boot/boot_params.hpp"
#include "vmm/error.hpp"

namespace lab09 {

// --- Exercise 1 ------------------------------------------------------------------------------------------------

/// @brief What a loader knows when it fills in the zero page.
struct LoaderInfo {
  std::uint64_t cmdline_address = 0;               ///< Where the command line is (NUL-terminated).
  std::uint32_t cmdline_length = 0;                ///< Its length without the NUL.
  std::optional<std::uint64_t> initramfs_address;  ///< Where the initramfs is, if there is one.
  std::uint64_t initramfs_size = 0;                ///< Its size.
};

/// @brief Exercise 1: the zero page for a kernel whose setup header is `header` (copied from its bzImage): the header
///        with the loader's fields filled in (type_of_loader, cmd_line_ptr, ramdisk_image, ramdisk_size, and the ext_*
///        fields of boot_params for what does not fit in 32 bits), and the e820 map. Refuse a command line longer than
///        the kernel accepts (header.cmdline_size) and more e820 entries than the zero page holds.
[[nodiscard]] vmm::Result<boot_params> zero_page(const setup_header& header, const LoaderInfo& loader,
                                                 std::span<const vmm::boot::E820Entry> e820);

// --- Exercise 2 ------------------------------------------------------------------------------------------------

/// @brief Exercise 2: the 16-byte MP floating pointer structure (Intel MP spec 1.4, 4.1) for a configuration table at
///        guest-physical `table_address`: signature "_MP_", PHYSPTR, LENGTH 1 (16-byte units), SPEC_REV 4, CHECKSUM
///        (all 16 bytes sum to 0 modulo 256), MP FEATURE INFORMATION bytes all 0.
[[nodiscard]] std::array<std::uint8_t, 16> mp_floating_pointer(std::uint32_t table_address);

// --- Exercise 3 ------------------------------------------------------------------------------------------------

/// @brief Exercise 3: leaf 1 of the CPUID of vCPU `index` of `count`, from what KVM supports (`supported`, leaf 1):
///        the initial APIC ID in EBX[31:24], the number of logical processors in EBX[23:16] (with EDX.HTT set when
///        there is more than one), and ECX's "hypervisor present" bit (31) set. Everything else as KVM gave it.
[[nodiscard]] kvm_cpuid_entry2 cpuid_leaf1(const kvm_cpuid_entry2& supported, std::uint32_t index, std::uint32_t count);

}  // namespace lab09
