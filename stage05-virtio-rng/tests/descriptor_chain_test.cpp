// read_descriptor_chain: every rule of descriptor_chain.hpp, on descriptor tables written byte by byte (a hostile
// driver does not go through a friendly API, so neither do these tests).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "vmm/memory/guest_memory.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/testing/result.hpp"
#include "vmm/virtio/descriptor_chain.hpp"
#include "vmm/virtio/uapi.hpp"

namespace vmm::virtio {
namespace {

using memory::GuestAddress;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr std::uint16_t kQueueSize = 16;
constexpr std::uint64_t kMemorySize = 4ull << 20;  // make_test_memory's default
const GuestAddress kTable{0x1000};

constexpr std::uint16_t kNext = VRING_DESC_F_NEXT;
constexpr std::uint16_t kWrite = VRING_DESC_F_WRITE;
constexpr std::uint16_t kIndirect = VRING_DESC_F_INDIRECT;

using vmm::testing::error_of;

class DescriptorChainTest : public ::testing::Test {
 protected:
  // Writes descriptor `index` of the table at `table` (the queue's, or an indirect table).
  void put_at(GuestAddress table, std::uint16_t index, std::uint64_t address, std::uint32_t length, std::uint16_t flags,
              std::uint16_t next = 0) {
    const vring_desc descriptor{.addr = address, .len = length, .flags = flags, .next = next};
    ASSERT_TRUE(memory_.write_obj(GuestAddress(table.raw() + sizeof(vring_desc) * index), descriptor));
  }
  void put(std::uint16_t index, std::uint64_t address, std::uint32_t length, std::uint16_t flags,
           std::uint16_t next = 0) {
    put_at(kTable, index, address, length, flags, next);
  }
  Result<DescriptorChain> walk(std::uint16_t head, bool indirect = false, std::uint16_t size = kQueueSize) {
    return read_descriptor_chain(memory_, kTable, head, ChainLimits{.queue_size = size, .indirect_allowed = indirect});
  }

