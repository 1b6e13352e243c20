#pragma once
/// @file
/// @brief `GuestAddress` and `GuestRange`: guest-physical addresses as their own type, with checked arithmetic.

#include <compare>
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "vmm/error.hpp"

namespace vmm::memory {

/// @brief A guest-physical address. A distinct type so it cannot be mixed up with a host pointer, a length or an
///        offset, and so that arithmetic on it is checked: near 2^64 it fails instead of wrapping to 0.
///
/// A wrapped address is the classic VMM bug: a guest hands over a descriptor at 0xffff'ffff'ffff'f000 with length
/// 0x2000, the sum wraps to 0x1000, and a bounds check on the wrapped end passes.
class GuestAddress {
 public:
  /// @brief Address 0.
  constexpr GuestAddress() = default;
  /// @brief The address `raw`. Explicit: a bare integer is not an address until someone says so.
  constexpr explicit GuestAddress(std::uint64_t raw) noexcept : raw_(raw) {}

  /// @brief The address as an integer.
  [[nodiscard]] constexpr std::uint64_t raw() const noexcept { return raw_; }

  /// @brief Addresses compare as their integers.
  friend constexpr auto operator<=>(GuestAddress, GuestAddress) = default;

  /// @brief This address plus `offset`, or an error if the sum does not fit in 64 bits.
  [[nodiscard]] Result<GuestAddress> checked_add(std::uint64_t offset) const;
  /// @brief How far this address lies above `base`, or an error if it lies below it.
  [[nodiscard]] Result<std::uint64_t> checked_offset_from(GuestAddress base) const;

 private:
  std::uint64_t raw_ = 0;
};

/// @brief A half-open guest-physical range [start, start + size). Its end must fit in 64 bits: whoever builds one
///        checks that (the layout helper and `GuestMemoryRegion` do), so `end()` never wraps.
struct GuestRange {
  GuestAddress start;      ///< First byte.
  std::uint64_t size = 0;  ///< Length in bytes.

  /// @brief One past the last byte.
  [[nodiscard]] constexpr GuestAddress end() const noexcept { return GuestAddress(start.raw() + size); }
  /// @brief True when `address` lies inside the range.
  [[nodiscard]] constexpr bool contains(GuestAddress address) const noexcept {
    return address >= start && address.raw() - start.raw() < size;
  }
  /// @brief Ranges are equal when start and size are.
  friend constexpr bool operator==(const GuestRange&, const GuestRange&) = default;
};

/// @brief "0x20 bytes at 0x1ff0": how errors name an access, with both address and length (the end may not exist).
[[nodiscard]] std::string describe_access(GuestAddress address, std::uint64_t length);

}  // namespace vmm::memory

/// @brief Prints a `GuestAddress` as `0x1000` (honours integer format specs, e.g. `{:#018x}`; default `{:#x}`).
template <>
struct fmt::formatter<vmm::memory::GuestAddress> : fmt::formatter<std::uint64_t> {
  /// @brief Parses the spec; an empty spec means `#x`, so addresses are always hexadecimal by default.
  constexpr auto parse(format_parse_context& ctx) {
    if (ctx.begin() == ctx.end() || *ctx.begin() == '}') {
      default_hex_ = true;
      return ctx.begin();
    }
    return fmt::formatter<std::uint64_t>::parse(ctx);
  }
  /// @brief Formats the address.
  auto format(vmm::memory::GuestAddress address, format_context& ctx) const {
    if (default_hex_) {
      return fmt::format_to(ctx.out(), "{:#x}", address.raw());
    }
    return fmt::formatter<std::uint64_t>::format(address.raw(), ctx);
  }

 private:
  bool default_hex_ = false;
};

/// @brief Prints a `GuestRange` as `[0xc0000000, 0x100000000)`.
template <>
struct fmt::formatter<vmm::memory::GuestRange> : fmt::formatter<std::string_view> {
  /// @brief Formats the range.
  auto format(const vmm::memory::GuestRange& range, format_context& ctx) const {
    return fmt::format_to(ctx.out(), "[{:#x}, {:#x})", range.start.raw(), range.end().raw());
  }
};
