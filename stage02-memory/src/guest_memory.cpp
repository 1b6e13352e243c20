#include "vmm/memory/guest_memory.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace vmm::memory {

// --- VolatileSlice ---------------------------------------------------------------------------------------------

Result<void> VolatileSlice::copy_to(std::span<std::byte> out) const {
  if (out.size() > size_) {
    return logic_error("VolatileSlice::copy_to", fmt::format("{:#x} bytes from a slice of {:#x}", out.size(), size_));
  }
  if (!out.empty()) {
    std::memcpy(out.data(), data_, out.size());
  }
  return {};
}

Result<void> VolatileSlice::copy_from(std::span<const std::byte> in) const {
  if (in.size() > size_) {
    return logic_error("VolatileSlice::copy_from", fmt::format("{:#x} bytes into a slice of {:#x}", in.size(), size_));
  }
  if (!in.empty()) {
    std::memcpy(data_, in.data(), in.size());
  }
  return {};
}

Result<VolatileSlice> VolatileSlice::subslice(std::size_t offset, std::size_t length) const {
  // Written as two comparisons, not offset + length > size_, so that a huge length cannot wrap the sum.
  if (offset > size_ || length > size_ - offset) {
    return logic_error("VolatileSlice::subslice",
                       fmt::format("{:#x} bytes at offset {:#x} of a slice of {:#x}", length, offset, size_));
  }
  return VolatileSlice(data_ + offset, length);
}

// --- GuestMemory -----------------------------------------------------------------------------------------------

Result<GuestMemory> GuestMemory::from_regions(std::vector<GuestMemoryRegion> regions) {
  GuestMemory memory;
  for (auto& region : regions) {
    if (auto ok = memory.add_region(std::move(region)); !ok) {
      return std::unexpected(std::move(ok).error());
    }
  }
  return memory;
}

Result<void> GuestMemory::add_region(GuestMemoryRegion region) {
  auto next = std::ranges::upper_bound(regions_, region.start(), {}, &GuestMemoryRegion::start);
  // Sorted and disjoint, so only the neighbours on either side can overlap the new region.
  auto overlaps = [&](const GuestMemoryRegion& other) {
    return region.start() < other.end() && other.start() < region.end();
  };
  for (auto it : {next, next == regions_.begin() ? regions_.end() : std::prev(next)}) {
    if (it != regions_.end() && overlaps(*it)) {
      return logic_error("GuestMemory::add_region",
                         fmt::format("region {} overlaps region {}", region.range(), it->range()));
    }
  }
  regions_.insert(next, std::move(region));
  return {};
}

std::uint64_t GuestMemory::total_size() const noexcept {
  std::uint64_t total = 0;
  for (const auto& region : regions_) {
    total += region.size();
  }
  return total;
}

const GuestMemoryRegion* GuestMemory::find_region(GuestAddress address) const noexcept {
  // The last region starting at or below `address` is the only candidate.
  auto next = std::ranges::upper_bound(regions_, address, {}, &GuestMemoryRegion::start);
  if (next == regions_.begin()) {
    return nullptr;
  }
  const auto& candidate = *std::prev(next);
  return candidate.contains(address) ? &candidate : nullptr;
}

Result<std::span<std::byte>> GuestMemory::to_host(GuestAddress address, std::size_t length) const {
  constexpr std::string_view op = "GuestMemory::to_host";
  if (length == 0) {
    return std::span<std::byte>();
  }
  const auto* region = find_region(address);
  if (region == nullptr) {
    return logic_error(op,
                       fmt::format("{}: {:#x} is not guest memory", describe_access(address, length), address.raw()));
  }
  const auto offset = address.raw() - region->start().raw();
  if (length > region->size() - offset) {
    return logic_error(op, fmt::format("{}: the range does not fit in region {} (one host mapping)",
                                       describe_access(address, length), region->range()));
  }
  return region->bytes().subspan(offset, length);
}

