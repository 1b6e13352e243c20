#include "vmm/virtio/rng/rng_device.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <limits>
#include <utility>

#include <fmt/format.h>

#include "vmm/fd.hpp"
#include "vmm/virtio/uapi.hpp"

namespace vmm::virtio::rng {

namespace {

// Entropy is fetched and copied into the guest this many bytes at a time, whatever the size of the buffers.
constexpr std::size_t kChunkBytes = 4096;
// The shortest retry a throttled request waits for, so a bucket that is almost there does not spin the timer.
constexpr std::chrono::nanoseconds kMinRetryDelay = std::chrono::microseconds(100);

}  // namespace

Result<void> getrandom_source(std::span<std::uint8_t> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t got = ::getrandom(out.data() + done, out.size() - done, 0);
    if (got < 0) {
      if (errno == EINTR) {
        continue;
      }
      return sys_error("getrandom", errno, fmt::format("{} of {} bytes read", done, out.size()));
    }
    if (got == 0) {  // never happens for a non-empty request; without this check it would loop forever
      return sys_error("getrandom", EIO, fmt::format("returned 0 bytes ({} of {} read)", done, out.size()));
    }
    done += static_cast<std::size_t>(got);
  }
  return {};
}

Result<EntropySource> file_source(const std::string& path) {
  auto opened = Fd::open(path.c_str(), O_RDONLY);
  if (!opened) {
    return std::unexpected(opened.error().with_context("entropy source"));
  }
  auto file = std::make_shared<Fd>(std::move(*opened));
  return EntropySource([file, path](std::span<std::uint8_t> out) -> Result<void> {
    std::size_t done = 0;
    bool rewound = false;
    while (done < out.size()) {
      const ssize_t n = ::read(file->get(), out.data() + done, out.size() - done);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        return sys_error("read", errno, fmt::format("entropy source {}", path));
      }
      if (n == 0) {
        if (rewound) {
          return sys_error("read", EIO, fmt::format("entropy source {} is empty", path));
        }
        if (::lseek(file->get(), 0, SEEK_SET) < 0) {
          return sys_error("lseek", errno, fmt::format("entropy source {} reached its end", path));
        }
        rewound = true;
        continue;
      }
      rewound = false;
      done += static_cast<std::size_t>(n);
    }
    return {};
  });
}

Result<std::shared_ptr<RngDevice>> RngDevice::create(RngConfig config, std::shared_ptr<RetryTimer> timer) {
  const std::string op = "virtio-rng";
  if (!std::has_single_bit(config.queue_size)) {
    return logic_error(op, fmt::format("queue size {} is not a power of two", config.queue_size));
  }
  if (!config.source) {
    return logic_error(op, "no entropy source");
  }
  if (config.bytes_per_second) {
    if (*config.bytes_per_second == 0) {
      return logic_error(op, "a rate limit of 0 bytes per second would never serve a request");
    }
    if (!timer) {
      return logic_error(op, "a rate limit needs a retry timer");
    }
    if (!config.clock) {
      return logic_error(op, "a rate limit needs a clock");
    }
  }
  return std::shared_ptr<RngDevice>(new RngDevice(std::move(config), std::move(timer)));
}

RngDevice::RngDevice(RngConfig config, std::shared_ptr<RetryTimer> timer)
    : config_(std::move(config)), timer_(std::move(timer)) {
  if (config_.bytes_per_second) {
    const std::uint64_t rate = *config_.bytes_per_second;
    bucket_.emplace(rate, config_.burst_bytes != 0 ? config_.burst_bytes : rate, config_.clock);
  }
}

RngDevice::~RngDevice() {
  // The retry callback uses `this`: once cancel returns it neither runs nor will.
  if (timer_) {
    timer_->cancel();
  }
}

std::uint16_t RngDevice::device_type() const {
  return VIRTIO_ID_RNG;
}

std::uint64_t RngDevice::features() const {
  return kCommonFeatures;
}

std::vector<std::uint16_t> RngDevice::queue_max_sizes() const {
  return {config_.queue_size};
}

Result<void> RngDevice::activate(Activation activation) {
  const std::string op = "virtio-rng activate";
  std::lock_guard lock(mutex_);
  if (activation_) {
    return logic_error(op, "already active");
  }
  if (activation.queues.empty() || !activation.queues[0]) {
    return logic_error(op, "the driver did not enable the request queue (queue 0)");
  }
  if (activation.memory == nullptr || !activation.interrupt) {
    return logic_error(op, "no guest memory or no interrupt");
  }
  activation_ = std::move(activation);
  failed_ = false;
  // A driver may publish buffers before DRIVER_OK, and it kicked (if it did) while the device was not listening.
  process_locked();
  return {};
}

void RngDevice::reset() {
  std::optional<Activation> dropped;
  {
    std::lock_guard lock(mutex_);
    ++generation_;  // a retry that fires from now on finds itself stale and does nothing
    dropped = std::exchange(activation_, std::nullopt);
    failed_ = false;
  }
  // Outside the lock: cancel waits for a callback that is running, and that callback takes mutex_ (then returns at
  // once, as its generation is stale). Holding mutex_ here would deadlock.
  if (timer_) {
    timer_->cancel();
  }
}

