#include "vmm/vfio/device.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>

namespace vmm::vfio {

Result<DeviceInfo> Device::info() const {
  vfio_device_info info{};
  info.argsz = sizeof(info);
  if (auto rc = VMM_IOCTL(fd_, VFIO_DEVICE_GET_INFO, &info); !rc) {
    return std::unexpected(rc.error().with_context(name_));
  }
  return DeviceInfo{info.flags, info.num_regions, info.num_irqs};
}

Result<RegionInfo> Device::region_info(std::uint32_t index) const {
  // The fixed struct first. If the region has capabilities that do not fit, the kernel leaves them out and says in
  // argsz how big a buffer would hold them all; ask again with that size. (A region's capabilities are fixed, so the
  // second answer fits; the loop bound is only a guard.)
  std::size_t argsz = sizeof(vfio_region_info);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto buffer = std::make_unique<std::uint64_t[]>((argsz + 7) / 8);
    vfio_region_info fixed{};
    fixed.argsz = static_cast<std::uint32_t>(argsz);
    fixed.index = index;
    std::memcpy(buffer.get(), &fixed, sizeof(fixed));
    if (auto rc = VMM_IOCTL(fd_, VFIO_DEVICE_GET_REGION_INFO, buffer.get()); !rc) {
      return std::unexpected(rc.error().with_context(fmt::format("{}, region {}", name_, index)));
    }
    std::memcpy(&fixed, buffer.get(), sizeof(fixed));
    if (fixed.argsz > argsz) {
      argsz = fixed.argsz;
      continue;
    }
    auto caps = parse_region_caps(std::span(reinterpret_cast<const std::byte*>(buffer.get()), argsz));
    if (!caps) {
      return std::unexpected(caps.error().with_context(fmt::format("{}, region {}", name_, index)));
    }
    return RegionInfo{index, fixed.flags, fixed.size, fixed.offset, std::move(*caps)};
  }
  return logic_error(
      "VFIO_DEVICE_GET_REGION_INFO",
      fmt::format("{}, region {}: the kernel keeps asking for a bigger buffer ({} bytes)", name_, index, argsz));
}

Result<IrqInfo> Device::irq_info(std::uint32_t index) const {
  vfio_irq_info info{};
  info.argsz = sizeof(info);
  info.index = index;
  if (auto rc = VMM_IOCTL(fd_, VFIO_DEVICE_GET_IRQ_INFO, &info); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("{}, irq index {}", name_, index)));
  }
  return IrqInfo{index, info.flags, info.count};
}

Result<void> Device::check_range(const RegionInfo& region, std::uint64_t offset, std::uint64_t size,
                                 const char* operation) const {
  if (offset > region.size || size > region.size - offset) {
    return logic_error(operation, fmt::format("{}, region {}: [0x{:x}, +0x{:x}) is outside the region's 0x{:x} bytes",
                                              name_, region.index, offset, size, region.size));
  }
  return {};
}

Result<void> Device::read(const RegionInfo& region, std::uint64_t offset, std::span<std::byte> out) const {
  if (!region.readable()) {
    return logic_error("pread", fmt::format("{}, region {} is not readable", name_, region.index));
  }
  if (auto ok = check_range(region, offset, out.size(), "pread"); !ok) {
    return ok;
  }
  const ssize_t n = ::pread(fd_.get(), out.data(), out.size(), static_cast<off_t>(region.offset + offset));
  if (n < 0) {
    return sys_error("pread", errno, fmt::format("{}, region {} offset 0x{:x}", name_, region.index, offset));
  }
  if (static_cast<std::size_t>(n) != out.size()) {
    return logic_error("pread", fmt::format("{}, region {} offset 0x{:x}: {} of {} bytes", name_, region.index, offset,
                                            n, out.size()));
  }
  return {};
}

Result<void> DeviceInterface::read(std::uint32_t index, std::uint64_t offset, std::span<std::byte> out) const {
  auto region = region_info(index);
  if (!region) {
    return std::unexpected(region.error());
  }
  return read(*region, offset, out);
}

Result<void> Device::write(const RegionInfo& region, std::uint64_t offset, std::span<const std::byte> data) const {
  if (!region.writable()) {
    return logic_error("pwrite", fmt::format("{}, region {} is not writable", name_, region.index));
  }
  if (auto ok = check_range(region, offset, data.size(), "pwrite"); !ok) {
    return ok;
  }
  const ssize_t n = ::pwrite(fd_.get(), data.data(), data.size(), static_cast<off_t>(region.offset + offset));
  if (n < 0) {
    return sys_error("pwrite", errno, fmt::format("{}, region {} offset 0x{:x}", name_, region.index, offset));
  }
  if (static_cast<std::size_t>(n) != data.size()) {
    return logic_error("pwrite", fmt::format("{}, region {} offset 0x{:x}: {} of {} bytes", name_, region.index, offset,
                                             n, data.size()));
  }
  return {};
}

Result<void> DeviceInterface::write(std::uint32_t index, std::uint64_t offset, std::span<const std::byte> data) const {
  auto region = region_info(index);
  if (!region) {
    return std::unexpected(region.error());
  }
  return write(*region, offset, data);
}

