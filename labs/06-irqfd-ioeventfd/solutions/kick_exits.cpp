// Lab 06, exercise 1: take the ioeventfd away and count the exits (reference). See
// labs/06-irqfd-ioeventfd/README.md.
#include "lab06.hpp"

namespace lab06 {

vmm::stage06::EventfdRngVmConfig without_ioeventfds(const vmmlab_rng_options& options) {
  vmm::stage06::EventfdRngVmConfig config;
  config.rng.options = options;
  config.ioeventfd = false;  // the worker thread, MsixRoutes and the UART's irqfd stay
  return config;
}

std::uint64_t notify_exits(const vmm::machine::ExitCountersSnapshot& exits,
                           std::span<const vmm::pci::BarMapping> mappings) {
  using vmm::virtio::VirtioPciDevice;
  for (const auto& mapping : mappings) {
    if (mapping.device_number != vmm::stage05::kRngSlot || mapping.bar_index != VirtioPciDevice::kRegionsBar) {
      continue;
    }
    // The guest chose BAR0's address; the notify region sits at a fixed offset inside it.
    const std::uint64_t start = mapping.base + VirtioPciDevice::kNotifyOffset;
    const std::uint64_t end = start + VirtioPciDevice::kRegionSize;
    std::uint64_t writes = 0;
    for (auto it = exits.mmio.lower_bound(start); it != exits.mmio.end() && it->first < end; ++it) {
      writes += it->second.writes;  // a read of a notify address (the guest makes none) is not a kick
    }
    return writes;
  }
  return 0;
}

KickPrediction predict(std::uint64_t guest_kicks, bool ioeventfd) {
  // With an ioeventfd, KVM's MMIO emulation finds the address on its own I/O bus (kvm_io_bus_write ->
  // ioeventfd_write), signals the queue eventfd and resumes the guest: no exit, and the worker reads every kick from
  // the eventfd (N kicks between two reads come back as one read of N, which still adds N). Without one, no in-kernel
  // device claims the address: KVM_EXIT_MMIO, the vCPU thread dispatches it to the transport, which counts it and
  // hands it to ThreadedDevice::queue_notify: the fallback kick eventfd, never the queue eventfd.
  if (ioeventfd) {
    return {.notify_exits = 0, .ioeventfd_kicks = guest_kicks};
  }
  return {.notify_exits = guest_kicks, .ioeventfd_kicks = 0};
}

}  // namespace lab06
