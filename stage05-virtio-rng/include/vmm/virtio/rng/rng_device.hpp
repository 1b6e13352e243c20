#pragma once
/// @file
/// @brief `RngDevice`: virtio-rng (virtio 1.2, 5.4), an entropy source for the guest.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/virtio/retry_timer.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/token_bucket.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::virtio::rng {

/// @brief Where the random bytes come from: `getrandom(2)` outside tests. Fills `out` completely or fails.
using EntropySource = std::function<Result<void>(std::span<std::uint8_t> out)>;

/// @brief `getrandom(2)` into `out`, retrying short reads and EINTR; errors name getrandom and the errno.
[[nodiscard]] Result<void> getrandom_source(std::span<std::uint8_t> out);

/// @brief Entropy read from the file at `path`: a character device (/dev/urandom, /dev/hwrng) or a regular file,
///        which is read again from its start when it runs out, so a small file of known bytes serves forever (tests,
///        demonstrations). Opening fails with the path and the errno. The device calls the source with its own lock
///        held, so the shared file offset needs no lock of its own. (Used by stage07's vhost-user-rng daemon and
///        final-vmm's `--rng src=`.)
[[nodiscard]] Result<EntropySource> file_source(const std::string& path);

/// @brief How to build the device.
struct RngConfig {
  std::uint16_t queue_size = 256;                 ///< The request queue's maximum size.
  std::optional<std::uint64_t> bytes_per_second;  ///< Rate limit; none by default.
  std::uint64_t burst_bytes = 0;                  ///< Bucket capacity with a rate limit (0: one second's worth).
  EntropySource source = getrandom_source;        ///< Entropy.
  TokenBucket::Clock clock = std::chrono::steady_clock::now;  ///< Time for the rate limiter.
};

/// @brief virtio-rng: one queue (requestq) of device-writable buffers, each filled with random bytes.
///
/// The device has no configuration and no device-specific features. A request is a chain of writable buffers (any
/// readable ones are ignored, as the spec allows); the device fills them all and returns the chain with the byte
/// count. While active it processes the queue whenever the driver kicks, on the thread that delivers the kick
/// (stage05: the vCPU, inside its MMIO exit): notifications disabled, pop and fill until the ring is empty,
/// notifications re-enabled and the ring checked once more, then one interrupt if the driver wants it.
///
/// With a rate limit each byte costs a token. A chain that does not get all its bytes is filled with what the bucket
/// has if that is at least one byte (a shorter answer is valid for virtio-rng); with an empty bucket the chain goes
/// back to the ring (`SplitQueue::undo_pop`) and the `RetryTimer` calls the device again when tokens will be there.
///
/// A driver error (an invalid chain, a jumping index) stops processing and is reported through
/// `Activation::needs_reset`; the device then ignores kicks until reset. An entropy error is a host failure: it is
/// kept (`last_error`) and the chain is returned with 0 bytes so the driver is not left waiting.
///
/// Thread-safe: one mutex guards the state, and `queue_notify`, `activate`, `reset` and the retry timer all take it.
class RngDevice final : public VirtioDevice {
 public:
  /// @brief A device; `timer` is required with a rate limit (and unused without one).
  [[nodiscard]] static Result<std::shared_ptr<RngDevice>> create(RngConfig config,
                                                                 std::shared_ptr<RetryTimer> timer = nullptr);
  /// @brief Cancels the retry timer.
  ~RngDevice() override;

  /// @brief VIRTIO_ID_RNG (4).
  [[nodiscard]] std::uint16_t device_type() const override;
  /// @brief `kCommonFeatures`: virtio-rng has no features of its own.
  [[nodiscard]] std::uint64_t features() const override;
  /// @brief One queue.
  [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override;
  /// @brief Takes the queue and the interrupt; processes anything the driver published before DRIVER_OK.
  [[nodiscard]] Result<void> activate(Activation activation) override;
  /// @brief Drops the queue, cancels a pending retry. The rate limiter's bucket is kept: a reset buys no fresh burst.
  void reset() override;
  /// @brief Processes the queue.
  void queue_notify(std::uint16_t queue_index) override;
  /// @brief "virtio-rng".
  [[nodiscard]] std::string name() const override { return "virtio-rng"; }

  /// @brief True while activated.
  [[nodiscard]] bool active() const;
  /// @brief Random bytes handed to the driver so far (over all activations).
  [[nodiscard]] std::uint64_t bytes_served() const;
  /// @brief Times the rate limiter made a request wait.
  [[nodiscard]] std::uint64_t throttled() const;
  /// @brief The latest error (driver or host), if any.
  [[nodiscard]] std::optional<Error> last_error() const;

 private:
  RngDevice(RngConfig config, std::shared_ptr<RetryTimer> timer);
  // Serves the queue (see the class comment); everything *_locked runs with mutex_ held.
  void process_locked();
  // Fills the chain's writable buffers with up to `budget` random bytes; returns how many it wrote.
  [[nodiscard]] Result<std::uint32_t> fill_locked(const DescriptorChain& chain, std::uint32_t budget);
  // A driver error: remember it, ignore the queue until reset, tell the transport (DEVICE_NEEDS_RESET).
  void fail_locked(Error error);
  // Asks the timer to run process_locked again after `delay`, unless the device is reset first.
  void schedule_retry_locked(std::chrono::nanoseconds delay);

  RngConfig config_;
  std::shared_ptr<RetryTimer> timer_;
  mutable std::mutex mutex_;
  std::optional<TokenBucket> bucket_;
  std::optional<Activation> activation_;  // set while active
  bool failed_ = false;                   // a driver error was reported: ignore kicks until reset
  std::uint64_t bytes_served_ = 0;
  std::uint64_t throttled_ = 0;
  std::optional<Error> last_error_;
  // Bumped by reset: a retry scheduled before it finds its generation stale and does nothing. (reset cannot simply
  // cancel the timer under mutex_: cancel waits for a running callback, and the callback takes mutex_.)
  std::uint64_t generation_ = 0;
};

}  // namespace vmm::virtio::rng
