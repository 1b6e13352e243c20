#pragma once
/// @file
/// @brief Guest-virtual to guest-physical translation by walking the guest's own page tables, as the MMU would.
///
/// A debugger names guest-virtual addresses (a symbol's address in vmlinux, a stack pointer); guest memory is indexed
/// by guest-physical address. The walk reads the tables from guest memory with the vCPU's CR0, CR3, CR4 and EFER, so
/// it sees what that vCPU sees. KVM_TRANSLATE does the same inside the kernel; the tests compare the two.

#include <linux/kvm.h>

#include <cstdint>
#include <string>

#include "vmm/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace vmm::gdb {

/// @brief The x86 paging modes (Intel SDM vol. 3, 4.1.1), chosen by CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57.
enum class PagingMode {
  None,       ///< CR0.PG = 0: linear = physical.
  Bits32,     ///< Two levels of 32-bit entries (4 KiB pages, 4 MiB with CR4.PSE).
  Pae,        ///< Three levels of 64-bit entries under four PDPTEs (4 KiB and 2 MiB pages).
  FourLevel,  ///< Long mode: PML4, PDPT, PD, PT (4 KiB, 2 MiB and 1 GiB pages).
  FiveLevel,  ///< Long mode with CR4.LA57: a PML5 on top.
};

/// @brief "none", "32-bit", "PAE", "4-level", "5-level".
[[nodiscard]] const char* to_string(PagingMode mode);

/// @brief The registers that decide how a linear address is translated.
struct PagingState {
  std::uint64_t cr0 = 0;   ///< PG (bit 31) turns paging on.
  std::uint64_t cr3 = 0;   ///< Physical address of the top-level table.
  std::uint64_t cr4 = 0;   ///< PSE (bit 4), PAE (bit 5), LA57 (bit 12).
  std::uint64_t efer = 0;  ///< LMA (bit 10): long mode active.

  /// @brief The four registers from a vCPU's KVM_GET_SREGS.
  [[nodiscard]] static PagingState from(const kvm_sregs& sregs) {
    return {.cr0 = sregs.cr0, .cr3 = sregs.cr3, .cr4 = sregs.cr4, .efer = sregs.efer};
  }
  /// @brief Which of the modes these registers select.
  [[nodiscard]] PagingMode mode() const;
};

/// @brief Where a linear address lives.
struct Translation {
  memory::GuestAddress physical;  ///< The guest-physical address of the byte.
  std::uint64_t page_size = 0;    ///< The size of the page (or 0 without paging): bytes up to its end share it.
  bool writable = true;           ///< Every level's R/W bit was set (supervisor writes may ignore it if CR0.WP=0).
  int levels = 0;                 ///< Table entries read to get there (0 without paging).
};

/// @brief Walks the tables for `linear`. Fails (naming the level and entry) when an entry is not present, a table lies
///        outside guest RAM, or a long-mode address is not canonical. Never touches anything but guest memory.
[[nodiscard]] Result<Translation> translate(const memory::GuestMemory& memory, const PagingState& paging,
                                            std::uint64_t linear);

}  // namespace vmm::gdb
