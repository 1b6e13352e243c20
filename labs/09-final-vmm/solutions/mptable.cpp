// Lab 09, exercise 2: reference solution.
#include "lab09.hpp"

namespace lab09 {

std::array<std::uint8_t, 16> mp_floating_pointer(std::uint32_t table_address) {
  std::array<std::uint8_t, 16> p{'_', 'M', 'P', '_'};
  for (int i = 0; i < 4; ++i) {
    p[4 + i] = static_cast<std::uint8_t>(table_address >> (8 * i));
  }
  p[8] = 1;  // LENGTH: one 16-byte paragraph
  p[9] = 4;  // SPEC_REV: 1.4
  unsigned sum = 0;
  for (const auto byte : p) {
    sum += byte;
  }
  p[10] = static_cast<std::uint8_t>(-sum);
  return p;
}

}  // namespace lab09
