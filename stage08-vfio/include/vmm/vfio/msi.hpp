#pragma once
/// @file
/// @brief Plain MSI for a passed-through device: the guest's view of the MSI capability (`MsiState`, parsed from
/// the VMM's copy of config space) and `MsiRoutes`, one GSI route and irqfd per vector, kept in step with it.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/pci/config_space.hpp"
#include "vmm/pci/msi.hpp"

namespace vmm::vfio {

/// @brief The MSI capability as the guest programmed it (PCI 3.0 section 6.8.1).
struct MsiState {
  bool enabled = false;       ///< Message Control bit 0.
  std::uint8_t capable = 1;   ///< Vectors the device can use (Multiple Message Capable: 1, 2, 4, ... 32).
  std::uint8_t vectors = 1;   ///< Vectors the guest allowed (Multiple Message Enable), at most `capable`.
  bool is_64bit = false;      ///< The capability has an upper address dword.
  std::uint64_t address = 0;  ///< Message Address.
  std::uint16_t data = 0;     ///< Message Data of vector 0.

  /// @brief The message of vector `vector`: with several vectors the device puts the vector number in the low bits
  /// of the data (which the guest leaves zero for that purpose).
  [[nodiscard]] pci::MsiMessage message(std::uint16_t vector) const noexcept {
    return {address, static_cast<std::uint32_t>((data & ~(vectors - 1U)) | (vector & (vectors - 1U)))};
  }
  /// @brief Member-wise equality.
  friend bool operator==(const MsiState&, const MsiState&) = default;
};

/// @brief Reads the guest's MSI state from the MSI capability at `offset` of `config`.
[[nodiscard]] MsiState read_msi_state(const pci::ConfigSpace& config, std::uint8_t offset);

/// @brief Prepares the VMM's copy of an MSI capability (copied from the device) for the guest: Enable, Multiple
/// Message Enable, the address and the data become writable; everything else read-only. Per-vector masking is
/// hidden (PCI_MSI_FLAGS_MASKBIT cleared): the VMM would have to emulate the mask and pending bits, and without
/// them the guest masks the whole capability instead, which it always can. Returns the capability's length.
std::uint8_t virtualize_msi_capability(pci::ConfigSpace& config, std::uint8_t offset);

/// @brief One plain-MSI function's vectors as GSI routes and irqfds: the MSI counterpart of stage06's
/// `irq::MsixRoutes`.
///
/// Each of the device's `capable` vectors gets a GSI and an eventfd bound to it as an irqfd at creation. `update`
/// makes the routes what the guest's capability says: while MSI is enabled, vectors below `vectors` route to
/// their message; everything else has no route. The eventfds are what VFIO signals (VFIO_PCI_MSI_IRQ_INDEX), so an
/// interrupt of the device reaches the guest without the VMM. Thread-safe (one mutex).
class MsiRoutes {
 public:
  /// @brief `capable` (1..32) GSIs from `routing` and irqfds bound with `binder`; both must outlive the routes.
  [[nodiscard]] static Result<std::unique_ptr<MsiRoutes>> create(std::uint8_t capable, irq::GsiRouting& routing,
                                                                 irq::IrqfdBinder& binder);
  MsiRoutes(const MsiRoutes&) = delete;
  MsiRoutes& operator=(const MsiRoutes&) = delete;
  MsiRoutes(MsiRoutes&&) = delete;
  MsiRoutes& operator=(MsiRoutes&&) = delete;
  /// @brief Unbinds the irqfds and releases the GSIs.
  ~MsiRoutes();

  /// @brief Makes every vector's route what `state` says; returns the first error (the others are still tried).
  [[nodiscard]] Result<void> update(const MsiState& state);

  /// @brief How many vectors (the device's `capable`).
  [[nodiscard]] std::uint16_t vectors() const noexcept { return static_cast<std::uint16_t>(vectors_.size()); }
  /// @brief The eventfd (irqfd) of `vector`, nullptr if out of range.
  [[nodiscard]] const event::EventFd* irqfd(std::uint16_t vector) const;
  /// @brief What `vector` is wired to now (stage06's `VectorRoute`; `signals` counts nothing here: the writer is
  /// the kernel).
  [[nodiscard]] std::optional<irq::VectorRoute> route(std::uint16_t vector) const;
  /// @brief Every vector's route, in order.
  [[nodiscard]] std::vector<irq::VectorRoute> routes() const;

 private:
  struct Vector {
    std::uint32_t gsi;
    event::EventFd irqfd;
    bool bound = false;
    std::optional<pci::MsiMessage> message;
  };
  MsiRoutes(irq::GsiRouting& routing, irq::IrqfdBinder& binder) : routing_(routing), binder_(binder) {}

  irq::GsiRouting& routing_;
  irq::IrqfdBinder& binder_;
  mutable std::mutex mutex_;
  std::vector<Vector> vectors_;
};

}  // namespace vmm::vfio
