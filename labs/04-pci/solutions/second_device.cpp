// Lab 04, exercise 1 (reference): a second PCI test device on bus 0. See labs/04-pci/README.md.
#include "lab04.hpp"

namespace lab04 {

vmm::Result<std::shared_ptr<vmm::pci::PciTestDevice>> add_second_test_device(vmm::stage04::PciVm& vm,
                                                                             vmm::pci::MsiSink& sink,
                                                                             std::uint8_t slot) {
  auto device = vmm::pci::PciTestDevice::create(sink);
  if (!device) {
    return std::unexpected(device.error());
  }
  // The root keeps a shared_ptr: the device lives as long as the machine. Nothing is placed yet: the BARs read 0 and
  // decoding is off until the guest's enumerator sizes and assigns them.
  if (auto rc = vm.root().add_device(*device, slot); !rc) {
    return std::unexpected(rc.error().with_context("second test device"));
  }
  return std::move(*device);
}

}  // namespace lab04
