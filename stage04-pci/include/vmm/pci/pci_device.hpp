#pragma once
/// @file
/// @brief `PciDevice`: what every device behind the PCI root implements.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm/pci/bar.hpp"
#include "vmm/pci/config_space.hpp"

namespace vmm::pci {

/// @brief A PCI function: a configuration space, the BARs declared in it, and the handlers of accesses to them.
///
/// The device owns its `ConfigSpace` and fills it in its constructor (`set_header`, `add_bar`, `add_capability`). The
/// `PciRoot` does the rest of the PCI protocol for it: configuration reads and writes (masks applied by the config
/// space), the sizing protocol, and placing each BAR on the I/O or MMIO bus where the guest programmed it while the
/// command register enables decoding. The device only sees accesses inside its BARs, as offsets from the BAR's start,
/// so it never needs to know where the guest put them. MSI-X fits in this shape: its table and PBA are regions of a
/// memory BAR served by `bar_read`/`bar_write`, its control word is a capability whose writes `config_written`
/// reports.
///
/// Like a `BusDevice`, a PCI device guards its own state (BAR accesses arrive on any vCPU thread) and never fails a
/// guest access.
class PciDevice {
 public:
  PciDevice() = default;
  PciDevice(const PciDevice&) = delete;
  PciDevice& operator=(const PciDevice&) = delete;
  PciDevice(PciDevice&&) = delete;
  PciDevice& operator=(PciDevice&&) = delete;
  virtual ~PciDevice() = default;

  /// @brief The device's configuration space.
  virtual ConfigSpace& config() = 0;
  /// @brief The guest reads `data.size()` bytes at `offset` into BAR `bar_index`.
  virtual void bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) = 0;
  /// @brief The guest writes `data` at `offset` into BAR `bar_index`.
  virtual void bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) = 0;
  /// @brief Called after a guest write of `size` bytes at `offset` reached the config space (the new values are in
  /// `config()`). The root calls it with its own lock held: react (e.g. MSI-X enable), do not call back into the root.
  virtual void config_written(std::uint16_t offset, std::size_t size) {
    static_cast<void>(offset);
    static_cast<void>(size);
  }
  /// @brief Called after a guest read of `data.size()` bytes at `offset` was served from `config()`, with the bytes
  /// read in `data`. Most devices leave them alone; one whose configuration space holds a live window onto its
  /// registers (virtio's PCI configuration access capability, stage05) replaces them here. Same rules as
  /// `config_written`: the root's lock is held, do not call back into the root.
  virtual void config_read(std::uint16_t offset, std::span<std::uint8_t> data) {
    static_cast<void>(offset);
    static_cast<void>(data);
  }
  /// @brief A short name for bus entries and errors ("pci-test", "virtio-blk", ...).
  [[nodiscard]] virtual std::string name() const { return "pci"; }

  /// @brief The BARs declared in the config space (`config().bars()`).
  [[nodiscard]] std::vector<Bar> bars() { return config().bars(); }
};

}  // namespace vmm::pci
