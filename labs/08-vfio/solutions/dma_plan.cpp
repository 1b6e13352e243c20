// Lab 08, exercise 1: the DMA plan (reference). See labs/08-vfio/README.md.
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "lab08.hpp"

namespace lab08 {

namespace {

// Why a region cannot be mapped as it is, or nothing.
std::optional<std::string> unmappable(const RamRegion& region) {
  if (region.size == 0) {
    return "is empty";
  }
  const std::uint64_t mask = kIommuPageSize - 1;
  if ((region.gpa & mask) != 0 || (region.size & mask) != 0 || (region.host_va & mask) != 0) {
    return fmt::format("is not whole IOMMU pages (gpa, size and host address must be multiples of 0x{:x})",
                       kIommuPageSize);
  }
  // The last byte, computed so that it cannot overflow: gpa + size - 1 must still be an address.
  if (region.gpa > UINT64_MAX - (region.size - 1)) {
    return fmt::format("of 0x{:x} bytes runs past the end of the address space", region.size);
  }
  return std::nullopt;
}

}  // namespace

vmm::Result<std::vector<DmaOp>> dma_plan(std::span<const RamRegion> memory_map,
                                         std::span<const vmm::vfio::DmaMapping> mapped) {
  // What the IOMMU should hold, by IOVA. IOVA = guest-physical address: the device puts on the bus the addresses the
  // guest's driver gave it, and those are guest-physical.
  std::map<std::uint64_t, vmm::vfio::DmaMapping> wanted;
  for (const RamRegion& region : memory_map) {
    if (auto why = unmappable(region)) {
      return vmm::logic_error("dma_plan", fmt::format("guest RAM at 0x{:x} {}", region.gpa, *why));
    }
    wanted.emplace(
        region.gpa,
        vmm::vfio::DmaMapping{
            .iova = region.gpa, .size = region.size, .host_va = region.host_va, .readable = true, .writable = true});
  }
  // Overlaps: sorted by start, each region must end before the next one starts (one IOVA, one host page). Two
  // regions at the same GPA collapsed into one map entry above: catch that too.
  if (wanted.size() != memory_map.size()) {
    std::map<std::uint64_t, int> seen;
    for (const RamRegion& region : memory_map) {
      if (++seen[region.gpa] > 1) {
        return vmm::logic_error("dma_plan", fmt::format("guest RAM at 0x{:x} is listed twice", region.gpa));
      }
    }
  }
  for (auto it = wanted.begin(); it != wanted.end(); ++it) {
    const auto next = std::next(it);
    if (next != wanted.end() && it->second.iova + (it->second.size - 1) >= next->second.iova) {
      return vmm::logic_error("dma_plan", fmt::format("guest RAM at 0x{:x} overlaps guest RAM at 0x{:x}",
                                                      next->second.iova, it->second.iova));
    }
  }

  std::vector<DmaOp> plan;
  // Stale mappings first. A region that moved in host memory keeps its IOVA, and a resized or moved region can
  // overlap its old self: the IOMMU refuses a mapping over an existing one, so the old one must go before.
  std::vector<vmm::vfio::DmaMapping> stale;
  std::map<std::uint64_t, vmm::vfio::DmaMapping> kept;
  for (const auto& m : mapped) {
    const auto want = wanted.find(m.iova);
    if (want != wanted.end() && want->second == m) {
      kept.emplace(m.iova, m);
    } else {
      stale.push_back(m);
    }
  }
  std::sort(stale.begin(), stale.end(), [](const auto& a, const auto& b) { return a.iova < b.iova; });
  for (const auto& m : stale) {
    plan.push_back({DmaOpKind::Unmap, m});
  }
  for (const auto& [iova, m] : wanted) {
    if (!kept.contains(iova)) {
      plan.push_back({DmaOpKind::Map, m});
    }
  }
  return plan;
}

}  // namespace lab08
