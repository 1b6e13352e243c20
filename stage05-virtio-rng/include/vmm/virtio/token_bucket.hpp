#pragma once
/// @file
/// @brief `TokenBucket`: a rate limiter in the classic shape (Firecracker's rate_limiter, Linux's tc tbf).

#include <chrono>
#include <cstdint>
#include <functional>

namespace vmm::virtio {

/// @brief A bucket of up to `capacity` tokens that refills at `rate` tokens per second; spending N tokens needs N
/// in the bucket. With rate = bytes per second and one token per byte, it limits a device's throughput while letting
/// a burst of up to `capacity` through at once.
///
/// Time comes from a clock function so tests control it (no sleeping, no timing in unit tests). Refill is computed
/// from the elapsed time in nanoseconds with 128-bit arithmetic, so neither long idle periods nor high rates
/// overflow, and fractional tokens are carried over rather than lost. Not thread-safe: the owning device serialises.
class TokenBucket {
 public:
  /// @brief A point in time, as the clock reports it.
  using TimePoint = std::chrono::steady_clock::time_point;
  /// @brief The clock: `std::chrono::steady_clock::now` outside tests.
  using Clock = std::function<TimePoint()>;

  /// @brief A full bucket. `rate` > 0 tokens per second; `capacity` > 0 (asserted: a zero bucket is a programmer
  /// error, validated where the user's option is parsed).
  TokenBucket(std::uint64_t rate, std::uint64_t capacity, Clock clock = std::chrono::steady_clock::now);

  /// @brief Takes `tokens` if the bucket holds that many (after refilling); otherwise takes nothing and returns false.
  [[nodiscard]] bool try_consume(std::uint64_t tokens);
  /// @brief Takes as many tokens as available, up to `wanted`; returns how many (possibly 0).
  [[nodiscard]] std::uint64_t consume_up_to(std::uint64_t wanted);
  /// @brief Tokens available now (after refilling).
  [[nodiscard]] std::uint64_t available();
  /// @brief How long until `tokens` (at most `capacity`) will be available; zero if they are now.
  [[nodiscard]] std::chrono::nanoseconds time_until(std::uint64_t tokens);

  /// @brief Tokens per second.
  [[nodiscard]] std::uint64_t rate() const noexcept { return rate_; }
  /// @brief The most tokens the bucket holds.
  [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }

 private:
  void refill();

  std::uint64_t rate_;
  std::uint64_t capacity_;
  Clock clock_;
  TimePoint last_;
  std::uint64_t tokens_;
  std::uint64_t remainder_ = 0;  // token fraction carried over, in 1e-9 tokens (elapsed ns * rate, modulo 1e9)
};

}  // namespace vmm::virtio
