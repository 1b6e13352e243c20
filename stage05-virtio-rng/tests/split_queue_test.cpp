// SplitQueue: layout validation, and the rings driven by a MockDriver (order, used entries, the u16 wrap, driver
// errors, undo_pop).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vmm/memory/guest_memory.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/testing/result.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/uapi.hpp"

namespace vmm::virtio {
namespace {

using memory::GuestAddress;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::MockBuffer;
using testing::MockDriver;

constexpr std::uint64_t kMemorySize = 4ull << 20;  // make_test_memory's default
constexpr std::uint16_t kMaxSize = 256;

using vmm::testing::error_of;

// ---------------------------------------------------------------------------------------------------------------------
// validate

class ValidateTest : public ::testing::Test {
 protected:
  // A valid layout of 16 entries: table, available ring and used ring apart from each other.
  static QueueLayout good() {
    return {.size = 16,
            .descriptor_table = GuestAddress(0x1000),
            .available_ring = GuestAddress(0x2000),
            .used_ring = GuestAddress(0x3000)};
  }
  std::string error_for(const QueueLayout& layout, std::uint16_t max_size = kMaxSize) {
    return error_of(validate(layout, max_size, memory_));
  }

  memory::GuestMemory memory_ = testing::make_test_memory(kMemorySize);
};

TEST_F(ValidateTest, AcceptsAValidLayout) {
  EXPECT_TRUE(validate(good(), kMaxSize, memory_));
  auto largest = good();
  largest.size = kMaxSize;  // the maximum itself is allowed
  EXPECT_TRUE(validate(largest, kMaxSize, memory_));
  auto one = good();
  one.size = 1;  // 2^0
  EXPECT_TRUE(validate(one, kMaxSize, memory_));
}

TEST_F(ValidateTest, RefusesSizeZero) {
  auto layout = good();
  layout.size = 0;
  EXPECT_THAT(error_for(layout), HasSubstr("queue size 0"));
}

TEST_F(ValidateTest, RefusesSizeNotAPowerOfTwo) {
  for (const std::uint16_t size : {3, 12, 100, 255}) {
    auto layout = good();
    layout.size = size;
    EXPECT_THAT(error_for(layout), HasSubstr(fmt::format("queue size {} is not a power of two", size)));
  }
}

TEST_F(ValidateTest, RefusesSizeAboveTheMaximum) {
  auto layout = good();
  layout.size = 512;
  EXPECT_THAT(error_for(layout), HasSubstr("queue size 512 is larger than the maximum 256"));
  layout.size = 32;
  EXPECT_THAT(error_for(layout, 16), HasSubstr("queue size 32 is larger than the maximum 16"));
}

TEST_F(ValidateTest, RefusesMisalignedAreas) {
  auto table = good();
  table.descriptor_table = GuestAddress(0x1008);  // 8-aligned is not enough
  EXPECT_THAT(error_for(table), HasSubstr("the descriptor table at 0x1008 is not 16-byte aligned"));

  auto available = good();
  available.available_ring = GuestAddress(0x2001);
  EXPECT_THAT(error_for(available), HasSubstr("the available ring at 0x2001 is not 2-byte aligned"));
  available.available_ring = GuestAddress(0x2002);  // 2-aligned is enough
  EXPECT_TRUE(validate(available, kMaxSize, memory_));

  auto used = good();
  used.used_ring = GuestAddress(0x3002);
  EXPECT_THAT(error_for(used), HasSubstr("the used ring at 0x3002 is not 4-byte aligned"));
  used.used_ring = GuestAddress(0x3004);
  EXPECT_TRUE(validate(used, kMaxSize, memory_));
}

TEST_F(ValidateTest, RefusesDescriptorTableOutsideMemory) {
  auto layout = good();
  layout.descriptor_table = GuestAddress(kMemorySize);  // wholly outside
  EXPECT_THAT(error_for(layout),
              HasSubstr("the descriptor table (0x100 bytes at 0x400000) is not inside guest memory"));
  // Straddling the end: 16 * 16 = 0x100 bytes starting 0xf0 before it.
  layout.descriptor_table = GuestAddress(kMemorySize - 0xf0);
  EXPECT_THAT(error_for(layout), HasSubstr("the descriptor table (0x100 bytes at 0x3fff10) is not inside"));
  // Ending exactly at the end is fine.
  layout.descriptor_table = GuestAddress(kMemorySize - 0x100);
  EXPECT_TRUE(validate(layout, kMaxSize, memory_));
}

TEST_F(ValidateTest, RefusesAvailableRingOutsideMemory) {
  // 6 + 2 * 16 = 38 = 0x26 bytes, used_event included.
  auto layout = good();
  layout.available_ring = GuestAddress(kMemorySize + 0x1000);
  EXPECT_THAT(error_for(layout), HasSubstr("the available ring (0x26 bytes at 0x401000) is not inside guest memory"));
  // Only used_event (the last 2 bytes) sticks out: still refused.
  layout.available_ring = GuestAddress(kMemorySize - 0x24);
  EXPECT_THAT(error_for(layout), HasSubstr("the available ring (0x26 bytes at 0x3fffdc) is not inside"));
  layout.available_ring = GuestAddress(kMemorySize - 0x26);
  EXPECT_TRUE(validate(layout, kMaxSize, memory_));
}

TEST_F(ValidateTest, RefusesUsedRingOutsideMemory) {
  // 6 + 8 * 16 = 134 = 0x86 bytes, avail_event included.
  auto layout = good();
  layout.used_ring = GuestAddress(kMemorySize);
  EXPECT_THAT(error_for(layout), HasSubstr("the used ring (0x86 bytes at 0x400000) is not inside guest memory"));
  layout.used_ring = GuestAddress(kMemorySize - 0x84);  // avail_event sticks out
  EXPECT_THAT(error_for(layout), HasSubstr("the used ring (0x86 bytes at 0x3fff7c) is not inside"));
  // Near 2^64: the end does not even exist.
  layout.used_ring = GuestAddress(0xffff'ffff'ffff'ff80);
  EXPECT_THAT(error_for(layout), HasSubstr("past the end of the 64-bit address space"));
  layout.used_ring = GuestAddress(kMemorySize - 0x88);  // 4-aligned, ends 2 bytes before the end
  EXPECT_TRUE(validate(layout, kMaxSize, memory_));
}

TEST_F(ValidateTest, ReportsTheFirstRuleBroken) {
  // Everything wrong at once: the size is reported, since nothing else can be computed without it.
  QueueLayout layout{.size = 12,
                     .descriptor_table = GuestAddress(0x1001),
                     .available_ring = GuestAddress(0x2001),
                     .used_ring = GuestAddress(0x3001)};
  EXPECT_THAT(error_for(layout), HasSubstr("queue size 12"));
  layout.size = 16;
  EXPECT_THAT(error_for(layout), HasSubstr("descriptor table"));
}

TEST_F(ValidateTest, CreateValidatesAndStartsAtZero) {
  auto bad = good();
  bad.used_ring = GuestAddress(0x3002);
  EXPECT_THAT(error_of(SplitQueue::create(memory_, bad, kMaxSize, {})), HasSubstr("not 4-byte aligned"));

  auto counters = std::make_shared<QueueCounters>();
  auto queue = SplitQueue::create(memory_, good(), kMaxSize, QueueFeatures{.event_idx = true}, counters);
  ASSERT_TRUE(queue) << queue.error().message();
  EXPECT_EQ(queue->layout(), good());
  EXPECT_EQ(queue->size(), 16);
  EXPECT_TRUE(queue->features().event_idx);
  EXPECT_FALSE(queue->features().indirect);
  EXPECT_EQ(queue->next_avail(), 0);
  EXPECT_EQ(queue->next_used(), 0);
  EXPECT_EQ(&queue->counters(), counters.get()) << "the transport's counters are shared, not copied";

  auto own = SplitQueue::create(memory_, good(), kMaxSize, {});
  ASSERT_TRUE(own);
  EXPECT_EQ(own->counters().snapshot(), QueueCountersSnapshot{}) << "a private set when none is given";
}

// ---------------------------------------------------------------------------------------------------------------------
// The rings, with a mock driver.

class SplitQueueTest : public ::testing::Test {
 protected:
  SplitQueue make_queue(bool indirect = false) {
    auto queue = SplitQueue::create(memory_, driver_.queue_layout(), kMaxSize, driver_.features(indirect));
    EXPECT_TRUE(queue) << queue.error().message();
    return std::move(queue).value();
  }
  // One readable buffer of `request` bytes, one writable of `reply`: what most devices get.
  std::uint16_t add_request(std::uint32_t request, std::uint32_t reply) {
    const std::vector<MockBuffer> buffers{driver_.allocate(request, false), driver_.allocate(reply, true)};
    return driver_.add_chain(buffers);
  }
  // Pops a chain that must be there.
  static DescriptorChain pop_one(SplitQueue& queue) {
    auto popped = queue.pop();
    EXPECT_TRUE(popped) << popped.error().message();
    EXPECT_TRUE(popped && popped->has_value()) << "the ring is empty";
    return std::move(popped).value().value();
  }

  memory::GuestMemory memory_ = testing::make_test_memory(kMemorySize);
  MockDriver driver_{memory_};
};

TEST_F(SplitQueueTest, PopReturnsNothingWhenEmpty) {
  auto queue = make_queue();
  auto popped = queue.pop();
  ASSERT_TRUE(popped) << popped.error().message();
  EXPECT_FALSE(popped->has_value());
  EXPECT_EQ(queue.next_avail(), 0);
  EXPECT_EQ(queue.counters().snapshot().chains, 0U);
}

TEST_F(SplitQueueTest, ChainsComeOutInOrder) {
  auto queue = make_queue();
  const auto first = add_request(10, 100);
  const auto second = add_request(20, 200);
  const auto third = driver_.add_chain(std::vector<MockBuffer>{driver_.allocate(30, true)});
  ASSERT_EQ(queue.available_index(), 3);

  const auto a = pop_one(queue);
  EXPECT_EQ(a.head_index, first);
  EXPECT_EQ(a.readable_bytes(), 10U);
  EXPECT_EQ(a.writable_bytes(), 100U);
  const auto b = pop_one(queue);
  EXPECT_EQ(b.head_index, second);
  EXPECT_EQ(b.readable_bytes(), 20U);
  EXPECT_EQ(b.writable_bytes(), 200U);
  const auto c = pop_one(queue);
  EXPECT_EQ(c.head_index, third);
  EXPECT_TRUE(c.readable.empty());
  EXPECT_EQ(c.writable_bytes(), 30U);

  auto empty = queue.pop();
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->has_value());
  EXPECT_EQ(queue.next_avail(), 3);
  EXPECT_EQ(queue.counters().snapshot().chains, 3U);
}

TEST_F(SplitQueueTest, AddUsedEntriesReachTheDriver) {
  auto queue = make_queue();
  const auto first = add_request(4, 64);
  const auto second = add_request(4, 32);
  const auto a = pop_one(queue);
  const auto b = pop_one(queue);
  EXPECT_EQ(driver_.free_descriptors(), 12U);

  // The device writes a reply into b's writable buffer, then returns b before a (completion order is the
  // device's choice).
  const std::vector<std::byte> reply(5, std::byte{0xab});
  ASSERT_TRUE(memory_.write(b.writable.front().address, reply));
  ASSERT_TRUE(queue.add_used(b.head_index, 5));
  ASSERT_TRUE(queue.add_used(a.head_index, 0));
  EXPECT_EQ(queue.next_used(), 2);
  EXPECT_EQ(driver_.used_index(), 2);

  const auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 2U);
  EXPECT_EQ(used[0].id, second);
  EXPECT_EQ(used[0].len, 5U);
  EXPECT_EQ(used[1].id, first);
  EXPECT_EQ(used[1].len, 0U);
  EXPECT_THAT(driver_.read_bytes(b.writable.front().address, 6), ElementsAre(0xab, 0xab, 0xab, 0xab, 0xab, 0x00));
  EXPECT_EQ(driver_.free_descriptors(), 16U) << "the driver got every descriptor back";
  EXPECT_EQ(queue.counters().snapshot().used, 2U);
}

TEST_F(SplitQueueTest, AddUsedRefusesAHeadOutOfRange) {
  auto queue = make_queue();
  EXPECT_THAT(error_of(queue.add_used(16, 1)), HasSubstr("used entry for head 16: out of range (queue size 16)"));
  EXPECT_EQ(queue.next_used(), 0);
  EXPECT_EQ(driver_.used_index(), 0) << "nothing published";
  EXPECT_EQ(queue.counters().snapshot().errors, 1U);
  EXPECT_EQ(queue.counters().snapshot().used, 0U);
}

TEST_F(SplitQueueTest, IndirectChainsThroughTheQueue) {
  auto queue = make_queue(/*indirect=*/true);
  const std::vector<MockBuffer> buffers{driver_.allocate(8, false), driver_.allocate(16, false),
                                        driver_.allocate(64, true)};
  const auto head = driver_.add_indirect(buffers);
  const auto chain = pop_one(queue);
  EXPECT_EQ(chain.head_index, head);
  EXPECT_TRUE(chain.indirect);
  EXPECT_THAT(chain.readable, ElementsAre(Descriptor{buffers[0].address, 8}, Descriptor{buffers[1].address, 16}));
  EXPECT_THAT(chain.writable, ElementsAre(Descriptor{buffers[2].address, 64}));
  EXPECT_EQ(driver_.free_descriptors(), 15U) << "an indirect chain takes one descriptor of the queue";
}

TEST_F(SplitQueueTest, FullRingIsNotAnIndexJump) {
  // Exactly `size` chains outstanding is the most a driver can have, and legal.
  auto queue = make_queue();
  std::vector<std::uint16_t> heads;
  for (int i = 0; i < 16; ++i) {
    heads.push_back(driver_.add_chain(std::vector<MockBuffer>{driver_.allocate(8, true)}));
  }
  for (const auto head : heads) {
    EXPECT_EQ(pop_one(queue).head_index, head);
  }
  EXPECT_EQ(queue.counters().snapshot().errors, 0U);
}

TEST_F(SplitQueueTest, IndicesCrossThe65535Wrap) {
  // Start 3 entries before the wrap and run 5 rounds of 3 requests: indices go 65533 .. 65535, 0 .. 11, and the
  // slots (idx % 16) go 13, 14, 15, 0, 1...: one continuous sequence because 16 divides 2^16.
  constexpr std::uint16_t kStart = 65533;
  driver_.start_at(kStart, kStart);
  auto queue = make_queue();
  queue.set_next_avail(kStart);
  queue.set_next_used(kStart);

  std::uint16_t expected_index = kStart;
  for (int round = 0; round < 5; ++round) {
    std::vector<std::uint16_t> heads;
    for (std::uint32_t i = 0; i < 3; ++i) {
      heads.push_back(add_request(4, 100 + i));
    }
    std::vector<std::uint16_t> popped;
    for (std::uint32_t i = 0; i < 3; ++i) {
      const auto chain = pop_one(queue);
      EXPECT_EQ(chain.writable_bytes(), 100U + i) << "round " << round;
      popped.push_back(chain.head_index);
      ASSERT_TRUE(queue.add_used(chain.head_index, 7 * i));
    }
    EXPECT_EQ(popped, heads) << "round " << round;
    const auto used = driver_.collect_used();
    ASSERT_EQ(used.size(), 3U) << "round " << round;
    for (std::uint32_t i = 0; i < 3; ++i) {
      EXPECT_EQ(used[i].id, heads[i]) << "round " << round;
      EXPECT_EQ(used[i].len, 7 * i) << "round " << round;
    }
    expected_index = static_cast<std::uint16_t>(expected_index + 3);
    EXPECT_EQ(queue.next_avail(), expected_index);
    EXPECT_EQ(queue.next_used(), expected_index);
    EXPECT_EQ(driver_.used_index(), expected_index);
  }
  EXPECT_EQ(expected_index, 12) << "65533 + 15 wrapped";
  EXPECT_EQ(queue.counters().snapshot().errors, 0U);
}

TEST_F(SplitQueueTest, AvailableIndexJumpIsReported) {
  auto queue = make_queue();
  add_request(4, 4);
  driver_.set_avail_index(30);  // 30 chains "published" in a ring of 16
  EXPECT_THAT(error_of(queue.pop()), HasSubstr("available index moved from 0 to 30, more than the queue size 16"));
  EXPECT_EQ(queue.next_avail(), 0) << "nothing consumed";
  EXPECT_EQ(queue.counters().snapshot().errors, 1U);

  driver_.set_avail_index(17);  // one too many
  EXPECT_THAT(error_of(queue.pop()), HasSubstr("available index moved from 0 to 17"));
  EXPECT_EQ(queue.counters().snapshot().errors, 2U);
}

TEST_F(SplitQueueTest, AvailableIndexJumpAcrossTheWrapIsReported) {
  driver_.start_at(65530, 65530);
  auto queue = make_queue();
  queue.set_next_avail(65530);
  queue.set_next_used(65530);
  driver_.set_avail_index(11);  // 65530 + 17, modulo 2^16
  EXPECT_THAT(error_of(queue.pop()), HasSubstr("available index moved from 65530 to 11, more than the queue size 16"));
  // Going backwards is a jump too: 65529 is 65535 entries ahead of 65530, modulo 2^16.
  driver_.set_avail_index(65529);
  EXPECT_THAT(error_of(queue.pop()), HasSubstr("moved from 65530 to 65529"));
}

TEST_F(SplitQueueTest, InvalidChainIsConsumedAndCounted) {
  auto queue = make_queue();
  driver_.publish(20);  // a head past the table
  const auto good = add_request(4, 4);
  const auto message = error_of(queue.pop());
  EXPECT_THAT(message, HasSubstr("head index 20 is out of range (queue size 16)"));
  EXPECT_THAT(message, HasSubstr("available ring entry 0"));
  EXPECT_EQ(queue.next_avail(), 1) << "the bad entry is consumed";
  EXPECT_EQ(pop_one(queue).head_index, good) << "and the next one is reached";
  const auto counters = queue.counters().snapshot();
  EXPECT_EQ(counters.errors, 1U);
  EXPECT_EQ(counters.chains, 2U);
}

TEST_F(SplitQueueTest, UndoPopReturnsTheSameChainAgain) {
  auto queue = make_queue();
  const auto first = add_request(8, 80);
  const auto second = add_request(9, 90);
  const auto taken = pop_one(queue);
  EXPECT_EQ(taken.head_index, first);
  queue.undo_pop();
  EXPECT_EQ(queue.next_avail(), 0);
  const auto again = pop_one(queue);
  EXPECT_EQ(again.head_index, first);
  EXPECT_EQ(again.readable, taken.readable);
  EXPECT_EQ(again.writable, taken.writable);
  EXPECT_EQ(pop_one(queue).head_index, second);
  EXPECT_EQ(queue.counters().snapshot().chains, 2U) << "a chain popped twice is still one request";
}

TEST_F(SplitQueueTest, UndoPopAcrossTheWrap) {
  driver_.start_at(65535, 65535);
  auto queue = make_queue();
  queue.set_next_avail(65535);
  queue.set_next_used(65535);
  const auto head = add_request(1, 1);
  EXPECT_EQ(pop_one(queue).head_index, head);
  EXPECT_EQ(queue.next_avail(), 0);
  queue.undo_pop();
  EXPECT_EQ(queue.next_avail(), 65535);
  EXPECT_EQ(pop_one(queue).head_index, head);
}

TEST_F(SplitQueueTest, AvailableIndexIsWhatTheDriverPublished) {
  auto queue = make_queue();
  EXPECT_EQ(queue.available_index(), 0);
  add_request(1, 1);
  add_request(1, 1);
  EXPECT_EQ(queue.available_index(), 2);
  EXPECT_EQ(queue.available_index(), driver_.avail_index());
}

}  // namespace
}  // namespace vmm::virtio
