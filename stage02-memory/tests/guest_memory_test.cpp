#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "vmm/memory/guest_memory.hpp"

namespace vmm::memory {
namespace {

using ::testing::HasSubstr;

const std::uint64_t kPage = host_page_size();

GuestMemoryRegion make_region(std::uint64_t start, std::uint64_t size) {
  auto region = GuestMemoryRegion::create(GuestAddress(start), size);
  EXPECT_TRUE(region) << region.error().message();
  return std::move(*region);
}

// Two adjacent regions [0x10000, 0x10000 + 2 pages) and [0x10000 + 2 pages, + 1 page), then a hole, then one page.
GuestMemory make_memory() {
  std::vector<GuestMemoryRegion> regions;
  regions.push_back(make_region(0x100000, kPage));  // given out of order on purpose
  regions.push_back(make_region(0x10000 + 2 * kPage, kPage));
  regions.push_back(make_region(0x10000, 2 * kPage));
  auto memory = GuestMemory::from_regions(std::move(regions));
  EXPECT_TRUE(memory) << memory.error().message();
  return std::move(*memory);
}

std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> bytes(n);
  for (std::size_t i = 0; i < n; ++i) {
    bytes[i] = static_cast<std::byte>(i * 7 + 1);
  }
  return bytes;
}

TEST(GuestMemory, KeepsRegionsSorted) {
  auto memory = make_memory();
  ASSERT_EQ(memory.regions().size(), 3U);
  EXPECT_EQ(memory.regions()[0].start(), GuestAddress(0x10000));
  EXPECT_EQ(memory.regions()[1].start(), GuestAddress(0x10000 + 2 * kPage));
  EXPECT_EQ(memory.regions()[2].start(), GuestAddress(0x100000));
  EXPECT_EQ(memory.total_size(), 4 * kPage);
}

TEST(GuestMemory, RejectsOverlapNamingBothRanges) {
  auto memory = make_memory();
  // Overlaps the first region's tail and the second region's head; the error names the first clash found.
  auto partial = memory.add_region(make_region(0x10000 + kPage, kPage));
  ASSERT_FALSE(partial);
  EXPECT_THAT(partial.error().message(),
              HasSubstr(fmt::format("region [{:#x}, {:#x}) overlaps region [0x10000, {:#x})", 0x10000 + kPage,
                                    0x10000 + 2 * kPage, 0x10000 + 2 * kPage)));
  // Starts below an existing region and ends inside it.
  auto below = memory.add_region(make_region(0x100000 - kPage, 2 * kPage));
  ASSERT_FALSE(below);
  EXPECT_THAT(below.error().message(), HasSubstr(fmt::format("overlaps region [0x100000, {:#x})", 0x100000 + kPage)));
  // Identical range.
  EXPECT_FALSE(memory.add_region(make_region(0x100000, kPage)));
  EXPECT_EQ(memory.regions().size(), 3U) << "refused regions are not added";
  // Touching is not overlapping.
  EXPECT_TRUE(memory.add_region(make_region(0x100000 + kPage, kPage)));
  EXPECT_TRUE(memory.add_region(make_region(0x10000 - kPage, kPage)));
  EXPECT_EQ(memory.regions().size(), 5U);
}

TEST(GuestMemory, FromRegionsRejectsOverlap) {
  std::vector<GuestMemoryRegion> regions;
  regions.push_back(make_region(0, 2 * kPage));
  regions.push_back(make_region(kPage, kPage));
  auto memory = GuestMemory::from_regions(std::move(regions));
  ASSERT_FALSE(memory);
  EXPECT_THAT(memory.error().message(), HasSubstr("overlaps"));
}

TEST(GuestMemory, FindRegionAtEdges) {
  auto memory = make_memory();
  const auto& first = memory.regions()[0];
  EXPECT_EQ(memory.find_region(GuestAddress(0x10000)), &first) << "first byte";
  EXPECT_EQ(memory.find_region(GuestAddress(0x10000 + 2 * kPage - 1)), &first) << "last byte";
  EXPECT_EQ(memory.find_region(GuestAddress(0x10000 + 2 * kPage)), &memory.regions()[1]) << "one past: next region";
  EXPECT_EQ(memory.find_region(GuestAddress(0xffff)), nullptr) << "one before";
  EXPECT_EQ(memory.find_region(GuestAddress(0x10000 + 3 * kPage)), nullptr) << "one past the adjacent pair: hole";
  EXPECT_EQ(memory.find_region(GuestAddress(0x100000 + kPage - 1)), &memory.regions()[2]);
  EXPECT_EQ(memory.find_region(GuestAddress(0x100000 + kPage)), nullptr) << "one past the last region";
  EXPECT_EQ(memory.find_region(GuestAddress(std::numeric_limits<std::uint64_t>::max())), nullptr);
  EXPECT_EQ(GuestMemory().find_region(GuestAddress(0)), nullptr);
}

TEST(GuestMemory, ToHostWithinOneRegion) {
  auto memory = make_memory();
  auto span = memory.to_host(GuestAddress(0x10000 + kPage - 4), 8);
  ASSERT_TRUE(span) << span.error().message();
  EXPECT_EQ(span->data(), memory.regions()[0].host_address() + kPage - 4);
  EXPECT_EQ(span->size(), 8U);
  auto whole = memory.to_host(GuestAddress(0x10000), 2 * kPage);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->size(), 2 * kPage);
}

