#pragma once
/// @file
/// @brief Handing `GuestMemory` to KVM as memory slots, and KVM's dirty-page log.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/kvm/vm.hpp"
#include "vmm/memory/guest_address.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace vmm::memory {

/// @brief Registers every region of `memory` with `vm`: region i becomes slot `first_slot + i`.
///
/// The regions must outlive the slots: KVM keeps the host addresses and the guest faults on them.
[[nodiscard]] Result<void> register_with(const GuestMemory& memory, kvm::Vm& vm, std::uint32_t first_slot = 0);

/// @brief Re-registers slot `slot` with KVM_MEM_LOG_DIRTY_PAGES, so KVM records which pages the guest writes.
[[nodiscard]] Result<void> enable_dirty_logging(kvm::Vm& vm, std::uint32_t slot);

/// @brief KVM's dirty log for one slot: one bit per page, set when the guest wrote the page since the last read.
struct DirtyLog {
  GuestAddress slot_start;            ///< Guest-physical address of the slot's first page (bit 0).
  std::uint64_t page_size = 0;        ///< Bytes per bit.
  std::uint64_t pages = 0;            ///< Pages in the slot; the bitmap holds ceil(pages / 64) words.
  std::vector<std::uint64_t> bitmap;  ///< Bit i of word i / 64 is page i (KVM's layout, little-endian words).

  /// @brief True when page `page` (counted from the slot's start) is dirty.
  [[nodiscard]] bool is_dirty(std::uint64_t page) const noexcept {
    return page < pages && ((bitmap[page / 64] >> (page % 64)) & 1U) != 0;
  }
  /// @brief The guest-physical address of every dirty page, in increasing order.
  [[nodiscard]] std::vector<GuestAddress> dirty_pages() const;
};

/// @brief KVM_GET_DIRTY_LOG for `slot`, which must have dirty logging enabled. Reading the log also clears it: the
///        next call reports only pages written since this one.
///
/// Only guest writes are logged. The VMM's own writes through its mapping bypass KVM and never appear here.
[[nodiscard]] Result<DirtyLog> dirty_pages(kvm::Vm& vm, std::uint32_t slot);

}  // namespace vmm::memory
