#pragma once
/// @file
/// @brief Starting a vCPU directly in 64-bit mode: CPUID, a GDT, identity-mapped page tables and the control registers.
///
/// A real x86 CPU resets into 16-bit real mode and firmware climbs to long mode step by step. A VMM can skip the
/// climb: it writes the tables the CPU would use into guest memory and sets the registers to the state they would
/// have at the top. This is what Cloud Hypervisor and Firecracker do for a 64-bit kernel entry.

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/kvm/vcpu.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace vmm::x86 {

/// @brief GDT selectors written by `write_gdt`.
inline constexpr std::uint16_t kCodeSelector = 0x08;  ///< 64-bit code, DPL 0.
inline constexpr std::uint16_t kDataSelector = 0x10;  ///< Flat data, DPL 0.

inline constexpr std::uint64_t kPtePresent = 1ull << 0;   ///< P: the entry is valid.
inline constexpr std::uint64_t kPteWritable = 1ull << 1;  ///< R/W: writes allowed.
inline constexpr std::uint64_t kPteAccessed = 1ull << 5;  ///< A: preset, so the CPU never writes the entry.
inline constexpr std::uint64_t kPteDirty = 1ull << 6;     ///< D (leaf entries): preset for the same reason.
inline constexpr std::uint64_t kPteHuge = 1ull << 7;      ///< PS: maps a 2 MiB (PDE) or 1 GiB (PDPTE) page.

inline constexpr std::uint64_t kCr0Pe = 1ull << 0;    ///< CR0.PE: protected mode.
inline constexpr std::uint64_t kCr0Mp = 1ull << 1;    ///< CR0.MP: WAIT/FWAIT honour TS.
inline constexpr std::uint64_t kCr0Et = 1ull << 4;    ///< CR0.ET: always 1 on modern CPUs.
inline constexpr std::uint64_t kCr0Ne = 1ull << 5;    ///< CR0.NE: native x87 error reporting.
inline constexpr std::uint64_t kCr0Wp = 1ull << 16;   ///< CR0.WP: ring 0 honours read-only pages.
inline constexpr std::uint64_t kCr0Pg = 1ull << 31;   ///< CR0.PG: paging.
inline constexpr std::uint64_t kCr4Pae = 1ull << 5;   ///< CR4.PAE: 64-bit page-table entries, required for long mode.
inline constexpr std::uint64_t kEferLme = 1ull << 8;  ///< EFER.LME: long mode enabled.
inline constexpr std::uint64_t kEferLma = 1ull
                                          << 10;  ///< EFER.LMA: long mode active (set by the CPU when paging starts).

/// @brief What `write_identity_page_tables` built.
struct PageTables {
  memory::GuestAddress pml4{0};             ///< Goes into CR3.
  std::vector<memory::GuestAddress> pages;  ///< Every 4 KiB table written, PML4 first.
  std::uint64_t mapped_bytes = 0;           ///< [0, mapped_bytes) is identity-mapped.
};

/// @brief Where the long-mode structures live and where the vCPU starts.
struct LongModeSetup {
  memory::GuestAddress gdt{0x1000};               ///< Three 8-byte descriptors: null, code, data.
  memory::GuestAddress page_tables{0x9000};       ///< PML4, PDPT and the PDs, one 4 KiB page each, contiguous.
  std::uint64_t identity_map_bytes = 4ull << 30;  ///< 4 GiB: RAM, the PCI hole and the local APIC page.
  std::uint64_t entry = 0;                        ///< RIP.
  std::uint64_t stack_top = 0;                    ///< RSP (the first push writes just below it).
  std::uint64_t argument = 0;                     ///< RDI: the first argument of the guest's entry function.
};

/// @brief KVM_SET_CPUID2: what the guest sees when it executes CPUID.
///
/// A new vCPU's CPUID is empty, and KVM refuses EFER.LME for a CPU that does not say it has long mode. Giving the
/// vCPU what KVM_GET_SUPPORTED_CPUID offers is the simplest honest answer (final-vmm filters it).
[[nodiscard]] Result<void> set_cpuid(kvm::Vcpu& vcpu, std::span<const kvm_cpuid_entry2> entries);

/// @brief Writes the three-entry GDT at `at`. Descriptors are marked accessed so the CPU never writes them back.
[[nodiscard]] Result<void> write_gdt(const memory::GuestMemory& memory, memory::GuestAddress at);

/// @brief Writes 4-level page tables at `base` that identity-map [0, bytes) with 2 MiB pages.
///
/// `bytes` is a non-zero multiple of 1 GiB, at most 512 GiB (one PDPT). Accessed and dirty bits are preset so the
/// CPU never writes to the tables (which would dirty their pages in the dirty log).
[[nodiscard]] Result<PageTables> write_identity_page_tables(const memory::GuestMemory& memory,
                                                            memory::GuestAddress base, std::uint64_t bytes);

/// @brief The segment, descriptor-table and control registers of 64-bit mode with `gdt` and `cr3`.
[[nodiscard]] kvm_sregs long_mode_sregs(const kvm_sregs& current, memory::GuestAddress gdt, memory::GuestAddress cr3);

/// @brief All of the above: CPUID, GDT, page tables, registers. The vCPU's next KVM_RUN starts at `setup.entry`.
[[nodiscard]] Result<PageTables> enter_long_mode(kvm::Vcpu& vcpu, const memory::GuestMemory& memory,
                                                 std::span<const kvm_cpuid_entry2> cpuid, const LongModeSetup& setup);

}  // namespace vmm::x86
