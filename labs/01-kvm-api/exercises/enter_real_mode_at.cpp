// Lab 01, exercise 3: start the guest at any address below 1 MiB. See labs/01-kvm-api/README.md.
#include "lab01.hpp"

namespace lab01 {

vmm::Result<void> enter_real_mode_at(vmm::kvm::Vcpu& vcpu, std::uint32_t physical_address, std::uint64_t rax,
                                     std::uint64_t rbx) {
  // TODO: choose CS and IP so that CS * 16 + IP == physical_address, set the segment and the registers.
  (void)vcpu;
  (void)physical_address;
  (void)rax;
  (void)rbx;
  return vmm::logic_error("enter_real_mode_at", "not implemented yet (lab 01, exercise 3)");
}

}  // namespace lab01
