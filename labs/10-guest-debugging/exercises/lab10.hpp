#pragma once
/// @file
/// @brief Lab 10's exercise interface: the function you write (exercises/) and the reference (solutions/) share it.

#include <cstdint>

#include "vmm/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace lab10 {

/// @brief Exercise 1: translate the guest-virtual (linear) address `linear` through 4-level long-mode page tables
///        whose PML4 is at guest-physical `cr3`, as the gdb stub must before it can read `print ticks` or
///        `x/i 0xffffffff81000000`. Handle 1 GiB and 2 MiB pages (PS, bit 7, in a PDPTE or PDE). Refuse a
///        non-canonical address, an entry without its present bit and a table outside guest memory with an error
///        that names the level ("PDPT[3] = 0x0 is not present"). Return the guest-physical address.
[[nodiscard]] vmm::Result<std::uint64_t> translate_four_level(const vmm::memory::GuestMemory& memory, std::uint64_t cr3,
                                                              std::uint64_t linear);

}  // namespace lab10
