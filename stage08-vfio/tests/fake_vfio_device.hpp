#pragma once
// Test support: a VFIO PCI device made of memory, behind vfio::DeviceInterface, so that the passthrough device
// (VfioPciDevice) is tested without VFIO (no host here has it). Config space and BARs are byte arrays the test
// shapes; every write to the device, every SET_IRQS and every mmap is recorded, so a test can check what reached the
// "hardware" and what the VMM kept for itself. Lab 08's exercises use it too.

#include <linux/pci_regs.h>
#include <linux/vfio.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vmm/mmap.hpp"
#include "vmm/vfio/device.hpp"
#include "vmm/vfio/device_memory.hpp"

namespace vmm::vfio::testing {

/// One write that reached the fake device.
struct DeviceWrite {
  std::uint32_t region = 0;  // VFIO region index
  std::uint64_t offset = 0;
  std::vector<std::uint8_t> bytes;
};

/// One VFIO_DEVICE_SET_IRQS the fake received (count 0 and no fds: disable).
struct IrqSet {
  std::uint32_t index = 0;
  std::uint32_t start = 0;
  std::vector<int> fds;
  bool disable = false;
};

/// A PCI function in memory. Shape it before handing it to VfioPciDevice::create: `add_bar`, `add_msi`,
/// `add_msix`, `config` bytes.
class FakeVfioDevice final : public DeviceInterface {
 public:
  explicit FakeVfioDevice(std::string name = "0000:00:07.0") : name_(std::move(name)) {
    config_.assign(256, 0);
    set16(PCI_VENDOR_ID, 0x1234);
    set16(PCI_DEVICE_ID, 0x11e8);
    config_[PCI_CLASS_DEVICE + 1] = 0x00;  // unclassified
    config_[PCI_HEADER_TYPE] = 0x80;       // claims multi-function: the VMM must hide it
    config_[PCI_INTERRUPT_PIN] = 1;        // INTA: the VMM must hide it (no INTx)
    set32(PCI_ROM_ADDRESS, 0xfffe0000);    // a ROM BAR: hidden too
  }

  // ---- shaping ----
  void set16(std::size_t offset, std::uint16_t value) { std::memcpy(&config_[offset], &value, 2); }
  void set32(std::size_t offset, std::uint32_t value) { std::memcpy(&config_[offset], &value, 4); }
  [[nodiscard]] std::uint16_t get16(std::size_t offset) const {
    std::uint16_t v = 0;
    std::memcpy(&v, &config_[offset], 2);
    return v;
  }

  /// A BAR of `size` bytes: type bits in its register, memory behind it, mmap-able unless `mappable` is false.
  void add_bar(std::uint8_t index, std::uint64_t size, std::uint32_t type_bits, bool mappable = true) {
    set32(PCI_BASE_ADDRESS_0 + 4 * index, type_bits);
    bars_[index].assign(size, 0);
    mappable_[index] = mappable;
  }
  /// An MSI capability at `offset` (chained after the previous one): `log2_vectors` capable, 64-bit, maskable.
  void add_msi(std::uint8_t offset, unsigned log2_vectors, bool is_64bit, bool maskable) {
    chain(offset, PCI_CAP_ID_MSI);
    std::uint16_t flags = static_cast<std::uint16_t>(log2_vectors << 1);
    flags |= is_64bit ? PCI_MSI_FLAGS_64BIT : 0;
    flags |= maskable ? PCI_MSI_FLAGS_MASKBIT : 0;
    set16(offset + PCI_MSI_FLAGS, flags);
    irqs_[VFIO_PCI_MSI_IRQ_INDEX] = 1U << log2_vectors;
  }
  /// An MSI-X capability at `offset` with `vectors`, table and PBA in `bar` at the given offsets.
  void add_msix(std::uint8_t offset, std::uint16_t vectors, std::uint8_t bar, std::uint32_t table, std::uint32_t pba) {
    chain(offset, PCI_CAP_ID_MSIX);
    set16(offset + PCI_MSIX_FLAGS, static_cast<std::uint16_t>(vectors - 1));
    set32(offset + PCI_MSIX_TABLE, table | bar);
    set32(offset + PCI_MSIX_PBA, pba | bar);
    irqs_[VFIO_PCI_MSIX_IRQ_INDEX] = vectors;
  }
  /// A vendor-specific capability (live: the VMM passes it through).
  void add_vendor_cap(std::uint8_t offset, std::uint8_t length) {
    chain(offset, PCI_CAP_ID_VNDR);
    config_[offset + 2] = length;
  }

