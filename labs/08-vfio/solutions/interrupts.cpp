// Lab 08, exercise 3: the device's interrupts, from VFIO's eventfds to the guest (reference). See
// labs/08-vfio/README.md.
#include <algorithm>

#include "lab08.hpp"

namespace lab08 {

std::optional<vmm::pci::MsiMessage> msi_message(const vmm::vfio::MsiState& state, std::uint16_t vector) {
  if (!state.enabled || vector >= state.vectors) {
    return std::nullopt;
  }
  // Multiple Message Enable allows 2^k vectors; the device ORs the vector number into the low k bits of the data
  // (the guest left them for it: a driver aligns its block of vectors). The mask keeps the guest's other bits.
  const std::uint32_t low = state.vectors - 1U;
  return vmm::pci::MsiMessage{state.address, (state.data & ~low) | (vector & low)};
}

std::vector<int> msi_eventfds(const vmm::vfio::MsiState& state, const vmm::vfio::MsiRoutes& routes) {
  std::vector<int> fds;
  if (!state.enabled) {
    return fds;
  }
  // As many as the guest enabled, but no more than the device was given GSIs and irqfds for (VFIO's count).
  const auto count = std::min<std::uint16_t>(state.vectors, routes.vectors());
  for (std::uint16_t v = 0; v < count; ++v) {
    fds.push_back(routes.irqfd(v)->fd());
  }
  return fds;
}

int msix_eventfd_for(const vmm::irq::MsixRoutes& routes, std::span<const vmm::event::EventFd> relays,
                     std::uint16_t vector) {
  if (vector >= routes.vectors() || vector >= relays.size()) {
    return -1;
  }
  // The irqfd interrupts the guest only while its GSI has a route: MSI-X enabled, function and vector unmasked
  // (MsixRoutes keeps the routes in step with the table). Without a route KVM drops the write, and the pending bit,
  // which only the VMM's emulated PBA holds, is never set. The relay lets the VMM set it.
  const auto route = routes.route(vector);
  if (route && route->message) {
    return routes.irqfd(vector)->fd();
  }
  return relays[vector].fd();
}

}  // namespace lab08
