#pragma once
/// @file
/// @brief `Device`: a VFIO device descriptor, through which the VMM reaches a device's regions (config space, BARs)
/// and interrupts.

#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/mmap.hpp"
#include "vmm/vfio/caps.hpp"

namespace vmm::vfio {

/// @brief What VFIO_DEVICE_GET_INFO says.
struct DeviceInfo {
  std::uint32_t flags = 0;        ///< VFIO_DEVICE_FLAGS_*.
  std::uint32_t num_regions = 0;  ///< Region indices 0..num_regions-1 (for PCI: 6 BARs, ROM, config, VGA).
  std::uint32_t num_irqs = 0;     ///< IRQ indices 0..num_irqs-1 (for PCI: INTx, MSI, MSI-X, ERR, REQ).

  /// @brief A PCI device (VFIO_DEVICE_FLAGS_PCI): the region and IRQ indices follow VFIO_PCI_*_INDEX.
  [[nodiscard]] bool is_pci() const noexcept { return (flags & VFIO_DEVICE_FLAGS_PCI) != 0; }
  /// @brief VFIO_DEVICE_FLAGS_RESET: VFIO_DEVICE_RESET is supported.
  [[nodiscard]] bool can_reset() const noexcept { return (flags & VFIO_DEVICE_FLAGS_RESET) != 0; }
};

/// @brief What VFIO_DEVICE_GET_REGION_INFO says about one region, capabilities parsed.
struct RegionInfo {
  std::uint32_t index = 0;   ///< e.g. VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX.
  std::uint32_t flags = 0;   ///< VFIO_REGION_INFO_FLAG_*.
  std::uint64_t size = 0;    ///< Size in bytes (0: the region does not exist, e.g. an unimplemented BAR).
  std::uint64_t offset = 0;  ///< Where the region starts in the device descriptor (for pread/pwrite/mmap).
  RegionCaps caps;           ///< Sparse mmap areas, MSI-X mappable, type.

  /// @brief VFIO_REGION_INFO_FLAG_READ.
  [[nodiscard]] bool readable() const noexcept { return (flags & VFIO_REGION_INFO_FLAG_READ) != 0; }
  /// @brief VFIO_REGION_INFO_FLAG_WRITE.
  [[nodiscard]] bool writable() const noexcept { return (flags & VFIO_REGION_INFO_FLAG_WRITE) != 0; }
  /// @brief VFIO_REGION_INFO_FLAG_MMAP (if caps.sparse_mmap is set, only its areas).
  [[nodiscard]] bool mappable() const noexcept { return (flags & VFIO_REGION_INFO_FLAG_MMAP) != 0; }
};

/// @brief What VFIO_DEVICE_GET_IRQ_INFO says about one interrupt index.
struct IrqInfo {
  std::uint32_t index = 0;  ///< e.g. VFIO_PCI_MSI_IRQ_INDEX.
  std::uint32_t flags = 0;  ///< VFIO_IRQ_INFO_*.
  std::uint32_t count = 0;  ///< How many vectors (0: the device has no such interrupt).

  /// @brief VFIO_IRQ_INFO_EVENTFD: can be signalled to an eventfd.
  [[nodiscard]] bool eventfd() const noexcept { return (flags & VFIO_IRQ_INFO_EVENTFD) != 0; }
  /// @brief VFIO_IRQ_INFO_MASKABLE.
  [[nodiscard]] bool maskable() const noexcept { return (flags & VFIO_IRQ_INFO_MASKABLE) != 0; }
  /// @brief VFIO_IRQ_INFO_AUTOMASKED: level-triggered (INTx), masked by the kernel until unmasked.
  [[nodiscard]] bool automasked() const noexcept { return (flags & VFIO_IRQ_INFO_AUTOMASKED) != 0; }
  /// @brief VFIO_IRQ_INFO_NORESIZE: the vector count cannot change once enabled.
  [[nodiscard]] bool noresize() const noexcept { return (flags & VFIO_IRQ_INFO_NORESIZE) != 0; }
};

/// @brief What a VFIO device offers its user: info, regions, interrupts, reset. `Device` implements it with the
/// VFIO ioctls; unit tests implement it with memory (a fake device), so that the passthrough device (`VfioPciDevice`)
/// is tested without VFIO, as rust-vmm tests its consumers against traits rather than files.
///
/// The virtual calls are the device's primitives; the helpers below them (by index, by value, config space) are built
/// on those and work for every implementation.
class DeviceInterface {
 public:
  DeviceInterface() = default;
  DeviceInterface(const DeviceInterface&) = delete;
  DeviceInterface& operator=(const DeviceInterface&) = delete;
  /// @brief Movable, so that implementations owning a descriptor can be.
  DeviceInterface(DeviceInterface&&) = default;
  /// @brief Move assignment (see the move constructor).
  DeviceInterface& operator=(DeviceInterface&&) = default;
  virtual ~DeviceInterface() = default;

