// Lab 08, exercise 3: the device's interrupts, from VFIO's eventfds to the guest. See labs/08-vfio/README.md.
#include <fmt/format.h>

#include "lab08.hpp"

namespace lab08 {

std::optional<vmm::pci::MsiMessage> msi_message(const vmm::vfio::MsiState& state, std::uint16_t vector) {
  // TODO: when can `vector` fire at all? With 2^k vectors enabled, which bits of the data carry the vector number?
  // Then delete the print.
  fmt::print("msi_message: not implemented yet (lab 08, exercise 3)\n");
  (void)state;
  (void)vector;
  return std::nullopt;
}

std::vector<int> msi_eventfds(const vmm::vfio::MsiState& state, const vmm::vfio::MsiRoutes& routes) {
  // TODO: how many vectors does VFIO get, and which eventfd for each, so that the device's interrupt reaches the
  // guest without this process? Then delete the print.
  fmt::print("msi_eventfds: not implemented yet (lab 08, exercise 3)\n");
  (void)state;
  (void)routes;
  return {};
}

int msix_eventfd_for(const vmm::irq::MsixRoutes& routes, std::span<const vmm::event::EventFd> relays,
                     std::uint16_t vector) {
  // TODO: when does a write to the vector's irqfd interrupt the guest (routes.route tells you what KVM holds), and
  // what happens to it when it does not? Then delete the print.
  fmt::print("msix_eventfd_for: not implemented yet (lab 08, exercise 3)\n");
  (void)routes;
  (void)relays;
  (void)vector;
  return -1;
}

}  // namespace lab08
