#include "vmm/pci/address_allocator.hpp"

#include <algorithm>
#include <iterator>
#include <limits>
#include <string>

#include <fmt/format.h>

namespace vmm::pci {

namespace {

constexpr std::uint64_t kMaxAddress = std::numeric_limits<std::uint64_t>::max();

// True when [address, address + size) fits in 64 bits. It may end exactly at 2^64: its last byte is 2^64 - 1.
constexpr bool fits_in_address_space(std::uint64_t address, std::uint64_t size) {
  return size == 0 || size - 1 <= kMaxAddress - address;
}

constexpr bool is_power_of_two(std::uint64_t value) {
  return value != 0 && (value & (value - 1)) == 0;
}

// "[0xc0000000, 0x100000000)". The end of a range that finishes at 2^64 does not fit in a std::uint64_t, so it is
// spelled out rather than computed (and wrapped to 0x0).
std::string describe_range(std::uint64_t address, std::uint64_t size) {
  if (size != 0 && size - 1 == kMaxAddress - address) {
    return fmt::format("[{:#x}, 0x10000000000000000)", address);
  }
  return fmt::format("[{:#x}, {:#x})", address, address + size);
}

}  // namespace

AddressAllocator::AddressAllocator(std::uint64_t base, std::uint64_t size)
    : base_(base), size_(size), free_bytes_(size), free_{{base, size}} {}

Result<AddressAllocator> AddressAllocator::create(std::uint64_t base, std::uint64_t size) {
  if (size == 0) {
    return logic_error("AddressAllocator::create", fmt::format("an empty pool at {:#x}", base));
  }
  if (!fits_in_address_space(base, size)) {
    return logic_error(
        "AddressAllocator::create",
        fmt::format("a pool of {:#x} bytes at {:#x} would run past the end of the 64-bit address space", size, base));
  }
  return AddressAllocator(base, size);
}

Result<std::uint64_t> AddressAllocator::allocate(std::uint64_t size, std::uint64_t alignment) {
  const auto request = [&] {
    return fmt::format("{:#x} bytes aligned to {:#x} in {}", size, alignment, describe_range(base_, size_));
  };
  if (size == 0) {
    return logic_error("AddressAllocator::allocate", fmt::format("{}: the size must be non-zero", request()));
  }
  if (!is_power_of_two(alignment)) {
    return logic_error("AddressAllocator::allocate",
                       fmt::format("{}: the alignment must be a power of two", request()));
  }
  // Free ranges are sorted and disjoint, and within a range the first aligned address is the lowest candidate, so the
  // first range with room holds the lowest suitable address.
  std::uint64_t largest = 0;
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const auto [start, length] = *it;
    largest = std::max(largest, length);
    // Padding up to the next multiple of `alignment`, compared with the length before anything is added to `start`:
    // start + padding may not exist (a range near 2^64 with an alignment past its end).
    const std::uint64_t misalignment = start & (alignment - 1);
    const std::uint64_t padding = misalignment == 0 ? 0 : alignment - misalignment;
    if (padding >= length || length - padding < size) {
      continue;
    }
    const std::uint64_t address = start + padding;
    take(it, address, size);
    return address;
  }
  if (free_bytes_ < size) {
    return logic_error("AddressAllocator::allocate",
                       fmt::format("{}: no free range fits (exhausted: {:#x} bytes free)", request(), free_bytes_));
  }
  return logic_error("AddressAllocator::allocate",
                     fmt::format("{}: no free range fits ({:#x} bytes free, the largest free range {:#x} bytes)",
                                 request(), free_bytes_, largest));
}

Result<void> AddressAllocator::reserve(std::uint64_t address, std::uint64_t size) {
  const auto request = [&] { return fmt::format("{:#x} bytes at {:#x}", size, address); };
  if (size == 0) {
    return logic_error("AddressAllocator::reserve", fmt::format("{}: the size must be non-zero", request()));
  }
  if (!fits_in_address_space(address, size)) {
    return logic_error("AddressAllocator::reserve",
                       fmt::format("{}: the range would run past the end of the 64-bit address space", request()));
  }
  // Both ranges fit in 64 bits, so compare offsets from the base rather than (possibly unrepresentable) ends.
  if (address < base_ || size > size_ || address - base_ > size_ - size) {
    return logic_error(
        "AddressAllocator::reserve",
        fmt::format("{} lies outside the pool {}", describe_range(address, size), describe_range(base_, size_)));
  }
  // The only free range that can contain `address` is the last one starting at or below it.
  auto it = free_.upper_bound(address);
  if (it != free_.begin()) {
    --it;
    const auto [start, length] = *it;
    const std::uint64_t offset = address - start;
    if (offset < length && length - offset >= size) {
      take(it, address, size);
      return {};
    }
  }
  // Some part is in use: name the first allocation it overlaps, the one ending after `address`.
  auto used = allocated_.upper_bound(address);
  if (used != allocated_.begin() && std::prev(used)->second > address - std::prev(used)->first) {
    --used;
  }
  if (used == allocated_.end()) {  // Unreachable while free_ and allocated_ tile the pool; never dereference end().
    return logic_error("AddressAllocator::reserve", fmt::format("{} is not free", describe_range(address, size)));
  }
  return logic_error("AddressAllocator::reserve",
                     fmt::format("{} overlaps the allocation {}", describe_range(address, size),
                                 describe_range(used->first, used->second)));
}

Result<void> AddressAllocator::free(std::uint64_t address) {
  auto it = allocated_.find(address);
  if (it == allocated_.end()) {
    auto containing = allocated_.upper_bound(address);
    if (containing != allocated_.begin()) {
      --containing;
      if (address - containing->first < containing->second) {
        return logic_error("AddressAllocator::free",
                           fmt::format("{:#x} lies inside the allocation {}: free takes its start address", address,
                                       describe_range(containing->first, containing->second)));
      }
    }
    return logic_error("AddressAllocator::free",
                       fmt::format("no allocation starts at {:#x} in {}", address, describe_range(base_, size_)));
  }
  std::uint64_t start = address;
  std::uint64_t length = it->second;
  allocated_.erase(it);
  free_bytes_ += length;

  // Merge with the free range after it, then the one before it. Neither sum can wrap: both pieces lie in the pool.
  auto next = free_.upper_bound(start);
  if (next != free_.end() && next->first - start == length) {
    length += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto previous = std::prev(next);
    if (start - previous->first == previous->second) {
      previous->second += length;
      return {};
    }
  }
  free_.emplace_hint(next, start, length);
  return {};
}

std::vector<Allocation> AddressAllocator::allocations() const {
  std::vector<Allocation> out;
  out.reserve(allocated_.size());
  for (const auto& [address, size] : allocated_) {
    out.push_back(Allocation{address, size});
  }
  return out;
}

void AddressAllocator::take(std::map<std::uint64_t, std::uint64_t>::iterator range, std::uint64_t address,
                            std::uint64_t size) {
  const auto [start, length] = *range;
  const std::uint64_t before = address - start;
  const std::uint64_t after = length - before - size;
  auto hint = free_.erase(range);
  if (after != 0) {
    // Something follows the allocation inside the range, so address + size < start + length <= 2^64.
    hint = free_.emplace_hint(hint, address + size, after);
  }
  if (before != 0) {
    free_.emplace_hint(hint, start, before);
  }
  allocated_.emplace(address, size);
  free_bytes_ -= size;
}

}  // namespace vmm::pci
