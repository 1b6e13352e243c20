#pragma once
/// @file
/// @brief `NetDevice`: virtio-net (virtio 1.2, 5.1) on a `NetBackend` (a tap), without offloads.

// uapi.hpp first: it sets the macros the kernel's virtio headers need to compile as C++.
#include "vmm/virtio/uapi.hpp"

// <linux/virtio_net.h> has a field named `class` (the control queue's header), a C++ keyword: it is renamed while
// the header is read. The control queue is not offered, so nothing uses it.
/// @cond
#define class class_
#include <linux/virtio_net.h>
#undef class
/// @endcond

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "vmm/event/event_fd.hpp"
#include "vmm/virtio/net/tap.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::virtio::net {

/// @brief How to build the device.
struct NetConfig {
  std::array<std::uint8_t, 6> mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};  ///< The guest's MAC address.
  std::uint16_t queue_size = 256;                                       ///< Each queue's maximum size.
};

/// @brief virtio-net with one receive queue (0) and one transmit queue (1), VIRTIO_NET_F_MAC and _STATUS only.
///
/// Without offloads or mergeable buffers, every frame fits in one chain: the driver posts receive buffers of a
/// header plus a full Ethernet frame, and sends one chain per frame. Every chain is [virtio_net_hdr_v1][frame],
/// which is also what the tap reads and writes (IFF_VNET_HDR with a 12-byte header), so frames are copied, never
/// translated.
///
/// Transmit runs on the thread that delivers the kick (the `ThreadedDevice` worker in final-vmm). Receive has its
/// own thread while active, polling the backend and an eventfd the receive queue's kicks write: it waits for frames
/// only while the guest has posted buffers, so a guest that stops reading leaves frames in the tap instead of
/// spinning the thread.
///
/// Guest data is checked: a transmit chain with device-writable buffers, shorter than the header or longer than
/// `kMaxFrameBytes`, is dropped (used with length 0, counted, `last_error`); a frame larger than the receive buffer
/// is dropped the same way. Ring errors (a bad chain, an index that jumps) stop the queue and report
/// `needs_reset`. The buffers are read and written through `GuestMemory` only.
class NetDevice final : public VirtioDevice {
 public:
  /// @brief What the device did.
  struct Stats {
    std::uint64_t tx_frames = 0;   ///< Frames sent to the backend.
    std::uint64_t tx_bytes = 0;    ///< Their bytes, headers included.
    std::uint64_t tx_dropped = 0;  ///< Transmit chains refused.
    std::uint64_t rx_frames = 0;   ///< Frames delivered to the guest.
    std::uint64_t rx_bytes = 0;    ///< Their bytes, headers included.
    std::uint64_t rx_dropped = 0;  ///< Frames that did not fit the guest's buffer.
  };

  /// @brief A device on `backend`. Refused for a queue size that is not a power of two.
  [[nodiscard]] static Result<std::shared_ptr<NetDevice>> create(std::shared_ptr<NetBackend> backend, NetConfig config);
  /// @brief Stops the receive thread.
  ~NetDevice() override;

  /// @brief VIRTIO_ID_NET (1).
  [[nodiscard]] std::uint16_t device_type() const override { return VIRTIO_ID_NET; }
  /// @brief `kCommonFeatures`, MAC and STATUS.
  [[nodiscard]] std::uint64_t features() const override;
  /// @brief Two queues.
  [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override;
  /// @brief The MAC and status fields of virtio_net_config.
  [[nodiscard]] std::size_t config_size() const override;
  /// @brief mac, status = LINK_UP; the rest 0.
  void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override;
  /// @brief Starts the receive thread and sends what the driver queued already.
  [[nodiscard]] Result<void> activate(Activation activation) override;
  /// @brief Stops the receive thread; drops the queues.
  void reset() override;
  /// @brief Queue 0: wake the receive thread (new buffers). Queue 1: transmit.
  void queue_notify(std::uint16_t queue_index) override;
  /// @brief "virtio-net".
  [[nodiscard]] std::string name() const override { return "virtio-net"; }

  /// @brief The counters.
  [[nodiscard]] Stats stats() const;
  /// @brief The last dropped chain or backend error.
  [[nodiscard]] std::optional<Error> last_error() const;

 private:
  NetDevice(std::shared_ptr<NetBackend> backend, NetConfig config, event::EventFd rx_kick, event::EventFd stop)
      : backend_(std::move(backend)), config_(config), rx_kick_(std::move(rx_kick)), stop_(std::move(stop)) {}
  void transmit_locked();
  // Moves frames into receive buffers until either runs out; returns true when it stopped for lack of buffers.
  bool receive_locked();
  void rx_loop();
  void fail_locked(Error error);
  void notify_locked(std::uint16_t queue);

  std::shared_ptr<NetBackend> backend_;
  NetConfig config_;
  event::EventFd rx_kick_;
  event::EventFd stop_;

  mutable std::mutex mutex_;  // the activation, both queues, last_error_
  std::optional<Activation> activation_;
  bool failed_ = false;
  std::optional<Error> last_error_;
  std::vector<std::byte> rx_buffer_ = std::vector<std::byte>(kMaxFrameBytes);
  std::vector<std::byte> tx_buffer_ = std::vector<std::byte>(kMaxFrameBytes);
  std::thread rx_thread_;

  std::atomic<std::uint64_t> tx_frames_{0}, tx_bytes_{0}, tx_dropped_{0}, rx_frames_{0}, rx_bytes_{0}, rx_dropped_{0};
};

}  // namespace vmm::virtio::net
