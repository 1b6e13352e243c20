#include "vmm/memory/guest_address.hpp"

#include <fmt/format.h>

namespace vmm::memory {

Result<GuestAddress> GuestAddress::checked_add(std::uint64_t offset) const {
  std::uint64_t sum = 0;
  if (__builtin_add_overflow(raw_, offset, &sum)) {
    return logic_error("GuestAddress::checked_add",
                       fmt::format("{:#x} + {:#x} overflows the 64-bit guest-physical address space", raw_, offset));
  }
  return GuestAddress(sum);
}

Result<std::uint64_t> GuestAddress::checked_offset_from(GuestAddress base) const {
  if (raw_ < base.raw_) {
    return logic_error("GuestAddress::checked_offset_from",
                       fmt::format("{:#x} lies below the base {:#x}", raw_, base.raw_));
  }
  return raw_ - base.raw_;
}

std::string describe_access(GuestAddress address, std::uint64_t length) {
  return fmt::format("{:#x} bytes at {:#x}", length, address.raw());
}

}  // namespace vmm::memory
