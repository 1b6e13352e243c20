#pragma once
/// @file
/// @brief `VirtioDevice`: what a virtio device model implements, independent of the transport that carries it;
/// `VirtioInterrupt` and `Activation`: what the transport hands the device when the driver starts it.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/uapi.hpp"

namespace vmm::virtio {

/// @brief The feature bits every vmmlab device offers: VIRTIO_F_VERSION_1 (a modern device; a driver that does not
/// accept it is refused) and the two ring features `SplitQueue` implements, EVENT_IDX and INDIRECT_DESC.
inline constexpr std::uint64_t kCommonFeatures =
    (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VIRTIO_RING_F_INDIRECT_DESC);

/// @brief True when feature bit `bit` is set in `features`.
[[nodiscard]] constexpr bool has_feature(std::uint64_t features, unsigned bit) noexcept {
  return bit < 64 && ((features >> bit) & 1) != 0;
}

/// @brief How a device notifies its driver; the transport implements it (virtio-pci: an MSI-X vector per queue and
/// one for configuration changes, with the ISR status bits; tests: a recorder).
///
/// Called by the device with its own lock held, from whichever thread processes the queue (stage05: a vCPU thread).
/// The transport must not call back into the device from here.
class VirtioInterrupt {
 public:
  VirtioInterrupt() = default;
  VirtioInterrupt(const VirtioInterrupt&) = delete;
  VirtioInterrupt& operator=(const VirtioInterrupt&) = delete;
  VirtioInterrupt(VirtioInterrupt&&) = delete;
  VirtioInterrupt& operator=(VirtioInterrupt&&) = delete;
  virtual ~VirtioInterrupt() = default;

  /// @brief A used-buffer notification for queue `queue_index`.
  virtual Result<void> signal_queue(std::uint16_t queue_index) = 0;
  /// @brief A configuration-change notification.
  virtual Result<void> signal_config() = 0;
};

/// @brief What the transport hands a device when the driver sets DRIVER_OK.
struct Activation {
  const memory::GuestMemory* memory = nullptr;  ///< Guest memory; outlives the activation.
  std::uint64_t features = 0;                   ///< The features the driver accepted (FEATURES_OK).
  /// @brief One entry per queue the device declared, by index: the validated queue, or nothing if the driver did not
  /// enable it.
  std::vector<std::optional<SplitQueue>> queues;
  /// @brief Where the device's notifications go; valid until the device is reset.
  std::shared_ptr<VirtioInterrupt> interrupt;
  /// @brief Call when the driver broke a rule the device cannot work around (an invalid chain, an index that
  /// jumped): the transport sets DEVICE_NEEDS_RESET and tells the driver with a configuration-change notification.
  /// Call with the device's lock held is fine: the transport does not call back into the device.
  std::function<void(const Error&)> needs_reset;
};

/// @brief A virtio device model: its type, its features, its queues and configuration, and what it does with
/// buffers. The transport (`VirtioPciDevice`) does everything the driver sees of the bus: capabilities, feature
/// negotiation, the status machine, queue setup, notifications and interrupts.
///
/// Lifecycle: created idle; `activate` when the driver sets DRIVER_OK (with the queues it enabled); `queue_notify`
/// whenever the driver kicks a queue while active; `reset` when the driver writes 0 to the status (or the VMM resets
/// the device), after which it is idle again and may be activated anew. The transport never calls these with its own
/// lock held, and serialises `activate` and `reset`; `queue_notify` may arrive on any vCPU thread, concurrently.
class VirtioDevice {
 public:
  VirtioDevice() = default;
  VirtioDevice(const VirtioDevice&) = delete;
  VirtioDevice& operator=(const VirtioDevice&) = delete;
  VirtioDevice(VirtioDevice&&) = delete;
  VirtioDevice& operator=(VirtioDevice&&) = delete;
  virtual ~VirtioDevice() = default;

  /// @brief VIRTIO_ID_* (virtio 1.2, 5): the PCI device ID is 0x1040 plus this.
  [[nodiscard]] virtual std::uint16_t device_type() const = 0;
  /// @brief Every feature bit the device offers, `kCommonFeatures` included.
  [[nodiscard]] virtual std::uint64_t features() const = 0;
  /// @brief The maximum size of each queue; the number of entries is the number of queues.
  [[nodiscard]] virtual std::vector<std::uint16_t> queue_max_sizes() const = 0;
  /// @brief Bytes of device-specific configuration (0: none, and no device configuration capability).
  [[nodiscard]] virtual std::size_t config_size() const { return 0; }
  /// @brief The driver reads `data.size()` bytes at `offset` into the device configuration (within `config_size`).
  virtual void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const;
  /// @brief The driver writes device configuration; most fields are read-only and ignore it.
  virtual void write_config(std::uint64_t offset, std::span<const std::uint8_t> data);

  /// @brief The driver set DRIVER_OK: start serving the queues. An error leaves the device idle (the transport sets
  /// DEVICE_NEEDS_RESET).
  [[nodiscard]] virtual Result<void> activate(Activation activation) = 0;
  /// @brief Stop, drop the queues and the interrupt, forget the features: back to the state before `activate`.
  virtual void reset() = 0;
  /// @brief The driver notified queue `queue_index` (only called while active, for a queue it enabled).
  virtual void queue_notify(std::uint16_t queue_index) = 0;
  /// @brief A short name: "virtio-rng".
  [[nodiscard]] virtual std::string name() const = 0;
};

}  // namespace vmm::virtio
