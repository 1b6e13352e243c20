// The capability-chain parsers on hand-built buffers laid out as the kernel lays them out: well-formed chains are
// read completely, malformed ones (loops, offsets outside the buffer, bodies running past it) are refused.
#include "vmm/vfio/caps.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace vmm::vfio {
namespace {

using ::testing::HasSubstr;

// A byte buffer with typed stores at given offsets, as the kernel's answer would be.
class Buffer {
 public:
  explicit Buffer(std::size_t size) : bytes_(size) {}
  template <typename T>
  void put(std::size_t offset, const T& value) {
    std::memcpy(bytes_.data() + offset, &value, sizeof(T));
  }
  [[nodiscard]] std::span<const std::byte> span() const { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

constexpr std::uint32_t kVendorType = static_cast<std::uint32_t>(VFIO_REGION_TYPE_PCI_VENDOR_TYPE) | 0x8086;

vfio_info_cap_header cap(std::uint16_t id, std::uint32_t next, std::uint16_t version = 1) {
  vfio_info_cap_header header{};
  header.id = id;
  header.version = version;
  header.next = next;
  return header;
}

// A vfio_region_info with FLAG_CAPS and the first capability at `cap_offset`.
Buffer region_with_caps(std::size_t size, std::uint32_t cap_offset, std::uint32_t flags = VFIO_REGION_INFO_FLAG_CAPS) {
  Buffer buffer(size);
  vfio_region_info info{};
  info.argsz = static_cast<std::uint32_t>(size);
  info.flags = flags;
  info.index = 0;
  info.cap_offset = cap_offset;
  info.size = 0x100000;
  buffer.put(0, info);
  return buffer;
}

// A sparse-mmap capability at `offset` with the given areas.
void put_sparse(Buffer& buffer, std::size_t offset, std::uint32_t next, const std::vector<SparseMmapArea>& areas,
                std::uint32_t nr_areas_claimed) {
  buffer.put(offset, cap(VFIO_REGION_INFO_CAP_SPARSE_MMAP, next));
  buffer.put(offset + offsetof(vfio_region_info_cap_sparse_mmap, nr_areas), nr_areas_claimed);
  for (std::size_t i = 0; i < areas.size(); ++i) {
    vfio_region_sparse_mmap_area area{areas[i].offset, areas[i].size};
    buffer.put(offset + sizeof(vfio_region_info_cap_sparse_mmap) + i * sizeof(area), area);
  }
}

TEST(RegionCaps, SparseMmapAreasAreRead) {
  constexpr std::uint32_t kCap = sizeof(vfio_region_info);
  Buffer buffer = region_with_caps(kCap + sizeof(vfio_region_info_cap_sparse_mmap) + 2 * 16, kCap);
  put_sparse(buffer, kCap, 0, {{0x0, 0x3000}, {0x5000, 0xb000}}, 2);

  auto caps = parse_region_caps(buffer.span());
  ASSERT_TRUE(caps) << caps.error().message();
  ASSERT_TRUE(caps->sparse_mmap.has_value());
  EXPECT_EQ(*caps->sparse_mmap, (std::vector<SparseMmapArea>{{0x0, 0x3000}, {0x5000, 0xb000}}));
  EXPECT_FALSE(caps->msix_mappable);
  EXPECT_FALSE(caps->type.has_value());
}

TEST(RegionCaps, ChainOfSparseMsixAndTypeIsWalkedToTheEnd) {
  constexpr std::uint32_t kSparse = sizeof(vfio_region_info);                               // 32
  constexpr std::uint32_t kMsix = kSparse + sizeof(vfio_region_info_cap_sparse_mmap) + 16;  // one area
  constexpr std::uint32_t kType = kMsix + sizeof(vfio_info_cap_header);
  Buffer buffer = region_with_caps(kType + sizeof(vfio_region_info_cap_type), kSparse);
  put_sparse(buffer, kSparse, kMsix, {{0x1000, 0x1000}}, 1);
  buffer.put(kMsix, cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, kType));
  vfio_region_info_cap_type type{};
  type.header = cap(VFIO_REGION_INFO_CAP_TYPE, 0);
  type.type = kVendorType;
  type.subtype = 3;
  buffer.put(kType, type);

  auto caps = parse_region_caps(buffer.span());
  ASSERT_TRUE(caps) << caps.error().message();
  ASSERT_TRUE(caps->sparse_mmap.has_value());
  EXPECT_EQ(*caps->sparse_mmap, (std::vector<SparseMmapArea>{{0x1000, 0x1000}}));
  EXPECT_TRUE(caps->msix_mappable);
  ASSERT_TRUE(caps->type.has_value());
  EXPECT_EQ(*caps->type, (RegionType{kVendorType, 3}));

  auto chain = walk_cap_chain(buffer.span(), kSparse, sizeof(vfio_region_info));
  ASSERT_TRUE(chain) << chain.error().message();
  ASSERT_EQ(chain->size(), 3U);
  EXPECT_EQ((*chain)[0].offset, kSparse);
  EXPECT_EQ((*chain)[1].id, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
  EXPECT_EQ((*chain)[2].offset, kType);
}

TEST(RegionCaps, WithoutTheCapsFlagTheChainIsNotRead) {
  // cap_offset points at garbage, but without VFIO_REGION_INFO_FLAG_CAPS there is no chain to read.
  Buffer buffer = region_with_caps(sizeof(vfio_region_info), 4096, VFIO_REGION_INFO_FLAG_READ);
  auto caps = parse_region_caps(buffer.span());
  ASSERT_TRUE(caps) << caps.error().message();
  EXPECT_FALSE(caps->sparse_mmap.has_value());
  EXPECT_FALSE(caps->msix_mappable);
}

TEST(RegionCaps, UnknownCapabilitiesAreSkipped) {
  constexpr std::uint32_t kFirst = sizeof(vfio_region_info);
  constexpr std::uint32_t kSecond = kFirst + 16;
  Buffer buffer = region_with_caps(kSecond + sizeof(vfio_info_cap_header), kFirst);
  buffer.put(kFirst, cap(0x7777, kSecond));
  buffer.put(kSecond, cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 0));
  auto caps = parse_region_caps(buffer.span());
  ASSERT_TRUE(caps) << caps.error().message();
  EXPECT_TRUE(caps->msix_mappable);
}

TEST(RegionCaps, ALoopIsRefused) {
  constexpr std::uint32_t kFirst = sizeof(vfio_region_info);
  constexpr std::uint32_t kSecond = kFirst + 8;
  Buffer buffer = region_with_caps(kSecond + 8, kFirst);
  buffer.put(kFirst, cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, kSecond));
  buffer.put(kSecond, cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, kFirst));  // back to the first
  auto caps = parse_region_caps(buffer.span());
  ASSERT_FALSE(caps);
  EXPECT_THAT(caps.error().message(), HasSubstr("a loop"));
}

