#pragma once
/// @file
/// @brief `BusDevice`: what every device behind an I/O or MMIO bus implements.

#include <cstdint>
#include <span>

namespace vmm::devices {

/// @brief A device that answers reads and writes in an address range of a bus.
///
/// The bus translates the guest's address into an offset from the start of the range the device was inserted at,
/// and passes the bytes: `data.size()` is the access width (1, 2, 4 or 8; more for string I/O is split by the run
/// loop). A read fills `data`; whatever the device leaves there is what the guest sees.
///
/// Several vCPU threads may call a device at once: a device guards its own state (a mutex per device is enough until
/// stage06 moves work off the vCPU threads). Devices never fail an access: a guest touching a register that does not
/// exist gets what hardware would give (reads of all-ones or zeros, ignored writes), never an error that stops the VMM.
class BusDevice {
 public:
  BusDevice() = default;
  BusDevice(const BusDevice&) = delete;
  BusDevice& operator=(const BusDevice&) = delete;
  BusDevice(BusDevice&&) = delete;
  BusDevice& operator=(BusDevice&&) = delete;
  virtual ~BusDevice() = default;

  /// @brief The guest reads `data.size()` bytes at `offset` into the device's range.
  virtual void read(std::uint64_t offset, std::span<std::uint8_t> data) = 0;
  /// @brief The guest writes `data` at `offset` into the device's range.
  virtual void write(std::uint64_t offset, std::span<const std::uint8_t> data) = 0;
};

}  // namespace vmm::devices
