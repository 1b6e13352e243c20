// Lab 02, exercise 3: identity-mapping page tables with 1 GiB pages. See labs/02-memory/README.md.
#include "lab02.hpp"

namespace lab02 {

vmm::Result<vmm::x86::PageTables> write_identity_page_tables_1g(const vmm::memory::GuestMemory& memory,
                                                                vmm::memory::GuestAddress base, std::uint64_t bytes) {
  // TODO: a PML4 at `base` whose entry 0 points at a PDPT at `base + 4 KiB`, whose entry i maps [i GiB, i+1 GiB).
  (void)memory;
  (void)base;
  (void)bytes;
  return vmm::logic_error("write_identity_page_tables_1g", "not implemented yet (lab 02, exercise 3)");
}

}  // namespace lab02