TEST(RegionCaps, ACapabilityPointingAtItselfIsRefused) {
  constexpr std::uint32_t kFirst = sizeof(vfio_region_info);
  Buffer buffer = region_with_caps(kFirst + 8, kFirst);
  buffer.put(kFirst, cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, kFirst));
  auto chain = walk_cap_chain(buffer.span(), kFirst, sizeof(vfio_region_info));
  ASSERT_FALSE(chain);
  EXPECT_THAT(chain.error().message(), HasSubstr("a loop"));
}

TEST(RegionCaps, AnOffsetOutsideTheBufferIsRefused) {
  Buffer buffer = region_with_caps(sizeof(vfio_region_info) + 8, 1000);
  auto caps = parse_region_caps(buffer.span());
  ASSERT_FALSE(caps);
  EXPECT_THAT(caps.error().message(), HasSubstr("offset 1000 lies outside the 40-byte buffer"));
}

TEST(RegionCaps, AHeaderStraddlingTheEndIsRefused) {
  // The header starts inside the buffer but its 8 bytes do not fit.
  Buffer buffer = region_with_caps(sizeof(vfio_region_info) + 4, sizeof(vfio_region_info));
  auto caps = parse_region_caps(buffer.span());
  ASSERT_FALSE(caps);
  EXPECT_THAT(caps.error().message(), HasSubstr("outside the 36-byte buffer"));
}

TEST(RegionCaps, AFirstCapabilityInsideTheFixedStructIsRefused) {
  Buffer buffer = region_with_caps(64, 8);
  auto caps = parse_region_caps(buffer.span());
  ASSERT_FALSE(caps);
  EXPECT_THAT(caps.error().message(), HasSubstr("inside the 32-byte fixed struct"));
}

TEST(RegionCaps, SparseAreasRunningPastTheBufferAreRefused) {
  constexpr std::uint32_t kCap = sizeof(vfio_region_info);
  Buffer buffer = region_with_caps(kCap + sizeof(vfio_region_info_cap_sparse_mmap) + 16, kCap);
  put_sparse(buffer, kCap, 0, {{0, 0x1000}}, 0x10000000);  // claims 2^28 areas, holds one
  auto caps = parse_region_caps(buffer.span());
  ASSERT_FALSE(caps);
  EXPECT_THAT(caps.error().message(), HasSubstr("VFIO_REGION_INFO_CAP_SPARSE_MMAP: 268435456 areas"));
}

TEST(RegionCaps, ATruncatedTypeCapabilityIsRefused) {
  constexpr std::uint32_t kCap = sizeof(vfio_region_info);
  Buffer buffer = region_with_caps(kCap + sizeof(vfio_info_cap_header), kCap);  // header only, no type/subtype
  buffer.put(kCap, cap(VFIO_REGION_INFO_CAP_TYPE, 0));
  auto caps = parse_region_caps(buffer.span());
  ASSERT_FALSE(caps);
  EXPECT_THAT(caps.error().message(), HasSubstr("VFIO_REGION_INFO_CAP_TYPE"));
}

TEST(RegionCaps, ABufferShorterThanTheFixedStructIsRefused) {
  Buffer buffer(16);
  auto caps = parse_region_caps(buffer.span());
  ASSERT_FALSE(caps);
  EXPECT_THAT(caps.error().message(), HasSubstr("shorter than vfio_region_info"));
}

