// Lab 02, exercise 2: a read-only slot, and the MMIO exit a write to it produces. See labs/02-memory/README.md.
#include "lab02.hpp"

namespace lab02 {

vmm::Result<AddedRegion> add_rom(vmm::stage02::LongModeVm& vm, vmm::memory::GuestAddress at, std::uint64_t size,
                                 std::span<const std::byte> contents) {
  // TODO: create the region, copy `contents` in, register it as a new slot with KVM_MEM_READONLY.
  (void)vm;
  (void)at;
  (void)size;
  (void)contents;
  return vmm::logic_error("add_rom", "not implemented yet (lab 02, exercise 2)");
}

bool record_rom_write(const vmm::kvm::MmioExit& mmio, const vmm::memory::GuestRange& rom,
                      std::vector<RomWrite>& writes) {
  // TODO: a write inside `rom`: record it and return true. Anything else: return false.
  (void)mmio;
  (void)rom;
  (void)writes;
  return false;
}

}  // namespace lab02
