#include "vmm/pci/pci_test_device.hpp"

#include <linux/pci_regs.h>

#include <algorithm>

#include "vmm/devices/le_bytes.hpp"

namespace vmm::pci {

namespace {

bool dword_access(std::uint64_t offset, std::size_t size) {
  return size == 4 && offset % 4 == 0;
}

}  // namespace

Result<void> PciTestDevice::CountingSink::signal(const MsiMessage& message, std::uint16_t vector_index) {
  auto rc = target.signal(message, vector_index);
  if (rc) {
    count.fetch_add(1);
  }
  return rc;
}

Result<std::shared_ptr<PciTestDevice>> PciTestDevice::create(MsiSink& sink) {
  std::shared_ptr<PciTestDevice> device(new PciTestDevice(sink));
  auto& config = device->config_;
  config.set_header(kVendorId, kDeviceId, kClass, 0x00, 0x00, 0x01, PCI_HEADER_TYPE_NORMAL);
  for (const Bar& bar : {Bar{.index = kRegistersBar, .kind = BarKind::Memory32, .size = kRegistersSize},
                         Bar{.index = kIoBar, .kind = BarKind::Io, .size = kIoSize},
                         Bar{.index = kMsixBar, .kind = BarKind::Memory32, .size = kMsixBarSize}}) {
    if (auto ok = config.add_bar(bar); !ok) {
      return std::unexpected(std::move(ok).error().with_context("pci-test"));
    }
  }
  auto table = MsixTable::create(kVectors, device->counter_);
  if (!table) {
    return std::unexpected(std::move(table).error());
  }
  device->msix_ = std::move(*table);
  const MsixCapability capability{.vectors = kVectors,
                                  .table_bar = kMsixBar,
                                  .table_offset = kTableOffset,
                                  .pba_bar = kMsixBar,
                                  .pba_offset = kPbaOffset};
  auto offset = capability.add_to(config);
  if (!offset) {
    return std::unexpected(std::move(offset).error().with_context("pci-test"));
  }
  device->msix_capability_ = *offset;
  return device;
}

void PciTestDevice::bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) {
  switch (bar_index) {
    case kRegistersBar:
      registers_read(offset, data);
      return;
    case kIoBar: {
      if (offset < 4 && data.size() <= 4 - offset) {
        std::lock_guard lock(mutex_);
        devices::store_le(data, scratch_ >> (8 * offset));
      } else {
        std::ranges::fill(data, std::uint8_t{0xff});
      }
      return;
    }
    case kMsixBar:
      if (offset >= kPbaOffset) {
        msix_->read_pba(offset - kPbaOffset, data);
      } else {
        msix_->read_table(offset - kTableOffset, data);
      }
      return;
    default:
      std::ranges::fill(data, std::uint8_t{0xff});
  }
}

void PciTestDevice::bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) {
  switch (bar_index) {
    case kRegistersBar:
      registers_write(offset, data);
      return;
    case kIoBar: {
      if (offset < 4 && data.size() <= 4 - offset) {
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; i < data.size(); ++i) {
          const std::size_t shift = 8 * (offset + i);
          scratch_ = (scratch_ & ~(std::uint32_t{0xff} << shift)) | std::uint32_t{data[i]} << shift;
        }
      }
      return;
    }
    case kMsixBar:
      if (offset < kPbaOffset) {
        msix_->write_table(offset - kTableOffset, data);
      }
      return;  // the PBA is read-only
    default:
      return;
  }
}

void PciTestDevice::registers_read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (!dword_access(offset, data.size())) {
    std::ranges::fill(data, std::uint8_t{0xff});
    return;
  }
  switch (offset) {
    case kRegId:
      devices::store_le(data, kIdValue);
      return;
    case kRegScratch:
      devices::store_le(data, scratch());
      return;
    case kRegDoorbell:
      devices::store_le(data, 0);
      return;
    case kRegFired:
      devices::store_le(data, fired());
      return;
    default:
      std::ranges::fill(data, std::uint8_t{0xff});
  }
}

void PciTestDevice::registers_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (!dword_access(offset, data.size())) {
    return;
  }
  const std::uint32_t value = static_cast<std::uint32_t>(devices::load_le(data));
  switch (offset) {
    case kRegScratch: {
      std::lock_guard lock(mutex_);
      scratch_ = value;
      return;
    }
    case kRegDoorbell:
      // A guest access cannot fail: vectors out of range are dropped, a sink error is kept by msix().last_error()
      // (and the fired counter does not move).
      if (value <= 0xffff) {
        static_cast<void>(msix_->trigger(static_cast<std::uint16_t>(value)));
      }
      return;
    default:
      return;
  }
}

void PciTestDevice::config_written(std::uint16_t offset, std::size_t size) {
  msix_->config_written(config_, msix_capability_, offset, size);
}

std::uint32_t PciTestDevice::scratch() const {
  std::lock_guard lock(mutex_);
  return scratch_;
}

}  // namespace vmm::pci