// A vfio_iommu_type1_info with the given flags, page sizes and first capability.
Buffer iommu_info(std::size_t size, std::uint32_t flags, std::uint64_t page_sizes, std::uint32_t cap_offset) {
  Buffer buffer(size);
  vfio_iommu_type1_info info{};
  info.argsz = static_cast<std::uint32_t>(size);
  info.flags = flags;
  info.iova_pgsizes = page_sizes;
  info.cap_offset = cap_offset;
  buffer.put(0, info);
  return buffer;
}

TEST(IommuInfo, PageSizesIovaRangesAndDmaAvailableAreRead) {
  constexpr std::uint32_t kRanges = sizeof(vfio_iommu_type1_info);
  constexpr std::uint32_t kAvail = kRanges + sizeof(vfio_iommu_type1_info_cap_iova_range) + 2 * 16;
  Buffer buffer = iommu_info(kAvail + sizeof(vfio_iommu_type1_info_dma_avail),
                             VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS, 0x40201000, kRanges);
  buffer.put(kRanges, cap(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, kAvail));
  buffer.put(kRanges + offsetof(vfio_iommu_type1_info_cap_iova_range, nr_iovas), std::uint32_t{2});
  buffer.put(kRanges + sizeof(vfio_iommu_type1_info_cap_iova_range), vfio_iova_range{0, 0xfedfffff});
  buffer.put(kRanges + sizeof(vfio_iommu_type1_info_cap_iova_range) + 16, vfio_iova_range{0xfef00000, ~0ULL});
  vfio_iommu_type1_info_dma_avail avail{};
  avail.header = cap(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 0);
  avail.avail = 65535;
  buffer.put(kAvail, avail);

  auto info = parse_iommu_info(buffer.span());
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->page_sizes, 0x40201000U);
  EXPECT_EQ(info->min_page_size(), 0x1000U);
  ASSERT_TRUE(info->iova_ranges.has_value());
  EXPECT_EQ(*info->iova_ranges, (std::vector<IovaRange>{{0, 0xfedfffff}, {0xfef00000, ~0ULL}}));
  EXPECT_EQ(info->dma_available, 65535U);
}

TEST(IommuInfo, WithoutFlagsNothingIsReported) {
  // An old kernel: no page sizes flag, no capabilities; the stale fields are not trusted.
  Buffer buffer = iommu_info(sizeof(vfio_iommu_type1_info), 0, 0x1000, 999);
  auto info = parse_iommu_info(buffer.span());
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->page_sizes, 0U);
  EXPECT_EQ(info->min_page_size(), 0U);
  EXPECT_FALSE(info->iova_ranges.has_value());
  EXPECT_FALSE(info->dma_available.has_value());
}

TEST(IommuInfo, IovaRangesRunningPastTheBufferAreRefused) {
  constexpr std::uint32_t kRanges = sizeof(vfio_iommu_type1_info);
  Buffer buffer = iommu_info(kRanges + sizeof(vfio_iommu_type1_info_cap_iova_range) + 16,
                             VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS, 0x1000, kRanges);
  buffer.put(kRanges, cap(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 0));
  buffer.put(kRanges + offsetof(vfio_iommu_type1_info_cap_iova_range, nr_iovas), std::uint32_t{0xffffffff});
  auto info = parse_iommu_info(buffer.span());
  ASSERT_FALSE(info);
  EXPECT_THAT(info.error().message(), HasSubstr("4294967295 ranges"));
}

TEST(IommuInfo, ARangeEndingBeforeItStartsIsRefused) {
  constexpr std::uint32_t kRanges = sizeof(vfio_iommu_type1_info);
  Buffer buffer =
      iommu_info(kRanges + sizeof(vfio_iommu_type1_info_cap_iova_range) + 16, VFIO_IOMMU_INFO_CAPS, 0, kRanges);
  buffer.put(kRanges, cap(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 0));
  buffer.put(kRanges + offsetof(vfio_iommu_type1_info_cap_iova_range, nr_iovas), std::uint32_t{1});
  buffer.put(kRanges + sizeof(vfio_iommu_type1_info_cap_iova_range), vfio_iova_range{0x2000, 0x1000});
  auto info = parse_iommu_info(buffer.span());
  ASSERT_FALSE(info);
  EXPECT_THAT(info.error().message(), HasSubstr("ends (0x1000) before it starts (0x2000)"));
}

TEST(IommuInfo, ALoopIsRefused) {
  constexpr std::uint32_t kCap = sizeof(vfio_iommu_type1_info);
  Buffer buffer = iommu_info(kCap + 16, VFIO_IOMMU_INFO_CAPS, 0, kCap);
  buffer.put(kCap, cap(0x55, kCap));
  auto info = parse_iommu_info(buffer.span());
  ASSERT_FALSE(info);
  EXPECT_THAT(info.error().message(), HasSubstr("a loop"));
}

}  // namespace
}  // namespace vmm::vfio
