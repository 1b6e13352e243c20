#include "vmm/virtio/token_bucket.hpp"

#include <algorithm>
#include <cassert>
#include <limits>
#include <utility>

namespace vmm::virtio {

namespace {

using Uint128 = unsigned __int128;

// Refill is counted in "nano-tokens": elapsed nanoseconds times tokens per second is a number of tokens times 1e9.
constexpr std::uint64_t kNanosPerSecond = 1'000'000'000;

}  // namespace

TokenBucket::TokenBucket(std::uint64_t rate, std::uint64_t capacity, Clock clock)
    : rate_(rate), capacity_(capacity), clock_(std::move(clock)), last_(clock_()), tokens_(capacity) {
  assert(rate > 0 && "TokenBucket: the rate must be positive");
  assert(capacity > 0 && "TokenBucket: the capacity must be positive");
}

void TokenBucket::refill() {
  const TimePoint now = clock_();
  if (now <= last_) {
    return;  // no time passed (or a clock that stepped back: wait until it is past `last_` again)
  }
  const auto elapsed = static_cast<std::uint64_t>((now - last_).count());
  last_ = now;
  if (tokens_ == capacity_) {
    remainder_ = 0;  // a full bucket does not save up fractions either
    return;
  }
  // elapsed < 2^63 and rate < 2^64, so the product is below 2^127 and the sum cannot overflow 128 bits.
  const Uint128 nano_tokens = static_cast<Uint128>(elapsed) * rate_ + remainder_;
  const Uint128 added = nano_tokens / kNanosPerSecond;
  if (added >= capacity_ - tokens_) {
    tokens_ = capacity_;
    remainder_ = 0;
    return;
  }
  tokens_ += static_cast<std::uint64_t>(added);
  remainder_ = static_cast<std::uint64_t>(nano_tokens % kNanosPerSecond);
}

bool TokenBucket::try_consume(std::uint64_t tokens) {
  refill();
  if (tokens > tokens_) {
    return false;
  }
  tokens_ -= tokens;
  return true;
}

std::uint64_t TokenBucket::consume_up_to(std::uint64_t wanted) {
  refill();
  const std::uint64_t taken = std::min(wanted, tokens_);
  tokens_ -= taken;
  return taken;
}

std::uint64_t TokenBucket::available() {
  refill();
  return tokens_;
}

std::chrono::nanoseconds TokenBucket::time_until(std::uint64_t tokens) {
  refill();
  tokens = std::min(tokens, capacity_);
  if (tokens <= tokens_) {
    return std::chrono::nanoseconds{0};
  }
  // Wanted: the least n with remainder + n * rate >= (tokens - tokens_) * 1e9, i.e. n = ceil(missing / rate).
  // remainder_ < 1e9 <= the right-hand side, so `missing` is positive.
  const Uint128 missing = static_cast<Uint128>(tokens - tokens_) * kNanosPerSecond - remainder_;
  const Uint128 wait = (missing + rate_ - 1) / rate_;
  constexpr auto kMax = static_cast<Uint128>(std::numeric_limits<std::chrono::nanoseconds::rep>::max());
  return std::chrono::nanoseconds{static_cast<std::chrono::nanoseconds::rep>(std::min(wait, kMax))};
}

}  // namespace vmm::virtio