  memory::GuestMemory memory_ = testing::make_test_memory(kMemorySize);
};

// ---------------------------------------------------------------------------------------------------------------------
// Direct chains.

TEST_F(DescriptorChainTest, SplitsReadableAndWritableInChainOrder) {
  // Head 2 -> 7 -> 4 -> 9: two readable buffers then two writable ones, indices deliberately not consecutive.
  put(2, 0x2000, 100, kNext, 7);
  put(7, 0x3000, 20, kNext, 4);
  put(4, 0x4000, 512, kNext | kWrite, 9);
  put(9, 0x5000, 1, kWrite);
  auto chain = walk(2);
  ASSERT_TRUE(chain) << chain.error().message();
  EXPECT_EQ(chain->head_index, 2);
  EXPECT_THAT(chain->readable,
              ElementsAre(Descriptor{GuestAddress(0x2000), 100}, Descriptor{GuestAddress(0x3000), 20}));
  EXPECT_THAT(chain->writable, ElementsAre(Descriptor{GuestAddress(0x4000), 512}, Descriptor{GuestAddress(0x5000), 1}));
  EXPECT_EQ(chain->readable_bytes(), 120U);
  EXPECT_EQ(chain->writable_bytes(), 513U);
  EXPECT_FALSE(chain->indirect);
  EXPECT_EQ(chain->descriptors_walked, 4);
}

TEST_F(DescriptorChainTest, SingleDescriptorIgnoresNextWithoutTheFlag) {
  put(5, 0x2000, 64, kWrite, 99);  // `next` is garbage, but without VRING_DESC_F_NEXT it means nothing
  auto chain = walk(5);
  ASSERT_TRUE(chain) << chain.error().message();
  EXPECT_EQ(chain->head_index, 5);
  EXPECT_THAT(chain->readable, IsEmpty());
  EXPECT_THAT(chain->writable, ElementsAre(Descriptor{GuestAddress(0x2000), 64}));
  EXPECT_EQ(chain->readable_bytes(), 0U);
  EXPECT_EQ(chain->writable_bytes(), 64U);
  EXPECT_EQ(chain->descriptors_walked, 1);
}

TEST_F(DescriptorChainTest, ChainAsLongAsTheQueueIsAccepted) {
  for (std::uint16_t i = 0; i < kQueueSize; ++i) {
    const bool last = i + 1 == kQueueSize;
    put(i, 0x2000 + 0x100 * i, 0x10, last ? kWrite : kNext, static_cast<std::uint16_t>(i + 1));
  }
  auto chain = walk(0);
  ASSERT_TRUE(chain) << chain.error().message();
  EXPECT_EQ(chain->readable.size() + chain->writable.size(), kQueueSize);
  EXPECT_EQ(chain->descriptors_walked, kQueueSize);
}

TEST_F(DescriptorChainTest, LoopIsReportedNotFollowed) {
  put(0, 0x2000, 8, kNext, 1);
  put(1, 0x2100, 8, kNext, 0);  // back to 0
  EXPECT_THAT(error_of(walk(0)), HasSubstr("descriptor chain longer than the queue size 16: a loop?"));
  EXPECT_THAT(error_of(walk(1)), HasSubstr("a loop?"));

  put(3, 0x2000, 8, kNext, 3);  // a descriptor naming itself
  EXPECT_THAT(error_of(walk(3)), HasSubstr("longer than the queue size 16"));
}

TEST_F(DescriptorChainTest, LoopInTheLargestQueueEndsQuickly) {
  // 32768 descriptors (the largest power of two a u16 size allows), a loop through two of them: the walk stops
  // after 32768 steps. A walker that followed the loop would never return.
  constexpr std::uint16_t kLargest = 32768;
  put(0, 0x2000, 8, kNext, 1);
  put(1, 0x2000, 8, kNext, 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(error_of(walk(0, false, kLargest)), HasSubstr("longer than the queue size 32768: a loop?"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(DescriptorChainTest, NextIndexOutOfRange) {
  put(0, 0x2000, 8, kNext, 3);
  put(3, 0x2000, 8, kNext, 40);
  EXPECT_THAT(error_of(walk(0)), HasSubstr("descriptor 3: next index 40 is out of range (queue size 16)"));
  put(3, 0x2000, 8, kNext, kQueueSize);  // the first index past the end
  EXPECT_THAT(error_of(walk(0)), HasSubstr("next index 16 is out of range"));
}

TEST_F(DescriptorChainTest, HeadOutOfRange) {
  EXPECT_THAT(error_of(walk(kQueueSize)), HasSubstr("head index 16 is out of range (queue size 16)"));
  EXPECT_THAT(error_of(walk(0xffff)), HasSubstr("head index 65535 is out of range"));
}

TEST_F(DescriptorChainTest, ReadableAfterWritableIsRefused) {
  put(0, 0x2000, 8, kNext, 1);
  put(1, 0x3000, 8, kWrite | kNext, 2);
  put(2, 0x4000, 8, 0);  // readable, after a writable one
  EXPECT_THAT(error_of(walk(0)), HasSubstr("descriptor 2: a device-readable buffer after a device-writable one"));
}

TEST_F(DescriptorChainTest, DescriptorTableOutsideMemory) {
  // Not SplitQueue's case (validate checks the table), but the walker must not trust its caller's table either.
  auto chain = read_descriptor_chain(memory_, GuestAddress(kMemorySize), 0, ChainLimits{.queue_size = kQueueSize});
  EXPECT_THAT(error_of(chain), HasSubstr("is not guest memory"));
}

TEST_F(DescriptorChainTest, BufferOutsideGuestMemory) {
  put(0, kMemorySize - 16, 16, 0);  // the last 16 bytes: inside
  EXPECT_TRUE(walk(0));

  put(0, kMemorySize - 10, 20, 0);  // straddles the end
  EXPECT_THAT(error_of(walk(0)),
              HasSubstr("descriptor 0: the buffer (0x14 bytes at 0x3ffff6) is not inside guest memory"));

  put(0, 0x2000, 8, kNext, 1);
  put(1, kMemorySize + 0x1000, 1, kWrite);  // wholly outside, second in the chain
  EXPECT_THAT(error_of(walk(0)), HasSubstr("descriptor 1: the buffer (0x1 bytes at 0x401000) is not inside"));
}

TEST_F(DescriptorChainTest, BufferWrappingPast2To64IsRefused) {
  // 0xffff'ffff'ffff'fff0 + 0x20 wraps to 0x10, which IS guest memory: a check on the wrapped end would pass.
  put(0, 0xffff'ffff'ffff'fff0, 0x20, 0);
  const auto message = error_of(walk(0));
  EXPECT_THAT(message, HasSubstr("descriptor 0: the buffer (0x20 bytes at 0xfffffffffffffff0) is not inside"));
  EXPECT_THAT(message, HasSubstr("past the end of the 64-bit address space"));
}

TEST_F(DescriptorChainTest, BufferAcrossAdjacentRegionsAcceptedAcrossAHoleRefused) {
  // [0, 64 KiB) and [64 KiB, 128 KiB) adjacent, then a hole, then [192 KiB, 256 KiB).
  std::vector<memory::GuestMemoryRegion> regions;
  for (const std::uint64_t start : {0x0ull, 0x1'0000ull, 0x3'0000ull}) {
    auto region = memory::GuestMemoryRegion::create(GuestAddress(start), 0x1'0000);
    ASSERT_TRUE(region) << region.error().message();
    regions.push_back(std::move(*region));
  }
  auto memory = memory::GuestMemory::from_regions(std::move(regions));
  ASSERT_TRUE(memory) << memory.error().message();
  memory_ = std::move(*memory);

  put(0, 0xff00, 0x200, 0);  // spans the two adjacent regions
  EXPECT_TRUE(walk(0));
  put(0, 0x1ff00, 0x200, 0);  // runs into the hole
  EXPECT_THAT(error_of(walk(0)), HasSubstr("0x20000 is not guest memory"));
}

TEST(DescriptorChain, TotalLengthAbove2To32IsRefused) {
  // 1 GiB of guest memory (reserved, never touched) and buffers of 1 GiB: four make exactly 2^32 bytes, allowed;
  // a fifth goes over.
  constexpr std::uint64_t kGiB = 1ull << 30;
  auto memory = testing::make_test_memory(kGiB);
  const GuestAddress table(0x1000);
  auto put = [&](std::uint16_t index, std::uint16_t flags, std::uint16_t next) {
    const vring_desc descriptor{.addr = 0, .len = static_cast<std::uint32_t>(kGiB), .flags = flags, .next = next};
    ASSERT_TRUE(memory.write_obj(GuestAddress(table.raw() + sizeof(vring_desc) * index), descriptor));
  };
  for (std::uint16_t i = 0; i < 3; ++i) {
    put(i, kNext, static_cast<std::uint16_t>(i + 1));
  }
  put(3, kWrite, 0);
  auto four = read_descriptor_chain(memory, table, 0, ChainLimits{.queue_size = kQueueSize});
  ASSERT_TRUE(four) << four.error().message();
  EXPECT_EQ(four->readable_bytes() + four->writable_bytes(), 1ull << 32);

  put(3, kWrite | kNext, 4);
  put(4, kWrite, 0);
  auto five = read_descriptor_chain(memory, table, 0, ChainLimits{.queue_size = kQueueSize});
  EXPECT_THAT(error_of(five), HasSubstr("descriptor 4: the chain now holds 0x140000000 bytes, more than 2^32"));
}

// ---------------------------------------------------------------------------------------------------------------------
// Indirect descriptors.

const GuestAddress kIndirectTable{0x8000};

TEST_F(DescriptorChainTest, IndirectAcceptedWhenNegotiated) {
  put_at(kIndirectTable, 0, 0x2000, 64, kNext, 1);
  put_at(kIndirectTable, 1, 0x3000, 8, kNext, 2);
  put_at(kIndirectTable, 2, 0x4000, 256, kWrite);
  // The indirect descriptor's own WRITE flag is meaningless and must be ignored (2.7.5.3.2).
  put(6, kIndirectTable.raw(), 3 * sizeof(vring_desc), kIndirect | kWrite);
  auto chain = walk(6, true);
  ASSERT_TRUE(chain) << chain.error().message();
  EXPECT_EQ(chain->head_index, 6);
  EXPECT_TRUE(chain->indirect);
  EXPECT_THAT(chain->readable, ElementsAre(Descriptor{GuestAddress(0x2000), 64}, Descriptor{GuestAddress(0x3000), 8}));
  EXPECT_THAT(chain->writable, ElementsAre(Descriptor{GuestAddress(0x4000), 256}));
  EXPECT_EQ(chain->readable_bytes(), 72U);
  EXPECT_EQ(chain->writable_bytes(), 256U);
  EXPECT_EQ(chain->descriptors_walked, 4) << "the indirect descriptor and its three entries";
}

TEST_F(DescriptorChainTest, IndirectTableFollowsNextInsideTheTable) {
  // Entries in the order 0 -> 2 -> 1: `next` indexes the table, not the queue's descriptor table.
  put_at(kIndirectTable, 0, 0x2000, 1, kNext, 2);
  put_at(kIndirectTable, 2, 0x3000, 2, kNext | kWrite, 1);
  put_at(kIndirectTable, 1, 0x4000, 3, kWrite);
  put(0, kIndirectTable.raw(), 3 * sizeof(vring_desc), kIndirect);
  auto chain = walk(0, true);
  ASSERT_TRUE(chain) << chain.error().message();
  EXPECT_THAT(chain->readable, ElementsAre(Descriptor{GuestAddress(0x2000), 1}));
  EXPECT_THAT(chain->writable, ElementsAre(Descriptor{GuestAddress(0x3000), 2}, Descriptor{GuestAddress(0x4000), 3}));
}

TEST_F(DescriptorChainTest, IndirectMayEndADirectChain) {
  put(0, 0x2000, 10, kNext, 1);
  put(1, kIndirectTable.raw(), sizeof(vring_desc), kIndirect);
  put_at(kIndirectTable, 0, 0x3000, 20, kWrite);
  auto chain = walk(0, true);
  ASSERT_TRUE(chain) << chain.error().message();
  EXPECT_TRUE(chain->indirect);
  EXPECT_THAT(chain->readable, ElementsAre(Descriptor{GuestAddress(0x2000), 10}));
  EXPECT_THAT(chain->writable, ElementsAre(Descriptor{GuestAddress(0x3000), 20}));
  EXPECT_EQ(chain->descriptors_walked, 3);
}

TEST_F(DescriptorChainTest, ReadableOrderIsCheckedAcrossTheIndirectBoundary) {
  put(0, 0x2000, 10, kWrite | kNext, 1);
  put(1, kIndirectTable.raw(), sizeof(vring_desc), kIndirect);
  put_at(kIndirectTable, 0, 0x3000, 20, 0);  // readable, after the direct writable one
  EXPECT_THAT(error_of(walk(0, true)),
              HasSubstr("indirect table entry 0: a device-readable buffer after a device-writable one"));
}

TEST_F(DescriptorChainTest, IndirectRefusedWhenNotNegotiated) {
  put_at(kIndirectTable, 0, 0x2000, 64, kWrite);
  put(0, kIndirectTable.raw(), sizeof(vring_desc), kIndirect);
  EXPECT_THAT(error_of(walk(0, false)),
              HasSubstr("descriptor 0: VRING_DESC_F_INDIRECT, but VIRTIO_RING_F_INDIRECT_DESC was not negotiated"));
  EXPECT_TRUE(walk(0, true)) << "the same chain, negotiated";
}

TEST_F(DescriptorChainTest, IndirectWithNextFlagIsRefused) {
  put_at(kIndirectTable, 0, 0x2000, 64, kWrite);
  put(0, kIndirectTable.raw(), sizeof(vring_desc), kIndirect | kNext, 1);
  put(1, 0x3000, 8, kWrite);
  EXPECT_THAT(error_of(walk(0, true)),
              HasSubstr("descriptor 0: VRING_DESC_F_INDIRECT together with VRING_DESC_F_NEXT"));
}

TEST_F(DescriptorChainTest, NestedIndirectIsRefused) {
  const GuestAddress inner(0x9000);
  put_at(inner, 0, 0x3000, 8, kWrite);
  put_at(kIndirectTable, 0, 0x2000, 8, kNext, 1);
  put_at(kIndirectTable, 1, inner.raw(), sizeof(vring_desc), kIndirect);
  put(0, kIndirectTable.raw(), 2 * sizeof(vring_desc), kIndirect);
  EXPECT_THAT(error_of(walk(0, true)),
              HasSubstr("indirect table entry 1: VRING_DESC_F_INDIRECT inside an indirect table (one level only)"));
}

TEST_F(DescriptorChainTest, IndirectTableLengthRules) {
  put_at(kIndirectTable, 0, 0x2000, 8, kWrite);

  put(0, kIndirectTable.raw(), 0, kIndirect);
  EXPECT_THAT(error_of(walk(0, true)), HasSubstr("descriptor 0: an indirect table of length 0"));

  put(0, kIndirectTable.raw(), 40, kIndirect);
  EXPECT_THAT(error_of(walk(0, true)), HasSubstr("descriptor 0: indirect table length 40 is not a multiple of 16"));

  // As many entries as the queue size is the limit; one more is refused. (Entries 1.. are zero: a lone readable
  // zero-length buffer each, never reached since entry 0 has no NEXT.)
  put(0, kIndirectTable.raw(), kQueueSize * sizeof(vring_desc), kIndirect);
  EXPECT_TRUE(walk(0, true));
  put(0, kIndirectTable.raw(), (kQueueSize + 1) * sizeof(vring_desc), kIndirect);
  EXPECT_THAT(error_of(walk(0, true)),
              HasSubstr("descriptor 0: indirect table has 17 entries, more than the queue size 16"));
}

TEST_F(DescriptorChainTest, IndirectTableOutsideGuestMemory) {
  put(0, kMemorySize - 16, 32, kIndirect);  // straddles the end
  EXPECT_THAT(error_of(walk(0, true)),
              HasSubstr("descriptor 0: the indirect table (0x20 bytes at 0x3ffff0) is not inside guest memory"));
  put(0, 0xffff'ffff'ffff'fff0, 32, kIndirect);  // wraps past 2^64
  EXPECT_THAT(error_of(walk(0, true)), HasSubstr("past the end of the 64-bit address space"));
}

TEST_F(DescriptorChainTest, IndirectBufferOutsideGuestMemory) {
  put_at(kIndirectTable, 0, 0x2000, 8, kNext, 1);
  put_at(kIndirectTable, 1, kMemorySize, 8, kWrite);
  put(0, kIndirectTable.raw(), 2 * sizeof(vring_desc), kIndirect);
  EXPECT_THAT(error_of(walk(0, true)),
              HasSubstr("descriptor 0: indirect table entry 1: the buffer (0x8 bytes at 0x400000) is not inside"));
}

TEST_F(DescriptorChainTest, LoopInsideAnIndirectTable) {
  put_at(kIndirectTable, 0, 0x2000, 8, kNext, 1);
  put_at(kIndirectTable, 1, 0x2000, 8, kNext, 0);
  put(4, kIndirectTable.raw(), 2 * sizeof(vring_desc), kIndirect);
  EXPECT_THAT(error_of(walk(4, true)),
              HasSubstr("descriptor 4: the chain in its indirect table is longer than the table's 2 entries: a loop?"));
}

TEST_F(DescriptorChainTest, NextOutOfRangeInsideAnIndirectTable) {
  put_at(kIndirectTable, 0, 0x2000, 8, kNext, 2);  // the table has entries 0 and 1 only
  put(0, kIndirectTable.raw(), 2 * sizeof(vring_desc), kIndirect);
  EXPECT_THAT(error_of(walk(0, true)),
              HasSubstr("indirect table entry 0: next index 2 is out of range (the table has 2 entries)"));
}

}  // namespace
}  // namespace vmm::virtio