  /// @brief VFIO_DEVICE_GET_INFO.
  [[nodiscard]] virtual Result<DeviceInfo> info() const = 0;
  /// @brief VFIO_DEVICE_GET_REGION_INFO for region `index`, with its capability chain.
  [[nodiscard]] virtual Result<RegionInfo> region_info(std::uint32_t index) const = 0;
  /// @brief VFIO_DEVICE_GET_IRQ_INFO for interrupt index `index`.
  [[nodiscard]] virtual Result<IrqInfo> irq_info(std::uint32_t index) const = 0;
  /// @brief Reads `out.size()` bytes at `offset` of `region` as one access; [offset, offset + size) must lie in it.
  [[nodiscard]] virtual Result<void> read(const RegionInfo& region, std::uint64_t offset,
                                          std::span<std::byte> out) const = 0;
  /// @brief Writes `data` at `offset` of `region` as one access; [offset, offset + size) must lie in it.
  [[nodiscard]] virtual Result<void> write(const RegionInfo& region, std::uint64_t offset,
                                           std::span<const std::byte> data) const = 0;
  /// @brief Maps [offset, offset + size) of `region` into this process (page-aligned offset; only where the region
  /// allows it).
  [[nodiscard]] virtual Result<Mmap> mmap(const RegionInfo& region, std::uint64_t offset, std::uint64_t size) const = 0;
  /// @brief Vector start + i of interrupt `index` signals `eventfds[i]` (-1: stop signalling it); enables the
  /// interrupt if it was not.
  [[nodiscard]] virtual Result<void> set_irqs_eventfds(std::uint32_t index, std::uint32_t start,
                                                       std::span<const int> eventfds) const = 0;
  /// @brief Disables interrupt `index` (all its vectors).
  [[nodiscard]] virtual Result<void> disable_irqs(std::uint32_t index) const = 0;
  /// @brief Resets the device (needs DeviceInfo::can_reset()).
  [[nodiscard]] virtual Result<void> reset() const = 0;
  /// @brief The device's name, its BDF for PCI ("0000:00:03.0").
  [[nodiscard]] virtual const std::string& name() const noexcept = 0;

