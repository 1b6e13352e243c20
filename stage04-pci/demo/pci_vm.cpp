#include "pci_vm.hpp"

namespace vmm::stage04 {

Result<std::unique_ptr<PciVm>> PciVm::create(const GuestImage& image, devices::Uart16550::OutputSink sink,
                                             std::function<void(std::uint32_t)> on_exit,
                                             const stage03::SerialVmConfig& config) {
  auto serial = stage03::SerialVm::create(image, std::move(sink), std::move(on_exit), config);
  if (!serial) {
    return std::unexpected(serial.error());
  }
  std::unique_ptr<PciVm> machine(new PciVm());
  machine->serial_ = std::move(*serial);
  auto& buses = machine->serial_->buses();
  machine->msi_ = std::make_unique<pci::KvmSignalMsi>(machine->serial_->vm().vm());
  machine->root_ = std::make_unique<pci::PciRoot>(buses.io, buses.mmio);
  if (auto rc = buses.io.insert(std::make_shared<pci::ConfigMechanism1>(*machine->root_), pci::ConfigMechanism1::kBase,
                                pci::ConfigMechanism1::kSize, "pci-conf1");
      !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = buses.mmio.insert(std::make_shared<pci::EcamWindow>(*machine->root_), pci::EcamWindow::kDefaultBase,
                                  pci::EcamWindow::kSize, "pci-ecam");
      !rc) {
    return std::unexpected(rc.error());
  }
  auto device = pci::PciTestDevice::create(*machine->msi_);
  if (!device) {
    return std::unexpected(device.error());
  }
  machine->test_device_ = std::move(*device);
  if (auto rc = machine->root_->add_device(machine->test_device_, kTestDeviceSlot); !rc) {
    return std::unexpected(rc.error());
  }
  return machine;
}

PciVm::~PciVm() {
  if (serial_) {
    serial_->stop();
    // The configuration windows point at the root, which goes before the buses: take them off first.
    (void)serial_->buses().io.remove(pci::ConfigMechanism1::kBase);
    (void)serial_->buses().mmio.remove(pci::EcamWindow::kDefaultBase);
  }
}

}  // namespace vmm::stage04
