#pragma once
/// @file
/// @brief `VfioPciDevice`: a real PCI function, opened through VFIO, plugged into the VMM's PCI bus for the guest.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/mmap.hpp"
#include "vmm/pci/config_space.hpp"
#include "vmm/pci/msix.hpp"
#include "vmm/pci/pci_device.hpp"
#include "vmm/vfio/device.hpp"
#include "vmm/vfio/device_memory.hpp"
#include "vmm/vfio/msi.hpp"

namespace vmm::vfio {

/// @brief What the VMM gives a passthrough device to reach the guest: interrupt routes and memory slots.
struct PassthroughWiring {
  irq::GsiRouting* routing = nullptr;  ///< GSIs and MSI routes for the device's vectors (required).
  irq::IrqfdBinder* binder = nullptr;  ///< Binds the vectors' eventfds as irqfds (required).
  DeviceMemorySlots* slots = nullptr;  ///< Maps BARs into the guest; null: every BAR access traps to the VMM.
};

/// @brief One BAR of a passthrough device, for tests, the demo and gdb.
struct PassthroughBar {
  pci::Bar bar;                       ///< As declared to the guest (index, kind, size from VFIO's region size).
  std::vector<BarArea> mapped_areas;  ///< The parts that become memory slots when the BAR is placed.
  std::optional<std::uint64_t> guest_address;  ///< Where the guest put it (nothing: not on the bus).
  std::vector<std::uint32_t> slot_handles;     ///< The memory slots mapping it now.
};

/// @brief Counters of what the VMM did for the device (everything else went straight between guest and device).
struct PassthroughStats {
  std::uint64_t config_reads = 0;         ///< Guest config reads (each served partly from the copy, partly live).
  std::uint64_t config_writes = 0;        ///< Guest config writes.
  std::uint64_t config_forwarded = 0;     ///< Writes (or parts of them) forwarded to the device.
  std::uint64_t bar_reads = 0;            ///< BAR reads that trapped (not in a memory slot).
  std::uint64_t bar_writes = 0;           ///< BAR writes that trapped.
  std::uint64_t msix_table_accesses = 0;  ///< Of those, MSI-X table/PBA accesses (emulated).
  std::uint64_t set_irqs = 0;             ///< VFIO_DEVICE_SET_IRQS calls.
  std::uint64_t relayed = 0;              ///< Interrupts the VMM relayed (MSI-X vectors masked by the guest).
  std::uint64_t slot_maps = 0;            ///< Memory slots created for BARs.
  std::uint64_t slot_unmaps = 0;          ///< Memory slots removed.
  std::uint64_t errors = 0;               ///< Failures kept in last_error (a guest access never fails).
};

/// @brief A VFIO device passed through to the guest as a `pci::PciDevice`.
///
/// The guest's driver talks to the real device: BAR accesses go straight to it through KVM memory slots backed by
/// mmaps of its BARs, its DMA is translated by the IOMMU (the VMM maps guest RAM with `GuestRamDma`), and its
/// interrupts arrive on eventfds that are KVM irqfds. The VMM keeps only what the guest must not reach directly:
///
/// - **Config space** is a copy (`config()`), read from the device at creation. Most of it stays *live*: reads are
///   replaced by the device's current bytes (`config_read`), writes are forwarded (`config_written`). The VMM
///   *virtualises* the BARs (declared with the sizes of VFIO's regions, placed wherever the guest or the VMM's
///   allocator put them: the device's own BAR registers are never written, since the guest's addresses mean nothing
///   on the host bus), the expansion ROM (hidden), the interrupt pin (0: no INTx), the header type (single function)
///   and the MSI and MSI-X capabilities. Command register writes update the copy (BAR decoding is the VMM's business)
///   and are also forwarded (memory decoding and bus mastering must be on in the device for MMIO and DMA).
/// - **MSI**: the guest's address/data stay in the copy and become GSI routes (`MsiRoutes`); enabling MSI asks VFIO
///   to signal the vectors' irqfds (VFIO_DEVICE_SET_IRQS on VFIO_PCI_MSI_IRQ_INDEX). vfio-pci programs the device's
///   real capability with host addresses: the guest's messages never reach the device.
/// - **MSI-X**: the table and PBA are trapped (no memory slot covers their pages) and emulated with stage04's
///   `pci::MsixTable`, whose routes are stage06's `irq::MsixRoutes`. Why trap: the guest writes guest addresses and
///   vectors there; the device needs host ones (interrupt remapping), which only the host kernel can write. Enabling
///   MSI-X hands VFIO one eventfd per vector: the vector's irqfd while it is deliverable, or the VMM's *relay* eventfd
///   while the guest masks it; the relay thread then calls `MsixTable::trigger`, which sets the pending bit, so the
///   interrupt is not lost (QEMU does the same).
///
/// BAR placement reaches the device from the VM through `bar_placed` (the VM installs the `PciRoot`'s observer):
/// the mappable areas of a placed BAR become memory slots at the new address; a BAR that moves or loses decoding
/// loses them. Everything the guest does is hostile input: a failed forward or ioctl is counted and kept
/// (`last_error`), never a failed guest access; bytes that cannot be read from the device read as all-ones.
class VfioPciDevice final : public pci::PciDevice {
 public:
  /// @brief Reads `device`'s config space, regions and interrupts and builds the guest's view of it; resets the
  /// device first if it can. Refused (with the reason) for a non-PCI device or a BAR the guest could not be given
  /// (size not a power of two). The wiring's objects must outlive the device.
  [[nodiscard]] static Result<std::shared_ptr<VfioPciDevice>> create(std::shared_ptr<DeviceInterface> device,
                                                                     const PassthroughWiring& wiring);
  /// @brief Stops the relay thread, disables the device's interrupts, removes its memory slots.
  ~VfioPciDevice() override;

