#pragma once
/// @file
/// @brief Lab 02's exercise interface: the functions you write (exercises/) and the reference (solutions/) share it.

#include <cstdint>
#include <span>
#include <vector>

#include "lab02_guest.h"  // LAB02_HIGH_RAM, LAB02_ROM, ... (shared with the guests in guests/)
#include "long_mode_vm.hpp"
#include "vmm/error.hpp"
#include "vmm/kvm/exit.hpp"
#include "vmm/memory/guest_address.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/region.hpp"
#include "vmm/x86/long_mode.hpp"

namespace lab02 {

inline constexpr std::uint64_t kHighRam = LAB02_HIGH_RAM;           ///< 4 GiB, just above the PCI hole.
inline constexpr std::uint64_t kHighRamSize = LAB02_HIGH_RAM_SIZE;  ///< 2 MiB.
inline constexpr std::uint64_t kRom = LAB02_ROM;                    ///< 64 KiB below 4 GiB.
inline constexpr std::uint64_t kRomSize = LAB02_ROM_SIZE;

/// @brief A region you added to a running machine, and the KVM slot it became. The region owns the host mapping:
///        keep it alive as long as the VM runs (KVM only holds its host address).
struct AddedRegion {
  vmm::memory::GuestMemoryRegion region;
  std::uint32_t slot = 0;
};

/// @brief Exercise 1: give `vm` `size` bytes of RAM at guest-physical `at` (above 4 GiB), as a new KVM slot, and make
///        the guest able to reach it.
///
/// `vm.memory()` is const, so the region cannot join the machine's `GuestMemory`: create it yourself, register it
/// with `vm.vm()` under a slot number no other slot uses, and return it. LongModeVm's page tables identity-map only
/// [0, 4 GiB): extend them so they cover `at + size` too.
[[nodiscard]] vmm::Result<AddedRegion> add_high_ram(vmm::stage02::LongModeVm& vm, vmm::memory::GuestAddress at,
                                                    std::uint64_t size);

/// @brief Exercise 2: map a ROM of `size` bytes at `at` holding `contents` (at most `size` bytes, the rest zero), as a
///        new KVM slot that the guest can read but not write.
[[nodiscard]] vmm::Result<AddedRegion> add_rom(vmm::stage02::LongModeVm& vm, vmm::memory::GuestAddress at,
                                               std::uint64_t size, std::span<const std::byte> contents);

/// @brief A guest write to the ROM, as the VMM saw it in a KVM_EXIT_MMIO.
struct RomWrite {
  std::uint64_t address = 0;  ///< Guest-physical address written.
  std::uint32_t length = 0;   ///< Bytes written (1..8).
  std::uint64_t value = 0;    ///< The bytes, as a little-endian integer.
  friend bool operator==(const RomWrite&, const RomWrite&) = default;
};

/// @brief Exercise 2: the MMIO handler. If `mmio` is a write inside `rom`, append it to `writes` and return true (the
///        run loop then lets the guest continue, the write ignored, as a real ROM would). Return false for anything
///        else: the run loop stops on an MMIO exit nobody handled.
[[nodiscard]] bool record_rom_write(const vmm::kvm::MmioExit& mmio, const vmm::memory::GuestRange& rom,
                                    std::vector<RomWrite>& writes);

/// @brief Exercise 3: like vmm::x86::write_identity_page_tables, but with 1 GiB pages: a PML4 and one PDPT (two 4 KiB
///        pages at `base`, `base + 4 KiB`) whose entries map 1 GiB each, no page directories.
///
/// `bytes` is a non-zero multiple of 1 GiB, at most 512 GiB; `base` is page-aligned. Preset the accessed and dirty
/// bits as stage02 does. Returns the tables written (PML4 first) and the bytes mapped.
[[nodiscard]] vmm::Result<vmm::x86::PageTables> write_identity_page_tables_1g(const vmm::memory::GuestMemory& memory,
                                                                              vmm::memory::GuestAddress base,
                                                                              std::uint64_t bytes);

}  // namespace lab02
