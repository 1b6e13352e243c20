#include "vmm/pci/pci_root.hpp"

#include <linux/pci_regs.h>

#include <algorithm>

#include <fmt/format.h>

namespace vmm::pci {

namespace {

// Class codes live in the kernel's internal pci_ids.h, not in the uapi headers: spelled out here.
constexpr std::uint8_t kClassBridge = 0x06;
constexpr std::uint8_t kSubclassHostBridge = 0x00;
// x86 has 64 KiB of I/O ports: an I/O BAR above them cannot be reached.
constexpr std::uint64_t kIoSpaceEnd = 0x1'0000;
// Reserved bits of the CF8 address register (30:24, and 1:0 because registers are dword-aligned) read back as 0.
constexpr std::uint32_t kAddressRegisterMask = 0x80ff'fffc;
// Errors kept for `mapping_errors`: enough to diagnose, bounded so a misbehaving guest cannot grow the VMM.
constexpr std::size_t kMaxErrors = 32;
constexpr std::uint64_t kLowDword = 0xffff'ffff;

// [a, a + a_size) and [b, b + b_size) share a byte.
bool touches(std::uint64_t a, std::uint64_t a_size, std::uint64_t b, std::uint64_t b_size) {
  return a_size != 0 && b_size != 0 && a < b + b_size && b < a + a_size;
}

// What the bus sees of a placed BAR: accesses forwarded to the device with the BAR's index.
class BarWindow final : public devices::BusDevice {
 public:
  BarWindow(std::shared_ptr<PciDevice> device, std::size_t index) : device_(std::move(device)), index_(index) {}
  void read(std::uint64_t offset, std::span<std::uint8_t> data) override { device_->bar_read(index_, offset, data); }
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    device_->bar_write(index_, offset, data);
  }

 private:
  std::shared_ptr<PciDevice> device_;
  std::size_t index_;
};

}  // namespace

HostBridge::HostBridge() {
  config_.set_header(kVendorId, kDeviceId, kClassBridge, kSubclassHostBridge, 0, 0, PCI_HEADER_TYPE_NORMAL);
}

void HostBridge::bar_read(std::size_t /*bar_index*/, std::uint64_t /*offset*/, std::span<std::uint8_t> data) {
  std::ranges::fill(data, std::uint8_t{0xff});
}

void HostBridge::bar_write(std::size_t /*bar_index*/, std::uint64_t /*offset*/,
                           std::span<const std::uint8_t> /*data*/) {}

PciRoot::PciRoot(devices::IoBus& io, devices::MmioBus& mmio) : io_(io), mmio_(mmio) {
  slots_[0].device = std::make_shared<HostBridge>();
}

PciRoot::~PciRoot() {
  std::lock_guard lock(mutex_);
  for (auto& slot : slots_) {
    for (auto& state : slot.bars) {
      if (state.placed) {
        static_cast<void>(bus_for(state.placed->space).remove(state.placed->base));
      }
    }
  }
}

Result<void> PciRoot::add_device(std::shared_ptr<PciDevice> device, std::uint8_t device_number) {
  const std::string op = fmt::format("pci: add device 00:{:02x}.0", device_number);
  if (!device) {
    return logic_error(op, "no device");
  }
  if (device_number == 0 || device_number >= kDevicesPerBus) {
    return logic_error(op, fmt::format("slots are 1..{} (0 is the host bridge)", kDevicesPerBus - 1));
  }
  std::lock_guard lock(mutex_);
  auto& slot = slots_[device_number];
  if (slot.device) {
    return logic_error(op, fmt::format("the slot holds {}", slot.device->name()));
  }
  slot.device = std::move(device);
  update_bars(device_number);
  return {};
}

std::shared_ptr<PciDevice> PciRoot::device(std::uint8_t device_number) const {
  std::lock_guard lock(mutex_);
  return device_number < kDevicesPerBus ? slots_[device_number].device : nullptr;
}

const PciRoot::Slot* PciRoot::find_slot(std::uint8_t bus, std::uint8_t device, std::uint8_t function) const {
  if (bus != 0 || device >= kDevicesPerBus || function != 0 || !slots_[device].device) {
    return nullptr;
  }
  return &slots_[device];
}

