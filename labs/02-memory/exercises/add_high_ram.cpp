// Lab 02, exercise 1: RAM above 4 GiB, as a new KVM slot the guest can reach. See labs/02-memory/README.md.
#include "lab02.hpp"

namespace lab02 {

vmm::Result<AddedRegion> add_high_ram(vmm::stage02::LongModeVm& vm, vmm::memory::GuestAddress at, std::uint64_t size) {
  // TODO: create a GuestMemoryRegion for [at, at + size), register it with vm.vm() under an unused slot number, and
  //       extend the identity map so the guest's page tables cover it.
  (void)vm;
  (void)at;
  (void)size;
  return vmm::logic_error("add_high_ram", "not implemented yet (lab 02, exercise 1)");
}

}  // namespace lab02