TEST(GuestMemory, ToHostRefusesRangesCrossingRegionsOrHoles) {
  auto memory = make_memory();
  const auto boundary = 0x10000 + 2 * kPage;
  auto crossing = memory.to_host(GuestAddress(boundary - 4), 8);
  ASSERT_FALSE(crossing) << "adjacent regions are still two host mappings";
  EXPECT_THAT(crossing.error().message(),
              HasSubstr(fmt::format("GuestMemory::to_host: 0x8 bytes at {:#x}: the range does not fit in region",
                                    boundary - 4)));
  auto hole = memory.to_host(GuestAddress(0x20000), 1);
  ASSERT_FALSE(hole);
  EXPECT_THAT(hole.error().message(), HasSubstr("0x1 bytes at 0x20000: 0x20000 is not guest memory"));
}

TEST(GuestMemory, ReadAndWriteSpanAdjacentRegions) {
  auto memory = make_memory();
  const auto boundary = 0x10000 + 2 * kPage;
  const auto data = pattern(100);
  ASSERT_TRUE(memory.write(GuestAddress(boundary - 40), data));
  // The bytes really landed in both host mappings, split at the boundary.
  EXPECT_EQ(std::memcmp(memory.regions()[0].host_address() + 2 * kPage - 40, data.data(), 40), 0);
  EXPECT_EQ(std::memcmp(memory.regions()[1].host_address(), data.data() + 40, 60), 0);

  std::vector<std::byte> back(100);
  ASSERT_TRUE(memory.read(GuestAddress(boundary - 40), back));
  EXPECT_EQ(back, data);
}

