// Notification suppression: need_event, the flags mode (NO_NOTIFY / NO_INTERRUPT), VIRTIO_RING_F_EVENT_IDX
// (avail_event / used_event), the enable_notification race, and kick/interrupt counts per batch against the theory.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vmm/memory/guest_memory.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/uapi.hpp"

namespace vmm::virtio {
namespace {

using testing::MockBuffer;
using testing::MockDriver;

constexpr std::uint16_t kMaxSize = 256;

// ---------------------------------------------------------------------------------------------------------------------
// need_event

struct NeedEventCase {
  std::uint16_t event;
  std::uint16_t new_index;
  std::uint16_t old_index;
  bool expected;
  const char* why;
};

TEST(NeedEvent, TruthTable) {
  // "Notify me once your index passes `event`": true when event lies in [old, new) modulo 2^16, i.e. the entry
  // numbered `event` is among those added between the two decisions.
  const NeedEventCase cases[] = {
      {0, 1, 0, true, "the first entry is the one asked for"},
      {0, 0, 0, false, "nothing added"},
      {5, 5, 5, false, "nothing added, event at the index"},
      {5, 6, 5, true, "event == old: the first entry added"},
      {5, 10, 0, true, "event inside [old, new)"},
      {9, 10, 0, true, "event == new - 1: the last entry added"},
      {10, 10, 0, false, "event == new: that entry is not added yet"},
      {11, 10, 0, false, "event ahead of new"},
      {4, 10, 5, false, "event behind old: already passed before, no second notification"},
      {3, 4, 3, true, "one entry, exactly the one asked for"},
      {4, 4, 3, false, "one entry, the driver asked for the next one"},
      // Around the wrap: only differences modulo 2^16 matter.
      {65535, 1, 65534, true, "event just before the wrap, new just after"},
      {0, 2, 65534, true, "event at 0, inside [65534, 2)"},
      {1, 2, 65534, true, "event at 1, the last entry added"},
      {2, 2, 65534, false, "event == new after the wrap"},
      {65533, 2, 65534, false, "event just behind old, before the wrap"},
      {65535, 0, 65535, true, "new wrapped to 0, the entry 65535 was asked for"},
      {0, 0, 65535, false, "new wrapped to 0, event 0 not reached yet"},
      {100, 0, 65535, false, "far ahead"},
      {65000, 100, 64000, true, "a long stretch across the wrap"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(need_event(c.event, c.new_index, c.old_index), c.expected)
        << "event " << c.event << ", new " << c.new_index << ", old " << c.old_index << ": " << c.why;
  }
}

TEST(NeedEvent, MatchesTheKernelsVringNeedEvent) {
  // The kernel's <linux/virtio_ring.h> implementation is an independent oracle. Every combination of values near 0
  // and near 65535 (where the wrap happens) and a few in the middle.
  std::vector<std::uint16_t> values;
  for (int v = 0; v < 40; ++v) {
    values.push_back(static_cast<std::uint16_t>(v));
    values.push_back(static_cast<std::uint16_t>(65535 - v));
  }
  for (const std::uint16_t v : {256, 32767, 32768, 32769, 40000}) {
    values.push_back(v);
  }
  std::uint64_t checked = 0;
  std::uint64_t true_count = 0;
  for (const auto event : values) {
    for (const auto new_index : values) {
      for (const auto old_index : values) {
        const bool ours = need_event(event, new_index, old_index);
        const bool kernel = vring_need_event(event, new_index, old_index) != 0;
        if (ours != kernel) {
          ADD_FAILURE() << "event " << event << ", new " << new_index << ", old " << old_index << ": ours " << ours
                        << ", kernel " << kernel;
          return;
        }
        ++checked;
        true_count += ours ? 1 : 0;
      }
    }
  }
  EXPECT_EQ(checked, values.size() * values.size() * values.size());
  EXPECT_GT(true_count, 0U) << "both answers occur";
  EXPECT_LT(true_count, checked);
}

// ---------------------------------------------------------------------------------------------------------------------
// A queue and its driver.

class NotificationTest : public ::testing::Test {
 protected:
  void SetUp() override { start(false); }
  // (Re)starts with a fresh driver and queue in the given mode.
  void start(bool event_idx) {
    driver_ = std::make_unique<MockDriver>(memory_, testing::MockLayout{}, event_idx);
    auto queue = SplitQueue::create(memory_, driver_->queue_layout(), kMaxSize, driver_->features());
    ASSERT_TRUE(queue) << queue.error().message();
    queue_ = std::make_unique<SplitQueue>(std::move(*queue));
  }
  std::uint16_t add_buffer() {
    return driver_->add_chain(std::vector<MockBuffer>{driver_->allocate(16, /*writable=*/true)});
  }
  // Pops everything and returns it used; how many.
  int drain() {
    int n = 0;
    for (;;) {
      auto popped = queue_->pop();
      EXPECT_TRUE(popped) << popped.error().message();
      if (!popped || !popped->has_value()) {
        return n;
      }
      EXPECT_TRUE(queue_->add_used((*popped)->head_index, 16));
      ++n;
    }
  }
  bool needs() {
    auto need = queue_->needs_notification();
    EXPECT_TRUE(need) << need.error().message();
    return need && *need;
  }
  bool enable() {
    auto more = queue_->enable_notification();
    EXPECT_TRUE(more) << more.error().message();
    return more && *more;
  }
  void disable() { EXPECT_TRUE(queue_->disable_notification()); }

  memory::GuestMemory memory_ = testing::make_test_memory();
  std::unique_ptr<MockDriver> driver_;
  std::unique_ptr<SplitQueue> queue_;
};

// (a) Flags mode, the device's side: VRING_USED_F_NO_NOTIFY.
TEST_F(NotificationTest, FlagsModeDisableSetsNoNotifyAndTheDriverStopsKicking) {
  EXPECT_EQ(driver_->used_flags(), 0);
  add_buffer();
  EXPECT_TRUE(driver_->kick_needed()) << "notifications are on after reset";

  disable();
  EXPECT_EQ(driver_->used_flags(), VRING_USED_F_NO_NOTIFY);
  add_buffer();
  EXPECT_FALSE(driver_->kick_needed());
  add_buffer();
  EXPECT_FALSE(driver_->kick_needed());

  EXPECT_TRUE(enable()) << "three buffers wait, unpopped";
  EXPECT_EQ(driver_->used_flags(), 0);
  add_buffer();
  EXPECT_TRUE(driver_->kick_needed());
  EXPECT_EQ(driver_->avail_event(), 0) << "flags mode never writes avail_event";
}

// (b) EVENT_IDX, the device's side: avail_event.
TEST_F(NotificationTest, EventIdxEnableWritesAvailEventAtNextAvail) {
  start(true);
  EXPECT_FALSE(enable());
  EXPECT_EQ(driver_->avail_event(), 0);
  add_buffer();
  add_buffer();
  add_buffer();
  EXPECT_EQ(drain(), 3);
  EXPECT_EQ(driver_->avail_event(), 0) << "unchanged until the device re-enables";

  EXPECT_FALSE(enable()) << "nothing new";
  EXPECT_EQ(driver_->avail_event(), 3) << "kick me for entry 3, the next I will pop";
  EXPECT_EQ(driver_->used_flags(), 0) << "EVENT_IDX does not use NO_NOTIFY";
  add_buffer();
  EXPECT_TRUE(driver_->kick_needed()) << "need_event(3, 4, 3)";
  add_buffer();
  EXPECT_FALSE(driver_->kick_needed()) << "need_event(3, 5, 4): entry 3 was already announced";

  // disable_notification writes nothing: avail_event stays behind and the driver's index has passed it.
  disable();
  EXPECT_EQ(driver_->avail_event(), 3);
  EXPECT_EQ(driver_->used_flags(), 0);
}

TEST_F(NotificationTest, EventIdxAvailEventFollowsNextAvailAcrossTheWrap) {
  start(true);
  driver_->start_at(65534, 65534);
  queue_->set_next_avail(65534);
  queue_->set_next_used(65534);
  add_buffer();
  add_buffer();
  add_buffer();
  EXPECT_EQ(drain(), 3);
  EXPECT_FALSE(enable());
  EXPECT_EQ(driver_->avail_event(), 1);
  add_buffer();
  EXPECT_TRUE(driver_->kick_needed()) << "need_event(1, 2, 1)";
}

// (c) The race enable_notification exists for, in both modes.
TEST_F(NotificationTest, EnableReportsABufferPublishedWhileDisabledFlagsMode) {
  EXPECT_FALSE(enable()) << "empty: nothing to report";
  disable();
  add_buffer();  // the device is busy and said "don't kick"...
  EXPECT_FALSE(driver_->kick_if_needed()) << "...so the driver does not";
  // Had the device just gone to sleep here, the buffer would wait forever. enable_notification sees it:
  EXPECT_TRUE(enable());
  EXPECT_EQ(drain(), 1);
  EXPECT_FALSE(enable()) << "all popped";
  EXPECT_EQ(driver_->kicks(), 0U);
}

TEST_F(NotificationTest, EnableReportsABufferPublishedWhileDisabledEventIdx) {
  start(true);
  EXPECT_FALSE(enable());
  add_buffer();
  EXPECT_TRUE(driver_->kick_if_needed());
  disable();
  EXPECT_EQ(drain(), 1);
  add_buffer();  // avail_event is still 0, the driver's index goes 1 -> 2: need_event(0, 2, 1) says no kick
  EXPECT_FALSE(driver_->kick_if_needed());
  EXPECT_TRUE(enable()) << "the index moved to 2 while the device had popped up to 1";
  EXPECT_EQ(driver_->avail_event(), 1);
  EXPECT_EQ(drain(), 1);
  EXPECT_FALSE(enable());
  EXPECT_EQ(driver_->avail_event(), 2);
}

// (d) The driver's side of suppression, as the device reads it.
TEST_F(NotificationTest, FlagsModeNeedsNotificationHonoursNoInterrupt) {
  add_buffer();
  add_buffer();
  EXPECT_FALSE(needs()) << "no used entry yet: nothing to tell";
  ASSERT_EQ(drain(), 2);
  EXPECT_TRUE(needs());
  EXPECT_FALSE(needs()) << "nothing added since the last answer";

  driver_->set_no_interrupt(true);
  add_buffer();
  ASSERT_EQ(drain(), 1);
  EXPECT_FALSE(needs());
  EXPECT_EQ(queue_->counters().snapshot().interrupts_suppressed, 1U);
  EXPECT_FALSE(needs()) << "again, with nothing added";
  EXPECT_EQ(queue_->counters().snapshot().interrupts_suppressed, 1U) << "nothing was held back this time";

  driver_->set_no_interrupt(false);
  add_buffer();
  ASSERT_EQ(drain(), 1);
  EXPECT_TRUE(needs());
  EXPECT_EQ(queue_->counters().snapshot().interrupts_suppressed, 1U);
}

TEST_F(NotificationTest, EventIdxNeedsNotificationHonoursUsedEvent) {
  start(true);
  driver_->set_used_event(2);  // "interrupt me when entry 2 is used"
  for (int i = 0; i < 4; ++i) {
    add_buffer();
  }
  auto use_one = [&] {
    auto popped = queue_->pop();
    ASSERT_TRUE(popped && popped->has_value());
    ASSERT_TRUE(queue_->add_used((*popped)->head_index, 1));
  };
  use_one();  // used idx 0 -> 1
  EXPECT_FALSE(needs()) << "need_event(2, 1, 0)";
  use_one();  // 1 -> 2
  EXPECT_FALSE(needs()) << "need_event(2, 2, 1)";
  use_one();  // 2 -> 3: entry 2 is used
  EXPECT_TRUE(needs()) << "need_event(2, 3, 2)";
  use_one();  // 3 -> 4
  EXPECT_FALSE(needs()) << "already told about entry 2";
  EXPECT_EQ(queue_->counters().snapshot().interrupts_suppressed, 3U);

  // With EVENT_IDX the device must ignore VRING_AVAIL_F_NO_INTERRUPT (2.7.10): only used_event counts.
  driver_->set_no_interrupt(true);
  driver_->set_used_event(4);
  add_buffer();
  use_one();  // 4 -> 5
  EXPECT_TRUE(needs());
}

// ---------------------------------------------------------------------------------------------------------------------
// (e) Kicks and interrupts per batch, with and without EVENT_IDX, against the theory.

struct BatchRun {
  std::uint64_t kicks = 0;
  QueueCountersSnapshot counters;
};

enum class Mode { Flags, EventIdx };
enum class DeviceReaction {
  AtBatchEnd,  // the device runs only after the driver has published the whole batch (kicks queue up)
  OnFirstKick  // the kick wakes the device at once: it disables notifications first thing (vhost does)
};
enum class InterruptPolicy { OncePerBatch, PerEntry };

// Runs `batches` batches of `batch` one-buffer requests. The driver: (EVENT_IDX) sets used_event to the index of its
// batch's last buffer, then adds the buffers one at a time, asking kick_if_needed after each add. The device: when
// woken, disables notifications, pops and completes everything, re-enables (looping while enable_notification
// reports more) and decides interrupts. The test plays the transport, counting notifications and interrupts.
BatchRun run_batches(Mode mode, DeviceReaction reaction, InterruptPolicy policy, std::uint16_t start_index, int batches,
                     int batch) {
  const bool event_idx = mode == Mode::EventIdx;
  auto memory = testing::make_test_memory();
  MockDriver driver(memory, testing::MockLayout{.size = 16}, event_idx);
  driver.start_at(start_index, start_index);
  auto created = SplitQueue::create(memory, driver.queue_layout(), kMaxSize, driver.features());
  EXPECT_TRUE(created) << created.error().message();
  auto queue = std::move(created).value();
  queue.set_next_avail(start_index);
  queue.set_next_used(start_index);
  auto& counters = queue.counters();
  EXPECT_FALSE(queue.enable_notification().value()) << "idle and empty";

  auto interrupt_if_needed = [&] {
    if (queue.needs_notification().value()) {
      counters.interrupts.fetch_add(1, std::memory_order_relaxed);
    }
  };
  bool device_busy = false;
  for (int b = 0; b < batches; ++b) {
    if (event_idx) {
      driver.set_used_event(static_cast<std::uint16_t>(driver.avail_index() + batch - 1));
    }
    for (int i = 0; i < batch; ++i) {
      (void)driver.add_chain(std::vector<MockBuffer>{driver.allocate(8, true)});
      if (driver.kick_if_needed()) {
        counters.notifications.fetch_add(1, std::memory_order_relaxed);
        if (reaction == DeviceReaction::OnFirstKick && !device_busy) {
          device_busy = true;
          EXPECT_TRUE(queue.disable_notification());
        }
      }
    }
    // The device processes the batch.
    EXPECT_TRUE(queue.disable_notification());
    for (;;) {
      for (;;) {
        auto popped = queue.pop();
        EXPECT_TRUE(popped) << popped.error().message();
        if (!popped || !popped->has_value()) {
          break;
        }
        EXPECT_TRUE(queue.add_used((*popped)->head_index, 8));
        if (policy == InterruptPolicy::PerEntry) {
          interrupt_if_needed();
        }
      }
      if (!queue.enable_notification().value()) {
        break;
      }
      EXPECT_TRUE(queue.disable_notification());
    }
    device_busy = false;
    if (policy == InterruptPolicy::OncePerBatch) {
      interrupt_if_needed();
    }
    EXPECT_EQ(driver.collect_used().size(), static_cast<std::size_t>(batch));
  }
  return {.kicks = driver.kicks(), .counters = counters.snapshot()};
}

class BatchTest : public ::testing::Test {
 protected:
  static constexpr int kBatches = 5;
  // Batch sizes up to the queue size (16), a few not powers of two so batches straddle the ring's end.
  static constexpr int kSizes[] = {1, 2, 3, 5, 8, 16};
  // From 0, and from just below 65535 so the indices wrap during the run.
  static constexpr std::uint16_t kStarts[] = {0, 65530};

  static void expect(const BatchRun& run, std::uint64_t kicks, std::uint64_t interrupts, std::uint64_t suppressed,
                     int batch) {
    const std::uint64_t requests = static_cast<std::uint64_t>(kBatches) * batch;
    EXPECT_EQ(run.kicks, kicks);
    EXPECT_EQ(run.counters, (QueueCountersSnapshot{.notifications = kicks,
                                                   .interrupts = interrupts,
                                                   .interrupts_suppressed = suppressed,
                                                   .chains = requests,
                                                   .used = requests,
                                                   .errors = 0}));
  }
};

TEST_F(BatchTest, EventIdxOneKickAndOneInterruptPerBatch) {
  for (const auto start : kStarts) {
    for (const int batch : kSizes) {
      SCOPED_TRACE(fmt::format("start {}, batch {}", start, batch));
      // Kicks: the device re-enabled at the end of the previous batch with avail_event = S, the batch's first index.
      // The first add moves avail idx S -> S + 1: need_event(S, S + 1, S) is true, one kick. Every later add has
      // old > S: need_event(S, new, old) is false. The device did not move avail_event meanwhile (it only does so in
      // enable_notification, after processing): exactly one kick per batch, whatever its size.
      // Interrupts: used_event = S + B - 1. Asked once per batch, used idx moved S -> S + B: need_event(S + B - 1,
      // S + B, S) is true, one interrupt per batch, nothing suppressed.
      expect(run_batches(Mode::EventIdx, DeviceReaction::AtBatchEnd, InterruptPolicy::OncePerBatch, start, kBatches,
                         batch),
             kBatches, kBatches, 0, batch);
      // Asked after every used entry: only the step S + B - 1 -> S + B crosses used_event. The B - 1 earlier answers
      // are "no" with an entry added: suppressed.
      expect(run_batches(Mode::EventIdx, DeviceReaction::AtBatchEnd, InterruptPolicy::PerEntry, start, kBatches, batch),
             kBatches, kBatches, static_cast<std::uint64_t>(kBatches) * (batch - 1), batch);
    }
  }
}

TEST_F(BatchTest, FlagsModeKicksPerBufferWhileTheDeviceIsIdle) {
  for (const auto start : kStarts) {
    for (const int batch : kSizes) {
      SCOPED_TRACE(fmt::format("start {}, batch {}", start, batch));
      const auto buffers = static_cast<std::uint64_t>(kBatches) * batch;
      // Kicks: the device sits idle with notifications enabled (NO_NOTIFY clear) while the driver adds: every add
      // sees the flag clear and kicks, B kicks per batch. Flags carry no "already told you" memory.
      // Interrupts: the driver never sets NO_INTERRUPT, so each time the device asks with new entries the answer is
      // yes: once per batch when it asks once per batch...
      expect(
          run_batches(Mode::Flags, DeviceReaction::AtBatchEnd, InterruptPolicy::OncePerBatch, start, kBatches, batch),
          buffers, kBatches, 0, batch);
      // ...and once per entry when it asks after each one: flags mode cannot batch interrupts by itself.
      expect(run_batches(Mode::Flags, DeviceReaction::AtBatchEnd, InterruptPolicy::PerEntry, start, kBatches, batch),
             buffers, buffers, 0, batch);
    }
  }
}

TEST_F(BatchTest, FlagsModeOneKickPerBatchWhenTheDeviceDisablesOnWakeUp) {
  for (const auto start : kStarts) {
    for (const int batch : kSizes) {
      SCOPED_TRACE(fmt::format("start {}, batch {}", start, batch));
      // The first kick wakes the device, whose first act is disable_notification (NO_NOTIFY set): the B - 1 later
      // adds see the flag and stay quiet. One kick per batch, the same as EVENT_IDX, but only thanks to timing.
      expect(
          run_batches(Mode::Flags, DeviceReaction::OnFirstKick, InterruptPolicy::OncePerBatch, start, kBatches, batch),
          kBatches, kBatches, 0, batch);
    }
  }
}

TEST_F(BatchTest, EventIdxKickCountDoesNotDependOnTheDevicesTiming) {
  for (const int batch : kSizes) {
    SCOPED_TRACE(fmt::format("batch {}", batch));
    // disable_notification writes nothing with EVENT_IDX, so waking on the first kick changes nothing: still one
    // kick per batch.
    expect(run_batches(Mode::EventIdx, DeviceReaction::OnFirstKick, InterruptPolicy::OncePerBatch, 0, kBatches, batch),
           kBatches, kBatches, 0, batch);
  }
}

}  // namespace
}  // namespace vmm::virtio