  /// @brief The VMM's copy of config space.
  pci::ConfigSpace& config() override { return config_; }
  /// @brief A trapped BAR read: MSI-X table/PBA from the emulation, anything else read from the device.
  void bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) override;
  /// @brief A trapped BAR write: MSI-X table to the emulation, PBA dropped, anything else written to the device.
  void bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  /// @brief Forwards the live part of a guest write; reacts to MSI/MSI-X changes.
  void config_written(std::uint16_t offset, std::size_t size) override;
  /// @brief Replaces the live part of a guest read with the device's bytes.
  void config_read(std::uint16_t offset, std::span<std::uint8_t> data) override;
  /// @brief "vfio 0000:00:03.0".
  [[nodiscard]] std::string name() const override;

  /// @brief BAR `bar_index` is now on the bus at `guest_address` (nothing: removed). The VM calls this from its
  /// `PciRoot` observer; it maps or unmaps the BAR's memory slots.
  void bar_placed(std::uint8_t bar_index, std::optional<std::uint64_t> guest_address);

  /// @brief Whether config byte `offset` is live (read from and written to the device) rather than the VMM's.
  [[nodiscard]] bool live_byte(std::uint16_t offset) const noexcept;
  /// @brief The BARs.
  [[nodiscard]] std::vector<PassthroughBar> bars_info() const;
  /// @brief What the VMM did so far.
  [[nodiscard]] PassthroughStats stats() const;
  /// @brief The latest error (forward, ioctl, slot) if any.
  [[nodiscard]] std::optional<Error> last_error() const;
  /// @brief The device underneath.
  [[nodiscard]] DeviceInterface& device() noexcept { return *device_; }
  /// @brief The MSI capability's offset, if the device has one.
  [[nodiscard]] std::optional<std::uint8_t> msi_capability() const noexcept { return msi_cap_; }
  /// @brief The MSI routes (null without MSI).
  [[nodiscard]] MsiRoutes* msi_routes() noexcept { return msi_routes_.get(); }
  /// @brief The MSI-X capability's offset, if the device has one.
  [[nodiscard]] std::optional<std::uint8_t> msix_capability() const noexcept { return msix_cap_; }
  /// @brief The emulated MSI-X table (null without MSI-X).
  [[nodiscard]] pci::MsixTable* msix_table() noexcept { return msix_table_.get(); }
  /// @brief The MSI-X routes (null without MSI-X).
  [[nodiscard]] irq::MsixRoutes* msix_routes() noexcept { return msix_routes_.get(); }
  /// @brief For each MSI-X vector, the eventfd VFIO signals now (an irqfd, a relay, or -1 while MSI-X is off).
  [[nodiscard]] std::vector<int> msix_vfio_eventfds() const;

 private:
  struct BarState {
    std::optional<pci::Bar> bar;
    RegionInfo region;
    std::vector<BarArea> areas;  // mapped into the guest when placed
    std::vector<Mmap> maps;      // one per area
    std::optional<std::uint64_t> guest_address;
    std::vector<std::uint32_t> slots;
  };

  VfioPciDevice(std::shared_ptr<DeviceInterface> device, const PassthroughWiring& wiring);
  [[nodiscard]] Result<void> init();
  [[nodiscard]] Result<void> init_bars();
  [[nodiscard]] Result<void> init_msi(std::uint8_t offset);
  [[nodiscard]] Result<void> init_msix(std::uint8_t offset);
  void record_error(const Error& error);
  void forward_config(std::uint16_t offset, std::size_t size);
  void msi_changed();
  void msix_control_changed(std::uint16_t offset, std::size_t size);
  void msix_vector_changed(std::uint16_t vector);
  // The eventfd VFIO should signal for MSI-X vector `vector` now (mutex_ held).
  int msix_wanted_fd_locked(std::uint16_t vector) const;
  void relay_loop(std::stop_token stop);
  // Is [offset, offset + size) of BAR `index` the MSI-X table or PBA? Sets which and the offset into it.
  bool msix_region(std::size_t index, std::uint64_t offset, std::uint64_t size, bool& table,
                   std::uint64_t& inner) const;

  std::shared_ptr<DeviceInterface> device_;
  PassthroughWiring wiring_;
  RegionInfo config_region_;
  pci::ConfigSpace config_;
  std::vector<std::uint8_t> live_;  // 1 per byte of config_ that is live
  std::array<BarState, 6> bars_{};

  std::optional<std::uint8_t> msi_cap_;
  std::uint8_t msi_length_ = 0;
  std::unique_ptr<MsiRoutes> msi_routes_;
  bool msi_enabled_ = false;       // mutex_
  std::uint16_t msi_vectors_ = 0;  // mutex_: vectors enabled in VFIO

  std::optional<std::uint8_t> msix_cap_;
  pci::MsixCapability msix_layout_;
  std::unique_ptr<irq::MsixRoutes> msix_routes_;
  std::unique_ptr<pci::MsixTable> msix_table_;
  std::vector<event::EventFd> relays_;
  std::vector<int> msix_fds_;  // mutex_: what VFIO signals now per vector (-1: MSI-X off)
  bool msix_enabled_ = false;  // mutex_
  std::optional<event::EventFd> relay_stop_;

  mutable std::mutex mutex_;
  PassthroughStats stats_;           // mutex_
  std::optional<Error> last_error_;  // mutex_
  std::jthread relay_thread_;        // last: joined first
};

}  // namespace vmm::vfio
