// GuestRamDma: the container's mappings follow guest memory (IOVA = guest-physical address) as regions come, go and
// move; and guest_mappable_areas: which parts of a BAR become memory slots.

#include "vmm/vfio/guest_ram_dma.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "vmm/vfio/device_memory.hpp"

namespace vmm::vfio {
namespace {

// Plays the container: records each call, can be told to refuse the next map.
class RecordingMapper final : public DmaMapper {
 public:
  struct Call {
    bool map = true;
    std::uint64_t iova = 0;
    std::uint64_t size = 0;
    std::uint64_t host_va = 0;
    bool operator==(const Call&) const = default;
  };
  Result<void> map_dma(std::uint64_t iova, std::uint64_t size, const void* host_va, bool, bool) override {
    if (refuse_next_map) {
      refuse_next_map = false;
      return sys_error("VFIO_IOMMU_MAP_DMA", ENOMEM, "test");
    }
    calls.push_back({true, iova, size, reinterpret_cast<std::uint64_t>(host_va)});
    return real.add({iova, size, reinterpret_cast<std::uint64_t>(host_va)});
  }
  Result<void> unmap_dma(std::uint64_t iova, std::uint64_t size) override {
    calls.push_back({false, iova, size, 0});
    auto removed = real.remove(iova, size);
    return removed ? Result<void>{} : std::unexpected(removed.error());
  }
  std::vector<Call> calls;
  DmaMappings real;  // the same rules the container applies: overlaps and partial unmaps fail
  bool refuse_next_map = false;
};

memory::GuestMemoryRegion region(std::uint64_t start, std::uint64_t size) {
  auto made = memory::GuestMemoryRegion::create(memory::GuestAddress(start), size);
  EXPECT_TRUE(made) << made.error().message();
  return std::move(*made);
}

std::uint64_t host(const memory::GuestMemory& memory, std::size_t i) {
  return reinterpret_cast<std::uint64_t>(memory.regions()[i].host_address());
}

TEST(GuestRamDma, MapsEveryRegionAtItsGuestPhysicalAddressOnce) {
  RecordingMapper mapper;
  auto memory = memory::GuestMemory::from_regions({}).value();
  ASSERT_TRUE(memory.add_region(region(0, 1 << 20)));
  ASSERT_TRUE(memory.add_region(region(0x8000'0000, 0x20000)));
  GuestRamDma dma(mapper);
  ASSERT_TRUE(dma.sync(memory));
  EXPECT_EQ(mapper.calls, (std::vector<RecordingMapper::Call>{{true, 0, 1 << 20, host(memory, 0)},
                                                              {true, 0x8000'0000, 0x20000, host(memory, 1)}}));
  ASSERT_TRUE(dma.sync(memory));
  EXPECT_EQ(mapper.calls.size(), 2U) << "nothing changed: no call";
  EXPECT_EQ(dma.mappings().size(), 2U);
  EXPECT_EQ(dma.map_calls(), 2U);
}

TEST(GuestRamDma, FollowsRegionsThatAppearDisappearOrMove) {
  RecordingMapper mapper;
  GuestRamDma dma(mapper);
  // The old map stays alive, so that the new one's memory cannot land at the same host address.
  auto old_memory = memory::GuestMemory::from_regions({}).value();
  ASSERT_TRUE(old_memory.add_region(region(0, 1 << 20)));
  ASSERT_TRUE(dma.sync(old_memory));
  // A new memory map: the first region replaced by other host memory at the same GPA, a hot-plugged one added.
  auto memory = memory::GuestMemory::from_regions({}).value();
  ASSERT_TRUE(memory.add_region(region(0, 1 << 20)));
  ASSERT_TRUE(memory.add_region(region(0x1'0000'0000, 2 << 20)));
  mapper.calls.clear();
  ASSERT_TRUE(dma.sync(memory));
  ASSERT_EQ(mapper.calls.size(), 3U);
  EXPECT_EQ(mapper.calls[0], (RecordingMapper::Call{false, 0, 1 << 20, 0})) << "the stale mapping goes first";
  EXPECT_EQ(mapper.calls[1], (RecordingMapper::Call{true, 0, 1 << 20, host(memory, 0)}));
  EXPECT_EQ(mapper.calls[2], (RecordingMapper::Call{true, 0x1'0000'0000, 2 << 20, host(memory, 1)}));

  // The hot-plugged region goes away again: exactly its mapping is removed.
  auto smaller = memory::GuestMemory::from_regions({}).value();
  mapper.calls.clear();
  ASSERT_TRUE(dma.sync(smaller));
  EXPECT_EQ(mapper.calls.size(), 2U) << "both regions are gone from this map";
  EXPECT_TRUE(dma.mappings().empty());
  EXPECT_EQ(mapper.real.size(), 0U);
}

TEST(GuestRamDma, AFailedMapIsReportedAndRetriedByTheNextSync) {
  RecordingMapper mapper;
  auto memory = memory::GuestMemory::from_regions({}).value();
  ASSERT_TRUE(memory.add_region(region(0, 1 << 20)));
  GuestRamDma dma(mapper);
  mapper.refuse_next_map = true;
  auto failed = dma.sync(memory);
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message().find("[0x0, +0x100000)"), std::string::npos) << failed.error().message();
  EXPECT_TRUE(dma.mappings().empty()) << "nothing recorded that the IOMMU does not have";
  ASSERT_TRUE(dma.sync(memory));
  EXPECT_EQ(dma.mappings().size(), 1U);
}

TEST(GuestRamDma, UnmapsEverythingAtTheEnd) {
  RecordingMapper mapper;
  auto memory = memory::GuestMemory::from_regions({}).value();
  ASSERT_TRUE(memory.add_region(region(0, 1 << 20)));
  ASSERT_TRUE(memory.add_region(region(0x8000'0000, 0x20000)));
  {
    GuestRamDma dma(mapper);
    ASSERT_TRUE(dma.sync(memory));
  }
  EXPECT_EQ(mapper.real.size(), 0U) << "the destructor unmapped both";
}

// ---- guest_mappable_areas ----

RegionInfo bar(std::uint64_t size, bool mappable = true) {
  RegionInfo info;
  info.size = size;
  info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | (mappable ? VFIO_REGION_INFO_FLAG_MMAP : 0);
  return info;
}

TEST(GuestMappableAreas, WholeBarUnlessSomethingTraps) {
  EXPECT_EQ(guest_mappable_areas(bar(1 << 20), {}, 4096), (std::vector<BarArea>{{0, 1 << 20}}));
  EXPECT_TRUE(guest_mappable_areas(bar(1 << 20, false), {}, 4096).empty()) << "VFIO does not allow mmap";
  EXPECT_TRUE(guest_mappable_areas(bar(256), {}, 4096).empty()) << "smaller than a page";
}

TEST(GuestMappableAreas, PagesHoldingTheMsixTableAndPbaAreLeftOut) {
  const std::vector<BarArea> msix{{0x2000, 0x100}, {0x3000, 8}};
  EXPECT_EQ(guest_mappable_areas(bar(0x8000), msix, 4096), (std::vector<BarArea>{{0, 0x2000}, {0x4000, 0x4000}}));
  // A table straddling a page boundary takes both pages; table and PBA in one page take one.
  const std::vector<BarArea> straddling{{0x1f00, 0x200}};
  EXPECT_EQ(guest_mappable_areas(bar(0x4000), straddling, 4096), (std::vector<BarArea>{{0, 0x1000}, {0x3000, 0x1000}}));
  const std::vector<BarArea> same_page{{0x1000, 0x40}, {0x1800, 8}};
  EXPECT_EQ(guest_mappable_areas(bar(0x3000), same_page, 4096), (std::vector<BarArea>{{0, 0x1000}, {0x2000, 0x1000}}));
}

TEST(GuestMappableAreas, SparseAreasAreClippedToWholePagesAndMerged) {
  RegionInfo info = bar(0x10000);
  info.caps.sparse_mmap = std::vector<SparseMmapArea>{{0x3000, 0x1000}, {0, 0x1800}, {0x4000, 0x2000}};
  // [0, 0x1800) keeps its whole page only; 0x3000-0x6000 merges into one area.
  EXPECT_EQ(guest_mappable_areas(info, {}, 4096), (std::vector<BarArea>{{0, 0x1000}, {0x3000, 0x3000}}));
  info.caps.sparse_mmap = std::vector<SparseMmapArea>{{0xf000, 0x8000}};  // runs past the BAR: clipped
  EXPECT_EQ(guest_mappable_areas(info, {}, 4096), (std::vector<BarArea>{{0xf000, 0x1000}}));
}

}  // namespace
}  // namespace vmm::vfio