TEST(GuestMemory, OutOfRangeAccessFailsWithoutPartialWrites) {
  auto memory = make_memory();
  const auto end_of_pair = 0x10000 + 3 * kPage;  // a hole follows
  const auto data = pattern(16);
  auto write = memory.write(GuestAddress(end_of_pair - 8), data);
  ASSERT_FALSE(write);
  EXPECT_THAT(write.error().message(),
              HasSubstr(fmt::format("GuestMemory::write: 0x10 bytes at {:#x}: {:#x} is not guest memory",
                                    end_of_pair - 8, end_of_pair)));
  for (std::size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(memory.regions()[1].bytes()[kPage - 8 + i], std::byte{0}) << "nothing was written before failing";
  }

  std::vector<std::byte> out(16, std::byte{0xee});
  auto read = memory.read(GuestAddress(0x10000 - 8), out);
  ASSERT_FALSE(read);
  EXPECT_THAT(read.error().message(), HasSubstr("GuestMemory::read: 0x10 bytes at 0xfff8: 0xfff8 is not guest memory"));
  EXPECT_EQ(out[0], std::byte{0xee}) << "the buffer is untouched";

  // Zero bytes touch nothing, so they succeed even in a hole; to_host gives an empty span.
  EXPECT_TRUE(memory.read(GuestAddress(0x20000), {}));
  EXPECT_TRUE(memory.write(GuestAddress(0x20000), {}));
  auto empty = memory.to_host(GuestAddress(0x20000), 0);
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

TEST(GuestMemory, OverflowingRangesAreErrorsNotWraps) {
  // A region at 0 means a wrapped end (0xfffffffffffffff0 + 0x20 -> 0x10) would land in memory.
  auto memory = make_memory();
  ASSERT_TRUE(memory.add_region(make_region(0, kPage)));
  std::vector<std::byte> out(0x20);
  auto read = memory.read(GuestAddress(0xffff'ffff'ffff'fff0), out);
  ASSERT_FALSE(read);
  EXPECT_THAT(read.error().message(),
              HasSubstr("0x20 bytes at 0xfffffffffffffff0: the range runs past the end of the 64-bit address space"));
  auto to_host = memory.to_host(GuestAddress(0xffff'ffff'ffff'fff0), 0x20);
  EXPECT_FALSE(to_host);
  // A huge length from a valid address must not wrap either.
  auto huge = memory.to_host(GuestAddress(0x10), std::numeric_limits<std::size_t>::max());
  ASSERT_FALSE(huge);
  EXPECT_THAT(huge.error().message(), HasSubstr("does not fit in region [0x0,"));
}

struct Descriptor {
  std::uint64_t address;
  std::uint32_t length;
  std::uint16_t flags;
  std::uint16_t next;
};

TEST(GuestMemory, ReadObjAndWriteObj) {
  auto memory = make_memory();
  const Descriptor written{0x1234'5678'9abc'def0, 0x200, 3, 7};
  // Unaligned and spanning the boundary between the two adjacent regions.
  const GuestAddress at(0x10000 + 2 * kPage - 5);
  ASSERT_TRUE(memory.write_obj(at, written));
  auto read = memory.read_obj<Descriptor>(at);
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(read->address, written.address);
  EXPECT_EQ(read->length, written.length);
  EXPECT_EQ(read->flags, written.flags);
  EXPECT_EQ(read->next, written.next);

  auto word = memory.read_obj<std::uint32_t>(GuestAddress(0x10000 + 2 * kPage - 5 + 8));
  ASSERT_TRUE(word);
  EXPECT_EQ(*word, 0x200U) << "little-endian layout in guest memory";

  auto missing = memory.read_obj<Descriptor>(GuestAddress(0x100000 + kPage - 8));
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.error().message(), HasSubstr(fmt::format("0x10 bytes at {:#x}", 0x100000 + kPage - 8)));
}

TEST(GuestMemory, VolatileSliceCopiesInAndOut) {
  auto memory = make_memory();
  auto slice = memory.volatile_slice(GuestAddress(0x100000 + 16), 32);
  ASSERT_TRUE(slice) << slice.error().message();
  EXPECT_EQ(slice->size(), 32U);
  const auto data = pattern(8);
  auto sub = slice->subslice(8, 8);
  ASSERT_TRUE(sub);
  ASSERT_TRUE(sub->copy_from(data));
  EXPECT_EQ(std::memcmp(memory.regions()[2].host_address() + 24, data.data(), 8), 0);
  std::array<std::byte, 8> out{};
  ASSERT_TRUE(sub->copy_to(out));
  EXPECT_TRUE(std::equal(out.begin(), out.end(), data.begin()));

  EXPECT_FALSE(slice->subslice(30, 4)) << "past the slice";
  EXPECT_FALSE(slice->subslice(8, std::numeric_limits<std::size_t>::max())) << "offset + length would wrap";
  std::array<std::byte, 9> too_big{};
  EXPECT_FALSE(sub->copy_to(too_big));
  EXPECT_FALSE(sub->copy_from(too_big));
  EXPECT_FALSE(memory.volatile_slice(GuestAddress(0x20000), 4));
}

TEST(GuestMemory, AtomicLoadAndStoreAtAlignedAddresses) {
  auto memory = make_memory();
  ASSERT_TRUE(memory.store<std::uint16_t>(GuestAddress(0x10002), 0xbeef, std::memory_order_release));
  ASSERT_TRUE(memory.store<std::uint32_t>(GuestAddress(0x10004), 0xdead'beef));
  ASSERT_TRUE(memory.store<std::uint64_t>(GuestAddress(0x10008), 0x0123'4567'89ab'cdef, std::memory_order_relaxed));

  auto u16 = memory.load<std::uint16_t>(GuestAddress(0x10002), std::memory_order_acquire);
  ASSERT_TRUE(u16);
  EXPECT_EQ(*u16, 0xbeef);
  auto u32 = memory.load<std::uint32_t>(GuestAddress(0x10004));
  ASSERT_TRUE(u32);
  EXPECT_EQ(*u32, 0xdead'beefU);
  auto u64 = memory.load<std::uint64_t>(GuestAddress(0x10008));
  ASSERT_TRUE(u64);
  EXPECT_EQ(*u64, 0x0123'4567'89ab'cdefU);
  // The stores went through to plain memory: the same bytes through read_obj.
  auto plain = memory.read_obj<std::uint32_t>(GuestAddress(0x10004));
  ASSERT_TRUE(plain);
  EXPECT_EQ(*plain, 0xdead'beefU);
}

TEST(GuestMemory, AtomicAccessRejectsMisalignmentHolesAndBadOrders) {
  auto memory = make_memory();
  auto misaligned = memory.load<std::uint32_t>(GuestAddress(0x10002));
  ASSERT_FALSE(misaligned);
  EXPECT_THAT(misaligned.error().message(),
              HasSubstr("GuestMemory::load: 0x4 bytes at 0x10002: the address is not 4-byte aligned"));
  auto misaligned_store = memory.store<std::uint64_t>(GuestAddress(0x10004), 1);
  ASSERT_FALSE(misaligned_store);
  EXPECT_THAT(misaligned_store.error().message(), HasSubstr("not 8-byte aligned"));
  EXPECT_FALSE(memory.store<std::uint16_t>(GuestAddress(0x10001), 1));
  auto u64 = memory.load<std::uint64_t>(GuestAddress(0x10000));
  ASSERT_TRUE(u64);
  EXPECT_EQ(*u64, 0U) << "the refused store wrote nothing";

  auto hole = memory.load<std::uint64_t>(GuestAddress(0x20000));
  ASSERT_FALSE(hole);
  EXPECT_THAT(hole.error().message(), HasSubstr("0x20000 is not guest memory"));

  EXPECT_FALSE(memory.load<std::uint32_t>(GuestAddress(0x10000), std::memory_order_release));
  EXPECT_FALSE(memory.store<std::uint32_t>(GuestAddress(0x10000), 1, std::memory_order_acquire));
}

}  // namespace
}  // namespace vmm::memory
