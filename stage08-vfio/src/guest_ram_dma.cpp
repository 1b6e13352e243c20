#include "vmm/vfio/guest_ram_dma.hpp"

#include <set>

#include <fmt/format.h>

namespace vmm::vfio {

GuestRamDma::~GuestRamDma() {
  (void)unmap_all();
}

Result<void> GuestRamDma::sync(const memory::GuestMemory& memory) {
  // What the memory map wants: IOVA = guest-physical start, and the host memory behind it now.
  std::map<std::uint64_t, DmaMapping> wanted;
  for (const auto& region : memory.regions()) {
    const DmaMapping mapping{.iova = region.start().raw(),
                             .size = region.size(),
                             .host_va = reinterpret_cast<std::uint64_t>(region.host_address()),
                             .readable = true,
                             .writable = true};
    wanted.emplace(mapping.iova, mapping);
  }
  // Stale first: a region that moved in host memory (same IOVA, other host address) must be unmapped before its
  // new mapping can go in (the IOMMU refuses overlapping mappings).
  for (auto it = mapped_.begin(); it != mapped_.end();) {
    const auto want = wanted.find(it->first);
    if (want != wanted.end() && want->second == it->second) {
      ++it;
      continue;
    }
    ++unmap_calls_;
    if (auto rc = mapper_.unmap_dma(it->second.iova, it->second.size); !rc) {
      return std::unexpected(rc.error().with_context(
          fmt::format("unmapping guest RAM [0x{:x}, +0x{:x})", it->second.iova, it->second.size)));
    }
    it = mapped_.erase(it);
  }
  for (const auto& [iova, mapping] : wanted) {
    if (mapped_.contains(iova)) {
      continue;
    }
    ++map_calls_;
    if (auto rc = mapper_.map_dma(mapping.iova, mapping.size, reinterpret_cast<const void*>(mapping.host_va),
                                  mapping.readable, mapping.writable);
        !rc) {
      return std::unexpected(
          rc.error().with_context(fmt::format("mapping guest RAM [0x{:x}, +0x{:x})", mapping.iova, mapping.size)));
    }
    mapped_.emplace(iova, mapping);
  }
  return {};
}

Result<void> GuestRamDma::unmap_all() {
  Result<void> first;
  for (auto it = mapped_.begin(); it != mapped_.end();) {
    ++unmap_calls_;
    if (auto rc = mapper_.unmap_dma(it->second.iova, it->second.size); !rc) {
      if (first) {
        first = std::unexpected(rc.error());
      }
      ++it;
      continue;
    }
    it = mapped_.erase(it);
  }
  return first;
}

std::vector<DmaMapping> GuestRamDma::mappings() const {
  std::vector<DmaMapping> out;
  for (const auto& [iova, mapping] : mapped_) {
    out.push_back(mapping);
  }
  return out;
}

}  // namespace vmm::vfio
