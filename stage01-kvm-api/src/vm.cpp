#include "vmm/kvm/vm.hpp"

#include <unistd.h>

#include <algorithm>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace vmm::kvm {

namespace {

std::string describe_slot(const MemorySlot& s) {
  return fmt::format("slot {} [{:#x}, {:#x})", s.slot, s.guest_address, s.guest_end());
}

// KVM's EINVAL/EEXIST say nothing about *which* rule was broken. Work it out from what we know, so the learner reads
// "not page-aligned" or "overlaps slot 0" instead of a bare errno.
std::string explain_slot_failure(const MemorySlot& slot, std::span<const MemorySlot> existing) {
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<std::string> reasons;
  if (slot.guest_address % page != 0) {
    reasons.push_back(fmt::format("guest address {:#x} is not page-aligned", slot.guest_address));
  }
  if (slot.size % page != 0) {
    reasons.push_back(fmt::format("size {:#x} is not a multiple of the page size", slot.size));
  }
  if (reinterpret_cast<std::uintptr_t>(slot.host_address) % page != 0) {
    reasons.push_back(fmt::format("host address {} is not page-aligned", slot.host_address));
  }
  for (const auto& other : existing) {
    if (other.slot != slot.slot && slot.guest_address < other.guest_end() && other.guest_address < slot.guest_end()) {
      reasons.push_back(fmt::format("{} overlaps {}", describe_slot(slot), describe_slot(other)));
    }
  }
  if (reasons.empty()) {
    reasons.push_back(describe_slot(slot));
  }
  return fmt::format("{}", fmt::join(reasons, "; "));
}

}  // namespace

Result<void> Vm::set_memory_slot(const MemorySlot& slot) {
  const kvm_userspace_memory_region region{
      .slot = slot.slot,
      .flags = slot.flags,
      .guest_phys_addr = slot.guest_address,
      .memory_size = slot.size,
      .userspace_addr = reinterpret_cast<std::uint64_t>(slot.host_address),
  };
  if (auto rc = VMM_IOCTL(fd_, KVM_SET_USER_MEMORY_REGION, &region); !rc) {
    return std::unexpected(rc.error().with_context(explain_slot_failure(slot, slots_)));
  }
  auto it = std::ranges::lower_bound(slots_, slot.slot, {}, &MemorySlot::slot);
  if (it != slots_.end() && it->slot == slot.slot) {
    *it = slot;
  } else {
    slots_.insert(it, slot);
  }
  return {};
}

Result<void> Vm::remove_memory_slot(std::uint32_t slot) {
  const kvm_userspace_memory_region region{
      .slot = slot, .flags = 0, .guest_phys_addr = 0, .memory_size = 0, .userspace_addr = 0};
  if (auto rc = VMM_IOCTL(fd_, KVM_SET_USER_MEMORY_REGION, &region); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("removing slot {}", slot)));
  }
  std::erase_if(slots_, [slot](const MemorySlot& s) { return s.slot == slot; });
  return {};
}

Result<Vcpu> Vm::create_vcpu(std::uint32_t id) {
  auto fd = VMM_IOCTL(fd_, KVM_CREATE_VCPU, id);
  if (!fd) {
    return std::unexpected(fd.error().with_context(fmt::format("vCPU {}", id)));
  }
  Fd vcpu_fd(*fd);
  auto run = Mmap::map(vcpu_fd, vcpu_mmap_size_, PROT_READ | PROT_WRITE, MAP_SHARED);
  if (!run) {
    return std::unexpected(run.error().with_context(fmt::format("kvm_run page of vCPU {}", id)));
  }
  return Vcpu(std::move(vcpu_fd), std::move(*run), id);
}

Result<int> Vm::check_extension(int capability) const {
  return VMM_IOCTL(fd_, KVM_CHECK_EXTENSION, capability);
}

Result<void> Vm::set_tss_address(std::uint64_t guest_address) {
  if (auto rc = VMM_IOCTL(fd_, KVM_SET_TSS_ADDR, guest_address); !rc) {
    return std::unexpected(rc.error());
  }
  return {};
}

}  // namespace vmm::kvm
