#include "vmm/pci/config_space.hpp"

#include <linux/pci_regs.h>

#include <algorithm>
#include <array>

#include <fmt/format.h>

namespace vmm::pci {

namespace {

// Linux's PCI_FIND_CAP_TTL: no real device has more; a longer walk means the list loops.
constexpr int kMaxCapabilities = 48;
// Standard (non-extended) capabilities live after the 64-byte header and before 0x100.
constexpr std::uint16_t kFirstCapability = PCI_STD_HEADER_SIZEOF;
constexpr std::uint16_t kCapabilityAreaEnd = PCI_CFG_SPACE_SIZE;
// The low two bits of every capability pointer are reserved: pointers are dword-aligned.
constexpr std::uint8_t kPointerMask = 0xfc;

}  // namespace

std::vector<Capability> walk_capabilities(std::span<const std::uint8_t> config) {
  std::vector<Capability> out;
  if (config.size() < kFirstCapability) {
    return out;
  }
  const auto status = static_cast<std::uint16_t>(config[PCI_STATUS] | config[PCI_STATUS + 1] << 8);
  if ((status & PCI_STATUS_CAP_LIST) == 0) {
    return out;
  }
  std::size_t pointer = config[PCI_CAPABILITY_LIST] & kPointerMask;
  for (int ttl = kMaxCapabilities; ttl > 0 && pointer >= kFirstCapability && pointer + 2 <= config.size(); --ttl) {
    out.push_back({.offset = static_cast<std::uint8_t>(pointer), .id = config[pointer + PCI_CAP_LIST_ID]});
    pointer = config[pointer + PCI_CAP_LIST_NEXT] & kPointerMask;
  }
  return out;
}

ConfigSpace::ConfigSpace(std::size_t size)
    : bytes_(size <= kConventionalSize ? kConventionalSize : kExpressSize, 0),
      writable_(bytes_.size(), 0),
      w1c_(bytes_.size(), 0),
      next_capability_(kFirstCapability) {}

void ConfigSpace::read(std::uint64_t offset, std::span<std::uint8_t> data) const {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = in_range(offset, i) ? bytes_[offset + i] : std::uint8_t{0xff};
  }
}

void ConfigSpace::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (!in_range(offset, i)) {
      continue;
    }
    const std::size_t at = offset + i;
    auto value = static_cast<std::uint8_t>((bytes_[at] & ~writable_[at]) | (data[i] & writable_[at]));
    value = static_cast<std::uint8_t>(value & ~(data[i] & w1c_[at]));
    bytes_[at] = value;
  }
}

std::uint8_t ConfigSpace::read8(std::uint64_t offset) const {
  std::uint8_t value = 0;
  read(offset, std::span(&value, 1));
  return value;
}

std::uint16_t ConfigSpace::read16(std::uint64_t offset) const {
  std::array<std::uint8_t, 2> b{};
  read(offset, b);
  return static_cast<std::uint16_t>(b[0] | b[1] << 8);
}

std::uint32_t ConfigSpace::read32(std::uint64_t offset) const {
  std::array<std::uint8_t, 4> b{};
  read(offset, b);
  return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
         static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
}

void ConfigSpace::write8(std::uint64_t offset, std::uint8_t value) {
  write(offset, std::span(&value, 1));
}

void ConfigSpace::write16(std::uint64_t offset, std::uint16_t value) {
  const std::array<std::uint8_t, 2> b{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8)};
  write(offset, b);
}

void ConfigSpace::write32(std::uint64_t offset, std::uint32_t value) {
  const std::array<std::uint8_t, 4> b{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                      static_cast<std::uint8_t>(value >> 16), static_cast<std::uint8_t>(value >> 24)};
  write(offset, b);
}

void ConfigSpace::set_bytes(std::uint64_t offset, std::uint32_t value, std::size_t width) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < width; ++i) {
    if (in_range(offset, i)) {
      bytes_[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
    }
  }
}

void ConfigSpace::set_mask(std::vector<std::uint8_t>& mask, std::uint64_t offset, std::uint32_t value,
                           std::size_t width) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < width; ++i) {
    if (in_range(offset, i)) {
      mask[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
    }
  }
}

void ConfigSpace::set8(std::uint64_t offset, std::uint8_t value) {
  set_bytes(offset, value, 1);
}
void ConfigSpace::set16(std::uint64_t offset, std::uint16_t value) {
  set_bytes(offset, value, 2);
}
void ConfigSpace::set32(std::uint64_t offset, std::uint32_t value) {
  set_bytes(offset, value, 4);
}
void ConfigSpace::set_writable8(std::uint64_t offset, std::uint8_t mask) {
  set_mask(writable_, offset, mask, 1);
}
void ConfigSpace::set_writable16(std::uint64_t offset, std::uint16_t mask) {
  set_mask(writable_, offset, mask, 2);
}
void ConfigSpace::set_writable32(std::uint64_t offset, std::uint32_t mask) {
  set_mask(writable_, offset, mask, 4);
}
void ConfigSpace::set_w1c16(std::uint64_t offset, std::uint16_t mask) {
  set_mask(w1c_, offset, mask, 2);
}

