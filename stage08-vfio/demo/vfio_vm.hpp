#pragma once
/// @file
/// @brief `VfioVm`: stage08's machine. stage04's `PciVm` with a real PCI device passed through with VFIO at 00:05.0:
///        its BARs mapped into the guest, all guest RAM mapped for its DMA, its MSI wired to KVM irqfds.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "pci_vm.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/machine/exit_counters.hpp"
#include "vmm/vfio/container.hpp"
#include "vmm/vfio/device_memory.hpp"
#include "vmm/vfio/group.hpp"
#include "vmm/vfio/guest_ram_dma.hpp"
#include "vmm/vfio/kvm_vfio_device.hpp"
#include "vmm/vfio/vfio_pci_device.hpp"

namespace vmm::stage08 {

/// @brief The passed-through device's slot on bus 0.
inline constexpr std::uint8_t kPassthroughSlot = 5;
/// @brief The first KVM memory slot used for BARs (stage02 uses the lowest ones for RAM).
inline constexpr std::uint32_t kFirstBarSlot = 16;

/// @brief How to build the machine.
struct VfioVmConfig {
  stage03::SerialVmConfig serial;        ///< RAM size, tracing.
  std::string bdf;                       ///< The host device, "0000:00:03.0"; bound to vfio-pci.
  std::filesystem::path sysfs = "/sys";  ///< Where to look up its group and driver.
  bool map_bars = true;                  ///< BARs as memory slots (off: every BAR access traps to the VMM).
};

/// @brief The stage08 machine.
class VfioVm {
 public:
  /// @brief Opens VFIO first (a host without it fails here, before any VM exists), then builds the VM and passes the
  /// device through. The UART's output goes to `sink`, the guest's exit status to `on_exit` (vCPU thread).
  [[nodiscard]] static Result<std::unique_ptr<VfioVm>> create(const GuestImage& image,
                                                              devices::Uart16550::OutputSink sink,
                                                              std::function<void(std::uint32_t)> on_exit,
                                                              const VfioVmConfig& config);
  VfioVm(const VfioVm&) = delete;
  VfioVm& operator=(const VfioVm&) = delete;
  VfioVm(VfioVm&&) = delete;
  VfioVm& operator=(VfioVm&&) = delete;
  /// @brief Stops the vCPU, then takes the passthrough apart while the VM exists (see the members' order).
  ~VfioVm();

  /// @brief Starts the vCPU thread; `on_vcpu_exit` runs on it when the loop ends.
  [[nodiscard]] Result<void> start(machine::VcpuThread::OnExit on_vcpu_exit) {
    return pci_->start(std::move(on_vcpu_exit));
  }
  /// @brief Kicks the vCPU out of KVM_RUN and joins its thread.
  void stop() { pci_->stop(); }

  /// @brief stage04's machine underneath.
  [[nodiscard]] stage04::PciVm& pci() noexcept { return *pci_; }
  /// @brief The passed-through device on the guest's bus.
  [[nodiscard]] vfio::VfioPciDevice& passthrough() noexcept { return *passthrough_; }
  /// @brief The VFIO container (IOMMU context).
  [[nodiscard]] vfio::Container& container() noexcept { return *container_; }
  /// @brief The device's IOMMU group.
  [[nodiscard]] vfio::Group& group() noexcept { return *group_; }
  /// @brief Guest RAM's DMA mappings.
  [[nodiscard]] vfio::GuestRamDma& dma() noexcept { return *dma_; }
  /// @brief KVM's VFIO pseudo-device.
  [[nodiscard]] vfio::KvmVfioDevice& kvm_vfio() noexcept { return *kvm_vfio_; }
  /// @brief The GSI routing table (the device's MSI routes are in it).
  [[nodiscard]] irq::GsiRouting& routing() noexcept { return *routing_; }
  /// @brief The BARs' memory slots (null with map_bars off).
  [[nodiscard]] vfio::KvmDeviceMemorySlots* bar_slots() noexcept { return slots_.get(); }
  /// @brief The userspace exits the vCPU loop counted.
  [[nodiscard]] const machine::ExitCounters& exits() const noexcept { return *exits_; }

 private:
  VfioVm() = default;

  // Teardown order (the destructor spells it out): the vCPU stops; the VM goes, and with its PCI root the last
  // reference to the passthrough device, whose destructor disables the device's interrupts, removes its memory slots
  // and unbinds its irqfds while the VM, the slots, routes and binder still exist; then those; then the DMA
  // mappings (before the container that holds them) and the KVM-VFIO device; the VFIO device, group and container
  // last: closing the group hands the device back to the host.
  std::unique_ptr<machine::ExitCounters> exits_ = std::make_unique<machine::ExitCounters>();
  std::unique_ptr<vfio::Container> container_;
  std::unique_ptr<vfio::Group> group_;
  std::shared_ptr<vfio::Device> device_;
  std::unique_ptr<stage04::PciVm> pci_;
  std::optional<vfio::KvmVfioDevice> kvm_vfio_;
  std::unique_ptr<vfio::GuestRamDma> dma_;
  std::unique_ptr<irq::KvmGsiRouting> routing_;
  std::unique_ptr<irq::KvmIrqfdBinder> binder_;
  std::unique_ptr<vfio::KvmDeviceMemorySlots> slots_;
  std::shared_ptr<vfio::VfioPciDevice> passthrough_;
};

}  // namespace vmm::stage08
