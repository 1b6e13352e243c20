#pragma once
/// @file
/// @brief `SerialVm`: stage03's machine. stage02's long-mode VM plus an in-kernel irqchip, the buses, a 16550A on
///        COM1 (IRQ 4) and the runtime's report ports, with the vCPU on its own thread.

#include <cstdint>
#include <functional>
#include <memory>

#include "long_mode_vm.hpp"
#include "vmm/devices/kvm_irq_line.hpp"
#include "vmm/devices/report_channel.hpp"
#include "vmm/devices/serial/uart16550.hpp"
#include "vmm/machine/vcpu_loop.hpp"

namespace vmm::stage03 {

/// @brief COM1: where PCs (and Linux's 8250 driver) look for the first serial port.
inline constexpr std::uint16_t kCom1Base = 0x3f8;
/// @brief COM1's interrupt line.
inline constexpr std::uint32_t kCom1Irq = 4;

/// @brief How to build the machine.
struct SerialVmConfig {
  std::uint64_t ram_size = 16ull << 20;  ///< Guest RAM.
  bool trace = false;                    ///< Print every exit on stderr.
  /// Back RAM with a memfd another process can map (stage07's vhost-user backends need it); anonymous otherwise.
  bool shared_memory = false;
  /// Counts the vCPU loop's exits (by reason and address), or null; it must outlive the machine's vCPU thread.
  machine::ExitCounters* exit_counters = nullptr;
  /// How COM1's interrupt line reaches the irqchip: made once the VM (and its irqchip) exists. Default: KVM_IRQ_LINE
  /// (`devices::KvmIrqLine`); stage06 passes an irqfd line. The UART does not change either way.
  std::function<Result<std::unique_ptr<devices::IrqLine>>(kvm::Vm& vm, std::uint32_t gsi)> make_irq_line = nullptr;
};

/// @brief The stage03 machine.
class SerialVm {
 public:
  /// @brief Builds the VM; the UART's output goes to `sink`, the guest's exit status to `on_exit` (vCPU thread).
  [[nodiscard]] static Result<std::unique_ptr<SerialVm>> create(const GuestImage& image,
                                                                devices::Uart16550::OutputSink sink,
                                                                std::function<void(std::uint32_t)> on_exit,
                                                                const SerialVmConfig& config = {});
  SerialVm(const SerialVm&) = delete;
  SerialVm& operator=(const SerialVm&) = delete;
  SerialVm(SerialVm&&) = delete;
  SerialVm& operator=(SerialVm&&) = delete;
  /// @brief Stops the vCPU thread if it is still running.
  ~SerialVm();

  /// @brief Starts the vCPU thread; `on_vcpu_exit` runs on it when the loop ends.
  [[nodiscard]] Result<void> start(machine::VcpuThread::OnExit on_vcpu_exit);
  /// @brief Kicks the vCPU out of KVM_RUN and joins its thread.
  void stop();
  /// @brief Lets a debugger (the gdb stub) hold the vCPU and take its debug exits. Call before `start`; `hook` must
  ///        outlive the vCPU thread.
  void set_debug_hook(machine::VcpuDebugHook* hook) noexcept { debug_hook_ = hook; }

  /// @brief COM1.
  [[nodiscard]] devices::Uart16550& uart() noexcept { return *uart_; }
  /// @brief COM1's interrupt line.
  [[nodiscard]] devices::IrqLine& irq_line() noexcept { return *irq4_; }
  /// @brief The runtime's report ports.
  [[nodiscard]] devices::ReportChannel& report() noexcept { return *report_; }
  /// @brief The I/O and MMIO buses.
  [[nodiscard]] machine::Buses& buses() noexcept { return buses_; }
  /// @brief stage02's machine underneath: memory, VM, vCPU.
  [[nodiscard]] stage02::LongModeVm& vm() noexcept { return vm_; }

 private:
  SerialVm(stage02::LongModeVm vm, SerialVmConfig config) : vm_(std::move(vm)), config_(config) {}

  stage02::LongModeVm vm_;
  SerialVmConfig config_;
  machine::Buses buses_;
  std::unique_ptr<devices::IrqLine> irq4_;
  std::shared_ptr<devices::Uart16550> uart_;
  std::shared_ptr<devices::ReportChannel> report_;
  machine::VcpuDebugHook* debug_hook_ = nullptr;
  std::unique_ptr<machine::VcpuThread> vcpu_thread_;
};

}  // namespace vmm::stage03
