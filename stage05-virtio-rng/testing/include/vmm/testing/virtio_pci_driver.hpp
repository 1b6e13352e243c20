#pragma once
/// @file
/// @brief `VirtioPciDriver`: drives a `VirtioPciDevice` the way a guest driver does, through BAR and configuration
/// space accesses, for tests that check the transport without a guest.

#include <cstddef>
#include <cstdint>

#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/uapi.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace vmm::testing {

/// @brief The driver's side of virtio-pci, one register access at a time: what Linux's virtio_pci_modern does, and
/// what the stage05 guest does with MMIO. The BAR offsets are the transport's constants (a guest would find them
/// through the capabilities; `VirtioPci` tests check that the capabilities agree).
class VirtioPciDriver {
 public:
  /// @brief Drives `transport`, which must outlive the driver.
  explicit VirtioPciDriver(virtio::VirtioPciDevice& transport) : transport_(transport) {}

  /// @brief A guest read of `size` (1..8) bytes at `offset` in BAR `bar`, as a little-endian value.
  [[nodiscard]] std::uint64_t read(std::uint64_t offset, std::size_t size,
                                   std::size_t bar = virtio::VirtioPciDevice::kRegionsBar);
  /// @brief A guest write of the low `size` (1..8) bytes of `value` at `offset` in BAR `bar`.
  void write(std::uint64_t offset, std::uint64_t value, std::size_t size,
             std::size_t bar = virtio::VirtioPciDevice::kRegionsBar);
  /// @brief A configuration read of `size` (1..4) bytes, as the PCI root makes it (the space, then the device's hook).
  [[nodiscard]] std::uint32_t config_read(std::uint16_t offset, std::size_t size);
  /// @brief A configuration write of `size` (1..4) bytes, as the PCI root makes it.
  void config_write(std::uint16_t offset, std::uint32_t value, std::size_t size);

  /// @brief A read of the common configuration field at `offset` (offsetof(virtio_pci_common_cfg, ...)).
  [[nodiscard]] std::uint64_t common_read(std::uint64_t offset, std::size_t size) {
    return read(virtio::VirtioPciDevice::kCommonOffset + offset, size);
  }
  /// @brief A write of the common configuration field at `offset`.
  void common_write(std::uint64_t offset, std::uint64_t value, std::size_t size) {
    write(virtio::VirtioPciDevice::kCommonOffset + offset, value, size);
  }

  /// @brief device_status.
  [[nodiscard]] std::uint8_t status();
  /// @brief Writes device_status.
  void set_status(std::uint8_t value);
  /// @brief What Linux's virtio_add_status does: read, OR in `bits`, write.
  void add_status(std::uint8_t bits);
  /// @brief Writes 0 to device_status and reads it back until it is 0 (at most `attempts` reads); true if it is.
  bool reset(int attempts = 100);
  /// @brief Writes both 32-bit pages of the driver features.
  void write_features(std::uint64_t features);
  /// @brief Reads both 32-bit pages of the device features.
  [[nodiscard]] std::uint64_t device_features();
  /// @brief Initialization steps 1-6 (virtio 1.2, 3.1.1): ACKNOWLEDGE, DRIVER, the features, FEATURES_OK; true if
  /// FEATURES_OK reads back set.
  bool negotiate(std::uint64_t features = 1ull << VIRTIO_F_VERSION_1);
  /// @brief Selects queue `index` and writes its size and the three area addresses.
  void program_queue(std::uint16_t index, const virtio::QueueLayout& layout);
  /// @brief `program_queue`, then queue_enable = 1.
  void enable_queue(std::uint16_t index, const virtio::QueueLayout& layout);
  /// @brief Selects queue `index` and sets its MSI-X vector; returns what reads back (VIRTIO_MSI_NO_VECTOR if refused).
  std::uint16_t set_queue_vector(std::uint16_t index, std::uint16_t vector);
  /// @brief Sets the configuration-change MSI-X vector; returns what reads back.
  std::uint16_t set_config_vector(std::uint16_t vector);
  /// @brief Programs MSI-X table entry `vector` with `address`/`data`, unmasked.
  void program_vector(std::uint16_t vector, std::uint64_t address, std::uint32_t data);
  /// @brief Sets the Enable bit of the MSI-X capability's Message Control.
  void enable_msix();
  /// @brief A notification for queue `index`: a 16-bit write of the index at its notify address.
  void notify(std::uint16_t index);
  /// @brief Reads the ISR status (which clears it).
  [[nodiscard]] std::uint8_t read_isr();

 private:
  virtio::VirtioPciDevice& transport_;
};

}  // namespace vmm::testing
