#pragma once
/// @file
/// @brief `IrqLine`: how a device asks for the guest's attention, without knowing how the interrupt is delivered.

#include <cstdint>

#include "vmm/error.hpp"

namespace vmm::devices {

/// @brief One interrupt line from a device to the guest's interrupt controller.
///
/// Level-triggered devices (the UART) `raise` while they have something to say and `lower` when the guest has
/// serviced them; edge-triggered ones `pulse`. stage03 implements it with KVM_IRQ_LINE on the in-kernel irqchip
/// (`KvmIrqLine`); stage06 with an irqfd. Devices take an `IrqLine&` and do not change when the implementation does.
class IrqLine {
 public:
  IrqLine() = default;
  IrqLine(const IrqLine&) = delete;
  IrqLine& operator=(const IrqLine&) = delete;
  IrqLine(IrqLine&&) = delete;
  IrqLine& operator=(IrqLine&&) = delete;
  virtual ~IrqLine() = default;

  /// @brief Asserts the line (level high).
  virtual Result<void> raise() = 0;
  /// @brief Deasserts the line.
  virtual Result<void> lower() = 0;
  /// @brief An edge: raise, then lower.
  virtual Result<void> pulse() {
    if (auto rc = raise(); !rc) {
      return rc;
    }
    return lower();
  }
};

}  // namespace vmm::devices
