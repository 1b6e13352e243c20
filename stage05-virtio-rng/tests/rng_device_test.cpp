// RngDevice against the mock driver: buffers filled and their lengths reported, interrupts per round and their
// suppression, driver errors (DEVICE_NEEDS_RESET until reset) and host errors (an empty answer), activation rules, and
// rate limiting with a fake clock and a fake timer. Then ThreadRetryTimer on its own, and the device with the real
// timer racing a reset against a retry. No test measures time: waits are generous timeouts on things that happen.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "vmm/testing/mock_driver.hpp"
#include "vmm/virtio/retry_timer.hpp"
#include "vmm/virtio/rng/rng_device.hpp"
#include "vmm/virtio/uapi.hpp"

namespace vmm::virtio::rng {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using vmm::testing::MockBuffer;
using vmm::testing::MockDriver;
using vmm::testing::MockLayout;

constexpr std::uint16_t kQueueSize = 16;
constexpr auto kGenerous = std::chrono::seconds(30);  // a timeout for things that happen at once on a sane machine

// Records the notifications the device sends; callable from the timer thread.
class RecordingInterrupt final : public VirtioInterrupt {
 public:
  Result<void> signal_queue(std::uint16_t queue_index) override {
    std::lock_guard lock(mutex_);
    queues_.push_back(queue_index);
    return {};
  }
  Result<void> signal_config() override {
    std::lock_guard lock(mutex_);
    ++configs_;
    return {};
  }
  [[nodiscard]] std::vector<std::uint16_t> queue_signals() const {
    std::lock_guard lock(mutex_);
    return queues_;
  }
  [[nodiscard]] int config_signals() const {
    std::lock_guard lock(mutex_);
    return configs_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::uint16_t> queues_;
  int configs_ = 0;
};

// A RetryTimer the test drives: it records what the device asks for and fires when told.
class FakeTimer final : public RetryTimer {
 public:
  void schedule(std::chrono::nanoseconds delay, std::function<void()> callback) override {
    ++schedules;
    delays.push_back(delay);
    pending = std::move(callback);
  }
  void cancel() override {
    ++cancels;
    pending = nullptr;
  }
  // Runs the pending call, if there is one.
  bool fire() {
    auto callback = std::exchange(pending, nullptr);
    if (!callback) {
      return false;
    }
    callback();
    return true;
  }

  int schedules = 0;
  int cancels = 0;
  std::vector<std::chrono::nanoseconds> delays;
  std::function<void()> pending;
};

// A clock that moves only when told.
struct FakeClock {
  TokenBucket::TimePoint now{std::chrono::seconds(100)};
  [[nodiscard]] TokenBucket::Clock clock() {
    return [this] { return now; };
  }
};

// Deterministic "entropy": 0, 1, 2, ... wrapping at 256, continuing from one call to the next. Records the largest
// request it got.
struct PatternSource {
  std::shared_ptr<std::uint8_t> next = std::make_shared<std::uint8_t>(0);
  std::shared_ptr<std::size_t> largest = std::make_shared<std::size_t>(0);
  std::shared_ptr<int> calls = std::make_shared<int>(0);

  [[nodiscard]] EntropySource source() const {
    return [next = next, largest = largest, calls = calls](std::span<std::uint8_t> out) -> Result<void> {
      ++*calls;
      *largest = std::max(*largest, out.size());
      for (auto& byte : out) {
        byte = (*next)++;
      }
      return {};
    };
  }
};

// `count` bytes of the pattern starting at `first`.
std::vector<std::uint8_t> pattern(std::uint8_t first, std::size_t count) {
  std::vector<std::uint8_t> bytes(count);
  for (auto& byte : bytes) {
    byte = first++;
  }
  return bytes;
}

// A configuration with everything else at its default (designated initializers would trip
// -Wmissing-field-initializers for the members left out).
RngConfig config_for(std::uint16_t queue_size, std::optional<std::uint64_t> bytes_per_second = std::nullopt) {
  RngConfig result;
  result.queue_size = queue_size;
  result.bytes_per_second = bytes_per_second;
  return result;
}

// Everything a device test needs: guest memory, a driver with its queue, the recorders.
class RngTest : public ::testing::Test {
 protected:
  // A queue built from `driver`'s layout (what the transport does when the driver enables it), in an Activation.
  Activation activation(MockDriver& driver) {
    auto queue = SplitQueue::create(memory_, driver.queue_layout(), kQueueSize, driver.features(), counters_);
    EXPECT_TRUE(queue) << queue.error().message();
    Activation result{.memory = &memory_,
                      .features = kCommonFeatures,
                      .queues = {},
                      .interrupt = interrupt_,
                      .needs_reset = [this](const Error& error) {
                        std::lock_guard lock(resets_mutex_);
                        resets_.push_back(error);
                      }};
    result.queues.emplace_back(std::move(queue).value());
    return result;
  }
  Activation activation() { return activation(driver_); }

