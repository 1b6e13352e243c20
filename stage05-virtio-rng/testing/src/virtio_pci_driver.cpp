#include "vmm/testing/virtio_pci_driver.hpp"

#include <linux/pci_regs.h>

#include <array>
#include <cstddef>
#include <span>

#include "vmm/devices/le_bytes.hpp"

namespace vmm::testing {

using virtio::VirtioPciDevice;

std::uint64_t VirtioPciDriver::read(std::uint64_t offset, std::size_t size, std::size_t bar) {
  // Pre-filled with a pattern so a device that leaves bytes unwritten is visible.
  std::array<std::uint8_t, 8> bytes{0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};
  const auto data = std::span(bytes).first(size);
  transport_.bar_read(bar, offset, data);
  return devices::load_le(data);
}

void VirtioPciDriver::write(std::uint64_t offset, std::uint64_t value, std::size_t size, std::size_t bar) {
  std::array<std::uint8_t, 8> bytes{};
  devices::store_le(bytes, value);
  transport_.bar_write(bar, offset, std::span(bytes).first(size));
}

std::uint32_t VirtioPciDriver::config_read(std::uint16_t offset, std::size_t size) {
  std::array<std::uint8_t, 4> bytes{};
  const auto data = std::span(bytes).first(size);
  transport_.config().read(offset, data);
  transport_.config_read(offset, data);
  return static_cast<std::uint32_t>(devices::load_le(data));
}

void VirtioPciDriver::config_write(std::uint16_t offset, std::uint32_t value, std::size_t size) {
  std::array<std::uint8_t, 4> bytes{};
  devices::store_le(bytes, value);
  transport_.config().write(offset, std::span(bytes).first(size));
  transport_.config_written(offset, size);
}

std::uint8_t VirtioPciDriver::status() {
  return static_cast<std::uint8_t>(common_read(offsetof(virtio_pci_common_cfg, device_status), 1));
}

void VirtioPciDriver::set_status(std::uint8_t value) {
  common_write(offsetof(virtio_pci_common_cfg, device_status), value, 1);
}

void VirtioPciDriver::add_status(std::uint8_t bits) {
  set_status(static_cast<std::uint8_t>(status() | bits));
}

bool VirtioPciDriver::reset(int attempts) {
  set_status(0);
  for (int i = 0; i < attempts; ++i) {
    if (status() == 0) {
      return true;
    }
  }
  return false;
}

void VirtioPciDriver::write_features(std::uint64_t features) {
  for (std::uint32_t page = 0; page < 2; ++page) {
    common_write(offsetof(virtio_pci_common_cfg, guest_feature_select), page, 4);
    common_write(offsetof(virtio_pci_common_cfg, guest_feature), (features >> (32 * page)) & 0xffff'ffff, 4);
  }
}

std::uint64_t VirtioPciDriver::device_features() {
  std::uint64_t features = 0;
  for (std::uint32_t page = 0; page < 2; ++page) {
    common_write(offsetof(virtio_pci_common_cfg, device_feature_select), page, 4);
    features |= common_read(offsetof(virtio_pci_common_cfg, device_feature), 4) << (32 * page);
  }
  return features;
}

bool VirtioPciDriver::negotiate(std::uint64_t features) {
  add_status(VIRTIO_CONFIG_S_ACKNOWLEDGE);
  add_status(VIRTIO_CONFIG_S_DRIVER);
  write_features(features);
  add_status(VIRTIO_CONFIG_S_FEATURES_OK);
  return (status() & VIRTIO_CONFIG_S_FEATURES_OK) != 0;
}

void VirtioPciDriver::program_queue(std::uint16_t index, const virtio::QueueLayout& layout) {
  common_write(offsetof(virtio_pci_common_cfg, queue_select), index, 2);
  common_write(offsetof(virtio_pci_common_cfg, queue_size), layout.size, 2);
  common_write(offsetof(virtio_pci_common_cfg, queue_desc_lo), layout.descriptor_table.raw(), 8);
  common_write(offsetof(virtio_pci_common_cfg, queue_avail_lo), layout.available_ring.raw(), 8);
  common_write(offsetof(virtio_pci_common_cfg, queue_used_lo), layout.used_ring.raw(), 8);
}

void VirtioPciDriver::enable_queue(std::uint16_t index, const virtio::QueueLayout& layout) {
  program_queue(index, layout);
  common_write(offsetof(virtio_pci_common_cfg, queue_enable), 1, 2);
}

std::uint16_t VirtioPciDriver::set_queue_vector(std::uint16_t index, std::uint16_t vector) {
  common_write(offsetof(virtio_pci_common_cfg, queue_select), index, 2);
  common_write(offsetof(virtio_pci_common_cfg, queue_msix_vector), vector, 2);
  return static_cast<std::uint16_t>(common_read(offsetof(virtio_pci_common_cfg, queue_msix_vector), 2));
}

std::uint16_t VirtioPciDriver::set_config_vector(std::uint16_t vector) {
  common_write(offsetof(virtio_pci_common_cfg, msix_config), vector, 2);
  return static_cast<std::uint16_t>(common_read(offsetof(virtio_pci_common_cfg, msix_config), 2));
}

void VirtioPciDriver::program_vector(std::uint16_t vector, std::uint64_t address, std::uint32_t data) {
  const std::uint64_t entry = VirtioPciDevice::kMsixTableOffset + std::uint64_t{vector} * PCI_MSIX_ENTRY_SIZE;
  write(entry + PCI_MSIX_ENTRY_LOWER_ADDR, address & 0xffff'ffff, 4, VirtioPciDevice::kMsixBar);
  write(entry + PCI_MSIX_ENTRY_UPPER_ADDR, address >> 32, 4, VirtioPciDevice::kMsixBar);
  write(entry + PCI_MSIX_ENTRY_DATA, data, 4, VirtioPciDevice::kMsixBar);
  write(entry + PCI_MSIX_ENTRY_VECTOR_CTRL, 0, 4, VirtioPciDevice::kMsixBar);
}

void VirtioPciDriver::enable_msix() {
  const auto control = static_cast<std::uint16_t>(transport_.msix_capability() + PCI_MSIX_FLAGS);
  config_write(control, config_read(control, 2) | PCI_MSIX_FLAGS_ENABLE, 2);
}

void VirtioPciDriver::notify(std::uint16_t index) {
  common_write(offsetof(virtio_pci_common_cfg, queue_select), index, 2);
  const auto notify_off = common_read(offsetof(virtio_pci_common_cfg, queue_notify_off), 2);
  write(VirtioPciDevice::kNotifyOffset + notify_off * VirtioPciDevice::kNotifyOffMultiplier, index, 2);
}

std::uint8_t VirtioPciDriver::read_isr() {
  return static_cast<std::uint8_t>(read(VirtioPciDevice::kIsrOffset, 1));
}

}  // namespace vmm::testing
