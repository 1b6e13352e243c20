// Lab 01, exercise 2, reference solution.
#include <algorithm>

#include "lab01.hpp"

namespace lab01 {

bool answer_switch_read(vmm::kvm::IoExit& io, std::uint8_t switch_value) {
  if (io.port != 0x3f9 || io.direction != vmm::kvm::IoDirection::In) {
    return false;
  }
  // REP INSB may arrive as one exit with count > 1: every item needs its answer. Wider reads get the value in the
  // low byte and zeros above it, like an 8-bit device on a wider bus.
  for (std::uint32_t i = 0; i < io.count; ++i) {
    auto item = io.item(i);
    std::ranges::fill(item, std::uint8_t{0});
    item[0] = switch_value;
  }
  return true;
}

}  // namespace lab01
