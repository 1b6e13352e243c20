// Lab 02, exercise 3 (reference): identity-mapping page tables with 1 GiB pages.
#include <fmt/format.h>

#include "lab02.hpp"

namespace lab02 {

vmm::Result<vmm::x86::PageTables> write_identity_page_tables_1g(const vmm::memory::GuestMemory& memory,
                                                                vmm::memory::GuestAddress base, std::uint64_t bytes) {
  using namespace vmm::x86;
  constexpr std::uint64_t k1GiB = 1ull << 30;
  if (bytes == 0 || bytes % k1GiB != 0 || bytes > 512 * k1GiB) {
    return vmm::logic_error("write_identity_page_tables_1g",
                            fmt::format("{:#x} bytes: must be a non-zero multiple of 1 GiB, at most 512 GiB", bytes));
  }
  if (base.raw() % 4096 != 0) {
    return vmm::logic_error("write_identity_page_tables_1g", fmt::format("tables at {} are not page-aligned", base));
  }
  auto pdpt = base.checked_add(4096);
  if (!pdpt) {
    return std::unexpected(pdpt.error());
  }
  constexpr std::uint64_t kTable = kPtePresent | kPteWritable | kPteAccessed;
  std::vector<std::uint64_t> pml4_page(512, 0), pdpt_page(512, 0);
  pml4_page[0] = pdpt->raw() | kTable;
  for (std::uint64_t gib = 0; gib < bytes / k1GiB; ++gib) {
    // PS in a PDPTE: this entry maps a 1 GiB page (bits 51..30 of the address); there is no page directory below.
    pdpt_page[gib] = (gib * k1GiB) | kTable | kPteDirty | kPteHuge;
  }
  if (auto rc = memory.write(base, std::as_bytes(std::span(pml4_page))); !rc) {
    return std::unexpected(rc.error().with_context("writing the PML4"));
  }
  if (auto rc = memory.write(*pdpt, std::as_bytes(std::span(pdpt_page))); !rc) {
    return std::unexpected(rc.error().with_context("writing the PDPT"));
  }
  return PageTables{.pml4 = base, .pages = {base, *pdpt}, .mapped_bytes = bytes};
}

}  // namespace lab02
