// Lab 08, exercise 2: which pages of a BAR may be mapped into the guest. See labs/08-vfio/README.md.
#include <fmt/format.h>

#include "lab08.hpp"

namespace lab08 {

vmm::Result<std::vector<vmm::vfio::BarArea>> mappable_areas(const vmm::vfio::RegionInfo& bar,
                                                            const std::optional<vmm::pci::MsixCapability>& msix,
                                                            std::uint64_t page_size) {
  // TODO: what does VFIO let this process mmap of the BAR (its flags, its sparse areas)? Which pages hold the MSI-X
  // table and PBA, and why must the guest never reach them directly? A KVM memory slot maps whole pages: what does
  // that do to a table that starts in the middle of one? Write it without calling vmm::vfio::guest_mappable_areas
  // (the stage's answer to this exercise), then compare.
  (void)bar;
  (void)msix;
  (void)page_size;
  return vmm::logic_error("mappable_areas", "not implemented yet (lab 08, exercise 2)");
}

}  // namespace lab08
