#pragma once
/// @file
/// @brief `Bar`: what a device declares about one of its Base Address Registers.

#include <cstdint>

#include "vmm/error.hpp"

namespace vmm::pci {

/// @brief The address space a BAR decodes and, for memory, how wide its address is.
enum class BarKind : std::uint8_t {
  Io,        ///< Port I/O (one BAR register; x86 ports are 16-bit, the register holds 32).
  Memory32,  ///< Memory below 4 GiB (one BAR register).
  Memory64,  ///< Memory anywhere (two BAR registers: this index and the next hold the low and high dwords).
};

/// @brief One BAR as the device declares it: which register, which space, how large.
///
/// The size is what the sizing protocol reveals to the guest: it must be a power of two, at least 16 bytes for
/// memory (the low four bits of a memory BAR are type bits) and at least 4 for I/O (two type bits). The address is
/// not part of the declaration: the guest (firmware or OS) chooses it by writing the register.
struct Bar {
  std::uint8_t index = 0;            ///< BAR0..BAR5; a 64-bit BAR also uses index + 1 for its high dword.
  BarKind kind = BarKind::Memory32;  ///< Space and address width.
  bool prefetchable = false;         ///< Memory only: reads have no side effects (the guest may map it write-combined).
  std::uint64_t size = 0;            ///< Bytes decoded; a power of two.

  /// @brief True for an I/O BAR.
  [[nodiscard]] bool is_io() const noexcept { return kind == BarKind::Io; }
  /// @brief True for a BAR that takes two registers.
  [[nodiscard]] bool is_64bit() const noexcept { return kind == BarKind::Memory64; }
  /// @brief Offset of the (low) BAR register in configuration space: PCI_BASE_ADDRESS_0 + 4 * index.
  [[nodiscard]] std::uint16_t register_offset() const noexcept;
  /// @brief The read-only low bits of the (low) register: space, memory type and prefetchable bits.
  [[nodiscard]] std::uint32_t type_bits() const noexcept;
  /// @brief The address bits the guest may write, over the full 64 bits: ~(size - 1) without the type bits, limited
  /// to 32 bits for I/O and 32-bit memory BARs. The sizing protocol reads this back.
  [[nodiscard]] std::uint64_t address_mask() const noexcept;
};

/// @brief Checks a declaration: index in range (a 64-bit BAR needs index <= 4), size a power of two within the
/// limits of its kind, prefetchable only for memory.
[[nodiscard]] Result<void> validate(const Bar& bar);

}  // namespace vmm::pci
