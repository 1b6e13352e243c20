#pragma once
/// @file
/// @brief Where final-vmm puts the things Linux needs at boot, in guest-physical memory below 1 MiB and above it.
///
/// The low addresses follow the PC tradition Linux expects (the same choices as Firecracker and Cloud Hypervisor):
/// everything the VMM writes for the kernel lives in the first 640 KiB, the MP table sits in the last KiB of it (one
/// of the three places Linux searches), [640 KiB, 1 MiB) is the legacy VGA/BIOS hole, and the kernel goes at 1 MiB.

#include <cstdint>

namespace vmm::boot::layout {

inline constexpr std::uint64_t kGdt = 0x500;               ///< Four descriptors: null, null, __BOOT_CS, __BOOT_DS.
inline constexpr std::uint64_t kZeroPage = 0x7000;         ///< struct boot_params; RSI points here at entry.
inline constexpr std::uint64_t kStackTop = 0x8ff0;         ///< RSP at entry (the kernel switches stacks at once).
inline constexpr std::uint64_t kPageTables = 0x9000;       ///< PML4, PDPT, 4 PDs: identity map of 4 GiB.
inline constexpr std::uint64_t kCmdline = 0x20000;         ///< The kernel command line, NUL-terminated.
inline constexpr std::uint64_t kCmdlineMax = 0x10000;      ///< Room for it (the kernel's own limit is smaller).
inline constexpr std::uint64_t kEbda = 0x9fc00;            ///< Extended BIOS data area: the MP table lives here.
inline constexpr std::uint64_t kLowRamEnd = kEbda;         ///< Usable low RAM ends where the EBDA starts.
inline constexpr std::uint64_t kLegacyHoleEnd = 0x100000;  ///< VGA memory and the BIOS ROM end at 1 MiB.
inline constexpr std::uint64_t kKernelLoad = 0x100000;     ///< A bzImage's protected-mode code goes at 1 MiB.
inline constexpr std::uint64_t kIoapic = 0xfec00000;       ///< The in-kernel IOAPIC's MMIO page.
inline constexpr std::uint64_t kLapic = 0xfee00000;        ///< Every local APIC's MMIO page.
inline constexpr std::uint64_t kTss = 0xfffbd000;          ///< KVM_SET_TSS_ADDR: three pages Intel VMX needs.

/// @brief GDT selectors the Linux 64-bit boot protocol requires (Documentation/x86/boot.rst, "64-bit Boot
/// Protocol"): __BOOT_CS = 0x10 and __BOOT_DS = 0x18, both flat.
inline constexpr std::uint16_t kBootCs = 0x10;
/// @brief See `kBootCs`.
inline constexpr std::uint16_t kBootDs = 0x18;

}  // namespace vmm::boot::layout
