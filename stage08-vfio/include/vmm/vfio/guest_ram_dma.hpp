#pragma once
/// @file
/// @brief `DmaMapper` (what maps memory for a device's DMA: a VFIO container, or a recorder in tests) and
/// `GuestRamDma`, which keeps those mappings equal to the guest's RAM: IOVA = guest-physical address.

#include <cstdint>
#include <map>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/vfio/dma_mappings.hpp"

namespace vmm::vfio {

/// @brief Maps and unmaps host memory for the DMA of a set of devices. `Container` implements it with
/// VFIO_IOMMU_MAP_DMA/UNMAP_DMA; tests with a recorder.
class DmaMapper {
 public:
  DmaMapper() = default;
  DmaMapper(const DmaMapper&) = delete;
  DmaMapper& operator=(const DmaMapper&) = delete;
  /// @brief Movable, so that implementations owning a descriptor can be.
  DmaMapper(DmaMapper&&) = default;
  /// @brief Move assignment (see the move constructor).
  DmaMapper& operator=(DmaMapper&&) = default;
  virtual ~DmaMapper() = default;

  /// @brief The devices may access host memory [host_va, host_va + size) at IOVA [iova, iova + size).
  [[nodiscard]] virtual Result<void> map_dma(std::uint64_t iova, std::uint64_t size, const void* host_va,
                                             bool readable = true, bool writable = true) = 0;
  /// @brief Removes the mapping at exactly [iova, iova + size).
  [[nodiscard]] virtual Result<void> unmap_dma(std::uint64_t iova, std::uint64_t size) = 0;
};

/// @brief Keeps a `DmaMapper`'s mappings equal to the guest's RAM, with IOVA = guest-physical address.
///
/// Why IOVA = GPA: a guest driver programs its device with guest-physical addresses (it knows no others), and the
/// device puts them on the bus unchanged. So the IOMMU must translate each guest-physical address to the host memory
/// behind it, for all of RAM, before the guest can start any DMA: the VMM cannot know in advance which pages a driver
/// will use. (Devices' own BARs are not mapped: no peer-to-peer DMA.)
///
/// `sync` compares the memory map with what is mapped: a region that appeared is mapped, one that disappeared or
/// moved in host memory is unmapped (and the moved one mapped again). That is what a VMM does when memory is
/// hot-plugged or a region is replaced. Not thread-safe: memory changes are serialised by the VMM.
class GuestRamDma {
 public:
  /// @brief Maps through `mapper`, which must outlive this object.
  explicit GuestRamDma(DmaMapper& mapper) : mapper_(mapper) {}
  GuestRamDma(const GuestRamDma&) = delete;
  GuestRamDma& operator=(const GuestRamDma&) = delete;
  GuestRamDma(GuestRamDma&&) = delete;
  GuestRamDma& operator=(GuestRamDma&&) = delete;
  /// @brief Unmaps everything it mapped (errors are dropped: call `unmap_all` to see them).
  ~GuestRamDma();

  /// @brief Makes the mappings equal to the regions of `memory`: unmaps the stale ones, then maps the new ones.
  ///
  /// On the first failure it stops and returns the error (naming the region); what was done so far stays done and
  /// recorded, so a later `sync` picks up from there.
  [[nodiscard]] Result<void> sync(const memory::GuestMemory& memory);
  /// @brief Unmaps every mapping; returns the first error (and keeps the mappings that could not be removed).
  [[nodiscard]] Result<void> unmap_all();

  /// @brief What is mapped now, by IOVA.
  [[nodiscard]] std::vector<DmaMapping> mappings() const;
  /// @brief MAP_DMA calls made so far (for tests and the demo's summary).
  [[nodiscard]] std::uint64_t map_calls() const noexcept { return map_calls_; }
  /// @brief UNMAP_DMA calls made so far.
  [[nodiscard]] std::uint64_t unmap_calls() const noexcept { return unmap_calls_; }

 private:
  DmaMapper& mapper_;
  std::map<std::uint64_t, DmaMapping> mapped_;  // by IOVA
  std::uint64_t map_calls_ = 0;
  std::uint64_t unmap_calls_ = 0;
};

}  // namespace vmm::vfio
