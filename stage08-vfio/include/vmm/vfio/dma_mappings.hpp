#pragma once
/// @file
/// @brief `DmaMappings`: the bookkeeping of a container's DMA mappings (IOVA ranges to host memory), kept apart from
/// the ioctls so that it can be tested without VFIO.

#include <cstdint>
#include <map>
#include <vector>

#include "vmm/error.hpp"

namespace vmm::vfio {

/// @brief One DMA mapping: the device sees host memory [host_va, host_va + size) at [iova, iova + size).
struct DmaMapping {
  std::uint64_t iova = 0;     ///< Where the device sees the memory (the address it puts on the bus).
  std::uint64_t size = 0;     ///< Length in bytes.
  std::uint64_t host_va = 0;  ///< The memory in this process.
  bool readable = true;       ///< The device may read it (VFIO_DMA_MAP_FLAG_READ).
  bool writable = true;       ///< The device may write it (VFIO_DMA_MAP_FLAG_WRITE).
  /// @brief Member-wise equality (for tests and lookups).
  friend bool operator==(const DmaMapping&, const DmaMapping&) = default;
};

/// @brief The current mappings of one container, checked before each MAP_DMA/UNMAP_DMA so that a mistake gets a
/// clear message instead of the kernel's bare EEXIST or EINVAL.
///
/// Rules: a mapping is non-empty, aligned (iova, size and host_va) to `alignment`, does not wrap around the 64-bit
/// address space, and does not overlap an existing one (adjacent is fine). An unmap names exactly one existing
/// mapping (type1v2 refuses to split a mapping, so we do too).
class DmaMappings {
 public:
  /// @brief `alignment` (a power of two): the IOMMU's smallest page size, 4 KiB on x86.
  explicit DmaMappings(std::uint64_t alignment = 4096) : alignment_(alignment) {}

  /// @brief Whether `mapping` may be added; the error says which rule it breaks (and which mapping it overlaps).
  [[nodiscard]] Result<void> check_add(const DmaMapping& mapping) const;
  /// @brief check_add, then records it.
  [[nodiscard]] Result<void> add(const DmaMapping& mapping);
  /// @brief The mapping at exactly [iova, iova + size), or an error naming what is mapped there instead.
  [[nodiscard]] Result<DmaMapping> find_exact(std::uint64_t iova, std::uint64_t size) const;
  /// @brief find_exact, then forgets it; returns it.
  [[nodiscard]] Result<DmaMapping> remove(std::uint64_t iova, std::uint64_t size);

  /// @brief The mappings, by IOVA.
  [[nodiscard]] std::vector<DmaMapping> list() const;
  /// @brief How many mappings there are.
  [[nodiscard]] std::size_t size() const noexcept { return by_iova_.size(); }
  /// @brief The alignment every mapping must have.
  [[nodiscard]] std::uint64_t alignment() const noexcept { return alignment_; }
  /// @brief Changes the alignment (e.g. once the IOMMU's page sizes are known).
  void set_alignment(std::uint64_t alignment) noexcept { alignment_ = alignment; }

 private:
  std::uint64_t alignment_;
  std::map<std::uint64_t, DmaMapping> by_iova_;
};

}  // namespace vmm::vfio