  // ---- what reached the device ----
  std::vector<DeviceWrite> writes(std::uint32_t region) const {
    std::lock_guard lock(mutex_);
    std::vector<DeviceWrite> out;
    for (const auto& w : writes_) {
      if (w.region == region) {
        out.push_back(w);
      }
    }
    return out;
  }
  /// Config-space writes that touched [first, first + length).
  std::vector<DeviceWrite> config_writes_touching(std::uint64_t first, std::uint64_t length) const {
    std::vector<DeviceWrite> out;
    for (const auto& w : writes(VFIO_PCI_CONFIG_REGION_INDEX)) {
      if (w.offset < first + length && first < w.offset + w.bytes.size()) {
        out.push_back(w);
      }
    }
    return out;
  }
  std::vector<IrqSet> irq_sets() const {
    std::lock_guard lock(mutex_);
    return irq_sets_;
  }
  std::vector<std::uint8_t>& bar(std::uint8_t index) { return bars_[index]; }
  std::vector<std::uint8_t>& config_bytes() { return config_; }
  /// The host address each mmap returned, by (region, offset).
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::byte*> mmaps() const {
    std::lock_guard lock(mutex_);
    return mmaps_;
  }
  int resets() const { return resets_; }
  /// Makes every region read and write fail from now on (a device that disappeared).
  void unplug() {
    std::lock_guard lock(mutex_);
    unplugged_ = true;
  }

  // ---- DeviceInterface ----
  Result<DeviceInfo> info() const override {
    return DeviceInfo{VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET, VFIO_PCI_NUM_REGIONS, VFIO_PCI_NUM_IRQS};
  }
  Result<RegionInfo> region_info(std::uint32_t index) const override {
    RegionInfo info;
    info.index = index;
    info.offset = std::uint64_t{index} << 40;
    if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
      info.size = config_.size();
      info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    } else if (index < PCI_STD_NUM_BARS && !bars_[index].empty()) {
      info.size = bars_[index].size();
      info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
      if (mappable_[index]) {
        info.flags |= VFIO_REGION_INFO_FLAG_MMAP;
      }
    }
    return info;
  }
  Result<IrqInfo> irq_info(std::uint32_t index) const override {
    const auto it = irqs_.find(index);
    return IrqInfo{index, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, it == irqs_.end() ? 0U : it->second};
  }
  Result<void> read(const RegionInfo& region, std::uint64_t offset, std::span<std::byte> out) const override {
    std::lock_guard lock(mutex_);
    const auto* bytes = storage(region.index);
    if (unplugged_ || bytes == nullptr || offset > bytes->size() || out.size() > bytes->size() - offset) {
      return sys_error("pread", unplugged_ ? ENODEV : EINVAL, fmt::format("{}, region {}", name_, region.index));
    }
    std::memcpy(out.data(), bytes->data() + offset, out.size());
    return {};
  }
  Result<void> write(const RegionInfo& region, std::uint64_t offset, std::span<const std::byte> data) const override {
    std::lock_guard lock(mutex_);
    auto* bytes = storage(region.index);
    if (unplugged_ || bytes == nullptr || offset > bytes->size() || data.size() > bytes->size() - offset) {
      return sys_error("pwrite", unplugged_ ? ENODEV : EINVAL, fmt::format("{}, region {}", name_, region.index));
    }
    DeviceWrite w{region.index, offset, {}};
    for (std::byte b : data) {
      w.bytes.push_back(static_cast<std::uint8_t>(b));
    }
    writes_.push_back(std::move(w));
    // Config space: like hardware, the status register's error bits are write-1-to-clear; the rest just stores.
    for (std::size_t i = 0; i < data.size(); ++i) {
      const std::uint64_t at = offset + i;
      const auto value = static_cast<std::uint8_t>(data[i]);
      if (region.index == VFIO_PCI_CONFIG_REGION_INDEX && (at == PCI_STATUS || at == PCI_STATUS + 1)) {
        (*bytes)[at] &= static_cast<std::uint8_t>(~value);
      } else {
        (*bytes)[at] = value;
      }
    }
    return {};
  }
  Result<Mmap> mmap(const RegionInfo& region, std::uint64_t offset, std::uint64_t size) const override {
    if ((region.flags & VFIO_REGION_INFO_FLAG_MMAP) == 0) {
      return logic_error("mmap", "not mappable");
    }
    // Anonymous memory stands in for the BAR: a test checks which host address the slot got.
    auto mapped = Mmap::anonymous(size);
    if (mapped) {
      std::lock_guard lock(mutex_);
      mmaps_[{region.index, offset}] = mapped->data();
    }
    return mapped;
  }
  Result<void> set_irqs_eventfds(std::uint32_t index, std::uint32_t start,
                                 std::span<const int> eventfds) const override {
    std::lock_guard lock(mutex_);
    irq_sets_.push_back({index, start, {eventfds.begin(), eventfds.end()}, false});
    return {};
  }
  Result<void> disable_irqs(std::uint32_t index) const override {
    std::lock_guard lock(mutex_);
    irq_sets_.push_back({index, 0, {}, true});
    return {};
  }
  Result<void> reset() const override {
    ++resets_;
    return {};
  }
  const std::string& name() const noexcept override { return name_; }

