#pragma once
/// @file
/// @brief `NetDevice`: virtio-net (virtio 1.2, 5.1) on a `NetBackend` (a tap), one receive and one transmit queue,
/// no offloads.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/fd.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/virtio/descriptor_chain.hpp"
#include "vmm/virtio/net/net_backend.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::virtio::net {

/// @brief Index of the receive queue (receiveq1): buffers the driver posts for the device to fill.
inline constexpr std::uint16_t kReceiveQueue = 0;
/// @brief Index of the transmit queue (transmitq1): frames the driver wants sent.
inline constexpr std::uint16_t kTransmitQueue = 1;

/// @brief How to build the device.
struct NetConfig {
  /// @brief The guest's MAC address (VIRTIO_NET_F_MAC). 52:54:00 is the locally administered prefix QEMU made
  /// customary.
  std::array<std::uint8_t, 6> mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  std::uint16_t queue_size = 256;  ///< Maximum size of each queue: a power of two.
};

/// @brief virtio-net over a `NetBackend`: queue 0 receives, queue 1 transmits; features VIRTIO_NET_F_MAC and
/// VIRTIO_NET_F_STATUS only.
///
/// What is left out, and why it keeps the device simple:
/// - no checksum or segmentation offloads (CSUM, GUEST_CSUM, *_TSO*, *_UFO...): every frame is complete and at most
///   `kMaxFrameBytes` long, and its `virtio_net_hdr_v1` says nothing (all zero) in either direction;
/// - no MRG_RXBUF: a received frame goes into one chain, so `num_buffers` is always 1, and the driver posts receive
///   chains big enough for a whole frame (Linux: header plus 1518 bytes, as the MTU is 1500);
/// - no CTRL_VQ: no filtering, no promiscuous-mode commands; the backend sees every frame the guest sends.
///
/// Transmit (`queue_notify(1)`, on the caller's thread, under the transmit lock): each chain's device-readable bytes
/// are one frame. They are copied out of guest memory (the driver may rewrite them meanwhile; the backend must see
/// one consistent frame), the header is replaced by a zeroed one (no offload was negotiated, so a non-zero field is
/// meaningless and must not reach the host kernel), and the frame goes to the backend. Every chain goes back used with
/// length 0 (the device writes nothing), interrupts as the driver's suppression hints allow.
///
/// Receive: while active, a thread of the device ("net-rx") waits in epoll for the backend's descriptor (a frame
/// waits), the receive kick eventfd (`queue_notify(0)`: the driver posted buffers) and a stop eventfd. Each round it
/// takes a chain, reads one frame, writes a fresh header (`num_buffers` = 1) and the frame into the chain's
/// device-writable buffers through `GuestMemory`, and returns it with the frame's length. When the queue is empty it
/// stops watching the backend (EPOLL_CTL_MOD to no events) and re-enables kicks until the driver posts more: the
/// frames wait in the backend (the kernel's queue for a tap) instead of spinning the thread or being dropped. Frames
/// that arrive while the device is inactive stay there too.
///
/// Hostile or broken drivers: the ring itself (`SplitQueue`, `DescriptorChain`) checks indices and addresses; the
/// device checks sizes. Not fatal, counted in `stats()` and kept as `last_error()`:
/// - a transmit chain with device-writable buffers, shorter than the header or longer than `kMaxFrameBytes`:
///   returned with length 0, nothing sent;
/// - a receive chain too small for the frame at hand: the frame is dropped (`rx_dropped`), the chain returned with
///   length 0;
/// - a receive chain with device-readable buffers: returned with length 0, no frame taken (`rx_bad_chains`).
/// Fatal for the queue: a ring error (a chain that fails its walk, an index that jumps) is reported through
/// `Activation::needs_reset` and the queue is left alone until `reset`.
///
/// Threads and locks: `activate`, `reset` and the destructor are serialised by a lifecycle lock. The transmit queue
/// is used under the transmit lock. The receive queue belongs to the receive thread from `activate` (which sets it up
/// before starting the thread) until `reset` (which takes it back after joining the thread). `queue_notify(0)` only
/// writes an eventfd. The interrupt and `needs_reset` are called from both the transmit caller and the receive thread,
/// possibly at once, holding at most the transmit lock: they must not call back into the device.
class NetDevice final : public VirtioDevice {
 public:
  /// @brief What the device did, over all activations. Bytes count frames with their 12-byte header.
  struct Stats {
    std::uint64_t tx_frames = 0;      ///< Frames the backend accepted.
    std::uint64_t tx_bytes = 0;       ///< Their bytes.
    std::uint64_t tx_dropped = 0;     ///< Transmit chains refused as malformed (nothing sent).
    std::uint64_t tx_errors = 0;      ///< Frames the backend refused (a full or vanished link): lost, as on a wire.
    std::uint64_t rx_frames = 0;      ///< Frames delivered to the guest.
    std::uint64_t rx_bytes = 0;       ///< Their bytes.
    std::uint64_t rx_dropped = 0;     ///< Frames read from the backend and dropped (too long for the chain or at all).
    std::uint64_t rx_bad_chains = 0;  ///< Receive chains with device-readable buffers, returned unused.
    std::uint64_t rx_no_buffers = 0;  ///< Times the receive queue ran empty and the backend was left unread.
  };

  /// @brief A device on `backend` (required). Refused for a queue size that is not a power of two. Creates the
  /// eventfds it keeps for its lifetime (the receive kick and the stop request).
  [[nodiscard]] static Result<std::shared_ptr<NetDevice>> create(std::shared_ptr<NetBackend> backend, NetConfig config);
  /// @brief Stops and joins the receive thread if it runs.
  ~NetDevice() override;