void PciRoot::config_read(std::uint8_t bus, std::uint8_t device, std::uint8_t function, std::uint16_t reg,
                          std::span<std::uint8_t> data) const {
  std::lock_guard lock(mutex_);
  const Slot* slot = find_slot(bus, device, function);
  if (slot == nullptr) {
    std::ranges::fill(data, std::uint8_t{0xff});  // master abort: nobody claims the cycle
    return;
  }
  slot->device->config().read(reg, data);
  slot->device->config_read(reg, data);
}

void PciRoot::config_write(std::uint8_t bus, std::uint8_t device, std::uint8_t function, std::uint16_t reg,
                           std::span<const std::uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (find_slot(bus, device, function) == nullptr) {
    return;
  }
  auto& slot = slots_[device];
  slot.device->config().write(reg, data);
  slot.device->config_written(reg, data.size());
  track_halves(slot, reg, data.size());
  update_bars(device);
}

void PciRoot::track_halves(Slot& slot, std::uint16_t reg, std::size_t size) {
  if (touches(reg, size, PCI_COMMAND, 2)) {
    // The guest is done reprogramming when it touches the command register (typically to turn decoding back on).
    for (auto& state : slot.bars) {
      state.low_written = state.high_written = false;
    }
  }
  for (const auto& bar : slot.device->bars()) {
    if (!bar.is_64bit()) {
      continue;
    }
    auto& state = slot.bars[bar.index];
    state.low_written = state.low_written || touches(reg, size, bar.register_offset(), 4);
    state.high_written = state.high_written || touches(reg, size, bar.register_offset() + 4U, 4);
    if (state.low_written && state.high_written) {
      state.low_written = state.high_written = false;
    }
  }
}

std::optional<PciRoot::Placement> PciRoot::wanted_placement(std::uint8_t device_number, const Bar& bar,
                                                            const BarState& state) {
  if (state.low_written != state.high_written) {
    return state.placed;  // half of a 64-bit BAR written: wait for the other half
  }
  const ConfigSpace& config = slots_[device_number].device->config();
  const std::uint16_t command = config.read16(PCI_COMMAND);
  if ((command & (bar.is_io() ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY)) == 0) {
    return std::nullopt;
  }
  const std::uint64_t mask = bar.address_mask();
  const std::uint64_t low_mask = mask & kLowDword;
  const std::uint64_t high_mask = mask >> 32;
  const std::uint64_t low = config.read32(bar.register_offset());
  const std::uint64_t high = bar.is_64bit() ? config.read32(bar.register_offset() + 4U) : 0;
  // All-ones in a register's address bits is the sizing protocol, not an address.
  const bool sizing =
      (low_mask != 0 && (low & low_mask) == low_mask) || (high_mask != 0 && (high & high_mask) == high_mask);
  const std::uint64_t address = (high << 32 | low) & mask;
  if (sizing || address == 0) {
    return std::nullopt;
  }
  return Placement{.space = bar.is_io() ? BarSpace::Io : BarSpace::Memory, .base = address, .size = bar.size};
}

void PciRoot::update_bars(std::uint8_t device_number) {
  auto& slot = slots_[device_number];
  for (const auto& bar : slot.device->bars()) {
    auto& state = slot.bars[bar.index];
    const auto wanted = wanted_placement(device_number, bar, state);
    if (!wanted) {
      state.refused.reset();  // the guest turned it off or is sizing it: its next placement is a fresh attempt
    }
    if (wanted == state.placed) {
      continue;
    }
    if (state.placed) {
      static_cast<void>(bus_for(state.placed->space).remove(state.placed->base));
      notify(device_number, bar.index, *state.placed, false);
      state.placed.reset();
    }
    if (!wanted) {
      continue;
    }
    if (wanted == state.refused) {
      continue;  // refused already: not retried (nor reported again) until the guest changes it
    }
    const std::string name = fmt::format("{} 00:{:02x}.0 BAR{}", slot.device->name(), device_number, bar.index);
    const bool fits = wanted->space == BarSpace::Io ? wanted->base + wanted->size <= kIoSpaceEnd
                                                    : wanted->base + wanted->size - 1 >= wanted->base;
    if (!fits) {
      record_error(Error{.operation = fmt::format("pci: map {}", name),
                         .context = fmt::format("[{:#x}, +{:#x}) is outside the {} space", wanted->base, wanted->size,
                                                wanted->space == BarSpace::Io ? "I/O" : "memory")});
      state.refused = wanted;
      continue;
    }
    auto inserted = bus_for(wanted->space)
                        .insert(std::make_shared<BarWindow>(slot.device, bar.index), wanted->base, wanted->size, name);
    if (!inserted) {
      record_error(inserted.error().with_context(fmt::format("pci: {} stays unmapped", name)));
      state.refused = wanted;
      continue;
    }
    state.placed = wanted;
    state.refused.reset();
    notify(device_number, bar.index, *wanted, true);
  }
}

