#include "serial_vm.hpp"

namespace vmm::stage03 {

Result<std::unique_ptr<SerialVm>> SerialVm::create(const GuestImage& image, devices::Uart16550::OutputSink sink,
                                                   std::function<void(std::uint32_t)> on_exit,
                                                   const SerialVmConfig& config) {
  // stage02 builds memory, slots, the vCPU and long mode; the irqchip has to exist before the vCPU does.
  auto vm = stage02::LongModeVm::create(image, {.ram_size = config.ram_size,
                                                .memfd = config.shared_memory,
                                                .hugepages = false,
                                                .dirty_logging = false,
                                                .trace = false,
                                                .record_trace = false,
                                                .prepare_vm = devices::create_irqchip});
  if (!vm) {
    return std::unexpected(vm.error());
  }
  std::unique_ptr<SerialVm> machine(new SerialVm(std::move(*vm), config));
  if (config.make_irq_line) {
    auto line = config.make_irq_line(machine->vm_.vm(), kCom1Irq);
    if (!line) {
      return std::unexpected(line.error());
    }
    machine->irq4_ = std::move(*line);
  } else {
    machine->irq4_ = std::make_unique<devices::KvmIrqLine>(machine->vm_.vm(), kCom1Irq);
  }
  machine->uart_ = std::make_shared<devices::Uart16550>(*machine->irq4_, std::move(sink));
  machine->report_ = std::make_shared<devices::ReportChannel>(std::move(on_exit));
  if (auto rc = machine->buses_.io.insert(machine->uart_, kCom1Base, 8, "serial0 (COM1)"); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = machine->buses_.io.insert(machine->report_, devices::ReportChannel::kBase,
                                          devices::ReportChannel::kSize, "report");
      !rc) {
    return std::unexpected(rc.error());
  }
  return machine;
}

Result<void> SerialVm::start(machine::VcpuThread::OnExit on_vcpu_exit) {
  auto thread = machine::VcpuThread::start(
      vm_.vcpu(), buses_, {.trace = config_.trace, .counters = config_.exit_counters, .debug_hook = debug_hook_},
      std::move(on_vcpu_exit));
  if (!thread) {
    return std::unexpected(thread.error());
  }
  vcpu_thread_ = std::move(*thread);
  return {};
}

void SerialVm::stop() {
  if (vcpu_thread_) {
    vcpu_thread_->request_stop();
    vcpu_thread_->join();
  }
}

SerialVm::~SerialVm() {
  stop();
}

}  // namespace vmm::stage03
