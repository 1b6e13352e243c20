#pragma once
/// @file
/// @brief `VhostUserVm`: stage07's machine. stage04's `PciVm` with guest RAM in memfds and a virtio device at 00:04.0
///        whose queues a vhost-user backend in another process serves: the transport stays in the VMM, the rings
///        move out. Kicks reach the backend through ioeventfds, its interrupts reach the guest through irqfds.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "eventfd_rng_vm.hpp"
#include "pci_vm.hpp"
#include "vmm/machine/exit_counters.hpp"
#include "vmm/vhost/frontend.hpp"
#include "vmm/virtio/notify_ioeventfds.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"
#include "vmmlab/virtio_rng_options.h"

namespace vmm::stage07 {

/// @brief The vhost-user device's slot on bus 0: where stage05 put the in-process rng, so the same guest finds it.
inline constexpr std::uint8_t kVhostUserSlot = 4;

/// @brief How to build the machine.
struct VhostUserVmConfig {
  stage03::SerialVmConfig serial;             ///< RAM size, tracing (RAM is always memfd-backed here).
  std::optional<vmmlab_rng_options> options;  ///< What stage05's rng guest does (none: its defaults).
  vhost::FrontendConfig frontend;             ///< The backend's socket, the device type, queues, tracing.
  bool ioeventfd = true;  ///< Register the notify addresses as ioeventfds (off: every kick exits to the VMM, which
                          ///< writes the kick eventfd itself).
  bool irqfd = true;      ///< Hand the backend the MSI-X vector's irqfd as its call fd (off: the VMM relays).
};

/// @brief The stage07 machine.
class VhostUserVm {
 public:
  /// @brief Builds the VM and connects to the backend; the UART's output goes to `sink`, the guest's exit status to
  /// `on_exit` (vCPU thread).
  [[nodiscard]] static Result<std::unique_ptr<VhostUserVm>> create(const GuestImage& image,
                                                                   devices::Uart16550::OutputSink sink,
                                                                   std::function<void(std::uint32_t)> on_exit,
                                                                   const VhostUserVmConfig& config);
  VhostUserVm(const VhostUserVm&) = delete;
  VhostUserVm& operator=(const VhostUserVm&) = delete;
  VhostUserVm(VhostUserVm&&) = delete;
  VhostUserVm& operator=(VhostUserVm&&) = delete;
  /// @brief Stops the vCPU, stops the backend's rings, then unregisters eventfds and routes while the VM exists.
  ~VhostUserVm();

  /// @brief Starts the vCPU thread; `on_vcpu_exit` runs on it when the loop ends.
  [[nodiscard]] Result<void> start(machine::VcpuThread::OnExit on_vcpu_exit) {
    return pci_->start(std::move(on_vcpu_exit));
  }
  /// @brief Kicks the vCPU out of KVM_RUN and joins its thread.
  void stop() { pci_->stop(); }

  /// @brief stage04's machine underneath.
  [[nodiscard]] stage04::PciVm& pci() noexcept { return *pci_; }
  /// @brief The virtio-pci transport (in the VMM).
  [[nodiscard]] virtio::VirtioPciDevice& transport() noexcept { return *transport_; }
  /// @brief The vhost-user frontend the transport drives.
  [[nodiscard]] vhost::VhostUserFrontend& frontend() noexcept { return *frontend_; }
  /// @brief The MSI-X routes (whose irqfds the backend writes).
  [[nodiscard]] irq::MsixRoutes& msix_routes() noexcept { return msi_->routes(); }
  /// @brief The ioeventfd registrations (null when built without them).
  [[nodiscard]] virtio::NotifyIoeventfds* ioeventfds() noexcept { return ioeventfds_.get(); }
  /// @brief The userspace exits the vCPU loop counted.
  [[nodiscard]] const machine::ExitCounters& exits() const noexcept { return *exits_; }
  /// @brief The kicks that reached the VMM as MMIO exits (0 with ioeventfds).
  [[nodiscard]] std::uint64_t notify_exits() const;
  /// @brief Times re-pointing a backend's call fd after an MSI-X change failed (the frontend keeps the error).
  [[nodiscard]] std::uint64_t call_errors() const noexcept { return call_errors_.load(std::memory_order_relaxed); }

 private:
  VhostUserVm() = default;

  std::unique_ptr<machine::ExitCounters> exits_ = std::make_unique<machine::ExitCounters>();
  std::atomic<std::uint64_t> call_errors_{0};
  std::shared_ptr<stage06::IrqfdMsi> msi_;
  std::shared_ptr<vhost::VhostUserFrontend> frontend_;
  std::unique_ptr<virtio::NotifyIoeventfds> ioeventfds_;
  std::shared_ptr<virtio::VirtioPciDevice> transport_;
  std::unique_ptr<stage04::PciVm> pci_;
};

}  // namespace vmm::stage07
