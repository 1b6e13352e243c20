#pragma once
/// @file
/// @brief `AddressAllocator`: hands out ranges of one address space (port I/O, 32-bit or 64-bit MMIO) for PCI BARs.

#include <cstdint>
#include <map>
#include <vector>

#include "vmm/error.hpp"

namespace vmm::pci {

/// @brief One range that is in use: allocated by `AddressAllocator::allocate` or claimed by `reserve`.
struct Allocation {
  std::uint64_t address = 0;  ///< First address.
  std::uint64_t size = 0;     ///< Length in bytes (never 0).

  /// @brief Allocations are equal when address and size are.
  friend constexpr bool operator==(const Allocation&, const Allocation&) = default;
};

/// @brief Allocates address ranges from one pool [base, base + size), first fit at the lowest suitable address.
///
/// The VMM keeps one allocator per address space a BAR can live in, much as Cloud Hypervisor's `SystemAllocator`
/// does:
///
/// | pool         | typical range                                       |
/// |--------------|-----------------------------------------------------|
/// | port I/O     | [0xc000, 0x10000)                                   |
/// | 32-bit MMIO  | the PCI hole, [0xc0000000, 0x100000000)             |
/// | 64-bit MMIO  | above the end of RAM                                |
///
/// **PCI BARs are naturally aligned**: a BAR of size S (a power of two) must sit at a multiple of S, because the guest
/// discovers the size by writing all-ones and reading back which low address bits are hard-wired to zero. Callers
/// placing a BAR therefore pass `alignment = size`: `allocate(bar_size, bar_size)`.
///
/// The pool may end exactly at 2^64 (e.g. base 0xffff'ffff'ffff'0000, size 0x10000): ranges are kept as a start and
/// a size and compared without ever computing a wrapped end, so no address near 2^64 wraps to 0.
///
/// Not thread-safe: the VMM places BARs while it builds the machine, and when the guest reprograms them the caller
/// serialises access.
class AddressAllocator {
 public:
  /// @brief An allocator for [base, base + size). `size` must be non-zero and the pool must not run past 2^64 (it
  ///        may end exactly there).
  [[nodiscard]] static Result<AddressAllocator> create(std::uint64_t base, std::uint64_t size);

  /// @brief Allocates `size` bytes at the lowest free address that is a multiple of `alignment` and has `size` free
  ///        bytes from it. `size` must be non-zero and `alignment` a power of two (1 for no alignment); for a BAR
  ///        pass `alignment = size`. Fails, naming the request and the pool, when no free range fits.
  [[nodiscard]] Result<std::uint64_t> allocate(std::uint64_t size, std::uint64_t alignment);

  /// @brief Claims exactly [address, address + size): for devices at fixed addresses, or when the guest places a BAR
  ///        itself. Refused if `size` is 0, or any part lies outside the pool or is already allocated or reserved.
  [[nodiscard]] Result<void> reserve(std::uint64_t address, std::uint64_t size);

  /// @brief Releases the allocation or reservation that starts at `address`; the range merges with free neighbours.
  ///        Refused if no allocation starts there (including an address inside one, and a second free).
  [[nodiscard]] Result<void> free(std::uint64_t address);

  /// @brief Bytes not allocated or reserved.
  [[nodiscard]] std::uint64_t free_bytes() const noexcept { return free_bytes_; }
  /// @brief Every allocation and reservation, sorted by address.
  [[nodiscard]] std::vector<Allocation> allocations() const;
  /// @brief First address of the pool.
  [[nodiscard]] std::uint64_t base() const noexcept { return base_; }
  /// @brief Length of the pool in bytes.
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }

 private:
  AddressAllocator(std::uint64_t base, std::uint64_t size);

  // Removes [address, address + size) from the free range `range` (which contains it), keeping what is left over on
  // either side, and records the allocation.
  void take(std::map<std::uint64_t, std::uint64_t>::iterator range, std::uint64_t address, std::uint64_t size);

  std::uint64_t base_;
  std::uint64_t size_;
  std::uint64_t free_bytes_;
  std::map<std::uint64_t, std::uint64_t> free_;       // Free ranges: start -> size. Disjoint, never adjacent.
  std::map<std::uint64_t, std::uint64_t> allocated_;  // Allocations and reservations: start -> size.
};

}  // namespace vmm::pci