void ConfigSpace::set_header(std::uint16_t vendor, std::uint16_t device, std::uint8_t class_code, std::uint8_t subclass,
                             std::uint8_t prog_if, std::uint8_t revision, std::uint8_t header_type) {
  set16(PCI_VENDOR_ID, vendor);
  set16(PCI_DEVICE_ID, device);
  set8(PCI_REVISION_ID, revision);
  set8(PCI_CLASS_PROG, prog_if);
  set8(PCI_CLASS_DEVICE, subclass);
  set8(PCI_CLASS_DEVICE + 1, class_code);
  set8(PCI_HEADER_TYPE, header_type);
  // The command bits a guest OS sets or clears; the others (special cycles, VGA snooping, ...) are hardwired to 0.
  set_writable16(PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY |
                                  PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE);
  // Error bits are sticky until the guest acknowledges them; capability/66 MHz/DEVSEL bits describe the device.
  set_w1c16(PCI_STATUS, PCI_STATUS_PARITY | PCI_STATUS_SIG_TARGET_ABORT | PCI_STATUS_REC_TARGET_ABORT |
                            PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY);
  // Registers the device ignores but the guest uses as scratch for its own bookkeeping.
  set_writable8(PCI_CACHE_LINE_SIZE, 0xff);
  set_writable8(PCI_LATENCY_TIMER, 0xff);
  set_writable8(PCI_INTERRUPT_LINE, 0xff);
}

Result<void> ConfigSpace::add_bar(const Bar& bar) {
  if (auto valid = validate(bar); !valid) {
    return valid;
  }
  {
    std::lock_guard lock(mutex_);
    for (const auto& other : bars_) {
      const int other_last = other.index + (other.is_64bit() ? 1 : 0);
      const int last = bar.index + (bar.is_64bit() ? 1 : 0);
      if (bar.index <= other_last && other.index <= last) {
        return logic_error(fmt::format("BAR{}", bar.index), fmt::format("its register is BAR{}'s", other.index));
      }
    }
    bars_.push_back(bar);
  }
  const std::uint64_t mask = bar.address_mask();
  set32(bar.register_offset(), bar.type_bits());
  set_writable32(bar.register_offset(), static_cast<std::uint32_t>(mask));
  if (bar.is_64bit()) {
    set32(bar.register_offset() + 4, 0);
    set_writable32(bar.register_offset() + 4, static_cast<std::uint32_t>(mask >> 32));
  }
  return {};
}

std::vector<Bar> ConfigSpace::bars() const {
  std::lock_guard lock(mutex_);
  return bars_;
}

Result<std::uint8_t> ConfigSpace::add_capability(std::uint8_t id, std::span<const std::uint8_t> body,
                                                 std::span<const std::uint8_t> writable) {
  const std::string op = fmt::format("capability {:#04x}", id);
  if (!writable.empty() && writable.size() != body.size()) {
    return logic_error(op, fmt::format("the writable mask has {} bytes, the body {}", writable.size(), body.size()));
  }
  std::lock_guard lock(mutex_);
  const std::size_t start = next_capability_;
  const std::size_t length = 2 + body.size();
  if (length > kCapabilityAreaEnd - start) {
    return logic_error(op, fmt::format("{} bytes do not fit at {:#x} (standard capabilities end at {:#x})", length,
                                       start, kCapabilityAreaEnd));
  }
  bytes_[start + PCI_CAP_LIST_ID] = id;
  bytes_[start + PCI_CAP_LIST_NEXT] = 0;
  std::ranges::copy(body, bytes_.begin() + static_cast<std::ptrdiff_t>(start + 2));
  if (!writable.empty()) {
    std::ranges::copy(writable, writable_.begin() + static_cast<std::ptrdiff_t>(start + 2));
  }
  const auto offset = static_cast<std::uint8_t>(start);
  bytes_[last_capability_ == 0 ? PCI_CAPABILITY_LIST : last_capability_ + PCI_CAP_LIST_NEXT] = offset;
  bytes_[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
  last_capability_ = offset;
  next_capability_ = static_cast<std::uint16_t>((start + length + 3) & ~std::size_t{3});
  return offset;
}

std::vector<Capability> ConfigSpace::capabilities() const {
  std::lock_guard lock(mutex_);
  return walk_capabilities(bytes_);
}

std::optional<std::uint8_t> ConfigSpace::find_capability(std::uint8_t id) const {
  for (const auto& cap : capabilities()) {
    if (cap.id == id) {
      return cap.offset;
    }
  }
  return std::nullopt;
}

}  // namespace vmm::pci
