#pragma once
/// @file
/// @brief `BackendMemoryTable`: the guest memory a vhost-user frontend shared with the backend (SET_MEM_TABLE,
/// ADD_MEM_REG, REM_MEM_REG), mapped into the backend's address space, with the frontend's virtual addresses kept
/// for translating ring addresses.

// uapi.hpp first: it sets the macros the kernel's virtio headers (which protocol.hpp's vhost_types.h includes) need.
#include "vmm/virtio/uapi.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/memory/guest_address.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/vhost/protocol.hpp"

namespace vmm::vhost {

/// @brief The backend's copy of the guest memory map: each region the frontend described, mapped from the fd that
/// came with it (`GuestMemoryRegion::map_file`), gathered into a `memory::GuestMemory` that devices use with
/// guest-physical addresses (the addresses in descriptors).
///
/// Three address spaces meet here, one per party:
/// - guest-physical (`guest_phys_addr`): what the driver writes into descriptors; the device model uses these;
/// - the frontend's virtual addresses (`userspace_addr`): what QEMU puts in SET_VRING_ADDR, since the kernel's vhost
///   API it mirrors works on the VMM's own pointers. `translate` turns them into guest-physical addresses;
/// - the backend's own virtual addresses: wherever mmap put the region here; nobody else ever sees them.
///
/// Immutable: every change builds a new table (`with_region`, `without_region`), so a failed change leaves the old
/// one untouched and a device still running on the old memory is never disturbed. The new table maps every region
/// afresh (from a duplicate of the region's fd): `GuestMemory` owns its regions and cannot hand them over, and a
/// second mapping of the same shared pages costs one mmap and no copy.
///
/// Rules every table satisfies (checked before anything is mapped; errors name the request in `op`, the region and
/// the values): at most `max_regions` regions; none of size 0; no end that overflows 64 bits (guest-physical,
/// frontend-virtual or file offset); no two regions overlapping in guest-physical space, nor in the frontend's
/// virtual space (a ring address would be ambiguous); start, size and offset page-aligned and the file long enough
/// (`map_file` checks these).
///
/// Move-only. The `GuestMemory` lives on the heap, so `memory()` keeps its address when the table is moved: an
/// activation holds a pointer to it.
class BackendMemoryTable {
 public:
  /// @brief No memory (before the first SET_MEM_TABLE).
  BackendMemoryTable();
  /// @brief Takes over `other`'s regions and mappings.
  BackendMemoryTable(BackendMemoryTable&& other) noexcept;
  /// @brief Drops this table's mappings and takes over `other`'s.
  BackendMemoryTable& operator=(BackendMemoryTable&& other) noexcept;
  BackendMemoryTable(const BackendMemoryTable&) = delete;
  BackendMemoryTable& operator=(const BackendMemoryTable&) = delete;
  /// @brief Unmaps every region and closes its fd.
  ~BackendMemoryTable();

  /// @brief SET_MEM_TABLE: a table of `regions`, region i mapped from `fds[i]` (one fd per region; the fds are
  /// consumed, also on error).
  [[nodiscard]] static Result<BackendMemoryTable> create(std::span<const MemoryRegion> regions, std::vector<Fd> fds,
                                                         std::size_t max_regions, std::string_view op);
  /// @brief ADD_MEM_REG: this table plus `region`, mapped from `fd`.
  [[nodiscard]] Result<BackendMemoryTable> with_region(const MemoryRegion& region, Fd fd, std::size_t max_regions,
                                                       std::string_view op) const;
  /// @brief REM_MEM_REG: this table without the region whose guest-physical address, size and frontend address are
  /// those of `region` (the file offset is ignored, as the spec says). No such region: an error.
  [[nodiscard]] Result<BackendMemoryTable> without_region(const MemoryRegion& region, std::string_view op) const;

  /// @brief Checks the rules above that need no fd (count, sizes, overflow, overlaps).
  [[nodiscard]] static Result<void> validate(std::span<const MemoryRegion> regions, std::size_t max_regions,
                                             std::string_view op);

  /// @brief True before any region exists.
  [[nodiscard]] bool empty() const noexcept { return regions_.empty(); }
  /// @brief The regions as the frontend described them, sorted by guest-physical address.
  [[nodiscard]] std::span<const MemoryRegion> regions() const noexcept { return regions_; }
  /// @brief The mapped memory (guest-physical addresses), at a stable address for the table's lifetime (an empty
  /// memory for a moved-from table).
  [[nodiscard]] const memory::GuestMemory& memory() const noexcept;

  /// @brief The guest-physical address of the frontend's virtual address `uaddr`, if all of
  /// [uaddr, uaddr + length) lies inside one region (a ring area straddling two regions would be two unrelated host
  /// mappings here). The error names the range and says why.
  [[nodiscard]] Result<memory::GuestAddress> translate(std::uint64_t uaddr, std::uint64_t length) const;

 private:
  BackendMemoryTable(std::vector<MemoryRegion> regions, std::unique_ptr<memory::GuestMemory> memory);

  // Maps `regions` (sorted or not) from `fds`, in the same order; builds the table.
  [[nodiscard]] static Result<BackendMemoryTable> map_all(std::vector<MemoryRegion> regions, std::vector<Fd> fds,
                                                          std::string_view op);
  // Duplicates the fd behind the region starting at guest-physical `gpa` (to map it again in a new table).
  [[nodiscard]] Result<Fd> duplicate_fd(std::uint64_t gpa, std::string_view op) const;

  std::vector<MemoryRegion> regions_;            // sorted by guest_phys_addr
  std::unique_ptr<memory::GuestMemory> memory_;  // never null
};

/// @brief "gpa [0x0, 0x1000) uaddr 0x7f.. off 0x0": one region, for errors and traces.
[[nodiscard]] std::string describe_region(const MemoryRegion& region);

}  // namespace vmm::vhost