 private:
  void chain(std::uint8_t offset, std::uint8_t id) {
    config_[offset] = id;
    config_[offset + 1] = 0;
    if (last_cap_ == 0) {
      config_[PCI_CAPABILITY_LIST] = offset;
      config_[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
    } else {
      config_[last_cap_ + 1] = offset;
    }
    last_cap_ = offset;
  }
  std::vector<std::uint8_t>* storage(std::uint32_t index) const {
    if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
      return &config_;
    }
    if (index < PCI_STD_NUM_BARS && !bars_[index].empty()) {
      return &bars_[index];
    }
    return nullptr;
  }

  std::string name_;
  mutable std::mutex mutex_;
  mutable std::vector<std::uint8_t> config_;
  mutable std::array<std::vector<std::uint8_t>, PCI_STD_NUM_BARS> bars_{};
  std::array<bool, PCI_STD_NUM_BARS> mappable_{};
  std::map<std::uint32_t, std::uint32_t> irqs_;
  std::uint8_t last_cap_ = 0;
  mutable std::vector<DeviceWrite> writes_;
  mutable std::vector<IrqSet> irq_sets_;
  mutable std::map<std::pair<std::uint32_t, std::uint64_t>, std::byte*> mmaps_;
  mutable int resets_ = 0;
  bool unplugged_ = false;
};

/// Plays KVM memory slots: records what is mapped where.
class RecordingSlots final : public DeviceMemorySlots {
 public:
  struct Slot {
    std::uint64_t guest_address = 0;
    std::uint64_t size = 0;
    void* host = nullptr;
  };
  Result<std::uint32_t> map(std::uint64_t guest_address, std::uint64_t size, void* host) override {
    std::lock_guard lock(mutex_);
    slots_[next_] = {guest_address, size, host};
    ++maps_;
    return next_++;
  }
  Result<void> unmap(std::uint32_t handle) override {
    std::lock_guard lock(mutex_);
    if (slots_.erase(handle) == 0) {
      return logic_error("unmap", fmt::format("no slot {}", handle));
    }
    ++unmaps_;
    return {};
  }
  std::map<std::uint32_t, Slot> slots() const {
    std::lock_guard lock(mutex_);
    return slots_;
  }
  int maps() const { return maps_; }
  int unmaps() const { return unmaps_; }

 private:
  mutable std::mutex mutex_;
  std::map<std::uint32_t, Slot> slots_;
  std::uint32_t next_ = 100;
  int maps_ = 0;
  int unmaps_ = 0;
};

}  // namespace vmm::vfio::testing
