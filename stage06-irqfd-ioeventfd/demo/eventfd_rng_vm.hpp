#pragma once
/// @file
/// @brief `EventfdRngVm`: stage06's machine. stage05's `VirtioRngVm` wired the way real VMMs wire virtio: the rng in
///        a `ThreadedDevice` (its own worker thread), ioeventfds on its notify addresses, its MSI-X vectors on irqfds
///        and GSI routes (`MsixRoutes`), and the UART on an irqfd line.

#include <cstdint>
#include <functional>
#include <memory>

#include "virtio_rng_vm.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/machine/exit_counters.hpp"
#include "vmm/virtio/notify_ioeventfds.hpp"
#include "vmm/virtio/threaded_device.hpp"

namespace vmm::stage06 {

/// @brief How to build the machine.
struct EventfdRngVmConfig {
  stage05::VirtioRngVmConfig rng;  ///< The stage05 machine underneath (guest options, RAM, rate limit).
  bool ioeventfd = true;           ///< Register the notify addresses as ioeventfds (off: kicks exit to userspace).
  bool irqfd_uart = true;          ///< Drive the UART's IRQ 4 through an irqfd (off: KVM_IRQ_LINE, as in stage03).
};

/// @brief The transport's `MsiSink` in stage06: the GSI routing table, the irqfd binder and the per-vector routes,
///        owned together.
class IrqfdMsi final : public pci::MsiSink {
 public:
  /// @brief Routes for `vectors` MSI-X vectors on `vm`, which must outlive them.
  [[nodiscard]] static Result<std::shared_ptr<IrqfdMsi>> create(const kvm::Vm& vm, std::uint16_t vectors);
  /// @brief Writes the vector's irqfd (after making sure its route carries `message`); an error once detached.
  Result<void> signal(const pci::MsiMessage& message, std::uint16_t vector_index) override;
  /// @brief Unbinds the irqfds and releases the routes now, while the VM they belong to still exists (the MSI-X
  /// table that uses this sink may outlive that moment). Nothing may signal concurrently.
  void detach() noexcept { routes_.reset(); }
  /// @brief The per-vector routes (attach them to the device's MSI-X table).
  [[nodiscard]] irq::MsixRoutes& routes() noexcept { return *routes_; }
  /// @brief The routing table.
  [[nodiscard]] irq::GsiRouting& routing() noexcept { return *routing_; }

 private:
  IrqfdMsi() = default;
  std::unique_ptr<irq::KvmGsiRouting> routing_;
  std::unique_ptr<irq::KvmIrqfdBinder> binder_;
  std::unique_ptr<irq::MsixRoutes> routes_;
};

/// @brief The userspace exits in `exits` that were writes to the rng's notify area (BAR0 + kNotifyOffset, wherever
///        the guest put BAR0 in `vm`): the kicks that reached the VMM's run loop.
[[nodiscard]] std::uint64_t notify_exits(const machine::ExitCountersSnapshot& exits, stage05::VirtioRngVm& vm);

/// @brief The same for any virtio-pci device: the writes in `exits` to the notify area of the device in slot `slot`,
///        wherever `root` placed its BAR0 (stage07's vhost-user machine counts its kicks with it).
[[nodiscard]] std::uint64_t notify_exits(const machine::ExitCountersSnapshot& exits, const pci::PciRoot& root,
                                         std::uint8_t slot);

/// @brief The stage06 machine.
class EventfdRngVm {
 public:
  /// @brief Builds the VM; the UART's output goes to `sink`, the guest's exit status to `on_exit` (vCPU thread).
  [[nodiscard]] static Result<std::unique_ptr<EventfdRngVm>> create(const GuestImage& image,
                                                                    devices::Uart16550::OutputSink sink,
                                                                    std::function<void(std::uint32_t)> on_exit,
                                                                    const EventfdRngVmConfig& config = {});
  EventfdRngVm(const EventfdRngVm&) = delete;
  EventfdRngVm& operator=(const EventfdRngVm&) = delete;
  EventfdRngVm(EventfdRngVm&&) = delete;
  EventfdRngVm& operator=(EventfdRngVm&&) = delete;
  /// @brief Stops the vCPU and the worker before the eventfds and routes go.
  ~EventfdRngVm();

  /// @brief Starts the vCPU thread; `on_vcpu_exit` runs on it when the loop ends.
  [[nodiscard]] Result<void> start(machine::VcpuThread::OnExit on_vcpu_exit) {
    return vm_->start(std::move(on_vcpu_exit));
  }
  /// @brief Kicks the vCPU out of KVM_RUN and joins its thread.
  void stop() { vm_->stop(); }

  /// @brief stage05's machine underneath.
  [[nodiscard]] stage05::VirtioRngVm& rng_vm() noexcept { return *vm_; }
  /// @brief The worker-thread wrapper around the rng.
  [[nodiscard]] virtio::ThreadedDevice& threaded() noexcept { return *threaded_; }
  /// @brief The MSI-X routes of the rng.
  [[nodiscard]] irq::MsixRoutes& msix_routes() noexcept { return msi_->routes(); }
  /// @brief The ioeventfd registrations (null when built without them).
  [[nodiscard]] virtio::NotifyIoeventfds* ioeventfds() noexcept { return ioeventfds_.get(); }
  /// @brief The userspace exits the vCPU loop counted.
  [[nodiscard]] const machine::ExitCounters& exits() const noexcept { return *exits_; }
  /// @brief The UART's irqfd line (null when the UART uses KVM_IRQ_LINE).
  [[nodiscard]] irq::IrqfdLine* uart_line() noexcept { return uart_line_; }

 private:
  EventfdRngVm() = default;

  std::unique_ptr<machine::ExitCounters> exits_ = std::make_unique<machine::ExitCounters>();
  std::shared_ptr<IrqfdMsi> msi_;
  std::shared_ptr<virtio::ThreadedDevice> threaded_;
  std::unique_ptr<virtio::NotifyIoeventfds> ioeventfds_;
  irq::IrqfdLine* uart_line_ = nullptr;  // owned by the SerialVm
  std::unique_ptr<stage05::VirtioRngVm> vm_;
};

}  // namespace vmm::stage06
