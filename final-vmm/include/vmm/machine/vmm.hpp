#pragma once
/// @file
/// @brief `Vmm`: final-vmm's machine. Every stage's parts assembled into a PC that boots Linux: RAM with an e820 map,
///        the kernel and initramfs, N vCPUs described by an MP table, the in-kernel irqchip and PIT, a 16550 console,
///        an i8042 for the reset line, and PCI bus 0 with virtio, vhost-user and VFIO devices.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "vmm/boot/linux_loader.hpp"
#include "vmm/devices/cmos/cmos.hpp"
#include "vmm/devices/i8042/i8042.hpp"
#include "vmm/devices/kvm_irq_line.hpp"
#include "vmm/devices/serial/uart16550.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/machine/exit_counters.hpp"
#include "vmm/machine/topology.hpp"
#include "vmm/machine/vcpu_loop.hpp"
#include "vmm/machine/vm_config.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/x86_layout.hpp"
#include "vmm/pci/address_allocator.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/vfio/container.hpp"
#include "vmm/vfio/device_memory.hpp"
#include "vmm/vfio/group.hpp"
#include "vmm/vfio/guest_ram_dma.hpp"
#include "vmm/vfio/kvm_vfio_device.hpp"
#include "vmm/vfio/vfio_pci_device.hpp"
#include "vmm/vhost/frontend.hpp"
#include "vmm/virtio/notify_ioeventfds.hpp"
#include "vmm/virtio/threaded_device.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace vmm::machine {

/// @brief Why the VM ended.
enum class VmExitReason {
  Reset,        ///< The guest pulled the i8042 reset line (Linux `reboot`, or `panic=N` rebooting after a panic).
  TripleFault,  ///< KVM_EXIT_SHUTDOWN: a triple fault, which resets a PC (Linux `reboot=t`).
  Stopped,      ///< The host asked (SIGINT, SIGTERM, the console's Ctrl-A x).
  Error,        ///< A vCPU stopped on something it cannot handle (an emulation failure, an unhandled exit).
};

/// @brief "reset", "triple fault", "stopped", "error".
[[nodiscard]] const char* to_string(VmExitReason reason);

/// @brief How the VM ended.
struct VmExit {
  VmExitReason reason = VmExitReason::Stopped;  ///< Why.
  std::string detail;                           ///< For errors: the vCPU, the exit and its registers.
};

/// @brief Where `Vmm::create` put things, for --trace, tests and gdb.
struct BootInfo {
  boot::LoadedKernel kernel;               ///< The kernel as loaded.
  std::optional<std::uint64_t> initramfs;  ///< Where the initramfs went.
  std::uint64_t initramfs_size = 0;        ///< Its size.
  std::string cmdline;                     ///< The command line as the kernel gets it.
  std::uint64_t zero_page = 0;             ///< Guest address of boot_params.
  std::size_t mptable_bytes = 0;           ///< Size of the MP table at the EBDA.
};

/// @brief The whole VMM: build it from a `VmConfig`, `start` it, and hear once how it ended.
///
/// Threads: one per vCPU (stage03's `VcpuThread`), one worker per in-process virtio device (stage06's
/// `ThreadedDevice`), the rx thread of each virtio-net, the event thread of each vhost-user frontend, the MSI-X relay
/// of each VFIO device. The caller's thread runs its own event loop (console input, signals) and calls `stop`.
class Vmm {
 public:
  /// @brief Called once, from whichever thread saw the end first (a vCPU thread, usually).
  using OnExit = std::function<void(const VmExit&)>;

  /// @brief Builds the VM: memory, kernel, boot structures, vCPUs and devices. Nothing runs until `start`.
  [[nodiscard]] static Result<std::unique_ptr<Vmm>> create(const VmConfig& config,
                                                           devices::Uart16550::OutputSink console);
  Vmm(const Vmm&) = delete;
  Vmm& operator=(const Vmm&) = delete;
  Vmm(Vmm&&) = delete;
  Vmm& operator=(Vmm&&) = delete;
  /// @brief Stops the vCPUs, then takes the devices apart while the VM they refer to still exists.
  ~Vmm();

  /// @brief Starts one thread per vCPU. `on_exit` hears how the VM ended, once.
  [[nodiscard]] Result<void> start(OnExit on_exit);
  /// @brief Stops every vCPU and joins the threads (not from a vCPU thread). The end is `Stopped` unless something
  ///        else was reported first.
  void stop();
  /// @brief Lets a debugger (the gdb stub) hold the vCPUs and take their debug exits. Call before `start`; `hook`
  ///        must outlive the vCPU threads.
  void set_debug_hook(VcpuDebugHook* hook) noexcept { debug_hook_ = hook; }

