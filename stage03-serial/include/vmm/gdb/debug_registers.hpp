#pragma once
/// @file
/// @brief gdb's hardware breakpoints and watchpoints (Z1-Z4) on the four x86 debug address registers DR0-DR3 and the
///        control register DR7, as KVM_SET_GUEST_DEBUG takes them.

#include <array>
#include <cstdint>
#include <optional>

#include "vmm/error.hpp"

namespace vmm::gdb {

/// @brief What gdb asks for with Z1..Z4 (the packet's type digit).
enum class HardwareKind : std::uint8_t {
  Execution = 1,  ///< Z1 (`hbreak`): stop before the instruction at the address runs.
  Write = 2,      ///< Z2 (`watch`): stop after an instruction wrote the range.
  Read = 3,       ///< Z3 (`rwatch`): x86 cannot watch reads alone, so a read-or-write slot; gdb drops the hits that
                  ///< changed the value (they were writes).
  Access = 4,     ///< Z4 (`awatch`): stop after a read or a write.
};

/// @brief A hit read back from DR6: which of gdb's requests fired.
struct HardwareHit {
  HardwareKind kind = HardwareKind::Execution;  ///< What gdb asked for.
  std::uint64_t address = 0;                    ///< The address gdb gave (the start of the watched range).
};

/// @brief The four debug address registers shared by every Z1..Z4 request.
///
/// DR7 gives each slot a condition (execute, write, read-or-write) and a length (1, 2, 4 or 8 bytes, aligned to that
/// length). A watched range that is not one aligned length takes several slots, split as the largest aligned pieces,
/// so `watch` on an unaligned 8-byte variable still works while slots last. An execution breakpoint takes one slot
/// with length 1. When the slots run out the request is refused and nothing changes.
class DebugRegisters {
 public:
  /// @brief The slots a request needs, then takes them. Refuses a zero length, a range past 2^64, an execution
  ///        breakpoint of another length than gdb's x86 "kind" 1, and running out of slots.
  [[nodiscard]] Result<void> insert(HardwareKind kind, std::uint64_t address, std::uint64_t length);
  /// @brief Frees the slots of an earlier identical `insert`; refuses a request that was never inserted.
  [[nodiscard]] Result<void> remove(HardwareKind kind, std::uint64_t address, std::uint64_t length);
  /// @brief Frees every slot (gdb detached).
  void clear() { slots_ = {}; }

  /// @brief True when no slot is in use (KVM_GUESTDBG_USE_HW_BP can be left off).
  [[nodiscard]] bool empty() const;
  /// @brief DR0..DR3: the slots' addresses (0 for a free slot).
  [[nodiscard]] std::array<std::uint64_t, 4> addresses() const;
  /// @brief DR7: for each used slot its local-enable bit, condition (R/W) and length (LEN) fields, plus GE/LE
  ///        ("exact" breakpoints, which the SDM recommends for data breakpoints).
  [[nodiscard]] std::uint64_t dr7() const;
  /// @brief Which request fired, from DR6's B0..B3 bits; nothing if none of ours did (a single step, the guest's own).
  [[nodiscard]] std::optional<HardwareHit> hit(std::uint64_t dr6) const;

 private:
  struct Slot {
    bool used = false;
    HardwareKind kind = HardwareKind::Execution;
    std::uint64_t request_address = 0;  // what gdb gave: the hit reports it, and remove matches it
    std::uint64_t request_length = 0;
    std::uint64_t address = 0;  // this piece
    std::uint8_t length = 1;
  };
  std::array<Slot, 4> slots_{};
};

}  // namespace vmm::gdb
