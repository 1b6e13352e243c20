// Lab 03, exercise 1: a second UART, COM2 at 0x2f8 on IRQ 3. See labs/03-serial/README.md.
#include "lab03.hpp"

namespace lab03 {

vmm::Result<std::shared_ptr<vmm::devices::Uart16550>> add_com2(vmm::stage03::SerialVm& vm,
                                                               vmm::devices::Uart16550::OutputSink sink) {
  // TODO: a KvmIrqLine for GSI 3 (on vm.vm().vm()) that lives as long as the UART, a Uart16550 on it writing to
  // `sink`, inserted on vm.buses().io at kCom2Base (8 ports), named like COM1's entry ("serial1 (COM2)").
  (void)vm;
  (void)sink;
  return vmm::logic_error("add_com2", "not implemented yet (lab 03, exercise 1)");
}

}  // namespace lab03
