// Lab 10, exercise 1: walking the guest's page tables. See labs/10-guest-debugging/README.md.
#include "lab10.hpp"

namespace lab10 {

vmm::Result<std::uint64_t> translate_four_level(const vmm::memory::GuestMemory& memory, std::uint64_t cr3,
                                                std::uint64_t linear) {
  // TODO: four levels, 9 bits of `linear` each (47..39, 38..30, 29..21, 20..12), 12 bits of offset. Each entry is
  // 8 bytes; bits 12..51 hold the next table's (or the page's) address. Where do the large pages stop the walk?
  (void)memory;
  (void)cr3;
  (void)linear;
  return vmm::logic_error("translate_four_level", "not implemented yet (lab 10, exercise 1)");
}

}  // namespace lab10
