// The DMA bookkeeping without the ioctls: what may be mapped next to what, and what may be unmapped.
#include "vmm/vfio/dma_mappings.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace vmm::vfio {
namespace {

using ::testing::HasSubstr;

constexpr DmaMapping mapping(std::uint64_t iova, std::uint64_t size, std::uint64_t host = 0x7f0000000000) {
  return DmaMapping{iova, size, host, true, true};
}

TEST(DmaMappings, AddedMappingsAreListedByIova) {
  DmaMappings mappings;
  ASSERT_TRUE(mappings.add(mapping(0x200000, 0x1000)));
  ASSERT_TRUE(mappings.add(mapping(0x100000, 0x2000, 0x7f0000100000)));
  EXPECT_EQ(mappings.size(), 2U);
  EXPECT_EQ(mappings.list(),
            (std::vector<DmaMapping>{mapping(0x100000, 0x2000, 0x7f0000100000), mapping(0x200000, 0x1000)}));
}

TEST(DmaMappings, AnOverlapIsRefusedAndNamesTheExistingMapping) {
  DmaMappings mappings;
  ASSERT_TRUE(mappings.add(mapping(0x100000, 0x4000)));
  for (const DmaMapping& clash :
       {mapping(0x103000, 0x2000), mapping(0x0ff000, 0x2000), mapping(0x101000, 0x1000), mapping(0x0f0000, 0x100000)}) {
    auto added = mappings.add(clash);
    ASSERT_FALSE(added) << fmt::format("0x{:x}+0x{:x}", clash.iova, clash.size);
    EXPECT_THAT(added.error().message(), HasSubstr("overlaps the existing mapping IOVA [0x100000, 0x104000)"));
  }
  EXPECT_EQ(mappings.size(), 1U);
}

TEST(DmaMappings, AdjacentMappingsAreFine) {
  DmaMappings mappings;
  ASSERT_TRUE(mappings.add(mapping(0x100000, 0x1000)));
  EXPECT_TRUE(mappings.add(mapping(0x101000, 0x1000)));  // right after
  EXPECT_TRUE(mappings.add(mapping(0x0ff000, 0x1000)));  // right before
  EXPECT_EQ(mappings.size(), 3U);
}

TEST(DmaMappings, UnmappingSomethingNotMappedIsRefused) {
  DmaMappings mappings;
  ASSERT_TRUE(mappings.add(mapping(0x100000, 0x2000)));
  auto unknown = mappings.remove(0x300000, 0x1000);
  ASSERT_FALSE(unknown);
  EXPECT_THAT(unknown.error().message(), HasSubstr("VFIO_IOMMU_UNMAP_DMA: nothing is mapped at IOVA 0x300000"));
  auto part = mappings.remove(0x100000, 0x1000);  // type1v2 does not split a mapping
  ASSERT_FALSE(part);
  EXPECT_THAT(part.error().message(), HasSubstr("not a whole mapping"));
  EXPECT_EQ(mappings.size(), 1U);
}

TEST(DmaMappings, RemovingFreesTheRange) {
  DmaMappings mappings;
  ASSERT_TRUE(mappings.add(mapping(0x100000, 0x2000)));
  auto removed = mappings.remove(0x100000, 0x2000);
  ASSERT_TRUE(removed) << removed.error().message();
  EXPECT_EQ(*removed, mapping(0x100000, 0x2000));
  EXPECT_EQ(mappings.size(), 0U);
  EXPECT_TRUE(mappings.add(mapping(0x101000, 0x1000)));
}

TEST(DmaMappings, AMappingThatWrapsAroundIsRefused) {
  DmaMappings mappings;
  auto iova_wraps = mappings.add(mapping(0xfffffffffffff000, 0x2000));
  ASSERT_FALSE(iova_wraps);
  EXPECT_THAT(iova_wraps.error().message(), HasSubstr("wraps around"));
  auto host_wraps = mappings.add(mapping(0x1000, 0x2000, 0xfffffffffffff000));
  ASSERT_FALSE(host_wraps);
  EXPECT_THAT(host_wraps.error().message(), HasSubstr("wraps around"));
  // The very last page is fine: its last byte is 2^64-1.
  EXPECT_TRUE(mappings.add(mapping(0xfffffffffffff000, 0x1000)));
}

TEST(DmaMappings, EmptyMisalignedOrInaccessibleMappingsAreRefused) {
  DmaMappings mappings;
  auto empty = mappings.add(mapping(0x1000, 0));
  ASSERT_FALSE(empty);
  EXPECT_THAT(empty.error().message(), HasSubstr("empty mapping"));
  auto misaligned = mappings.add(mapping(0x1800, 0x1000));
  ASSERT_FALSE(misaligned);
  EXPECT_THAT(misaligned.error().message(), HasSubstr("multiples of the IOMMU page size 0x1000"));
  auto odd_size = mappings.add(mapping(0x1000, 0x1001));
  ASSERT_FALSE(odd_size);
  auto none = mappings.add(DmaMapping{0x1000, 0x1000, 0x7f0000000000, false, false});
  ASSERT_FALSE(none);
  EXPECT_THAT(none.error().message(), HasSubstr("neither readable nor writable"));
  EXPECT_EQ(mappings.size(), 0U);
}

}  // namespace
}  // namespace vmm::vfio
