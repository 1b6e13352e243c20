#include "vmm/vfio/device_memory.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace vmm::vfio {

std::vector<BarArea> guest_mappable_areas(const RegionInfo& region, std::span<const BarArea> trapped,
                                          std::uint64_t page_size) {
  if (!region.mappable() || page_size == 0 || region.size == 0) {
    return {};
  }
  std::vector<BarArea> allowed;
  if (region.caps.sparse_mmap) {
    for (const SparseMmapArea& area : *region.caps.sparse_mmap) {
      // Clip to the region: a sparse area is the kernel's word, still checked like any input.
      if (area.offset < region.size && area.size > 0) {
        allowed.push_back({area.offset, std::min(area.size, region.size - area.offset)});
      }
    }
  } else {
    allowed.push_back({0, region.size});
  }
  std::sort(allowed.begin(), allowed.end(), [](const BarArea& a, const BarArea& b) { return a.offset < b.offset; });

  const auto page_trapped = [&](std::uint64_t page) {
    return std::any_of(trapped.begin(), trapped.end(), [&](const BarArea& t) {
      return t.size > 0 && page < t.offset + t.size && t.offset < page + page_size;
    });
  };
  std::vector<BarArea> out;
  for (const BarArea& area : allowed) {
    // Whole pages inside the area only: a memory slot maps pages, and a partial page would expose bytes VFIO did
    // not offer.
    const std::uint64_t first = (area.offset + page_size - 1) / page_size * page_size;
    const std::uint64_t last = area.end() / page_size * page_size;  // exclusive
    for (std::uint64_t page = first; page < last; page += page_size) {
      if (page_trapped(page)) {
        continue;
      }
      if (!out.empty() && out.back().end() == page) {
        out.back().size += page_size;
      } else {
        out.push_back({page, page_size});
      }
    }
  }
  return out;
}

KvmDeviceMemorySlots::~KvmDeviceMemorySlots() {
  std::lock_guard lock(mutex_);
  for (const auto& [slot, mapping] : used_) {
    (void)vm_.remove_memory_slot(slot);
  }
}

Result<std::uint32_t> KvmDeviceMemorySlots::map(std::uint64_t guest_address, std::uint64_t size, void* host) {
  const std::uint64_t page = 4096;
  if (size == 0 || guest_address % page != 0 || size % page != 0 ||
      reinterpret_cast<std::uintptr_t>(host) % page != 0) {
    return logic_error(
        "KVM_SET_USER_MEMORY_REGION",
        fmt::format("device memory [0x{:x}, +0x{:x}) at host {}: not whole pages", guest_address, size, host));
  }
  std::lock_guard lock(mutex_);
  std::uint32_t slot = first_slot_;
  while (used_.contains(slot)) {
    ++slot;
  }
  if (slot >= first_slot_ + max_slots_) {
    return logic_error("KVM_SET_USER_MEMORY_REGION",
                       fmt::format("device memory [0x{:x}, +0x{:x}): all {} slots from {} are in use", guest_address,
                                   size, max_slots_, first_slot_));
  }
  const kvm::MemorySlot mapping{
      .slot = slot, .guest_address = guest_address, .size = size, .host_address = host, .flags = 0};
  if (auto rc = vm_.set_memory_slot(mapping); !rc) {
    return std::unexpected(rc.error().with_context("device memory"));
  }
  used_.emplace(slot, mapping);
  return slot;
}

Result<void> KvmDeviceMemorySlots::unmap(std::uint32_t handle) {
  std::lock_guard lock(mutex_);
  if (!used_.contains(handle)) {
    return logic_error("KVM_SET_USER_MEMORY_REGION", fmt::format("slot {} is not device memory of this VM", handle));
  }
  if (auto rc = vm_.remove_memory_slot(handle); !rc) {
    return rc;
  }
  used_.erase(handle);
  return {};
}

std::vector<kvm::MemorySlot> KvmDeviceMemorySlots::slots() const {
  std::lock_guard lock(mutex_);
  std::vector<kvm::MemorySlot> out;
  for (const auto& [slot, mapping] : used_) {
    out.push_back(mapping);
  }
  return out;
}

}  // namespace vmm::vfio