  std::shared_ptr<RngDevice> make(RngConfig config, std::shared_ptr<RetryTimer> timer = nullptr) {
    auto device = RngDevice::create(std::move(config), std::move(timer));
    EXPECT_TRUE(device) << device.error().message();
    return device ? *device : nullptr;
  }
  std::shared_ptr<RngDevice> make_active(RngConfig config, std::shared_ptr<RetryTimer> timer = nullptr) {
    auto device = make(std::move(config), std::move(timer));
    auto ok = device->activate(activation());
    EXPECT_TRUE(ok) << ok.error().message();
    return device;
  }
  RngConfig pattern_config() {
    RngConfig result = config_for(kQueueSize);
    result.source = pattern_.source();
    return result;
  }

  // Publishes a chain of `buffers` and kicks the device if the driver's view says it should.
  std::uint16_t add(std::initializer_list<MockBuffer> buffers, MockDriver* driver = nullptr) {
    MockDriver& d = driver != nullptr ? *driver : driver_;
    return d.add_chain(std::vector<MockBuffer>(buffers));
  }
  void kick(RngDevice& device, MockDriver* driver = nullptr) {
    MockDriver& d = driver != nullptr ? *driver : driver_;
    if (d.kick_if_needed()) {
      device.queue_notify(0);
    }
  }
  std::vector<Error> resets() {
    std::lock_guard lock(resets_mutex_);
    return resets_;
  }

  memory::GuestMemory memory_ = vmm::testing::make_test_memory();
  MockDriver driver_{memory_, MockLayout{.size = kQueueSize}};
  std::shared_ptr<QueueCounters> counters_ = std::make_shared<QueueCounters>();
  std::shared_ptr<RecordingInterrupt> interrupt_ = std::make_shared<RecordingInterrupt>();
  PatternSource pattern_;
  std::mutex resets_mutex_;
  std::vector<Error> resets_;
};

// --- creation ---------------------------------------------------------------------------------------------------

TEST_F(RngTest, CreateRefusesBadConfigurations) {
  auto timer = std::make_shared<FakeTimer>();
  EXPECT_FALSE(RngDevice::create(config_for(0)));
  EXPECT_FALSE(RngDevice::create(config_for(12)));
  EXPECT_FALSE(RngDevice::create(config_for(256, 0), timer));
  const auto no_timer = RngDevice::create(config_for(256, 1000));
  ASSERT_FALSE(no_timer);
  EXPECT_NE(no_timer.error().message().find("timer"), std::string::npos) << no_timer.error().message();
  RngConfig no_source = config_for(256);
  no_source.source = nullptr;
  EXPECT_FALSE(RngDevice::create(std::move(no_source)));

  EXPECT_TRUE(RngDevice::create(config_for(1)));
  EXPECT_TRUE(RngDevice::create(config_for(32768)));
  EXPECT_TRUE(RngDevice::create(config_for(256, 1000), timer));
}

TEST_F(RngTest, DescribesItself) {
  auto device = make(config_for(64));
  EXPECT_EQ(device->device_type(), VIRTIO_ID_RNG);
  EXPECT_EQ(device->features(), kCommonFeatures);
  EXPECT_EQ(device->queue_max_sizes(), std::vector<std::uint16_t>{64});
  EXPECT_EQ(device->config_size(), 0u);
  EXPECT_EQ(device->name(), "virtio-rng");
  EXPECT_FALSE(device->active());
}

// --- serving requests -------------------------------------------------------------------------------------------

TEST_F(RngTest, FillsEveryWritableBufferAndReportsTheLength) {
  auto device = make_active(pattern_config());
  const MockBuffer request = driver_.allocate(32, false, 0xaa);
  const MockBuffer first = driver_.allocate(100, true);
  const MockBuffer second = driver_.allocate(60, true);
  const auto head = add({request, first, second});
  kick(*device);

  const auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, head);
  EXPECT_EQ(used[0].len, 160u) << "the writable bytes only: the readable descriptor is ignored";
  EXPECT_EQ(driver_.read_bytes(first.address, 100), pattern(0, 100));
  EXPECT_EQ(driver_.read_bytes(second.address, 60), pattern(100, 60));
  EXPECT_EQ(driver_.read_bytes(request.address, 32), std::vector<std::uint8_t>(32, 0xaa)) << "not written";
  EXPECT_EQ(device->bytes_served(), 160u);