Result<std::uint32_t> DeviceInterface::read_value(const RegionInfo& region, std::uint64_t offset,
                                                  unsigned width) const {
  if (width != 1 && width != 2 && width != 4) {
    return logic_error("pread", fmt::format("{}: access width {} (1, 2 or 4)", name(), width));
  }
  // x86 is little-endian like PCI: the low bytes of a uint32_t are the value's low bytes.
  std::uint32_t value = 0;
  if (auto ok = read(region, offset, std::as_writable_bytes(std::span(&value, 1)).first(width)); !ok) {
    return std::unexpected(ok.error());
  }
  return value;
}

Result<void> DeviceInterface::write_value(const RegionInfo& region, std::uint64_t offset, unsigned width,
                                          std::uint32_t value) const {
  if (width != 1 && width != 2 && width != 4) {
    return logic_error("pwrite", fmt::format("{}: access width {} (1, 2 or 4)", name(), width));
  }
  return write(region, offset, std::as_bytes(std::span(&value, 1)).first(width));
}

Result<std::uint32_t> DeviceInterface::config_read(std::uint64_t offset, unsigned width) const {
  auto region = region_info(VFIO_PCI_CONFIG_REGION_INDEX);
  if (!region) {
    return std::unexpected(region.error());
  }
  return read_value(*region, offset, width);
}

Result<void> DeviceInterface::config_write(std::uint64_t offset, unsigned width, std::uint32_t value) const {
  auto region = region_info(VFIO_PCI_CONFIG_REGION_INDEX);
  if (!region) {
    return std::unexpected(region.error());
  }
  return write_value(*region, offset, width, value);
}

Result<Mmap> Device::mmap(const RegionInfo& region, std::uint64_t offset, std::uint64_t size) const {
  if (!region.mappable()) {
    return logic_error("mmap", fmt::format("{}, region {} cannot be mmap-ed (no VFIO_REGION_INFO_FLAG_MMAP): use "
                                           "read/write",
                                           name_, region.index));
  }
  if (size == 0) {
    return logic_error("mmap", fmt::format("{}, region {}: empty mapping", name_, region.index));
  }
  if (auto ok = check_range(region, offset, size, "mmap"); !ok) {
    return std::unexpected(ok.error());
  }
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  if (offset % page != 0) {
    return logic_error("mmap",
                       fmt::format("{}, region {}: offset 0x{:x} is not page-aligned", name_, region.index, offset));
  }
  if (region.caps.sparse_mmap) {
    // Only the listed areas may be mapped (the rest, e.g. an MSI-X table, is emulated by the kernel).
    bool inside = false;
    for (const SparseMmapArea& area : *region.caps.sparse_mmap) {
      inside = inside || (offset >= area.offset && offset - area.offset <= area.size &&
                          size <= area.size - (offset - area.offset));
    }
    if (!inside) {
      return logic_error("mmap", fmt::format("{}, region {}: [0x{:x}, +0x{:x}) is not inside one of its {} mmap-able "
                                             "areas",
                                             name_, region.index, offset, size, region.caps.sparse_mmap->size()));
    }
  }
  const int prot = (region.readable() ? PROT_READ : 0) | (region.writable() ? PROT_WRITE : 0);
  auto mapped =
      Mmap::map(fd_, static_cast<std::size_t>(size), prot, MAP_SHARED, static_cast<off_t>(region.offset + offset));
  if (!mapped) {
    return std::unexpected(mapped.error().with_context(fmt::format("{}, region {}", name_, region.index)));
  }
  return mapped;
}

Result<void> Device::set_irqs_eventfds(std::uint32_t index, std::uint32_t start, std::span<const int> eventfds) const {
  // vfio_irq_set ends in a flexible array: the header, then one __s32 eventfd per vector. 4-byte elements keep it
  // aligned (every field is a __u32).
  const std::size_t argsz = sizeof(vfio_irq_set) + eventfds.size() * sizeof(std::int32_t);
  std::vector<std::uint32_t> buffer((argsz + 3) / 4);
  vfio_irq_set set{};
  set.argsz = static_cast<std::uint32_t>(argsz);
  set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = index;
  set.start = start;
  set.count = static_cast<std::uint32_t>(eventfds.size());
  std::memcpy(buffer.data(), &set, sizeof(set));
  std::memcpy(reinterpret_cast<std::byte*>(buffer.data()) + sizeof(vfio_irq_set), eventfds.data(),
              eventfds.size_bytes());
  if (auto rc = VMM_IOCTL(fd_, VFIO_DEVICE_SET_IRQS, buffer.data()); !rc) {
    return std::unexpected(rc.error().with_context(
        fmt::format("{}, irq index {}, vectors {}..{}", name_, index, start, start + eventfds.size())));
  }
  return {};
}

Result<void> Device::disable_irqs(std::uint32_t index) const {
  vfio_irq_set set{};
  set.argsz = sizeof(set);
  set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = index;
  set.start = 0;
  set.count = 0;
  if (auto rc = VMM_IOCTL(fd_, VFIO_DEVICE_SET_IRQS, &set); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("{}, irq index {} (disable)", name_, index)));
  }
  return {};
}

Result<void> Device::reset() const {
  if (auto rc = VMM_IOCTL(fd_, VFIO_DEVICE_RESET); !rc) {
    return std::unexpected(rc.error().with_context(name_));
  }
  return {};
}

}  // namespace vmm::vfio
