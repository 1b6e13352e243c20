// Lab 08, exercise 2: which pages of a BAR may be mapped into the guest (reference). See labs/08-vfio/README.md.
#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "lab08.hpp"

namespace lab08 {

vmm::Result<std::vector<vmm::vfio::BarArea>> mappable_areas(const vmm::vfio::RegionInfo& bar,
                                                            const std::optional<vmm::pci::MsixCapability>& msix,
                                                            std::uint64_t page_size) {
  using vmm::vfio::BarArea;
  if (!std::has_single_bit(page_size)) {
    return vmm::logic_error("mappable_areas", fmt::format("page size 0x{:x} is not a power of two", page_size));
  }
  if (!bar.mappable() || bar.size == 0) {
    return std::vector<BarArea>{};  // VFIO will not mmap it: every access traps and becomes a pread/pwrite
  }

  // What VFIO lets us mmap: the sparse areas if the kernel lists them (it leaves out what it will not let user space
  // touch), else the whole BAR. Clipped: the kernel's word, still checked.
  std::vector<BarArea> allowed;
  if (bar.caps.sparse_mmap) {
    for (const auto& area : *bar.caps.sparse_mmap) {
      if (area.offset < bar.size && area.size > 0) {
        allowed.push_back({area.offset, std::min(area.size, bar.size - area.offset)});
      }
    }
  } else {
    allowed.push_back({0, bar.size});
  }
  std::sort(allowed.begin(), allowed.end(), [](const BarArea& a, const BarArea& b) { return a.offset < b.offset; });

  // What must trap: the MSI-X table and PBA, if they live in this BAR. Even when the kernel would let us mmap them
  // (caps.msix_mappable), the guest must not reach them: it writes guest addresses and vectors there, and the device
  // would send them on the host's bus.
  std::vector<BarArea> trapped;
  if (msix) {
    if (msix->table_bar == bar.index) {
      trapped.push_back({msix->table_offset, msix->table_size()});
    }
    if (msix->pba_bar == bar.index) {
      trapped.push_back({msix->pba_offset, msix->pba_size()});
    }
  }
  const auto traps = [&](std::uint64_t page) {
    return std::any_of(trapped.begin(), trapped.end(),
                       [&](const BarArea& t) { return page < t.offset + t.size && t.offset < page + page_size; });
  };

  std::vector<BarArea> out;
  for (const BarArea& area : allowed) {
    // Whole pages inside the area only: a memory slot maps pages, so a partial one would expose bytes VFIO did not
    // offer (or trap nothing of the table's page).
    const std::uint64_t first = (area.offset + page_size - 1) & ~(page_size - 1);
    const std::uint64_t end = area.end() & ~(page_size - 1);
    for (std::uint64_t page = first; page < end; page += page_size) {
      if (traps(page)) {
        continue;
      }
      if (!out.empty() && out.back().end() == page) {
        out.back().size += page_size;
      } else {
        out.push_back({page, page_size});
      }
    }
  }
  return out;
}

}  // namespace lab08
