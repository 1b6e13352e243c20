// Lab 03, exercise 1 (reference): a second UART, COM2 at 0x2f8 on IRQ 3.
#include "lab03.hpp"

namespace lab03 {

namespace {

// The UART and the line it interrupts through, in one allocation. Members are built in order and destroyed in
// reverse, so the line exists before the UART takes a reference to it and outlives it.
struct Com2 {
  Com2(const vmm::kvm::Vm& vm, vmm::devices::Uart16550::OutputSink sink)
      : irq(vm, kCom2Irq), uart(irq, std::move(sink)) {}
  vmm::devices::KvmIrqLine irq;
  vmm::devices::Uart16550 uart;
};

}  // namespace

vmm::Result<std::shared_ptr<vmm::devices::Uart16550>> add_com2(vmm::stage03::SerialVm& vm,
                                                               vmm::devices::Uart16550::OutputSink sink) {
  auto both = std::make_shared<Com2>(vm.vm().vm(), std::move(sink));
  // The aliasing constructor: a pointer to the UART that shares ownership of the whole Com2. Whoever holds it (the
  // bus, the caller) keeps the line alive too; neither can be destroyed without the other.
  std::shared_ptr<vmm::devices::Uart16550> uart(both, &both->uart);
  if (auto rc = vm.buses().io.insert(uart, kCom2Base, vmm::devices::uart::kPortCount, "serial1 (COM2)"); !rc) {
    return std::unexpected(rc.error());
  }
  return uart;
}

}  // namespace lab03
