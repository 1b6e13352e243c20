#pragma once
/// @file
/// @brief `VirtioPciDevice`: the virtio-pci modern transport (virtio 1.2, 4.1). It puts a `VirtioDevice` on the PCI
/// bus: vendor capabilities pointing into a BAR, the common configuration with feature negotiation and queue setup,
/// notifications, the ISR status, MSI-X, and the device status machine.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/pci/config_space.hpp"
#include "vmm/pci/msi.hpp"
#include "vmm/pci/msix.hpp"
#include "vmm/pci/pci_device.hpp"
#include "vmm/virtio/queue_counters.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/uapi.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::virtio {

/// @brief One activation of a device, from DRIVER_OK to the reset that ended it: what was negotiated and what
/// happened on each queue. The demo and the lab compare them (EVENT_IDX on, then off).
struct ActivationRecord {
  std::uint64_t features = 0;                 ///< The features the driver accepted.
  std::vector<QueueCountersSnapshot> queues;  ///< Each queue's counters when the activation ended.
};

/// @brief The virtio-pci modern transport for one device.
///
/// PCI identity: vendor 0x1af4, device 0x1040 + `device_type()`, revision 1 (a modern-only device), subsystem vendor
/// 0x1af4 and subsystem ID 0x40 (virtio 1.2, 4.1.2.1: at least 0x40 for non-transitional devices). The spec leaves
/// the class code free; vmmlab uses QEMU's: 02/00 (network) for net, 01/00 (mass storage) for block, 07/80 (other
/// communication) for console, ff/00 (unassigned) for the others, rng included. No INTx pin.
///
/// | BAR  | kind          | size   | contents                                                                    |
/// |------|---------------|--------|-----------------------------------------------------------------------------|
/// | BAR0 | 32-bit memory | 16 KiB | common cfg at 0x0, ISR at 0x1000, device cfg at 0x2000, notify at 0x3000    |
/// | BAR2 | 32-bit memory | 4 KiB  | MSI-X table at 0x0, PBA at 0x800; one vector per queue plus one for config  |
///
/// Capabilities, in this order: MSI-X, then vendor-specific (0x09) `virtio_pci_cap`s: common configuration, notify
/// (a `virtio_pci_notify_cap` with `notify_off_multiplier` = 4, queue n's notify address at 0x3000 + 4n), ISR, device
/// configuration (only if `config_size()` > 0) and the PCI configuration access capability (VIRTIO_PCI_CAP_PCI_CFG,
/// a window onto the BARs through configuration space that the spec requires and firmware may use). The driver
/// writes its `cap.bar`, `cap.offset` and `cap.length`; a write to `pci_cfg_data` writes its first `cap.length` bytes
/// at that place, a read of it reads them from there first (4.1.4.9). A window whose length is not 1, 2 or 4, or
/// whose offset is not aligned to it, reads 0 and writes nothing.
///
/// Common configuration (`virtio_pci_common_cfg`): each field is accessed at its own size (64-bit addresses as two
/// dwords or one qword); any other access reads 0 and is ignored. Features are read and written 32 bits at a time
/// through `device_feature_select`/`driver_feature_select`; pages 2 and up read 0 and ignore writes (virtio 1.2 has
/// no feature bit above 63). `queue_notify_off` reads the queue index. With `queue_select` beyond the queues,
/// `queue_size` reads 0 ("unavailable"), `queue_msix_vector` VIRTIO_MSI_NO_VECTOR, the other queue fields 0, and
/// writes are ignored. `config_generation` stays 0: no vmmlab device changes its configuration on its own.
/// The status machine (2.1, 3.1.1):
/// - writing 0 resets: the device is reset, queues and features forgotten, MSI-X vector choices back to
///   VIRTIO_MSI_NO_VECTOR, counters kept in `history`; reading `device_status` afterwards returns 0;
/// - the driver may only add bits; a write that clears one is ignored. DEVICE_NEEDS_RESET is the device's bit: what
///   the driver writes there is ignored. ACKNOWLEDGE and DRIVER are bookkeeping, accepted in any order;
/// - FAILED is recorded and changes nothing else (an active device keeps running until the driver resets it);
/// - once DEVICE_NEEDS_RESET or FAILED is set, only FAILED and a reset are accepted;
/// - FEATURES_OK is refused (reads back clear) unless the driver's features are a subset of the device's and include
///   VIRTIO_F_VERSION_1; feature writes after FEATURES_OK are ignored;
/// - queue fields are writable only before DRIVER_OK and while the selected queue is not enabled. Writing 1 to
///   queue_enable validates the layout (`validate`, with the ring features the driver accepted); a bad layout, or
///   queue_enable before FEATURES_OK (the ring features are not settled), leaves the queue disabled and sets
///   DEVICE_NEEDS_RESET. Writing 0 (forbidden to the driver: queue reset is not offered) or any other value is
///   ignored;
/// - DRIVER_OK activates the device with the enabled queues; an activation error, or DRIVER_OK without FEATURES_OK,
///   refuses DRIVER_OK (it reads back clear) and sets DEVICE_NEEDS_RESET;
/// - DEVICE_NEEDS_RESET is also set when the device reports a driver error (`Activation::needs_reset`); each time,
///   the ISR's configuration bit is set and the configuration vector fired. Only a reset clears it.
///
/// Interrupts go through MSI-X when the driver enabled it and chose a vector (queue_msix_vector,
/// config_msix_vector; a vector beyond the table reads back VIRTIO_MSI_NO_VECTOR); the ISR bits are set either way
/// (a one-byte read of the ISR returns them and clears them; other accesses read 0). A masked vector sets its pending
/// bit. INTx is not wired in vmmlab. Each successful `signal_queue` counts one interrupt for the queue, whether
/// MSI-X delivered it, left it pending or (disabled, no vector) only the ISR recorded it; a sink error is returned
/// to the device and not counted. Notifications (16- or 32-bit writes to a queue's notify address) are handled
/// synchronously: while the device is active and the queue enabled, the transport counts them and calls
/// `VirtioDevice::queue_notify` on the vCPU thread, serialised with activation and reset so that the device never
/// sees a notification outside an activation (stage06 moves this to ioeventfds and device threads).
///
/// Device configuration: aligned 1-, 2- and 4-byte accesses are forwarded to `read_config`/`write_config`, clipped to
/// `config_size()`; the bytes past it read 0.
///
/// Locking: `mutex_` guards the registers and is never held while calling the device (`activate`, `reset`,
/// `queue_notify`, `read_config`, `write_config`) or the MSI-X table; what the transport needs of the device
/// (`name`, `features`, `queue_max_sizes`, `config_size`) it reads once, at creation. The `VirtioInterrupt` handed
/// to the device is detached when the transport is destroyed (later calls fail), and an `Activation::needs_reset`
/// from an activation that a reset ended is ignored.
///
/// Guest accesses never fail: bad offsets and sizes are ignored, driver errors end in DEVICE_NEEDS_RESET and are
/// kept for `last_error`.
class VirtioPciDevice final : public pci::PciDevice {
 public:
  /// @brief Red Hat, Inc. (formerly Qumranet): the virtio vendor ID.
  static constexpr std::uint16_t kVendorId = 0x1af4;
  /// @brief Modern device IDs are this plus the device type.
  static constexpr std::uint16_t kDeviceIdBase = 0x1040;
  /// @brief The subsystem ID (at least 0x40 for a modern-only device).
  static constexpr std::uint16_t kSubsystemId = 0x40;
  /// @brief The BAR holding the virtio structures.
  static constexpr std::uint8_t kRegionsBar = 0;
  /// @brief Its size.
  static constexpr std::uint64_t kRegionsBarSize = 0x4000;
  /// @brief Offset of the common configuration in BAR0.
  static constexpr std::uint32_t kCommonOffset = 0x0;
  /// @brief Offset of the ISR status byte in BAR0.
  static constexpr std::uint32_t kIsrOffset = 0x1000;
  /// @brief Offset of the device configuration in BAR0.
  static constexpr std::uint32_t kDeviceConfigOffset = 0x2000;
  /// @brief Offset of the notification area in BAR0.
  static constexpr std::uint32_t kNotifyOffset = 0x3000;
  /// @brief Bytes between two queues' notify addresses (`notify_off_multiplier`; queue_notify_off = queue index).
  static constexpr std::uint32_t kNotifyOffMultiplier = 4;
  /// @brief Bytes reserved for each region in BAR0 (the common cfg, ISR and device cfg are smaller).
  static constexpr std::uint32_t kRegionSize = 0x1000;
  /// @brief The BAR holding the MSI-X table and PBA.
  static constexpr std::uint8_t kMsixBar = 2;
  /// @brief Its size.
  static constexpr std::uint64_t kMsixBarSize = 0x1000;
  /// @brief Offset of the MSI-X table in BAR2.
  static constexpr std::uint32_t kMsixTableOffset = 0x0;
  /// @brief Offset of the PBA in BAR2.
  static constexpr std::uint32_t kMsixPbaOffset = 0x800;

