// Lab 07, exercise 1: the three address spaces of vhost-user. See labs/07-vhost-user/README.md.
#include "lab07.hpp"

namespace lab07 {

vmm::Result<std::uint64_t> frontend_va_for(std::span<const vmm::vhost::MemoryRegion> regions, std::uint64_t gpa,
                                           std::uint64_t length) {
  // TODO: find the region whose guest-physical range [guest_phys_addr, + memory_size) holds `gpa`, check that the
  // whole range [gpa, gpa + length) fits in it, and return the same offset into the region from userspace_addr.
  // Refuse (vmm::logic_error, with `gpa` in hex in the message) a range that wraps around 2^64, starts in no region,
  // or runs past the end of its region. Careful: `gpa + length` may overflow. Then delete the return below.
  (void)regions;
  (void)gpa;
  (void)length;
  return vmm::logic_error("frontend_va_for", "not implemented yet (lab 07, exercise 1)");
}

vmm::Result<std::uint64_t> gpa_for(std::span<const vmm::vhost::MemoryRegion> regions, std::uint64_t uaddr,
                                   std::uint64_t length) {
  // TODO: the same the other way round: from the frontend's virtual addresses (userspace_addr) to guest-physical
  // ones. (One helper can do both directions.) Then delete the return below.
  (void)regions;
  (void)uaddr;
  (void)length;
  return vmm::logic_error("gpa_for", "not implemented yet (lab 07, exercise 1)");
}

vmm::Result<std::uint64_t> backend_offset_for(const vmm::vhost::MemoryRegion& region, std::uint64_t gpa) {
  // TODO: the backend mapped [mmap_offset, mmap_offset + memory_size) of the region's fd: where in the fd is the
  // byte of guest-physical `gpa`? Refuse a `gpa` outside the region and an offset that overflows. Then delete the
  // return below.
  (void)region;
  (void)gpa;
  return vmm::logic_error("backend_offset_for", "not implemented yet (lab 07, exercise 1)");
}

}  // namespace lab07