  /// @brief COM1.
  [[nodiscard]] devices::Uart16550& uart() noexcept { return *uart_; }
  /// @brief The keyboard controller.
  [[nodiscard]] devices::I8042& i8042() noexcept { return *i8042_; }
  /// @brief Guest memory.
  [[nodiscard]] const memory::GuestMemory& memory() const noexcept { return memory_; }
  /// @brief The KVM VM.
  [[nodiscard]] kvm::Vm& vm() noexcept { return *vm_; }
  /// @brief The vCPUs (vCPU i has APIC ID i).
  [[nodiscard]] std::size_t vcpu_count() const noexcept { return vcpus_.size(); }
  /// @brief vCPU `i`.
  [[nodiscard]] kvm::Vcpu& vcpu(std::size_t i) noexcept { return *vcpus_[i]; }
  /// @brief The buses.
  [[nodiscard]] Buses& buses() noexcept { return buses_; }
  /// @brief PCI bus 0.
  [[nodiscard]] pci::PciRoot& pci_root() noexcept { return *root_; }
  /// @brief What was loaded where.
  [[nodiscard]] const BootInfo& boot_info() const noexcept { return boot_; }
  /// @brief The exits every vCPU loop counted.
  [[nodiscard]] const ExitCounters& exits() const noexcept { return *exits_; }
  /// @brief The machine as it is now (BAR placements and MSI-X routes change as the guest programs them).
  [[nodiscard]] Topology topology() const;
  /// @brief One line per device with its counters, for --stats.
  [[nodiscard]] std::vector<std::string> device_stats() const;

 private:
  // One virtio device behind virtio-pci: its model, how it runs, its interrupt routes and its notify ioeventfds.
  struct VirtioSlot {
    std::uint8_t slot = 0;
    std::string backend;                                 // for the topology: the file, tap or socket behind it
    std::shared_ptr<virtio::VirtioDevice> model;         // the device model (or the vhost-user frontend)
    std::shared_ptr<virtio::ThreadedDevice> threaded;    // its worker (in-process devices)
    std::shared_ptr<vhost::VhostUserFrontend> frontend;  // vhost-user devices
    std::unique_ptr<irq::MsixRoutes> routes;             // one GSI route + irqfd per MSI-X vector
    std::shared_ptr<virtio::VirtioPciDevice> transport;
    std::unique_ptr<virtio::NotifyIoeventfds> ioeventfds;
  };
  // One VFIO device and what keeps it alive.
  struct VfioSlot {
    std::uint8_t slot = 0;
    std::string bdf;
    std::unique_ptr<vfio::Group> group;
    std::shared_ptr<vfio::Device> device;
    std::shared_ptr<vfio::VfioPciDevice> passthrough;
  };

  Vmm() = default;
  Result<void> build_memory(const VmConfig& config);
  Result<void> load_guest(const VmConfig& config);
  Result<void> create_vcpus(const VmConfig& config);
  Result<void> create_legacy_devices(devices::Uart16550::OutputSink console);
  Result<void> create_pci_devices(const VmConfig& config);
  Result<void> add_virtio(std::shared_ptr<virtio::VirtioDevice> model, std::string backend, bool threaded);
  Result<void> add_vhost_user(const VhostUserConfig& config, std::uint16_t device_type);
  Result<void> add_vfio(const VfioConfig& config);
  Result<void> assign_bars(std::uint8_t slot);
  void write_config(std::uint8_t slot, std::uint16_t reg, std::uint32_t value, std::size_t size);
  void on_bar(const pci::BarMapping& mapping, bool placed);
  void report(VmExit exit);
  [[nodiscard]] std::uint8_t next_slot() { return next_slot_++; }

  // Declaration order is construction order; destruction runs backwards, and ~Vmm tears the devices down by hand
  // first (they hold references into the VM, the buses and the routing table).
  VmConfig config_;
  std::unique_ptr<ExitCounters> exits_ = std::make_unique<ExitCounters>();
  std::optional<kvm::Kvm> kvm_;
  std::optional<kvm::Vm> vm_;
  memory::x86::Layout layout_;
  memory::GuestMemory memory_;
  std::vector<std::unique_ptr<kvm::Vcpu>> vcpus_;
  VcpuDebugHook* debug_hook_ = nullptr;
  BootInfo boot_;
  Buses buses_;
  std::unique_ptr<devices::KvmIrqLine> irq1_;
  std::unique_ptr<devices::KvmIrqLine> irq4_;
  std::shared_ptr<devices::Uart16550> uart_;
  std::unique_ptr<devices::I8042> i8042_;
  std::unique_ptr<pci::PciRoot> root_;
  std::optional<pci::AddressAllocator> mmio_window_;
  std::optional<pci::AddressAllocator> io_window_;
  std::unique_ptr<irq::KvmGsiRouting> routing_;
  std::unique_ptr<irq::KvmIrqfdBinder> binder_;
  std::vector<VirtioSlot> virtio_;
  std::unique_ptr<vfio::Container> container_;
  std::optional<vfio::KvmVfioDevice> kvm_vfio_;
  std::unique_ptr<vfio::GuestRamDma> dma_;
  std::unique_ptr<vfio::KvmDeviceMemorySlots> device_slots_;
  std::vector<VfioSlot> vfio_;
  std::uint8_t next_slot_ = 1;
  std::vector<std::unique_ptr<VcpuThread>> threads_;  // appended by start() under exit_mutex_
  std::mutex exit_mutex_;
  OnExit on_exit_;
  bool exited_ = false;
};

}  // namespace vmm::machine
