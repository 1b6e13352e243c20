// Lab 04, exercise 1: a second PCI test device on bus 0. See labs/04-pci/README.md.
#include "lab04.hpp"

namespace lab04 {

vmm::Result<std::shared_ptr<vmm::pci::PciTestDevice>> add_second_test_device(vmm::stage04::PciVm& vm,
                                                                             vmm::pci::MsiSink& sink,
                                                                             std::uint8_t slot) {
  // TODO: create a PciTestDevice that signals `sink` and plug it into vm.root() at `slot`. Pass errors on.
  (void)vm;
  (void)sink;
  (void)slot;
  return vmm::logic_error("add_second_test_device", "not implemented yet (lab 04, exercise 1)");
}

}  // namespace lab04
