// Lab 01, exercise 2: answer an IN from port 0x3f9. See labs/01-kvm-api/README.md.
#include "lab01.hpp"

namespace lab01 {

bool answer_switch_read(vmm::kvm::IoExit& io, std::uint8_t switch_value) {
  // TODO: if this is an IN from port 0x3f9, put switch_value in the guest's answer and return true.
  (void)io;
  (void)switch_value;
  return false;
}

}  // namespace lab01
