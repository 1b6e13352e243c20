#pragma once
/// @file
/// @brief `VirtioRngVm`: stage05's machine. stage04's `PciVm` plus a virtio-rng device behind the virtio-pci
///        transport at 00:04.0, its notifications handled on the vCPU thread, its MSI-X messages sent with
///        KVM_SIGNAL_MSI.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "pci_vm.hpp"
#include "vmm/pci/msi.hpp"
#include "vmm/virtio/retry_timer.hpp"
#include "vmm/virtio/rng/rng_device.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"
#include "vmmlab/virtio_rng_options.h"

namespace vmm::stage05 {

/// @brief The virtio-rng device's slot on bus 0 (the stage04 test device stays at 00:03.0).
inline constexpr std::uint8_t kRngSlot = 4;

/// @brief How to build the machine.
struct VirtioRngVmConfig {
  stage03::SerialVmConfig serial;                 ///< RAM size, tracing.
  std::optional<vmmlab_rng_options> options;      ///< What the guest driver does (none: its defaults).
  std::optional<std::uint64_t> bytes_per_second;  ///< Rate-limit the device.
  std::uint64_t burst_bytes = 0;                  ///< The rate limiter's bucket (0: one second's worth).
  std::uint16_t queue_size = 256;                 ///< The device's maximum queue size.
  /// How the rng's MSI-X messages reach the guest: made once the VM exists. Default: KVM_SIGNAL_MSI
  /// (`pci::KvmSignalMsi`); stage06 passes irqfds on GSI routes.
  std::function<Result<std::shared_ptr<pci::MsiSink>>(kvm::Vm&)> make_msi_sink = nullptr;
  /// What the transport drives: the rng itself by default; stage06 wraps it in a device that works on its own thread.
  std::function<Result<std::shared_ptr<virtio::VirtioDevice>>(std::shared_ptr<virtio::rng::RngDevice>)> wrap_device =
      nullptr;
};

/// @brief The guest driver's defaults (both phases, 4 batches of 4 requests of 16 bytes, queue size 16), as a
/// struct the VMM can change and pass in `VirtioRngVmConfig::options`.
[[nodiscard]] vmmlab_rng_options default_rng_options();

/// @brief The stage05 machine.
class VirtioRngVm {
 public:
  /// @brief Builds the VM; the UART's output goes to `sink`, the guest's exit status to `on_exit` (vCPU thread).
  [[nodiscard]] static Result<std::unique_ptr<VirtioRngVm>> create(const GuestImage& image,
                                                                   devices::Uart16550::OutputSink sink,
                                                                   std::function<void(std::uint32_t)> on_exit,
                                                                   const VirtioRngVmConfig& config = {});
  VirtioRngVm(const VirtioRngVm&) = delete;
  VirtioRngVm& operator=(const VirtioRngVm&) = delete;
  VirtioRngVm(VirtioRngVm&&) = delete;
  VirtioRngVm& operator=(VirtioRngVm&&) = delete;
  /// @brief Stops the vCPU, then takes the devices down before the VM they signal into.
  ~VirtioRngVm();

  /// @brief Starts the vCPU thread; `on_vcpu_exit` runs on it when the loop ends.
  [[nodiscard]] Result<void> start(machine::VcpuThread::OnExit on_vcpu_exit) {
    return pci_->start(std::move(on_vcpu_exit));
  }
  /// @brief Kicks the vCPU out of KVM_RUN and joins its thread.
  void stop() { pci_->stop(); }

  /// @brief stage04's machine underneath.
  [[nodiscard]] stage04::PciVm& pci() noexcept { return *pci_; }
  /// @brief The virtio-pci transport of the rng.
  [[nodiscard]] virtio::VirtioPciDevice& transport() noexcept { return *transport_; }
  /// @brief Where the rng's MSI-X messages go.
  [[nodiscard]] pci::MsiSink& msi_sink() noexcept { return *msi_; }
  /// @brief The rng device model.
  [[nodiscard]] virtio::rng::RngDevice& rng() noexcept { return *rng_; }

 private:
  VirtioRngVm() = default;

  std::unique_ptr<stage04::PciVm> pci_;
  std::shared_ptr<pci::MsiSink> msi_;
  std::shared_ptr<virtio::ThreadRetryTimer> timer_;
  std::shared_ptr<virtio::rng::RngDevice> rng_;
  std::shared_ptr<virtio::VirtioPciDevice> transport_;
};

}  // namespace vmm::stage05