  // The next request continues where the source is.
  const MockBuffer third = driver_.allocate(8, true);
  add({third});
  kick(*device);
  const auto more = driver_.collect_used();
  ASSERT_EQ(more.size(), 1u);
  EXPECT_EQ(more[0].len, 8u);
  EXPECT_EQ(driver_.read_bytes(third.address, 8), pattern(160, 8));
  EXPECT_EQ(device->bytes_served(), 168u);
  EXPECT_FALSE(device->last_error());
  EXPECT_TRUE(resets().empty());
}

TEST_F(RngTest, LargeBuffersAreFilledAChunkAtATime) {
  auto device = make_active(pattern_config());
  const MockBuffer big = driver_.allocate(10'000, true);
  const MockBuffer small = driver_.allocate(3, true);
  add({big, small});
  kick(*device);
  const auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 10'003u);
  EXPECT_EQ(driver_.read_bytes(big.address, 10'000), pattern(0, 10'000));
  EXPECT_EQ(driver_.read_bytes(small.address, 3), pattern(static_cast<std::uint8_t>(10'000 % 256), 3));
  EXPECT_LE(*pattern_.largest, 4096u) << "entropy is fetched in bounded chunks";
  EXPECT_GE(*pattern_.calls, 3);
}

TEST_F(RngTest, IndirectChainsAreFilledToo) {
  auto device = make_active(pattern_config());
  const MockBuffer a = driver_.allocate(20, true);
  const MockBuffer b = driver_.allocate(12, true);
  const auto head = driver_.add_indirect(std::vector<MockBuffer>{a, b});
  kick(*device);
  const auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, head);
  EXPECT_EQ(used[0].len, 32u);
  EXPECT_EQ(driver_.read_bytes(a.address, 20), pattern(0, 20));
  EXPECT_EQ(driver_.read_bytes(b.address, 12), pattern(20, 12));
}

TEST_F(RngTest, ChainWithoutWritableBuffersGetsZeroBytes) {
  auto device = make_active(pattern_config());
  const MockBuffer readable = driver_.allocate(64, false, 0x55);
  add({readable});
  kick(*device);
  const auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 0u);
  EXPECT_EQ(driver_.read_bytes(readable.address, 64), std::vector<std::uint8_t>(64, 0x55));
  EXPECT_EQ(device->bytes_served(), 0u);
}

TEST_F(RngTest, RealGetrandomSourceGivesDifferentNonZeroBytes) {
  auto device = make_active(config_for(kQueueSize));  // the default source: getrandom(2)
  const MockBuffer one = driver_.allocate(64, true);
  const MockBuffer two = driver_.allocate(64, true);
  add({one});
  add({two});
  kick(*device);
  ASSERT_EQ(driver_.collect_used().size(), 2u);
  const auto first = driver_.read_bytes(one.address, 64);
  const auto second = driver_.read_bytes(two.address, 64);
  // 2^-512 chance of a false failure each.
  EXPECT_NE(first, std::vector<std::uint8_t>(64, 0));
  EXPECT_NE(second, std::vector<std::uint8_t>(64, 0));
  EXPECT_NE(first, second);
  EXPECT_FALSE(device->last_error());
}

TEST(RngGetrandomSource, FillsLargeRequestsAcrossShortReads) {
  // getrandom(2) returns at most 32 MiB - 1 bytes per call: a larger request needs the loop.
  std::vector<std::uint8_t> out((32u << 20) + 4096, 0);
  ASSERT_TRUE(getrandom_source(out));
  EXPECT_FALSE(std::all_of(out.end() - 4096, out.end(), [](std::uint8_t b) { return b == 0; }))
      << "the tail past the first getrandom call was filled";
  EXPECT_TRUE(getrandom_source({}));
}

// --- interrupts -------------------------------------------------------------------------------------------------

TEST_F(RngTest, OneInterruptPerProcessingRound) {
  auto device = make_active(pattern_config());
  for (int i = 0; i < 3; ++i) {
    add({driver_.allocate(16, true)});
  }
  kick(*device);
  EXPECT_EQ(driver_.collect_used().size(), 3u);
  EXPECT_EQ(interrupt_->queue_signals(), std::vector<std::uint16_t>{0}) << "three buffers, one interrupt";

  add({driver_.allocate(16, true)});
  add({driver_.allocate(16, true)});
  kick(*device);
  EXPECT_EQ(driver_.collect_used().size(), 2u);
  EXPECT_EQ(interrupt_->queue_signals(), (std::vector<std::uint16_t>{0, 0}));

  // A kick with nothing new: no interrupt.
  device->queue_notify(0);
  EXPECT_EQ(interrupt_->queue_signals().size(), 2u);
  EXPECT_EQ(counters_->snapshot().used, 5u);
  EXPECT_EQ(counters_->snapshot().chains, 5u);
}

TEST_F(RngTest, NotificationsAreReenabledAfterARound) {
  auto device = make_active(pattern_config());
  add({driver_.allocate(16, true)});
  kick(*device);
  EXPECT_EQ(driver_.used_flags() & VRING_USED_F_NO_NOTIFY, 0) << "the driver may kick again";
  add({driver_.allocate(16, true)});
  EXPECT_TRUE(driver_.kick_needed());
}

TEST_F(RngTest, NoInterruptWhenTheDriverSuppressesIt) {
  auto device = make_active(pattern_config());
  driver_.set_no_interrupt(true);
  add({driver_.allocate(16, true)});
  add({driver_.allocate(16, true)});
  kick(*device);
  EXPECT_EQ(driver_.collect_used().size(), 2u) << "served all the same";
  EXPECT_TRUE(interrupt_->queue_signals().empty());
  EXPECT_EQ(counters_->snapshot().interrupts_suppressed, 1u);

  driver_.set_no_interrupt(false);
  add({driver_.allocate(16, true)});
  kick(*device);
  EXPECT_EQ(interrupt_->queue_signals().size(), 1u);
}

TEST_F(RngTest, EventIdxDecidesInterrupts) {
  MockDriver driver(memory_, MockLayout{.size = kQueueSize, .rings = memory::GuestAddress(0x8000)}, true);
  auto device = make(pattern_config());
  ASSERT_TRUE(device->activate(activation(driver)));
  driver.set_used_event(1);  // interrupt once the used index passes 1, i.e. when it reaches 2
  add({driver.allocate(16, true)}, &driver);
  kick(*device, &driver);
  EXPECT_EQ(driver.collect_used().size(), 1u);
  EXPECT_TRUE(interrupt_->queue_signals().empty());
  add({driver.allocate(16, true)}, &driver);
  kick(*device, &driver);
  EXPECT_EQ(driver.collect_used().size(), 1u);
  EXPECT_EQ(interrupt_->queue_signals().size(), 1u);
}

// --- errors -----------------------------------------------------------------------------------------------------

TEST_F(RngTest, InvalidChainNeedsResetAndKicksAreIgnoredUntilReset) {
  auto device = make_active(pattern_config());
  const MockBuffer buffer = driver_.allocate(16, true);
  // Descriptors 0 -> 1 -> 0: a loop.
  driver_.write_descriptor(
      0,
      vring_desc{.addr = buffer.address.raw(), .len = 16, .flags = VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, .next = 1});
  driver_.write_descriptor(
      1,
      vring_desc{.addr = buffer.address.raw(), .len = 16, .flags = VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, .next = 0});
  driver_.publish(0);
  device->queue_notify(0);

  ASSERT_EQ(resets().size(), 1u);
  ASSERT_TRUE(device->last_error());
  EXPECT_EQ(device->last_error()->message(), resets()[0].message());
  EXPECT_EQ(driver_.used_index(), 0) << "nothing returned";
  EXPECT_TRUE(interrupt_->queue_signals().empty());
  EXPECT_TRUE(device->active()) << "still active, waiting for the driver to reset it";

  // Until reset, kicks do nothing (not even another needs_reset).
  driver_.publish(0);
  device->queue_notify(0);
  device->queue_notify(0);
  EXPECT_EQ(driver_.used_index(), 0);
  EXPECT_EQ(resets().size(), 1u);

  // The driver resets the device, sets its queue up afresh and starts again.
  device->reset();
  EXPECT_FALSE(device->active());
  MockDriver fresh(memory_, MockLayout{.size = kQueueSize,
                                       .rings = memory::GuestAddress(0x8000),
                                       .buffers = memory::GuestAddress(0x20'0000)});
  const MockBuffer again = fresh.allocate(24, true);
  add({again}, &fresh);
  ASSERT_TRUE(device->activate(activation(fresh)));
  const auto used = fresh.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 24u);
  EXPECT_EQ(resets().size(), 1u);
}

TEST_F(RngTest, EntropyFailureReturnsTheChainEmpty) {
  auto fail = std::make_shared<bool>(true);
  RngConfig config = pattern_config();
  config.source = [fail, good = pattern_.source()](std::span<std::uint8_t> out) -> Result<void> {
    if (*fail) {
      return sys_error("getrandom", EIO, "fake");
    }
    return good(out);
  };
  auto device = make_active(std::move(config));
  const MockBuffer buffer = driver_.allocate(32, true, 0x77);
  add({buffer});
  kick(*device);

  auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u) << "the driver is not left waiting";
  EXPECT_EQ(used[0].len, 0u);
  EXPECT_EQ(device->bytes_served(), 0u);
  ASSERT_TRUE(device->last_error());
  EXPECT_EQ(device->last_error()->operation, "getrandom");
  EXPECT_EQ(device->last_error()->errno_value, EIO);
  EXPECT_TRUE(resets().empty()) << "a host failure is not the driver's fault";
  EXPECT_EQ(interrupt_->queue_signals().size(), 1u);

  // The device keeps working once the source does.
  *fail = false;
  const MockBuffer next = driver_.allocate(8, true);
  add({next});
  kick(*device);
  used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 8u);
  EXPECT_EQ(driver_.read_bytes(next.address, 8), pattern(0, 8));
}

// --- activation -------------------------------------------------------------------------------------------------

TEST_F(RngTest, NotifyBeforeActivateDoesNothing) {
  auto device = make(pattern_config());
  add({driver_.allocate(16, true)});
  device->queue_notify(0);
  EXPECT_EQ(driver_.used_index(), 0);
  EXPECT_EQ(*pattern_.calls, 0);
  EXPECT_FALSE(device->active());
}

TEST_F(RngTest, ActivateWithoutQueueZeroFails) {
  auto device = make(pattern_config());
  Activation missing = activation();
  missing.queues[0].reset();  // the driver did not enable the queue
  EXPECT_FALSE(device->activate(std::move(missing)));
  EXPECT_FALSE(device->active());
  Activation none = activation();
  none.queues.clear();
  EXPECT_FALSE(device->activate(std::move(none)));
  EXPECT_FALSE(device->active());
  EXPECT_TRUE(device->activate(activation())) << "a proper activation still works";
  EXPECT_TRUE(device->active());
}

TEST_F(RngTest, BuffersPublishedBeforeActivateAreServedAtActivate) {
  auto device = make(pattern_config());
  const MockBuffer early = driver_.allocate(16, true);
  add({early});
  ASSERT_TRUE(device->activate(activation()));
  const auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 16u);
  EXPECT_EQ(driver_.read_bytes(early.address, 16), pattern(0, 16));
  EXPECT_EQ(interrupt_->queue_signals().size(), 1u);
}

TEST_F(RngTest, ResetStopsServing) {
  auto device = make_active(pattern_config());
  device->reset();
  EXPECT_FALSE(device->active());
  add({driver_.allocate(16, true)});
  device->queue_notify(0);
  EXPECT_EQ(driver_.used_index(), 0);
}

// --- rate limiting ----------------------------------------------------------------------------------------------

class RngRateLimitTest : public RngTest {
 protected:
  // 1000 bytes per second, a bucket of 100 bytes.
  std::shared_ptr<RngDevice> make_limited(bool activate = true) {
    RngConfig config = pattern_config();
    config.bytes_per_second = 1000;
    config.burst_bytes = 100;
    config.clock = clock_.clock();
    return activate ? make_active(std::move(config), timer_) : make(std::move(config), timer_);
  }

  FakeClock clock_;
  std::shared_ptr<FakeTimer> timer_ = std::make_shared<FakeTimer>();
};

TEST_F(RngRateLimitTest, ServesTheBurstThenWaitsForTokens) {
  auto device = make_limited();
  for (int i = 0; i < 4; ++i) {
    add({driver_.allocate(40, true)});
  }
  kick(*device);

  // 40 + 40 from the full bucket, then the 20 left (a shorter answer is valid), then nothing.
  auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 3u);
  EXPECT_EQ(used[0].len, 40u);
  EXPECT_EQ(used[1].len, 40u);
  EXPECT_EQ(used[2].len, 20u);
  EXPECT_EQ(device->bytes_served(), 100u);
  EXPECT_EQ(device->throttled(), 1u);
  EXPECT_EQ(driver_.used_index(), 3) << "the fourth request is back in the ring, not answered";
  EXPECT_EQ(counters_->snapshot().chains, 3u) << "undo_pop: the request is counted when served";
  EXPECT_EQ(interrupt_->queue_signals().size(), 1u) << "the three served requests are signalled";
  ASSERT_EQ(timer_->schedules, 1);
  EXPECT_EQ(timer_->delays.back(), milliseconds(40)) << "until 40 tokens are there";

  EXPECT_NE(driver_.used_flags() & VRING_USED_F_NO_NOTIFY, 0) << "no kicks wanted while waiting for the timer";

  // A kick anyway (the flag is only a hint), or a retry before any time passed: no token, the request waits again.
  device->queue_notify(0);
  ASSERT_TRUE(timer_->fire());
  EXPECT_EQ(driver_.used_index(), 3);
  EXPECT_EQ(device->throttled(), 3u);
  ASSERT_EQ(timer_->schedules, 3);
  EXPECT_EQ(timer_->delays.back(), milliseconds(40));

  clock_.now += milliseconds(30);
  EXPECT_EQ(driver_.used_index(), 3) << "the clock alone does nothing: the timer brings the device back";
  clock_.now += milliseconds(10);
  ASSERT_TRUE(timer_->fire());
  used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 40u);
  EXPECT_EQ(device->bytes_served(), 140u);
  EXPECT_EQ(interrupt_->queue_signals().size(), 2u);
  EXPECT_EQ(timer_->schedules, 3) << "nothing waits any more";
  EXPECT_FALSE(timer_->pending);
  EXPECT_EQ(driver_.used_flags() & VRING_USED_F_NO_NOTIFY, 0) << "kicks wanted again";
}

