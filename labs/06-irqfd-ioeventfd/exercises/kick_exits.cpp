// Lab 06, exercise 1: take the ioeventfd away and count the exits. See labs/06-irqfd-ioeventfd/README.md.
#include <fmt/format.h>

#include "lab06.hpp"

namespace lab06 {

vmm::stage06::EventfdRngVmConfig without_ioeventfds(const vmmlab_rng_options& options) {
  // TODO: start from a default EventfdRngVmConfig, give the guest `options` (the stage05 machine's config is inside
  // it) and turn the ioeventfds off. Then delete the print.
  fmt::print("without_ioeventfds: not implemented yet (lab 06, exercise 1)\n");
  (void)options;
  return {};
}

std::uint64_t notify_exits(const vmm::machine::ExitCountersSnapshot& exits,
                           std::span<const vmm::pci::BarMapping> mappings) {
  // TODO: find the rng's BAR0 in `mappings` (device_number, bar_index), compute the notify region's guest-physical
  // range from VirtioPciDevice's constants, and add up the writes of every address of `exits.mmio` inside it.
  // Then delete the print.
  fmt::print("notify_exits: not implemented yet (lab 06, exercise 1)\n");
  (void)exits;
  (void)mappings;
  return 0;
}

KickPrediction predict(std::uint64_t guest_kicks, bool ioeventfd) {
  // TODO: your theory. Where does KVM send a write to the notify address when an ioeventfd covers it, and where when
  // none does? Who reads the queue eventfd, and who writes it in each case? Then delete the print.
  fmt::print("predict: not implemented yet (lab 06, exercise 1)\n");
  (void)guest_kicks;
  (void)ioeventfd;
  return {};
}

}  // namespace lab06
