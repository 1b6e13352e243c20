#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "vmm/memory/x86_layout.hpp"

namespace vmm::memory::x86 {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr std::uint64_t kMiB = 1ULL << 20;
constexpr std::uint64_t kGiB = 1ULL << 30;

TEST(X86Layout, HoleConstants) {
  EXPECT_EQ(kPciHoleStart, 3 * kGiB);
  EXPECT_EQ(kPciHoleEnd, 4 * kGiB);
  EXPECT_EQ(kPciHoleSize, kGiB);
}

TEST(X86Layout, SmallRamIsOneRangeFromZero) {
  auto layout = layout_for(512 * kMiB);
  ASSERT_TRUE(layout) << layout.error().message();
  EXPECT_THAT(layout->ram, ElementsAre(GuestRange{GuestAddress(0), 512 * kMiB}));
  EXPECT_EQ(layout->pci_hole, (GuestRange{GuestAddress(0xC000'0000), kGiB}));
}

TEST(X86Layout, ExactlyThreeGiBFillsUpToTheHole) {
  auto layout = layout_for(3 * kGiB);
  ASSERT_TRUE(layout);
  EXPECT_THAT(layout->ram, ElementsAre(GuestRange{GuestAddress(0), 3 * kGiB})) << "no empty high range";
  EXPECT_EQ(layout->ram.front().end(), layout->pci_hole.start);
}

TEST(X86Layout, LargeRamContinuesAboveFourGiB) {
  auto layout = layout_for(5 * kGiB);
  ASSERT_TRUE(layout);
  EXPECT_THAT(layout->ram,
              ElementsAre(GuestRange{GuestAddress(0), 3 * kGiB}, GuestRange{GuestAddress(4 * kGiB), 2 * kGiB}));
  EXPECT_FALSE(layout->ram[0].contains(layout->pci_hole.start));
  EXPECT_EQ(layout->pci_hole.end(), layout->ram[1].start);
}

TEST(X86Layout, RejectsBadSizes) {
  auto zero = layout_for(0);
  ASSERT_FALSE(zero);
  EXPECT_THAT(zero.error().message(), HasSubstr("RAM size 0x0 must be a non-zero multiple of the page size"));
  EXPECT_FALSE(layout_for(kMiB + 1));
  auto huge = layout_for(std::numeric_limits<std::uint64_t>::max() - host_page_size() + 1);
  ASSERT_FALSE(huge);
  EXPECT_THAT(huge.error().message(), HasSubstr("does not fit in the address space"));
}

TEST(X86Layout, AllocateMapsEachRange) {
  // Layout arithmetic is tested above; here a small machine, really mapped.
  auto layout = layout_for(2 * kMiB);
  ASSERT_TRUE(layout);
  auto memory = allocate(*layout);
  ASSERT_TRUE(memory) << memory.error().message();
  ASSERT_EQ(memory->regions().size(), 1U);
  EXPECT_EQ(memory->regions()[0].range(), layout->ram[0]);
  EXPECT_TRUE(memory->write_obj(GuestAddress(2 * kMiB - 4), std::uint32_t{42}));
  EXPECT_FALSE(memory->write_obj(GuestAddress(2 * kMiB), std::uint32_t{42}));
}

}  // namespace
}  // namespace vmm::memory::x86
