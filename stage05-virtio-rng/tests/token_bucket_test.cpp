// TokenBucket: the rate limiter's arithmetic, driven by a fake clock (no sleeping, nothing depends on how fast the
// machine is): a full start, all-or-nothing and partial consumption, refill proportional to time with fractions
// carried, the cap, 128-bit safety for long idle periods and huge rates, and exact waits.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>

#include "vmm/virtio/token_bucket.hpp"

namespace vmm::virtio {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

constexpr std::uint64_t kMax64 = std::numeric_limits<std::uint64_t>::max();

// A clock that only moves when the test says so.
class FakeClock {
 public:
  [[nodiscard]] TokenBucket::Clock clock() {
    return [this] { return now_; };
  }
  void advance(nanoseconds step) { now_ += step; }

 private:
  TokenBucket::TimePoint now_{seconds(1000)};
};

TEST(TokenBucket, StartsFull) {
  FakeClock time;
  TokenBucket bucket(10, 25, time.clock());
  EXPECT_EQ(bucket.rate(), 10u);
  EXPECT_EQ(bucket.capacity(), 25u);
  EXPECT_EQ(bucket.available(), 25u);
}

TEST(TokenBucket, TryConsumeTakesAllOrNothing) {
  FakeClock time;
  TokenBucket bucket(10, 100, time.clock());
  EXPECT_TRUE(bucket.try_consume(60));
  EXPECT_EQ(bucket.available(), 40u);
  EXPECT_FALSE(bucket.try_consume(41));
  EXPECT_EQ(bucket.available(), 40u) << "a refused request takes nothing";
  EXPECT_TRUE(bucket.try_consume(40));
  EXPECT_EQ(bucket.available(), 0u);
  EXPECT_TRUE(bucket.try_consume(0));
  EXPECT_FALSE(bucket.try_consume(1));
  EXPECT_FALSE(bucket.try_consume(101)) << "more than the capacity never fits";
}

TEST(TokenBucket, ConsumeUpToTakesWhatThereIs) {
  FakeClock time;
  TokenBucket bucket(10, 100, time.clock());
  EXPECT_EQ(bucket.consume_up_to(30), 30u);
  EXPECT_EQ(bucket.consume_up_to(100), 70u);
  EXPECT_EQ(bucket.available(), 0u);
  EXPECT_EQ(bucket.consume_up_to(5), 0u);
  time.advance(milliseconds(200));  // 2 tokens
  EXPECT_EQ(bucket.consume_up_to(5), 2u);
  EXPECT_EQ(bucket.consume_up_to(0), 0u);
}

TEST(TokenBucket, RefillIsProportionalToElapsedTime) {
  FakeClock time;
  TokenBucket bucket(1000, 1000, time.clock());
  ASSERT_TRUE(bucket.try_consume(1000));
  EXPECT_EQ(bucket.available(), 0u) << "no time passed";
  time.advance(milliseconds(250));
  EXPECT_EQ(bucket.available(), 250u);
  time.advance(milliseconds(500));
  EXPECT_EQ(bucket.available(), 750u);
  time.advance(nanoseconds(999'999));  // just under one more token
  EXPECT_EQ(bucket.available(), 750u);
  time.advance(nanoseconds(1));
  EXPECT_EQ(bucket.available(), 751u);
}

TEST(TokenBucket, RefillIsCappedAtCapacity) {
  FakeClock time;
  TokenBucket bucket(1000, 1000, time.clock());
  ASSERT_TRUE(bucket.try_consume(1));
  time.advance(seconds(10));  // 10000 tokens' worth
  EXPECT_EQ(bucket.available(), 1000u);
  EXPECT_FALSE(bucket.try_consume(1001));
}

TEST(TokenBucket, FractionalRefillIsCarriedOver) {
  // 3 tokens per second, looked at every 100 ms: each step brings 0.3 token. Dropping the fraction at every refill
  // would never yield a single token.
  FakeClock time;
  TokenBucket bucket(3, 10, time.clock());
  ASSERT_TRUE(bucket.try_consume(10));
  for (int step = 1; step <= 10; ++step) {
    time.advance(milliseconds(100));
    EXPECT_EQ(bucket.available(), static_cast<std::uint64_t>(3 * step / 10)) << "after " << step * 100 << " ms";
  }
  EXPECT_EQ(bucket.available(), 3u);
  // Consuming does not lose the carried fraction either: 10 more steps make 3 more tokens.
  for (int step = 1; step <= 10; ++step) {
    time.advance(milliseconds(100));
    if (step % 4 == 0) {
      (void)bucket.consume_up_to(1);
    }
  }
  EXPECT_EQ(bucket.available(), 4u);  // 3 + 3 - 2 consumed
}

TEST(TokenBucket, IdleTimeWhileFullIsNotBanked) {
  FakeClock time;
  TokenBucket bucket(3, 10, time.clock());
  time.advance(milliseconds(250));  // full: these 0.75 tokens go nowhere
  ASSERT_EQ(bucket.available(), 10u);
  ASSERT_TRUE(bucket.try_consume(10));
  time.advance(milliseconds(300));  // 0.9 token
  EXPECT_EQ(bucket.available(), 0u);
  time.advance(milliseconds(34));  // 1.002 tokens
  EXPECT_EQ(bucket.available(), 1u);
}

TEST(TokenBucket, LongIdlePeriodsDoNotOverflow) {
  FakeClock time;
  TokenBucket bucket(1, kMax64, time.clock());
  ASSERT_TRUE(bucket.try_consume(kMax64));
  time.advance(hours(24 * 365 * 200));  // 200 years, 6.3e18 ns: the product with a large rate needs 128 bits
  EXPECT_EQ(bucket.available(), 200ull * 365 * 24 * 3600);

  FakeClock other;  // 400 years on one clock would not fit in the 64-bit time_point itself
  TokenBucket fast(1'000'000'000'000ull, kMax64, other.clock());
  ASSERT_TRUE(fast.try_consume(kMax64));
  other.advance(hours(24 * 365 * 200));
  EXPECT_EQ(fast.available(), kMax64) << "capped, not wrapped";
}

TEST(TokenBucket, HugeRatesDoNotOverflow) {
  FakeClock time;
  TokenBucket bucket(kMax64, kMax64, time.clock());
  ASSERT_TRUE(bucket.try_consume(kMax64));
  time.advance(nanoseconds(1));
  EXPECT_EQ(bucket.available(), kMax64 / 1'000'000'000);
  time.advance(seconds(2));
  EXPECT_EQ(bucket.available(), kMax64);
  ASSERT_TRUE(bucket.try_consume(kMax64));
  EXPECT_EQ(bucket.time_until(1), nanoseconds(1)) << "ceil(1e9 / 2^64) is one nanosecond";
}

TEST(TokenBucket, TimeUntilIsExact) {
  FakeClock time;
  TokenBucket bucket(3, 10, time.clock());
  EXPECT_EQ(bucket.time_until(10), nanoseconds(0)) << "available now";
  EXPECT_EQ(bucket.time_until(0), nanoseconds(0));
  ASSERT_TRUE(bucket.try_consume(10));
  EXPECT_EQ(bucket.time_until(0), nanoseconds(0));
  EXPECT_EQ(bucket.time_until(1), nanoseconds(333'333'334));  // ceil(1e9 / 3)
  EXPECT_EQ(bucket.time_until(3), seconds(1));
  EXPECT_EQ(bucket.time_until(10), nanoseconds(3'333'333'334));
  EXPECT_EQ(bucket.time_until(1000), bucket.time_until(10)) << "more than the capacity means a full bucket";

  time.advance(milliseconds(100));                            // 0.3 token carried
  EXPECT_EQ(bucket.time_until(1), nanoseconds(233'333'334));  // ceil(0.7e9 / 3)

  // The wait is exact: one nanosecond less is not enough, the wait itself is.
  const nanoseconds wait = bucket.time_until(2);
  time.advance(wait - nanoseconds(1));
  EXPECT_EQ(bucket.available(), 1u);
  time.advance(nanoseconds(1));
  EXPECT_EQ(bucket.available(), 2u);
  EXPECT_EQ(bucket.time_until(2), nanoseconds(0));
}

TEST(TokenBucket, TimeUntilSaturatesInsteadOfOverflowing) {
  FakeClock time;
  TokenBucket bucket(1, kMax64, time.clock());
  ASSERT_TRUE(bucket.try_consume(kMax64));
  EXPECT_EQ(bucket.time_until(kMax64), nanoseconds::max());  // 2^64 seconds does not fit in 64-bit nanoseconds
  EXPECT_EQ(bucket.time_until(5), seconds(5));
}

}  // namespace
}  // namespace vmm::virtio