TEST_F(RngRateLimitTest, ALargeRequestWaitsForAFullBucketAtMost) {
  auto device = make_limited();
  add({driver_.allocate(100, true)});  // empties the bucket
  add({driver_.allocate(1000, true)});
  kick(*device);
  ASSERT_EQ(driver_.collect_used().size(), 1u);
  ASSERT_EQ(timer_->schedules, 1);
  EXPECT_EQ(timer_->delays.back(), milliseconds(100)) << "capacity 100 at 1000/s, not 1000 bytes' worth";
  clock_.now += milliseconds(100);
  ASSERT_TRUE(timer_->fire());
  const auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 100u) << "what the bucket holds";
}

TEST_F(RngRateLimitTest, RequestsPublishedBeforeActivateAreRateLimitedToo) {
  auto device = make_limited(false);
  add({driver_.allocate(100, true)});
  add({driver_.allocate(10, true)});
  ASSERT_TRUE(device->activate(activation()));
  EXPECT_EQ(driver_.collect_used().size(), 1u);
  EXPECT_EQ(device->throttled(), 1u);
  EXPECT_EQ(timer_->delays.back(), milliseconds(10));
}

TEST_F(RngRateLimitTest, ResetCancelsTheRetryAndAStaleRetryDoesNothing) {
  auto device = make_limited();
  add({driver_.allocate(100, true)});
  add({driver_.allocate(10, true)});
  kick(*device);
  ASSERT_TRUE(timer_->pending);
  auto stale = timer_->pending;  // as if the timer thread had already taken it when reset came

  const int cancels_before = timer_->cancels;
  device->reset();
  EXPECT_GT(timer_->cancels, cancels_before);
  EXPECT_FALSE(timer_->pending);

  // A new activation whose first request is throttled too (the bucket is still empty: reset does not refill it).
  MockDriver fresh(memory_, MockLayout{.size = kQueueSize,
                                       .rings = memory::GuestAddress(0x8000),
                                       .buffers = memory::GuestAddress(0x20'0000)});
  add({fresh.allocate(10, true)}, &fresh);
  ASSERT_TRUE(device->activate(activation(fresh)));
  EXPECT_EQ(fresh.used_index(), 0);
  ASSERT_TRUE(timer_->pending);

  clock_.now += milliseconds(10);
  stale();  // from before the reset: must not touch the new queue
  EXPECT_EQ(fresh.used_index(), 0);
  ASSERT_TRUE(timer_->fire());  // the current retry serves it
  EXPECT_EQ(fresh.used_index(), 1);
}

TEST_F(RngRateLimitTest, DestroyingTheDeviceCancelsTheTimer) {
  auto device = make_limited();
  const int cancels_before = timer_->cancels;
  device.reset();
  EXPECT_GT(timer_->cancels, cancels_before);
}

// --- ThreadRetryTimer -------------------------------------------------------------------------------------------

TEST(ThreadRetryTimer, CallsBackAfterTheDelay) {
  ThreadRetryTimer timer;
  std::promise<void> called;
  timer.schedule(milliseconds(1), [&called] { called.set_value(); });
  EXPECT_EQ(called.get_future().wait_for(kGenerous), std::future_status::ready);
}

TEST(ThreadRetryTimer, ZeroAndNegativeDelaysCallBackSoon) {
  ThreadRetryTimer timer;
  std::promise<void> first;
  timer.schedule(nanoseconds(0), [&first] { first.set_value(); });
  EXPECT_EQ(first.get_future().wait_for(kGenerous), std::future_status::ready);
  std::promise<void> second;
  timer.schedule(nanoseconds(-5), [&second] { second.set_value(); });
  EXPECT_EQ(second.get_future().wait_for(kGenerous), std::future_status::ready);
}

TEST(ThreadRetryTimer, CancelDropsThePendingCall) {
  ThreadRetryTimer timer;
  auto token = std::make_shared<int>(0);
  std::atomic<bool> called{false};
  timer.schedule(std::chrono::hours(1), [token, &called] { called = true; });
  EXPECT_EQ(token.use_count(), 2);
  timer.cancel();
  EXPECT_EQ(token.use_count(), 1) << "the callback is gone: it cannot run any more";
  EXPECT_FALSE(called);
  timer.cancel();  // nothing pending: harmless

  // The timer still works after a cancel.
  std::promise<void> later;
  timer.schedule(milliseconds(1), [&later] { later.set_value(); });
  EXPECT_EQ(later.get_future().wait_for(kGenerous), std::future_status::ready);
  EXPECT_FALSE(called);
}

TEST(ThreadRetryTimer, ScheduleReplacesThePendingCall) {
  ThreadRetryTimer timer;
  auto old_token = std::make_shared<int>(0);
  std::atomic<bool> old_called{false};
  timer.schedule(std::chrono::hours(1), [old_token, &old_called] { old_called = true; });
  std::promise<void> newer;
  timer.schedule(milliseconds(1), [&newer] { newer.set_value(); });
  EXPECT_EQ(old_token.use_count(), 1) << "the older call was dropped";
  EXPECT_EQ(newer.get_future().wait_for(kGenerous), std::future_status::ready);
  EXPECT_FALSE(old_called);
}

TEST(ThreadRetryTimer, ACallbackMayScheduleTheNextCall) {
  ThreadRetryTimer timer;
  std::promise<void> second;
  timer.schedule(milliseconds(1),
                 [&timer, &second] { timer.schedule(milliseconds(1), [&second] { second.set_value(); }); });
  EXPECT_EQ(second.get_future().wait_for(kGenerous), std::future_status::ready);
}

TEST(ThreadRetryTimer, CancelWaitsForARunningCallback) {
  ThreadRetryTimer timer;
  std::promise<void> started;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> finished{false};
  timer.schedule(milliseconds(1), [&started, released, &finished] {
    started.set_value();
    released.wait();
    finished = true;
  });
  ASSERT_EQ(started.get_future().wait_for(kGenerous), std::future_status::ready);

  std::atomic<bool> cancel_returned{false};
  std::thread canceller([&] {
    timer.cancel();
    // The guarantee under test: once cancel returns, the callback is over.
    EXPECT_TRUE(finished);
    cancel_returned = true;
  });
  std::this_thread::sleep_for(milliseconds(5));  // lets cancel start waiting (the test holds either way)
  EXPECT_FALSE(cancel_returned) << "cancel returned while the callback was still running";
  release.set_value();
  canceller.join();
  EXPECT_TRUE(cancel_returned);
}

TEST(ThreadRetryTimer, CancelAlsoDropsACallTheRunningCallbackSchedules) {
  // A rate-limited device's retry reschedules itself when tokens are still short. If that happens while cancel
  // waits for it, the new call must not survive cancel (the device may be destroyed next).
  ThreadRetryTimer timer;
  std::promise<void> started;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto token = std::make_shared<int>(0);
  timer.schedule(milliseconds(1), [&timer, &started, released, token] {
    started.set_value();
    released.wait();
    timer.schedule(std::chrono::hours(1), [token] {});
  });
  ASSERT_EQ(started.get_future().wait_for(kGenerous), std::future_status::ready);
  std::thread canceller([&timer] { timer.cancel(); });
  std::this_thread::sleep_for(milliseconds(5));  // lets cancel start waiting (the test holds either way)
  release.set_value();
  canceller.join();
  EXPECT_EQ(token.use_count(), 1) << "neither the callback nor the call it scheduled is left";
}

TEST(ThreadRetryTimer, DestructorWithAPendingCallJoinsCleanly) {
  auto token = std::make_shared<int>(0);
  std::atomic<bool> called{false};
  {
    ThreadRetryTimer timer;
    timer.schedule(std::chrono::hours(1), [token, &called] { called = true; });
  }
  EXPECT_FALSE(called);
  EXPECT_EQ(token.use_count(), 1);
}

TEST(ThreadRetryTimer, DestructorWaitsForARunningCallback) {
  std::promise<void> started;
  std::atomic<bool> finished{false};
  {
    ThreadRetryTimer timer;
    timer.schedule(milliseconds(1), [&started, &finished] {
      started.set_value();
      std::this_thread::sleep_for(milliseconds(2));
      finished = true;
    });
    ASSERT_EQ(started.get_future().wait_for(kGenerous), std::future_status::ready);
  }
  EXPECT_TRUE(finished);
}

// --- RngDevice with the real timer ------------------------------------------------------------------------------

TEST_F(RngTest, RetryWithTheRealTimerServesTheRequest) {
  // The real timer thread, but the bucket's clock still moves only when the test says: the outcome does not depend on
  // how fast the machine is. (The clock is read on the timer thread: an atomic.)
  auto now = std::make_shared<std::atomic<TokenBucket::TimePoint>>(TokenBucket::TimePoint{std::chrono::seconds(1)});
  RngConfig config = pattern_config();
  config.bytes_per_second = 100'000;  // 10 us per byte
  config.burst_bytes = 64;
  config.clock = [now] { return now->load(); };
  auto device = make_active(std::move(config), std::make_shared<ThreadRetryTimer>());
  add({driver_.allocate(64, true)});
  add({driver_.allocate(64, true)});
  kick(*device);
  // The first request took the whole bucket; the second waits, however often the timer retries meanwhile.
  EXPECT_GE(device->throttled(), 1u);
  EXPECT_EQ(driver_.used_index(), 1);

  // Tokens for the second; the timer thread's next retry (every 0.64 ms until then) serves it.
  now->store(now->load() + milliseconds(1));
  const auto deadline = std::chrono::steady_clock::now() + kGenerous;
  while (driver_.used_index() != 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  EXPECT_EQ(driver_.used_index(), 2);
  // Taking the device's lock (bytes_served) waits for the timer thread's round to finish, interrupt included.
  EXPECT_EQ(device->bytes_served(), 128u);
  EXPECT_EQ(interrupt_->queue_signals().size(), 2u);
}

TEST_F(RngTest, ResetRacingARetryNeverDeadlocks) {
  // A retry fires on the timer thread (taking the device's lock) while reset runs on this one (cancelling the timer
  // and waiting for a running callback). Hundreds of rounds with the two close together; the test passes if it ends
  // and the device never touches a queue after reset returned.
  RngConfig config = pattern_config();
  config.bytes_per_second = 10'000'000;  // 64 bytes take 6.4 us
  config.burst_bytes = 64;
  auto timer = std::make_shared<ThreadRetryTimer>();
  auto device = make(std::move(config), timer);
  std::optional<MockDriver> driver;
  for (int round = 0; round < 300; ++round) {
    driver.emplace(memory_, MockLayout{.size = kQueueSize});  // a fresh queue, as after a reset
    add({driver->allocate(64, true)}, &*driver);
    add({driver->allocate(64, true)}, &*driver);
    ASSERT_TRUE(device->activate(activation(*driver)));  // serves the first, throttles the second
    // Vary the moment of the reset around when the retry fires (a spin: sleeping has a coarse granularity).
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(round % 13);
    while (std::chrono::steady_clock::now() < until) {
    }
    device->reset();
    const auto after_reset = driver->used_index();
    EXPECT_LE(after_reset, 2);
    EXPECT_FALSE(device->active());
    // A retry that ran after reset returned would show up as a used entry (give one a moment to misbehave).
    std::this_thread::sleep_for(std::chrono::microseconds(20));
    ASSERT_EQ(driver->used_index(), after_reset) << "round " << round;
  }
  EXPECT_TRUE(resets().empty());
}

}  // namespace
}  // namespace vmm::virtio::rng
