#include "vhost_user_vm.hpp"

#include "vmm/vhost/msix_calls.hpp"

#include <span>
#include <utility>

namespace vmm::stage07 {

Result<std::unique_ptr<VhostUserVm>> VhostUserVm::create(const GuestImage& image, devices::Uart16550::OutputSink sink,
                                                         std::function<void(std::uint32_t)> on_exit,
                                                         const VhostUserVmConfig& config) {
  std::unique_ptr<VhostUserVm> machine(new VhostUserVm());
  auto* self = machine.get();

  // The backend maps guest RAM from the fds the frontend passes: RAM must be memfds, not anonymous memory.
  stage03::SerialVmConfig serial = config.serial;
  serial.shared_memory = true;
  serial.exit_counters = machine->exits_.get();
  auto pci = stage04::PciVm::create(image, std::move(sink), std::move(on_exit), serial);
  if (!pci) {
    return std::unexpected(pci.error());
  }
  machine->pci_ = std::move(*pci);
  auto& long_mode = machine->pci_->serial().vm();
  if (config.options) {
    if (auto rc = long_mode.set_input(std::as_bytes(std::span(&*config.options, 1))); !rc) {
      return std::unexpected(rc.error());
    }
  }

  auto frontend = vhost::VhostUserFrontend::connect(config.frontend);
  if (!frontend) {
    return std::unexpected(frontend.error());
  }
  machine->frontend_ = std::move(*frontend);
  const auto queues = machine->frontend_->queue_count();

  // One MSI-X vector per queue plus one for configuration changes, each on its own GSI route and irqfd (stage06).
  auto msi = stage06::IrqfdMsi::create(long_mode.vm(), static_cast<std::uint16_t>(queues + 1));
  if (!msi) {
    return std::unexpected(msi.error());
  }
  machine->msi_ = std::move(*msi);

  auto transport = virtio::VirtioPciDevice::create(machine->frontend_, long_mode.memory(), *machine->msi_);
  if (!transport) {
    return std::unexpected(transport.error());
  }
  machine->transport_ = std::move(*transport);
  if (auto rc = machine->msi_->routes().attach(machine->transport_->msix()); !rc) {
    return std::unexpected(rc.error());
  }

  if (config.irqfd) {
    // The backend writes the irqfds of the guest's vectors directly, re-pointed as the guest masks and unmasks them
    // (vhost::follow_msix_routes says how and why).
    vhost::follow_msix_routes(*self->frontend_, *self->transport_, self->msi_->routes(),
                              [self](const Error&) { self->call_errors_.fetch_add(1, std::memory_order_relaxed); });
  }

  if (auto rc = machine->pci_->root().add_device(machine->transport_, kVhostUserSlot); !rc) {
    return std::unexpected(rc.error());
  }

  if (config.ioeventfd) {
    std::vector<const event::EventFd*> events;
    for (std::uint16_t q = 0; q < queues; ++q) {
      events.push_back(&machine->frontend_->kick_event(q));
    }
    machine->ioeventfds_ = std::make_unique<virtio::NotifyIoeventfds>(long_mode.vm(), std::move(events));
    // Unlike stage06's worker, the backend may see a kick before the device is active: it looks at every ring when
    // it starts anyway, so a stale kick costs one empty look. Registered whenever BAR0 is on the bus.
    machine->ioeventfds_->set_active(true);
    auto* ioeventfds = machine->ioeventfds_.get();
    machine->pci_->root().set_bar_observer([ioeventfds](const pci::BarMapping& mapping, bool placed) {
      if (mapping.device_number == kVhostUserSlot && mapping.bar_index == virtio::VirtioPciDevice::kRegionsBar) {
        ioeventfds->bar0_placed(placed ? std::optional(mapping.base) : std::nullopt);
      }
    });
  }
  return machine;
}

std::uint64_t VhostUserVm::notify_exits() const {
  return stage06::notify_exits(exits_->snapshot(), pci_->root(), kVhostUserSlot);
}

VhostUserVm::~VhostUserVm() {
  if (!pci_) {
    return;
  }
  pci_->stop();
  // Everything below refers to the VM, which pci_ owns: take it apart while the VM still exists. Stop the rings
  // first: the backend answers GET_VRING_BASE and stops writing the irqfds, and the frontend's event thread, which
  // may be reporting a hang-up through the transport (needs_reset -> configuration interrupt -> MSI) this very
  // moment, is done with the activation when reset returns. (The transport resets its device again when the root
  // lets it go; on an idle frontend that does nothing.) Then the ioeventfds, the table's observer into the routes,
  // and the routes and irqfds themselves.
  pci_->root().set_bar_observer(nullptr);
  if (frontend_) {
    frontend_->set_call_source(nullptr);
    frontend_->reset();
  }
  if (msi_) {
    msi_->routes().set_listener(nullptr);
  }
  if (transport_) {
    transport_->msix().set_observer(nullptr);
  }
  ioeventfds_.reset();
  if (msi_) {
    msi_->detach();
  }
  transport_.reset();
  pci_.reset();
}

}  // namespace vmm::stage07