  /// @brief VIRTIO_ID_NET (1).
  [[nodiscard]] std::uint16_t device_type() const override;
  /// @brief `kCommonFeatures`, VIRTIO_NET_F_MAC and VIRTIO_NET_F_STATUS.
  [[nodiscard]] std::uint64_t features() const override;
  /// @brief Two queues of `queue_size`: receive (0) and transmit (1).
  [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override;
  /// @brief sizeof(virtio_net_config).
  [[nodiscard]] std::size_t config_size() const override;
  /// @brief Reads the configuration: `mac`, `status` = VIRTIO_NET_S_LINK_UP, every other field 0. Bytes past the
  /// structure read 0.
  void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override;
  /// @brief Takes both queues (the driver must enable both), the memory and the interrupt, sends what the driver
  /// queued before DRIVER_OK and starts the receive thread. Refused when already active or incomplete; an error
  /// leaves the device idle.
  [[nodiscard]] Result<void> activate(Activation activation) override;
  /// @brief Stops and joins the receive thread, then drops the queues, the memory and the interrupt. Frames the
  /// backend holds stay there for the next activation.
  void reset() override;
  /// @brief Queue 0: wakes the receive thread (buffers were posted). Queue 1: transmits. Others are ignored.
  void queue_notify(std::uint16_t queue_index) override;
  /// @brief "virtio-net".
  [[nodiscard]] std::string name() const override { return "virtio-net"; }

  /// @brief The configuration the device was created with.
  [[nodiscard]] const NetConfig& config() const noexcept { return config_; }
  /// @brief The counters, read now (each atomically; not a snapshot of all at one instant).
  [[nodiscard]] Stats stats() const;
  /// @brief True while activated.
  [[nodiscard]] bool active() const noexcept { return active_.load(std::memory_order_acquire); }
  /// @brief The latest thing that went wrong: a refused chain, a dropped frame, a backend error, or the ring error
  /// that stopped a queue.
  [[nodiscard]] std::optional<Error> last_error() const;

 private:
  // How a receive round ended, which decides what the thread waits for next.
  enum class RxRound : std::uint8_t {
    BackendEmpty,  // buffers are left: wait for the backend
    QueueEmpty,    // no buffers: wait for a kick, leave the backend unread
    BackendGone,   // the backend failed or hung up: wait for kicks and the stop request only
    Failed,        // a ring error: needs_reset was called, the queue is left alone
  };

  NetDevice(std::shared_ptr<NetBackend> backend, NetConfig config, event::EventFd rx_kick, event::EventFd stop);

  // Stops and joins the receive thread (lifecycle lock held); drains the eventfds it watched.
  void stop_rx_thread();
  // Drains the transmit queue (transmit lock held).
  void transmit_locked();
  // Sends one transmit chain, or counts why not; never fails the queue.
  void transmit_chain(const DescriptorChain& chain);
  // The receive thread's body: epoll on the backend, the kick and the stop eventfd.
  void rx_loop(Fd epoll);
  // Fills receive chains with frames until either runs out (receive thread).
  RxRound receive_round();
  // Puts one frame (`rx_buffer_`, `length` bytes) into `chain`: the bytes written, 0 if it was dropped.
  std::uint32_t deliver(const DescriptorChain& chain, std::size_t length);
  // Tells the driver about the used entries added to `queue`, if it wants to be told; a ring error is returned.
  [[nodiscard]] Result<void> signal_used(SplitQueue& queue, std::uint16_t index);
  // A ring error on queue `index`: remember it and tell the transport (the caller stops using the queue).
  void fail_queue(std::uint16_t index, Error error);
  // Adds `n` to one of the counters (from the transmit caller or the receive thread: atomically).
  void count(std::uint64_t Stats::*counter, std::uint64_t n = 1) noexcept;
  // Keeps `error` as last_error (its own lock: a leaf, taken under the transmit lock, never the other way round).
  void remember(Error error);

  std::shared_ptr<NetBackend> backend_;
  NetConfig config_;
  event::EventFd rx_kick_;  // queue_notify(0) writes it, the receive thread reads it
  event::EventFd stop_;     // reset and the destructor write it, the receive thread returns

  std::mutex lifecycle_mutex_;  // activate, reset, the destructor
  std::thread rx_thread_;       // lifecycle_mutex_

  // Set by activate and cleared by reset, with the transmit lock held and no receive thread running: the receive
  // thread reads them freely, the transmit path under the transmit lock.
  const memory::GuestMemory* memory_ = nullptr;
  std::shared_ptr<VirtioInterrupt> interrupt_;
  std::function<void(const Error&)> needs_reset_;
  std::optional<SplitQueue> rx_queue_;  // the receive thread's while it runs
  std::vector<std::byte> rx_buffer_;    // one frame, plus one byte to see a frame that was too long

  std::mutex tx_mutex_;
  std::optional<SplitQueue> tx_queue_;  // tx_mutex_
  bool tx_failed_ = false;              // tx_mutex_: a ring error was reported, kicks are ignored until reset
  std::vector<std::byte> tx_buffer_;    // tx_mutex_: the frame being sent

  std::atomic<bool> active_{false};
  // Written by the transmit caller and the receive thread at once: only through std::atomic_ref (count, stats).
  mutable Stats counters_;
  mutable std::mutex error_mutex_;
  std::optional<Error> last_error_;  // error_mutex_
};

}  // namespace vmm::virtio::net
