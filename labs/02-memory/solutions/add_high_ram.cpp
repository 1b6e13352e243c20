// Lab 02, exercise 1 (reference): RAM above 4 GiB, as a new KVM slot the guest can reach.
#include <fmt/format.h>

#include <algorithm>

#include "lab02.hpp"

namespace lab02 {

namespace {
constexpr std::uint64_t k1GiB = 1ull << 30;
constexpr std::uint64_t kGuestLoadAddress = 0x100000;  // guest.ld: the page tables must end below the program
}  // namespace

vmm::Result<AddedRegion> add_high_ram(vmm::stage02::LongModeVm& vm, vmm::memory::GuestAddress at, std::uint64_t size) {
  // 1. Host memory for the new guest-physical range: an mmap this process owns.
  auto region = vmm::memory::GuestMemoryRegion::create(at, size);
  if (!region) {
    return std::unexpected(region.error());
  }
  // 2. Tell KVM: a slot number nobody uses (LongModeVm numbered its regions 0, 1, ...), no flags.
  std::uint32_t slot = 0;
  for (const auto& existing : vm.vm().memory_slots()) {
    slot = std::max(slot, existing.slot + 1);
  }
  const vmm::kvm::MemorySlot memory_slot{
      .slot = slot, .guest_address = at.raw(), .size = size, .host_address = region->host_address(), .flags = 0};
  if (auto rc = vm.vm().set_memory_slot(memory_slot); !rc) {
    return std::unexpected(rc.error());
  }
  // 3. The guest runs with paging on: a guest-physical address it cannot name with a virtual one is out of reach.
  //    Rewrite the identity map in place, large enough to cover the new range. CR3 keeps pointing at the same PML4,
  //    and the vCPU has not run yet, so there is no stale TLB entry to flush.
  const std::uint64_t end = region->end().raw();
  const std::uint64_t bytes = std::max(vm.page_tables().mapped_bytes, (end + k1GiB - 1) / k1GiB * k1GiB);
  const std::uint64_t tables_end = vm.page_tables().pml4.raw() + (2 + bytes / k1GiB) * 4096;
  if (tables_end > kGuestLoadAddress) {
    return vmm::logic_error(
        "add_high_ram",
        fmt::format("page tables for {:#x} bytes would overwrite the guest at {:#x}", bytes, kGuestLoadAddress));
  }
  auto tables = vmm::x86::write_identity_page_tables(vm.memory(), vm.page_tables().pml4, bytes);
  if (!tables) {
    return std::unexpected(tables.error());
  }
  return AddedRegion{.region = std::move(*region), .slot = slot};
}

}  // namespace lab02