  /// @brief `read`, querying region `index` first.
  [[nodiscard]] Result<void> read(std::uint32_t index, std::uint64_t offset, std::span<std::byte> out) const;
  /// @brief `write`, querying region `index` first.
  [[nodiscard]] Result<void> write(std::uint32_t index, std::uint64_t offset, std::span<const std::byte> data) const;
  /// @brief A little-endian value of `width` (1, 2 or 4) bytes at `offset` of `region`, as one access of that size.
  [[nodiscard]] Result<std::uint32_t> read_value(const RegionInfo& region, std::uint64_t offset, unsigned width) const;
  /// @brief Writes the low `width` (1, 2 or 4) bytes of `value`, little-endian, as one access of that size.
  [[nodiscard]] Result<void> write_value(const RegionInfo& region, std::uint64_t offset, unsigned width,
                                         std::uint32_t value) const;
  /// @brief Reads `width` (1, 2 or 4) bytes of PCI config space at `offset` (VFIO_PCI_CONFIG_REGION_INDEX).
  ///
  /// The kernel virtualizes parts of config space (BARs, MSI capabilities): what is read is what vfio-pci presents,
  /// not always the raw hardware.
  [[nodiscard]] Result<std::uint32_t> config_read(std::uint64_t offset, unsigned width) const;
  /// @brief Writes `width` (1, 2 or 4) bytes of PCI config space at `offset`.
  [[nodiscard]] Result<void> config_write(std::uint64_t offset, unsigned width, std::uint32_t value) const;
};

/// @brief An open VFIO device (from Group::device): `DeviceInterface` over the device descriptor. Move-only (owns
/// its `Fd`).
///
/// Each region sits at its own offset of the device descriptor: pread/pwrite there are accesses to the device
/// (config space, or a BAR through the host kernel), and a BAR that allows it can be mmap-ed so that accesses go
/// straight to the device. Interrupts are delivered to eventfds. Errors name the ioctl, the device
/// ("0000:00:03.0") and the errno.
class Device final : public DeviceInterface {
 public:
  using DeviceInterface::read;
  using DeviceInterface::write;

  /// @brief VFIO_DEVICE_GET_INFO.
  [[nodiscard]] Result<DeviceInfo> info() const override;
  /// @brief VFIO_DEVICE_GET_REGION_INFO for region `index`, with its capability chain (re-queried with the `argsz`
  /// the kernel asks for when the chain does not fit the fixed struct).
  [[nodiscard]] Result<RegionInfo> region_info(std::uint32_t index) const override;
  /// @brief VFIO_DEVICE_GET_IRQ_INFO for interrupt index `index`.
  [[nodiscard]] Result<IrqInfo> irq_info(std::uint32_t index) const override;

  /// @brief pread of `out.size()` bytes at `offset` of `region`; [offset, offset + size) must lie in the region.
  [[nodiscard]] Result<void> read(const RegionInfo& region, std::uint64_t offset,
                                  std::span<std::byte> out) const override;
  /// @brief pwrite of `data` at `offset` of `region`; [offset, offset + size) must lie in the region.
  [[nodiscard]] Result<void> write(const RegionInfo& region, std::uint64_t offset,
                                   std::span<const std::byte> data) const override;

  /// @brief mmap of [offset, offset + size) of `region` (page-aligned offset); only for a region with
  /// VFIO_REGION_INFO_FLAG_MMAP, and within one of its sparse areas if it has them.
  [[nodiscard]] Result<Mmap> mmap(const RegionInfo& region, std::uint64_t offset, std::uint64_t size) const override;

  /// @brief VFIO_DEVICE_SET_IRQS with DATA_EVENTFD | ACTION_TRIGGER: vector start + i of interrupt `index` signals
  /// `eventfds[i]` (-1: stop signalling that vector). Enables the interrupt (for MSI, vfio-pci programs the device's
  /// MSI capability itself).
  [[nodiscard]] Result<void> set_irqs_eventfds(std::uint32_t index, std::uint32_t start,
                                               std::span<const int> eventfds) const override;
  /// @brief VFIO_DEVICE_SET_IRQS with DATA_NONE | ACTION_TRIGGER and count 0: disables interrupt `index`.
  [[nodiscard]] Result<void> disable_irqs(std::uint32_t index) const override;
  /// @brief VFIO_DEVICE_RESET (needs DeviceInfo::can_reset()).
  [[nodiscard]] Result<void> reset() const override;

  /// @brief The device's name, its BDF for PCI ("0000:00:03.0").
  [[nodiscard]] const std::string& name() const noexcept override { return name_; }
  /// @brief The device's descriptor.
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }

 private:
  friend class Group;
  Device(Fd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}

  [[nodiscard]] Result<void> check_range(const RegionInfo& region, std::uint64_t offset, std::uint64_t size,
                                         const char* operation) const;

  Fd fd_;
  std::string name_;
};

}  // namespace vmm::vfio
