#include "vmm/memory/kvm_memory.hpp"

#include <linux/kvm.h>

#include <algorithm>

#include <fmt/format.h>

namespace vmm::memory {

namespace {

Result<kvm::MemorySlot> registered_slot(const kvm::Vm& vm, std::uint32_t slot, std::string_view operation) {
  const auto slots = vm.memory_slots();
  const auto it = std::ranges::find(slots, slot, &kvm::MemorySlot::slot);
  if (it == slots.end()) {
    return logic_error(operation, fmt::format("slot {} is not registered with this VM", slot));
  }
  return *it;
}

}  // namespace

Result<void> register_with(const GuestMemory& memory, kvm::Vm& vm, std::uint32_t first_slot) {
  std::uint32_t slot = first_slot;
  for (const auto& region : memory.regions()) {
    const kvm::MemorySlot memory_slot{
        .slot = slot,
        .guest_address = region.start().raw(),
        .size = region.size(),
        .host_address = region.host_address(),
        .flags = 0,
    };
    if (auto ok = vm.set_memory_slot(memory_slot); !ok) {
      return std::unexpected(std::move(ok).error().with_context(fmt::format("registering region {}", region.range())));
    }
    ++slot;
  }
  return {};
}

Result<void> enable_dirty_logging(kvm::Vm& vm, std::uint32_t slot) {
  auto existing = registered_slot(vm, slot, "enable_dirty_logging");
  if (!existing) {
    return std::unexpected(std::move(existing).error());
  }
  // KVM changes a slot's flags when the same slot number is set again with the same range and host address.
  existing->flags |= KVM_MEM_LOG_DIRTY_PAGES;
  return vm.set_memory_slot(*existing);
}

Result<DirtyLog> dirty_pages(kvm::Vm& vm, std::uint32_t slot) {
  auto existing = registered_slot(vm, slot, "KVM_GET_DIRTY_LOG");
  if (!existing) {
    return std::unexpected(std::move(existing).error());
  }
  if ((existing->flags & KVM_MEM_LOG_DIRTY_PAGES) == 0) {
    // KVM's answer would be a bare ENOENT; say what is missing instead.
    return logic_error("KVM_GET_DIRTY_LOG",
                       fmt::format("slot {} does not log dirty pages (call enable_dirty_logging first)", slot));
  }
  DirtyLog log;
  log.slot_start = GuestAddress(existing->guest_address);
  log.page_size = host_page_size();
  log.pages = existing->size / log.page_size;
  // KVM writes whole 64-bit words: the buffer must be rounded up, not to the byte.
  log.bitmap.assign((log.pages + 63) / 64, 0);
  kvm_dirty_log request{};
  request.slot = slot;
  request.dirty_bitmap = log.bitmap.data();
  if (auto rc = VMM_IOCTL(vm.fd(), KVM_GET_DIRTY_LOG, &request); !rc) {
    return std::unexpected(std::move(rc).error().with_context(fmt::format("slot {}", slot)));
  }
  return log;
}

std::vector<GuestAddress> DirtyLog::dirty_pages() const {
  std::vector<GuestAddress> result;
  for (std::uint64_t page = 0; page < pages; ++page) {
    if (is_dirty(page)) {
      result.emplace_back(slot_start.raw() + page * page_size);
    }
  }
  return result;
}

}  // namespace vmm::memory
