#include "vmm/vfio/dma_mappings.hpp"

namespace vmm::vfio {

namespace {

std::string describe(const DmaMapping& m) {
  return fmt::format("IOVA [0x{:x}, 0x{:x}) -> host 0x{:x}", m.iova, m.iova + m.size, m.host_va);
}

}  // namespace

Result<void> DmaMappings::check_add(const DmaMapping& mapping) const {
  constexpr const char* kOp = "VFIO_IOMMU_MAP_DMA";
  if (mapping.size == 0) {
    return logic_error(kOp, fmt::format("empty mapping at IOVA 0x{:x}", mapping.iova));
  }
  if (!mapping.readable && !mapping.writable) {
    return logic_error(kOp, fmt::format("mapping at IOVA 0x{:x} is neither readable nor writable", mapping.iova));
  }
  // The last byte, computed without overflow: iova + size - 1 must not wrap.
  if (mapping.iova > UINT64_MAX - (mapping.size - 1) || mapping.host_va > UINT64_MAX - (mapping.size - 1)) {
    return logic_error(kOp, fmt::format("mapping of 0x{:x} bytes at IOVA 0x{:x} (host 0x{:x}) wraps around",
                                        mapping.size, mapping.iova, mapping.host_va));
  }
  const std::uint64_t mask = alignment_ - 1;
  if ((mapping.iova & mask) != 0 || (mapping.size & mask) != 0 || (mapping.host_va & mask) != 0) {
    return logic_error(kOp, fmt::format("IOVA 0x{:x}, size 0x{:x} and host address 0x{:x} must all be multiples of "
                                        "the IOMMU page size 0x{:x}",
                                        mapping.iova, mapping.size, mapping.host_va, alignment_));
  }
  const std::uint64_t last = mapping.iova + (mapping.size - 1);
  // The first mapping starting after `last` and the one before it: only the latter can overlap.
  auto next = by_iova_.upper_bound(last);
  if (next != by_iova_.begin()) {
    const DmaMapping& prev = std::prev(next)->second;
    if (prev.iova + (prev.size - 1) >= mapping.iova) {
      return logic_error(kOp, fmt::format("{} overlaps the existing mapping {}", describe(mapping), describe(prev)));
    }
  }
  return {};
}

Result<void> DmaMappings::add(const DmaMapping& mapping) {
  if (auto ok = check_add(mapping); !ok) {
    return ok;
  }
  by_iova_.emplace(mapping.iova, mapping);
  return {};
}

Result<DmaMapping> DmaMappings::find_exact(std::uint64_t iova, std::uint64_t size) const {
  constexpr const char* kOp = "VFIO_IOMMU_UNMAP_DMA";
  auto it = by_iova_.find(iova);
  if (it != by_iova_.end() && it->second.size == size) {
    return it->second;
  }
  if (it != by_iova_.end()) {
    return logic_error(kOp, fmt::format("IOVA [0x{:x}, +0x{:x}) is not a whole mapping: the mapping there is {}", iova,
                                        size, describe(it->second)));
  }
  return logic_error(
      kOp, fmt::format("nothing is mapped at IOVA 0x{:x} ({} mapping(s) in this container)", iova, by_iova_.size()));
}

Result<DmaMapping> DmaMappings::remove(std::uint64_t iova, std::uint64_t size) {
  auto found = find_exact(iova, size);
  if (found) {
    by_iova_.erase(iova);
  }
  return found;
}

std::vector<DmaMapping> DmaMappings::list() const {
  std::vector<DmaMapping> out;
  out.reserve(by_iova_.size());
  for (const auto& [iova, mapping] : by_iova_) {
    out.push_back(mapping);
  }
  return out;
}

}  // namespace vmm::vfio
