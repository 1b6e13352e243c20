#include "vfio_vm.hpp"

#include <linux/vfio.h>

#include <utility>

namespace vmm::stage08 {

Result<std::unique_ptr<VfioVm>> VfioVm::create(const GuestImage& image, devices::Uart16550::OutputSink sink,
                                               std::function<void(std::uint32_t)> on_exit, const VfioVmConfig& config) {
  std::unique_ptr<VfioVm> machine(new VfioVm());

  // VFIO first, in its fixed order: container, group, attach, IOMMU type, device. Each step refuses with the reason
  // (no VFIO on this host, a group that is not viable, a device bound to another driver).
  auto container = vfio::Container::open();
  if (!container) {
    return std::unexpected(container.error());
  }
  machine->container_ = std::make_unique<vfio::Container>(std::move(*container));
  auto group = vfio::Group::open_for_device(config.bdf, config.sysfs);
  if (!group) {
    return std::unexpected(group.error());
  }
  machine->group_ = std::make_unique<vfio::Group>(std::move(*group));
  if (auto rc = machine->group_->set_container(*machine->container_); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = machine->container_->set_iommu(VFIO_TYPE1v2_IOMMU); !rc) {
    return std::unexpected(rc.error());
  }
  auto device = machine->group_->device(config.bdf);
  if (!device) {
    return std::unexpected(device.error());
  }
  machine->device_ = std::make_shared<vfio::Device>(std::move(*device));

  stage03::SerialVmConfig serial = config.serial;
  serial.exit_counters = machine->exits_.get();
  auto pci = stage04::PciVm::create(image, std::move(sink), std::move(on_exit), serial);
  if (!pci) {
    return std::unexpected(pci.error());
  }
  machine->pci_ = std::move(*pci);
  auto& long_mode = machine->pci_->serial().vm();

  // Tell KVM about the group (see KvmVfioDevice for why).
  auto kvm_vfio = vfio::KvmVfioDevice::create(long_mode.vm());
  if (!kvm_vfio) {
    return std::unexpected(kvm_vfio.error());
  }
  machine->kvm_vfio_.emplace(std::move(*kvm_vfio));
  if (auto rc = machine->kvm_vfio_->add_group(machine->group_->fd(), machine->group_->number()); !rc) {
    return std::unexpected(rc.error());
  }

  // All of guest RAM, IOVA = guest-physical address, before the guest can tell the device to use any of it.
  machine->dma_ = std::make_unique<vfio::GuestRamDma>(*machine->container_);
  if (auto rc = machine->dma_->sync(long_mode.memory()); !rc) {
    return std::unexpected(rc.error());
  }

  machine->routing_ = std::make_unique<irq::KvmGsiRouting>(long_mode.vm());
  machine->binder_ = std::make_unique<irq::KvmIrqfdBinder>(long_mode.vm());
  if (config.map_bars) {
    machine->slots_ = std::make_unique<vfio::KvmDeviceMemorySlots>(long_mode.vm(), kFirstBarSlot);
  }
  auto passthrough = vfio::VfioPciDevice::create(
      machine->device_,
      vfio::PassthroughWiring{machine->routing_.get(), machine->binder_.get(), machine->slots_.get()});
  if (!passthrough) {
    return std::unexpected(passthrough.error());
  }
  machine->passthrough_ = std::move(*passthrough);
  if (auto rc = machine->pci_->root().add_device(machine->passthrough_, kPassthroughSlot); !rc) {
    return std::unexpected(rc.error());
  }
  // The device's BARs follow the guest: each placement becomes memory slots, each removal takes them away.
  auto* passthrough_device = machine->passthrough_.get();
  machine->pci_->root().set_bar_observer([passthrough_device](const pci::BarMapping& mapping, bool placed) {
    if (mapping.device_number == kPassthroughSlot) {
      passthrough_device->bar_placed(mapping.bar_index, placed ? std::optional(mapping.base) : std::nullopt);
    }
  });
  return machine;
}

VfioVm::~VfioVm() {
  if (pci_) {
    pci_->stop();
    pci_->root().set_bar_observer(nullptr);
  }
  // The root holds the device too: it is destroyed with the root, inside the PciVm, while the VM exists and the
  // members it uses (slots, routing, binder) are still here.
  passthrough_.reset();
  pci_.reset();
  slots_.reset();
  binder_.reset();
  routing_.reset();
  dma_.reset();
  kvm_vfio_.reset();
}

}  // namespace vmm::stage08
