#pragma once
/// @file
/// @brief `PciVm`: stage04's machine. stage03's `SerialVm` plus PCI bus 0: configuration mechanism #1 at 0xCF8, the
///        ECAM window at 0xE000_0000 and the PCI test device at 00:03.0, its MSI-X messages sent with KVM_SIGNAL_MSI.

#include <cstdint>
#include <functional>
#include <memory>

#include "serial_vm.hpp"
#include "vmm/pci/msi.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/pci/pci_test_device.hpp"

namespace vmm::stage04 {

/// @brief The test device's slot on bus 0.
inline constexpr std::uint8_t kTestDeviceSlot = 3;

/// @brief The stage04 machine.
class PciVm {
 public:
  /// @brief Builds the VM; the UART's output goes to `sink`, the guest's exit status to `on_exit` (vCPU thread).
  [[nodiscard]] static Result<std::unique_ptr<PciVm>> create(const GuestImage& image,
                                                             devices::Uart16550::OutputSink sink,
                                                             std::function<void(std::uint32_t)> on_exit,
                                                             const stage03::SerialVmConfig& config = {});
  PciVm(const PciVm&) = delete;
  PciVm& operator=(const PciVm&) = delete;
  PciVm(PciVm&&) = delete;
  PciVm& operator=(PciVm&&) = delete;
  /// @brief Stops the vCPU before the PCI devices go away.
  ~PciVm();

  /// @brief Starts the vCPU thread; `on_vcpu_exit` runs on it when the loop ends.
  [[nodiscard]] Result<void> start(machine::VcpuThread::OnExit on_vcpu_exit) {
    return serial_->start(std::move(on_vcpu_exit));
  }
  /// @brief Kicks the vCPU out of KVM_RUN and joins its thread.
  void stop() { serial_->stop(); }

  /// @brief stage03's machine underneath: UART, report ports, buses, VM.
  [[nodiscard]] stage03::SerialVm& serial() noexcept { return *serial_; }
  /// @brief PCI bus 0.
  [[nodiscard]] pci::PciRoot& root() noexcept { return *root_; }
  /// @brief The test device at 00:03.0.
  [[nodiscard]] pci::PciTestDevice& test_device() noexcept { return *test_device_; }

 private:
  PciVm() = default;

  // Destroyed bottom-up: the root removes its BARs from the buses, which the SerialVm owns, so it goes first.
  std::unique_ptr<stage03::SerialVm> serial_;
  std::unique_ptr<pci::KvmSignalMsi> msi_;
  std::unique_ptr<pci::PciRoot> root_;
  std::shared_ptr<pci::PciTestDevice> test_device_;
};

}  // namespace vmm::stage04
