// Lab 02, exercise 2 (reference): a read-only slot, and the MMIO exit a write to it produces.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "lab02.hpp"

namespace lab02 {

vmm::Result<AddedRegion> add_rom(vmm::stage02::LongModeVm& vm, vmm::memory::GuestAddress at, std::uint64_t size,
                                 std::span<const std::byte> contents) {
  if (contents.size() > size) {
    return vmm::logic_error("add_rom",
                            fmt::format("{} bytes of contents do not fit in {:#x} bytes", contents.size(), size));
  }
  auto supported = vm.vm().check_extension(KVM_CAP_READONLY_MEM);
  if (!supported) {
    return std::unexpected(supported.error());
  }
  if (*supported == 0) {
    return vmm::logic_error("add_rom", "this KVM has no KVM_CAP_READONLY_MEM");
  }
  auto region = vmm::memory::GuestMemoryRegion::create(at, size);
  if (!region) {
    return std::unexpected(region.error());
  }
  // The VMM fills the ROM through its own mapping: KVM_MEM_READONLY only stops the guest.
  std::ranges::copy(contents, region->bytes().begin());
  std::uint32_t slot = 0;
  for (const auto& existing : vm.vm().memory_slots()) {
    slot = std::max(slot, existing.slot + 1);
  }
  const vmm::kvm::MemorySlot memory_slot{.slot = slot,
                                         .guest_address = at.raw(),
                                         .size = size,
                                         .host_address = region->host_address(),
                                         .flags = KVM_MEM_READONLY};
  if (auto rc = vm.vm().set_memory_slot(memory_slot); !rc) {
    return std::unexpected(rc.error());
  }
  return AddedRegion{.region = std::move(*region), .slot = slot};
}

bool record_rom_write(const vmm::kvm::MmioExit& mmio, const vmm::memory::GuestRange& rom,
                      std::vector<RomWrite>& writes) {
  if (!mmio.is_write || !rom.contains(vmm::memory::GuestAddress(mmio.address))) {
    return false;
  }
  std::uint64_t value = 0;  // x86 is little-endian: byte 0 is the low byte
  std::memcpy(&value, mmio.data.data(), std::min<std::size_t>(mmio.data.size(), sizeof(value)));
  writes.push_back({.address = mmio.address, .length = mmio.length, .value = value});
  return true;  // nothing to do: a ROM ignores writes, and KVM_RUN resumes after the instruction
}

}  // namespace lab02