  /// @brief A transport for `device`, reaching guest memory through `memory` and delivering MSI-X messages to `sink`
  /// (both must outlive it). Refused if the device does not offer VIRTIO_F_VERSION_1, declares no queue, a queue
  /// size that is not a power of two, or more queues or config than the BAR layout holds.
  [[nodiscard]] static Result<std::shared_ptr<VirtioPciDevice>> create(std::shared_ptr<VirtioDevice> device,
                                                                       const memory::GuestMemory& memory,
                                                                       pci::MsiSink& sink);
  /// @brief Resets the device if it is active.
  ~VirtioPciDevice() override;

  /// @brief Its configuration space.
  pci::ConfigSpace& config() override { return config_; }
  /// @brief A guest read in BAR0 or BAR2.
  void bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) override;
  /// @brief A guest write in BAR0 or BAR2.
  void bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  /// @brief MSI-X Message Control, and the PCI configuration access capability's data window.
  void config_written(std::uint16_t offset, std::size_t size) override;
  /// @brief The PCI configuration access capability's data window (reads through to a BAR).
  void config_read(std::uint16_t offset, std::span<std::uint8_t> data) override;
  /// @brief The device's name ("virtio-rng").
  [[nodiscard]] std::string name() const override;

  /// @brief The device model.
  [[nodiscard]] VirtioDevice& device() noexcept { return *device_; }
  /// @brief The device status byte as the driver reads it.
  [[nodiscard]] std::uint8_t status() const;
  /// @brief The features the driver has written so far (all 64 bits).
  [[nodiscard]] std::uint64_t driver_features() const;
  /// @brief True between DRIVER_OK (a successful activation) and the next reset.
  [[nodiscard]] bool active() const;
  /// @brief The layout of queue `index` as programmed so far (nothing if out of range).
  [[nodiscard]] std::optional<QueueLayout> queue_layout(std::uint16_t index) const;
  /// @brief The MSI-X vector the driver chose for queue `index` (VIRTIO_MSI_NO_VECTOR if none; nothing if out of
  /// range). stage07's vhost-user frontend asks at activation, to hand the backend that vector's irqfd. Safe to call
  /// from `VirtioDevice::activate` (the transport does not hold its register lock there).
  [[nodiscard]] std::optional<std::uint16_t> queue_msix_vector(std::uint16_t index) const;
  /// @brief The counters of each queue, now.
  [[nodiscard]] std::vector<QueueCountersSnapshot> counters() const;
  /// @brief One record per activation that a reset ended, oldest first.
  [[nodiscard]] std::vector<ActivationRecord> history() const;
  /// @brief The driver error that last set DEVICE_NEEDS_RESET (or refused FEATURES_OK), if any.
  [[nodiscard]] std::optional<Error> last_error() const;
  /// @brief The MSI-X state.
  [[nodiscard]] pci::MsixTable& msix() noexcept { return *msix_; }
  /// @brief Offset of the MSI-X capability in config space.
  [[nodiscard]] std::uint8_t msix_capability() const noexcept { return msix_capability_; }

 private:
  // The transport's view of one queue: what the driver programmed, and the validated queue once enabled.
  struct QueueSlot {
    std::uint16_t max_size = 0;
    QueueLayout layout;
    std::uint16_t msix_vector = VIRTIO_MSI_NO_VECTOR;
    std::optional<SplitQueue> enabled;  // moved into the Activation at DRIVER_OK
    bool enable_flag = false;           // what queue_enable reads
    std::shared_ptr<QueueCounters> counters;
  };
  class Interrupt;
  // Where the PCI configuration access capability points (validated: length 1, 2 or 4, offset aligned to it).
  struct PciCfgWindow {
    std::uint8_t bar = 0;
    std::uint32_t offset = 0;
    std::uint32_t length = 0;
  };

  VirtioPciDevice(std::shared_ptr<VirtioDevice> device, const memory::GuestMemory& memory,
                  std::unique_ptr<pci::MsixTable> msix);

  // The four regions of BAR0 (`offset` relative to the region).
  void common_read(std::uint64_t offset, std::span<std::uint8_t> data);
  void common_write(std::uint64_t offset, std::span<const std::uint8_t> data);
  void isr_read(std::uint64_t offset, std::span<std::uint8_t> data);
  void device_config_read(std::uint64_t offset, std::span<std::uint8_t> data);
  void device_config_write(std::uint64_t offset, std::span<const std::uint8_t> data);
  void notify_write(std::uint64_t offset, std::size_t size);
  // A common configuration field's value as the driver reads it (mutex_ held; 64-bit addresses whole at _lo).
  [[nodiscard]] std::uint64_t common_value_locked(std::uint64_t offset) const;
  // The selected queue's slot, or null when queue_select is out of range (mutex_ held).
  [[nodiscard]] QueueSlot* selected_locked();
  [[nodiscard]] const QueueSlot* selected_locked() const;
  // The status machine: 0 resets, otherwise the bits the driver adds (see the class comment).
  void write_status(std::uint8_t value);
  void write_queue_enable(std::uint16_t value);
  // Resets the device and the transport (lifecycle_mutex_ held, mutex_ not).
  void reset_locked();
  // Sets DEVICE_NEEDS_RESET and keeps `error` (mutex_ held); the caller then calls `raise_config`.
  void needs_reset_locked(Error error);
  // The interrupts: ISR bit, then the MSI-X vector if one is chosen (mutex_ not held).
  Result<void> raise_queue(std::uint16_t queue_index);
  Result<void> raise_config();
  // Activation::needs_reset: ignored if the device was reset since activation `epoch`.
  void device_error(std::uint64_t epoch, const Error& error);
  [[nodiscard]] std::optional<PciCfgWindow> pci_cfg_window() const;

  std::shared_ptr<VirtioDevice> device_;
  const memory::GuestMemory& memory_;
  // Cached at creation: the transport never calls into the device with mutex_ held, not even for these.
  std::string name_;
  std::uint64_t offered_features_ = 0;
  std::size_t config_size_ = 0;
  pci::ConfigSpace config_;
  std::unique_ptr<pci::MsixTable> msix_;
  std::uint8_t msix_capability_ = 0;
  std::uint8_t pci_cfg_capability_ = 0;  // offset of the VIRTIO_PCI_CAP_PCI_CFG capability

  // Serialises status transitions (activate, reset) without holding mutex_ while the device runs them.
  std::mutex lifecycle_mutex_;
  mutable std::mutex mutex_;
  std::uint8_t status_ = 0;
  std::uint8_t isr_ = 0;
  std::uint8_t config_generation_ = 0;
  std::uint32_t device_feature_select_ = 0;
  std::uint32_t driver_feature_select_ = 0;
  std::uint64_t driver_features_ = 0;
  std::uint16_t config_msix_vector_ = VIRTIO_MSI_NO_VECTOR;
  std::uint16_t queue_select_ = 0;
  std::vector<QueueSlot> queues_;
  std::shared_ptr<Interrupt> interrupt_;
  bool active_ = false;
  std::uint64_t epoch_ = 0;  // bumped by each reset: a stale Activation::needs_reset is ignored
  std::vector<ActivationRecord> history_;
  std::optional<Error> last_error_;
};

}  // namespace vmm::virtio