Result<VolatileSlice> GuestMemory::volatile_slice(GuestAddress address, std::size_t length) const {
  auto host = to_host(address, length);
  if (!host) {
    return std::unexpected(std::move(host).error().with_context("volatile_slice"));
  }
  return VolatileSlice(host->data(), host->size());
}

namespace {

// Walks [address, address + length) region by region, calling f(host chunk, offset into the caller's buffer). The
// caller has already checked that the whole range is backed, so every lookup here succeeds.
template <typename F>
void for_each_chunk(const GuestMemory& memory, GuestAddress address, std::size_t length, F&& f) {
  std::size_t done = 0;
  while (done < length) {
    const auto* region = memory.find_region(address);
    const auto offset = address.raw() - region->start().raw();
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(length - done, region->size() - offset));
    f(region->bytes().subspan(offset, n), done);
    done += n;
    address = GuestAddress(address.raw() + n);  // at most region->end(), which is representable
  }
}

}  // namespace

Result<void> GuestMemory::check_range(GuestAddress address, std::uint64_t length) const {
  return check_backed(address, length, "GuestMemory::check_range");
}

Result<void> GuestMemory::check_backed(GuestAddress address, std::size_t length, std::string_view operation) const {
  if (length == 0) {
    return {};
  }
  if (!address.checked_add(length - 1)) {
    return logic_error(operation, fmt::format("{}: the range runs past the end of the 64-bit address space",
                                              describe_access(address, length)));
  }
  auto cursor = address;
  std::uint64_t remaining = length;
  while (remaining > 0) {
    const auto* region = find_region(cursor);
    if (region == nullptr) {
      return logic_error(operation,
                         fmt::format("{}: {:#x} is not guest memory", describe_access(address, length), cursor.raw()));
    }
    const auto n = std::min<std::uint64_t>(remaining, region->end().raw() - cursor.raw());
    remaining -= n;
    cursor = region->end();
  }
  return {};
}

Result<void> GuestMemory::read(GuestAddress address, std::span<std::byte> out) const {
  if (auto ok = check_backed(address, out.size(), "GuestMemory::read"); !ok) {
    return ok;
  }
  for_each_chunk(*this, address, out.size(), [&](std::span<std::byte> chunk, std::size_t done) {
    std::memcpy(&out[done], chunk.data(), chunk.size());
  });
  return {};
}

Result<void> GuestMemory::write(GuestAddress address, std::span<const std::byte> in) const {
  if (auto ok = check_backed(address, in.size(), "GuestMemory::write"); !ok) {
    return ok;
  }
  for_each_chunk(*this, address, in.size(), [&](std::span<std::byte> chunk, std::size_t done) {
    std::memcpy(chunk.data(), &in[done], chunk.size());
  });
  return {};
}

Result<std::byte*> GuestMemory::atomic_target(GuestAddress address, std::size_t width, std::string_view operation,
                                              std::memory_order order, bool is_store) const {
  // std::atomic_ref makes these orders undefined behaviour rather than an error, so refuse them here.
  const bool bad_order = is_store ? (order == std::memory_order_acquire || order == std::memory_order_consume ||
                                     order == std::memory_order_acq_rel)
                                  : (order == std::memory_order_release || order == std::memory_order_acq_rel);
  if (bad_order) {
    return logic_error(operation, fmt::format("{}: invalid memory order for a {}", describe_access(address, width),
                                              is_store ? "store" : "load"));
  }
  if (address.raw() % width != 0) {
    return logic_error(operation,
                       fmt::format("{}: the address is not {}-byte aligned, so the access would not be atomic",
                                   describe_access(address, width), width));
  }
  // Regions start page-aligned in guest and host, so an aligned guest address has an aligned host address.
  auto host = to_host(address, width);
  if (!host) {
    return std::unexpected(std::move(host).error().with_context(operation));
  }
  return host->data();
}

}  // namespace vmm::memory
