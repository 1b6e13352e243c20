#include "virtio_rng_vm.hpp"

#include <span>

namespace vmm::stage05 {

vmmlab_rng_options default_rng_options() {
  return {.magic = VMMLAB_RNG_OPTIONS_MAGIC,
          .flags = VMMLAB_RNG_PHASE_EVENT_IDX | VMMLAB_RNG_PHASE_FLAGS,
          .batches = 4,
          .per_batch = 4,
          .request_bytes = 16,
          .queue_size = 16};
}

Result<std::unique_ptr<VirtioRngVm>> VirtioRngVm::create(const GuestImage& image, devices::Uart16550::OutputSink sink,
                                                         std::function<void(std::uint32_t)> on_exit,
                                                         const VirtioRngVmConfig& config) {
  auto pci = stage04::PciVm::create(image, std::move(sink), std::move(on_exit), config.serial);
  if (!pci) {
    return std::unexpected(pci.error());
  }
  std::unique_ptr<VirtioRngVm> machine(new VirtioRngVm());
  machine->pci_ = std::move(*pci);
  auto& long_mode = machine->pci_->serial().vm();
  if (config.options) {
    if (auto rc = long_mode.set_input(std::as_bytes(std::span(&*config.options, 1))); !rc) {
      return std::unexpected(rc.error());
    }
  }
  if (config.make_msi_sink) {
    auto msi_sink = config.make_msi_sink(long_mode.vm());
    if (!msi_sink) {
      return std::unexpected(msi_sink.error());
    }
    machine->msi_ = std::move(*msi_sink);
  } else {
    machine->msi_ = std::make_shared<pci::KvmSignalMsi>(long_mode.vm());
  }

  virtio::rng::RngConfig rng_config{
      .queue_size = config.queue_size, .bytes_per_second = config.bytes_per_second, .burst_bytes = config.burst_bytes};
  if (config.bytes_per_second) {
    machine->timer_ = std::make_shared<virtio::ThreadRetryTimer>();
  }
  auto rng = virtio::rng::RngDevice::create(std::move(rng_config), machine->timer_);
  if (!rng) {
    return std::unexpected(rng.error());
  }
  machine->rng_ = std::move(*rng);
  std::shared_ptr<virtio::VirtioDevice> device = machine->rng_;
  if (config.wrap_device) {
    auto wrapped = config.wrap_device(machine->rng_);
    if (!wrapped) {
      return std::unexpected(wrapped.error());
    }
    device = std::move(*wrapped);
  }
  auto transport = virtio::VirtioPciDevice::create(std::move(device), long_mode.memory(), *machine->msi_);
  if (!transport) {
    return std::unexpected(transport.error());
  }
  machine->transport_ = std::move(*transport);
  if (auto rc = machine->pci_->root().add_device(machine->transport_, kRngSlot); !rc) {
    return std::unexpected(rc.error());
  }
  return machine;
}

VirtioRngVm::~VirtioRngVm() {
  if (pci_) {
    pci_->stop();
  }
  // The root holds the transport too: destroy the machine (root included) while the MSI sink and the timer the
  // device uses still exist, then let the members go.
  transport_.reset();
  pci_.reset();
}

}  // namespace vmm::stage05
