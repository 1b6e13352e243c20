#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include <fmt/format.h>

#include "vmm/memory/guest_address.hpp"

namespace vmm::memory {
namespace {

using ::testing::HasSubstr;

constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();

TEST(GuestAddress, ComparesAndExposesRaw) {
  constexpr GuestAddress a(0x1000);
  constexpr GuestAddress b(0x2000);
  static_assert(!std::is_convertible_v<std::uint64_t, GuestAddress>, "construction must be explicit");
  EXPECT_EQ(a.raw(), 0x1000U);
  EXPECT_LT(a, b);
  EXPECT_NE(a, b);
  EXPECT_EQ(a, GuestAddress(0x1000));
}

TEST(GuestAddress, CheckedAddAddsBelowTheLimit) {
  auto sum = GuestAddress(0x1000).checked_add(0x234);
  ASSERT_TRUE(sum) << sum.error().message();
  EXPECT_EQ(*sum, GuestAddress(0x1234));
  auto top = GuestAddress(kMax - 1).checked_add(1);
  ASSERT_TRUE(top);
  EXPECT_EQ(top->raw(), kMax);
}

TEST(GuestAddress, CheckedAddFailsInsteadOfWrapping) {
  auto sum = GuestAddress(0xffff'ffff'ffff'f000).checked_add(0x2000);
  ASSERT_FALSE(sum);
  EXPECT_THAT(sum.error().message(), HasSubstr("0xfffffffffffff000 + 0x2000 overflows"));
  EXPECT_FALSE(GuestAddress(kMax).checked_add(1));
}

TEST(GuestAddress, CheckedOffsetFrom) {
  auto offset = GuestAddress(0x5010).checked_offset_from(GuestAddress(0x5000));
  ASSERT_TRUE(offset);
  EXPECT_EQ(*offset, 0x10U);
  auto below = GuestAddress(0x4fff).checked_offset_from(GuestAddress(0x5000));
  ASSERT_FALSE(below);
  EXPECT_THAT(below.error().message(), HasSubstr("0x4fff lies below the base 0x5000"));
}

TEST(GuestAddress, FormatsAsHex) {
  EXPECT_EQ(fmt::format("{}", GuestAddress(0xc0000000)), "0xc0000000");
  EXPECT_EQ(fmt::format("{:#010x}", GuestAddress(0x1000)), "0x00001000");
  EXPECT_EQ(fmt::format("{}", GuestRange{GuestAddress(0x1000), 0x1000}), "[0x1000, 0x2000)");
}

TEST(GuestRange, ContainsIsHalfOpen) {
  const GuestRange range{GuestAddress(0x1000), 0x1000};
  EXPECT_FALSE(range.contains(GuestAddress(0xfff)));
  EXPECT_TRUE(range.contains(GuestAddress(0x1000)));
  EXPECT_TRUE(range.contains(GuestAddress(0x1fff)));
  EXPECT_FALSE(range.contains(GuestAddress(0x2000)));
  EXPECT_EQ(range.end(), GuestAddress(0x2000));
}

}  // namespace
}  // namespace vmm::memory
