#include "eventfd_rng_vm.hpp"

#include <fmt/format.h>

#include <utility>

namespace vmm::stage06 {

Result<std::shared_ptr<IrqfdMsi>> IrqfdMsi::create(const kvm::Vm& vm, std::uint16_t vectors) {
  std::shared_ptr<IrqfdMsi> msi(new IrqfdMsi());
  msi->routing_ = std::make_unique<irq::KvmGsiRouting>(vm);
  msi->binder_ = std::make_unique<irq::KvmIrqfdBinder>(vm);
  auto routes = irq::MsixRoutes::create(vectors, *msi->routing_, *msi->binder_);
  if (!routes) {
    return std::unexpected(routes.error());
  }
  msi->routes_ = std::move(*routes);
  return msi;
}

std::uint64_t notify_exits(const machine::ExitCountersSnapshot& exits, stage05::VirtioRngVm& vm) {
  return notify_exits(exits, vm.pci().root(), stage05::kRngSlot);
}

std::uint64_t notify_exits(const machine::ExitCountersSnapshot& exits, const pci::PciRoot& root, std::uint8_t slot) {
  std::uint64_t count = 0;
  for (const auto& mapping : root.mappings()) {
    if (mapping.device_number != slot || mapping.bar_index != virtio::VirtioPciDevice::kRegionsBar) {
      continue;
    }
    const std::uint64_t start = mapping.base + virtio::VirtioPciDevice::kNotifyOffset;
    const std::uint64_t end = start + virtio::VirtioPciDevice::kRegionSize;
    for (const auto& [address, access] : exits.mmio) {
      if (address >= start && address < end) {
        count += access.writes;
      }
    }
  }
  return count;
}

Result<void> IrqfdMsi::signal(const pci::MsiMessage& message, std::uint16_t vector_index) {
  if (!routes_) {
    return logic_error("IrqfdMsi::signal", fmt::format("vector {}: the routes were detached", vector_index));
  }
  return routes_->signal(message, vector_index);
}

Result<std::unique_ptr<EventfdRngVm>> EventfdRngVm::create(const GuestImage& image, devices::Uart16550::OutputSink sink,
                                                           std::function<void(std::uint32_t)> on_exit,
                                                           const EventfdRngVmConfig& config) {
  std::unique_ptr<EventfdRngVm> machine(new EventfdRngVm());
  auto* self = machine.get();
  stage05::VirtioRngVmConfig rng_config = config.rng;
  rng_config.serial.exit_counters = machine->exits_.get();
  if (config.irqfd_uart) {
    rng_config.serial.make_irq_line = [self](kvm::Vm& vm,
                                             std::uint32_t gsi) -> Result<std::unique_ptr<devices::IrqLine>> {
      auto line = irq::IrqfdLine::create(vm, gsi);
      if (!line) {
        return std::unexpected(line.error());
      }
      self->uart_line_ = line->get();
      return std::unique_ptr<devices::IrqLine>(std::move(*line));
    };
  }
  // virtio-rng has one queue: MSI-X vector 0 for configuration changes, 1 for the queue.
  rng_config.make_msi_sink = [self](kvm::Vm& vm) -> Result<std::shared_ptr<pci::MsiSink>> {
    auto msi = IrqfdMsi::create(vm, 2);
    if (!msi) {
      return std::unexpected(msi.error());
    }
    self->msi_ = *msi;
    return std::shared_ptr<pci::MsiSink>(*msi);
  };
  rng_config.wrap_device =
      [self](std::shared_ptr<virtio::rng::RngDevice> rng) -> Result<std::shared_ptr<virtio::VirtioDevice>> {
    auto threaded = virtio::ThreadedDevice::create(std::move(rng));
    if (!threaded) {
      return std::unexpected(threaded.error());
    }
    self->threaded_ = *threaded;
    return std::shared_ptr<virtio::VirtioDevice>(*threaded);
  };
  auto vm = stage05::VirtioRngVm::create(image, std::move(sink), std::move(on_exit), rng_config);
  if (!vm) {
    return std::unexpected(vm.error());
  }
  machine->vm_ = std::move(*vm);

  // The routes follow the transport's MSI-X table from now on.
  if (auto rc = machine->msi_->routes().attach(machine->vm_->transport().msix()); !rc) {
    return std::unexpected(rc.error());
  }

  if (config.ioeventfd) {
    const auto& threaded = *machine->threaded_;
    std::vector<const event::EventFd*> events;
    for (std::uint16_t q = 0; q < threaded.queue_count(); ++q) {
      events.push_back(&threaded.queue_event(q));
    }
    auto& long_mode = machine->vm_->pci().serial().vm();
    machine->ioeventfds_ = std::make_unique<virtio::NotifyIoeventfds>(long_mode.vm(), std::move(events));
    auto* ioeventfds = machine->ioeventfds_.get();
    // Registered while BAR0 is on the bus and the device is active: the root reports placements, the worker
    // wrapper reports activation and reset.
    machine->vm_->pci().root().set_bar_observer([ioeventfds](const pci::BarMapping& mapping, bool placed) {
      if (mapping.device_number == stage05::kRngSlot && mapping.bar_index == virtio::VirtioPciDevice::kRegionsBar) {
        ioeventfds->bar0_placed(placed ? std::optional(mapping.base) : std::nullopt);
      }
    });
    machine->threaded_->set_activation_observer([ioeventfds](bool active) { ioeventfds->set_active(active); });
  }
  return machine;
}

EventfdRngVm::~EventfdRngVm() {
  if (!vm_) {
    return;
  }
  vm_->stop();
  // Everything below refers to the VM (its descriptor, its root, its MSI-X table), which vm_ owns: take it apart
  // while the VM still exists. First the observers that point at the registrations, then the worker (so nothing
  // signals any more), the ioeventfds, the table's observer into the routes, and the routes and irqfds themselves.
  vm_->pci().root().set_bar_observer(nullptr);
  if (threaded_) {
    threaded_->set_activation_observer(nullptr);
    threaded_->reset();
  }
  ioeventfds_.reset();
  vm_->transport().msix().set_observer(nullptr);
  if (msi_) {
    msi_->detach();
  }
  vm_.reset();
}

}  // namespace vmm::stage06
