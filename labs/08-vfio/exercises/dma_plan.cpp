// Lab 08, exercise 1: the DMA plan. See labs/08-vfio/README.md.
#include <fmt/format.h>

#include "lab08.hpp"

namespace lab08 {

vmm::Result<std::vector<DmaOp>> dma_plan(std::span<const RamRegion> memory_map,
                                         std::span<const vmm::vfio::DmaMapping> mapped) {
  // TODO: which mapping does each region of guest RAM want (what is its IOVA, and why)? Which of `mapped` can stay,
  // which must go, and why must every unmap come before every map? Refuse the regions the IOMMU could not map
  // (lab08.hpp lists them) before planning anything.
  (void)memory_map;
  (void)mapped;
  return vmm::logic_error("dma_plan", "not implemented yet (lab 08, exercise 1)");
}

}  // namespace lab08
