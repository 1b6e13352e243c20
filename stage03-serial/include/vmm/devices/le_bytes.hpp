#pragma once
/// @file
/// @brief `load_le` and `store_le`: the bytes of a bus access as an integer, and back. x86 is little-endian, and a
///        guest's N-byte access arrives as N bytes, lowest first.

#include <cstddef>
#include <cstdint>
#include <span>

namespace vmm::devices {

/// @brief The first (at most 8) bytes of `data` as a little-endian integer.
[[nodiscard]] constexpr std::uint64_t load_le(std::span<const std::uint8_t> data) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < data.size() && i < 8; ++i) {
    value |= std::uint64_t{data[i]} << (8 * i);
  }
  return value;
}

/// @brief Stores `value` into `data`, lowest byte first; bytes past the 8th (an access wider than any register)
///        get `fill`.
constexpr void store_le(std::span<std::uint8_t> data, std::uint64_t value, std::uint8_t fill = 0) noexcept {
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = i < 8 ? static_cast<std::uint8_t>(value >> (8 * i)) : fill;
  }
}

}  // namespace vmm::devices