void RngDevice::queue_notify(std::uint16_t queue_index) {
  if (queue_index != 0) {
    return;
  }
  std::lock_guard lock(mutex_);
  process_locked();
}

bool RngDevice::active() const {
  std::lock_guard lock(mutex_);
  return activation_.has_value();
}

std::uint64_t RngDevice::bytes_served() const {
  std::lock_guard lock(mutex_);
  return bytes_served_;
}

std::uint64_t RngDevice::throttled() const {
  std::lock_guard lock(mutex_);
  return throttled_;
}

std::optional<Error> RngDevice::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

void RngDevice::fail_locked(Error error) {
  failed_ = true;
  last_error_ = error;
  if (activation_->needs_reset) {
    activation_->needs_reset(error);
  }
}

void RngDevice::schedule_retry_locked(std::chrono::nanoseconds delay) {
  const std::uint64_t generation = generation_;
  timer_->schedule(std::max(delay, kMinRetryDelay), [this, generation] {
    std::lock_guard lock(mutex_);
    if (generation == generation_) {
      process_locked();
    }
  });
}

Result<std::uint32_t> RngDevice::fill_locked(const DescriptorChain& chain, std::uint32_t budget) {
  const memory::GuestMemory& memory = *activation_->memory;
  std::array<std::uint8_t, kChunkBytes> chunk{};
  std::uint32_t written = 0;
  for (const Descriptor& buffer : chain.writable) {
    for (std::uint32_t offset = 0; offset < buffer.length && written < budget;) {
      const auto n = static_cast<std::uint32_t>(
          std::min<std::uint64_t>({kChunkBytes, buffer.length - offset, std::uint64_t{budget} - written}));
      const std::span<std::uint8_t> bytes(chunk.data(), n);
      if (auto ok = config_.source(bytes); !ok) {
        return std::unexpected(std::move(ok).error().with_context("virtio-rng: filling a request"));
      }
      auto at = buffer.address.checked_add(offset);
      if (!at) {
        return std::unexpected(std::move(at).error());
      }
      if (auto ok = memory.write(*at, std::as_bytes(bytes)); !ok) {
        return std::unexpected(std::move(ok).error());
      }
      offset += n;
      written += n;
    }
  }
  return written;
}

void RngDevice::process_locked() {
  if (!activation_ || failed_) {
    return;
  }
  SplitQueue& queue = *activation_->queues[0];
  bool added = false;
  bool throttled = false;
  for (;;) {
    if (auto ok = queue.disable_notification(); !ok) {
      fail_locked(std::move(ok).error());
      return;
    }
    for (;;) {
      auto popped = queue.pop();
      if (!popped) {
        fail_locked(std::move(popped).error());
        return;
      }
      if (!*popped) {
        break;  // the ring is empty
      }
      const DescriptorChain chain = std::move(**popped);
      // The used ring's length is 32 bits; a chain's total is at most 2^32 bytes, so at most one byte is lost.
      auto budget = static_cast<std::uint32_t>(
          std::min<std::uint64_t>(chain.writable_bytes(), std::numeric_limits<std::uint32_t>::max()));
      if (bucket_ && budget > 0) {
        const std::uint64_t granted = bucket_->consume_up_to(budget);
        if (granted == 0) {
          // Not even one byte: back to the ring until the bucket has refilled enough for this request (or a full
          // bucket, if the request is larger). Notifications stay disabled: the timer brings the device back.
          queue.undo_pop();
          ++throttled_;
          schedule_retry_locked(bucket_->time_until(std::min<std::uint64_t>(budget, bucket_->capacity())));
          throttled = true;
          break;
        }
        budget = static_cast<std::uint32_t>(granted);
      }
      std::uint32_t written = 0;
      if (auto filled = fill_locked(chain, budget); filled) {
        written = *filled;
      } else {
        // A host failure, not the driver's: answer with no bytes rather than leave the driver waiting.
        last_error_ = std::move(filled).error();
      }
      if (auto ok = queue.add_used(chain.head_index, written); !ok) {
        fail_locked(std::move(ok).error());
        return;
      }
      bytes_served_ += written;
      added = true;
    }
    if (throttled) {
      break;
    }
    // The driver may have published a buffer after the last pop without kicking (notifications were off).
    auto more = queue.enable_notification();
    if (!more) {
      fail_locked(std::move(more).error());
      return;
    }
    if (!*more) {
      break;
    }
  }
  if (!added) {
    return;
  }
  auto wanted = queue.needs_notification();
  if (!wanted) {
    fail_locked(std::move(wanted).error());
    return;
  }
  if (*wanted) {
    if (auto ok = activation_->interrupt->signal_queue(0); !ok) {
      last_error_ = std::move(ok).error();
    }
  }
}

}  // namespace vmm::virtio::rng
