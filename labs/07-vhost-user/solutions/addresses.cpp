// Lab 07, exercise 1: the three address spaces of vhost-user (reference). See labs/07-vhost-user/README.md.
#include <fmt/format.h>

#include <limits>
#include <string_view>

#include "lab07.hpp"

namespace lab07 {

namespace {

using vmm::vhost::MemoryRegion;

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

// Which address of a region a translation starts from and which it ends in.
using Field = std::uint64_t MemoryRegion::*;

// [address, address + length) through the region that holds it, from one of the region's address spaces (`from`)
// to another (`to`). Every comparison is written so that nothing overflows: `address - start` only once
// `address >= start` is known, and the end of the range is never computed at all.
vmm::Result<std::uint64_t> translate(std::span<const MemoryRegion> regions, std::uint64_t address, std::uint64_t length,
                                     Field from, Field to, std::string_view op, std::string_view space) {
  // The range's last byte is address + length - 1: it must exist. Checked first, and on its own, because it is the
  // one mistake the error should name: a length computed from garbage. (The loop below would refuse such a range
  // too, since it never computes address + length.)
  if (length > 0 && length - 1 > kMax - address) {
    return vmm::logic_error(op, fmt::format("{} range [{:#x}, +{:#x}) wraps around 2^64", space, address, length));
  }
  for (const MemoryRegion& region : regions) {
    const std::uint64_t start = region.*from;
    if (address < start || address - start >= region.memory_size) {
      continue;  // not in this one
    }
    const std::uint64_t offset = address - start;
    if (length > region.memory_size - offset) {
      // Regions that are neighbours in one address space need not be in the other: a range across the boundary
      // would be two unrelated pieces of memory on the other side.
      return vmm::logic_error(
          op, fmt::format("{} range [{:#x}, +{:#x}) runs past the end of its region (gpa "
                          "[{:#x}, +{:#x}) uaddr {:#x})",
                          space, address, length, region.guest_phys_addr, region.memory_size, region.userspace_addr));
    }
    return region.*to + offset;
  }
  return vmm::logic_error(op, fmt::format("{} address {:#x} (+{:#x}) is in none of the {} regions", space, address,
                                          length, regions.size()));
}

}  // namespace

vmm::Result<std::uint64_t> frontend_va_for(std::span<const MemoryRegion> regions, std::uint64_t gpa,
                                           std::uint64_t length) {
  return translate(regions, gpa, length, &MemoryRegion::guest_phys_addr, &MemoryRegion::userspace_addr,
                   "frontend_va_for", "guest-physical");
}

vmm::Result<std::uint64_t> gpa_for(std::span<const MemoryRegion> regions, std::uint64_t uaddr, std::uint64_t length) {
  return translate(regions, uaddr, length, &MemoryRegion::userspace_addr, &MemoryRegion::guest_phys_addr, "gpa_for",
                   "frontend virtual");
}

vmm::Result<std::uint64_t> backend_offset_for(const MemoryRegion& region, std::uint64_t gpa) {
  if (gpa < region.guest_phys_addr || gpa - region.guest_phys_addr >= region.memory_size) {
    return vmm::logic_error("backend_offset_for",
                            fmt::format("guest-physical address {:#x} is outside the region gpa [{:#x}, +{:#x})", gpa,
                                        region.guest_phys_addr, region.memory_size));
  }
  const std::uint64_t delta = gpa - region.guest_phys_addr;
  if (delta > kMax - region.mmap_offset) {
    return vmm::logic_error("backend_offset_for",
                            fmt::format("guest-physical address {:#x}: file offset {:#x} + {:#x} overflows 64 bits",
                                        gpa, region.mmap_offset, delta));
  }
  // The backend mapped [mmap_offset, mmap_offset + memory_size) of the fd for the region: the byte for `gpa` is as
  // far into the file from mmap_offset as `gpa` is into the region from guest_phys_addr.
  return region.mmap_offset + delta;
}

}  // namespace lab07