void PciRoot::notify(std::uint8_t device_number, std::size_t bar_index, const Placement& placement, bool placed) const {
  if (observer_) {
    observer_({.device_number = device_number,
               .bar_index = static_cast<std::uint8_t>(bar_index),
               .space = placement.space,
               .base = placement.base,
               .size = placement.size},
              placed);
  }
}

void PciRoot::set_bar_observer(BarObserver observer) {
  std::lock_guard lock(mutex_);
  observer_ = std::move(observer);
}

void PciRoot::record_error(const Error& error) {
  if (errors_.size() == kMaxErrors) {
    errors_.erase(errors_.begin());
  }
  errors_.push_back(error);
}

devices::Bus& PciRoot::bus_for(BarSpace space) const {
  if (space == BarSpace::Io) {
    return io_;
  }
  return mmio_;
}

std::vector<BarMapping> PciRoot::mappings() const {
  std::lock_guard lock(mutex_);
  std::vector<BarMapping> out;
  for (std::size_t number = 0; number < kDevicesPerBus; ++number) {
    for (std::size_t index = 0; index < slots_[number].bars.size(); ++index) {
      if (const auto& placed = slots_[number].bars[index].placed) {
        out.push_back({.device_number = static_cast<std::uint8_t>(number),
                       .bar_index = static_cast<std::uint8_t>(index),
                       .space = placed->space,
                       .base = placed->base,
                       .size = placed->size});
      }
    }
  }
  return out;
}

std::vector<Error> PciRoot::mapping_errors() const {
  std::lock_guard lock(mutex_);
  return errors_;
}

void ConfigMechanism1::read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (offset == 0 && data.size() == 4) {
    const std::uint32_t value = address();
    for (std::size_t i = 0; i < 4; ++i) {
      data[i] = static_cast<std::uint8_t>(value >> (8 * i));
    }
    return;
  }
  const std::uint32_t latched = address();
  if (offset < 4 || offset >= kSize || data.size() > kSize - offset || (latched & kEnable) == 0) {
    std::ranges::fill(data, std::uint8_t{0xff});
    return;
  }
  root_.config_read(static_cast<std::uint8_t>(latched >> 16), static_cast<std::uint8_t>((latched >> 11) & 0x1f),
                    static_cast<std::uint8_t>((latched >> 8) & 0x7),
                    static_cast<std::uint16_t>((latched & 0xfc) + (offset - 4)), data);
}

void ConfigMechanism1::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (offset == 0 && data.size() == 4) {
    std::uint32_t value = 0;
    for (std::size_t i = 0; i < 4; ++i) {
      value |= static_cast<std::uint32_t>(data[i]) << (8 * i);
    }
    std::lock_guard lock(mutex_);
    address_ = value & kAddressRegisterMask;
    return;
  }
  const std::uint32_t latched = address();
  if (offset < 4 || offset >= kSize || data.size() > kSize - offset || (latched & kEnable) == 0) {
    return;
  }
  root_.config_write(static_cast<std::uint8_t>(latched >> 16), static_cast<std::uint8_t>((latched >> 11) & 0x1f),
                     static_cast<std::uint8_t>((latched >> 8) & 0x7),
                     static_cast<std::uint16_t>((latched & 0xfc) + (offset - 4)), data);
}

std::uint32_t ConfigMechanism1::address() const {
  std::lock_guard lock(mutex_);
  return address_;
}

void EcamWindow::read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (offset >= kSize) {
    std::ranges::fill(data, std::uint8_t{0xff});
    return;
  }
  root_.config_read(0, static_cast<std::uint8_t>((offset >> 15) & 0x1f),
                    static_cast<std::uint8_t>((offset >> 12) & 0x7), static_cast<std::uint16_t>(offset & 0xfff), data);
}

void EcamWindow::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (offset >= kSize) {
    return;
  }
  root_.config_write(0, static_cast<std::uint8_t>((offset >> 15) & 0x1f),
                     static_cast<std::uint8_t>((offset >> 12) & 0x7), static_cast<std::uint16_t>(offset & 0xfff), data);
}

}  // namespace vmm::pci
