#pragma once
/// @file
/// @brief `VhostUserFrontend`: a `VirtioDevice` whose queues are served by a vhost-user backend in another process.
/// The VMM's transport drives it like any in-process device; it forwards feature and configuration negotiation to
/// the backend and hands it the guest's memory (memfds) and the queues' eventfds, so that the data path (kicks, ring
/// processing, interrupts) never passes through the VMM.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/vhost/connection.hpp"
#include "vmm/vhost/protocol.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::vhost {

/// @brief How to connect a frontend: where the backend listens, and what the VMM knows about the device (vhost-user
/// does not say which device a backend implements, nor how many bytes of configuration it has).
struct FrontendConfig {
  std::string socket_path;         ///< The backend's unix socket (shorter than 108 bytes).
  std::uint16_t device_type = 0;   ///< VIRTIO_ID_* of the device behind the socket (2: block, 4: rng...).
  std::uint16_t queues = 1;        ///< How many queues the device has (1..256; checked against GET_QUEUE_NUM with MQ).
  std::uint16_t queue_size = 256;  ///< The maximum size of each queue (a power of two up to 32768).
  /// Bytes of device configuration to fetch with GET_CONFIG at connect (at most 256; needs the CONFIG protocol
  /// feature). 0: the device has no configuration.
  std::uint32_t config_size = 0;
  std::chrono::milliseconds connect_timeout{5000};  ///< How long `connect` retries while the socket is not there.
  std::chrono::milliseconds reply_timeout{5000};    ///< How long each request waits for its reply (or for sending).
  Tracer tracer;                                    ///< Where `--trace-vhost-user` lines go (default: nowhere).
};

/// @brief What a frontend has done so far, for tests, traces and the demo.
struct FrontendStats {
  std::uint64_t messages_sent = 0;       ///< Messages sent on the socket (requests).
  std::uint64_t messages_received = 0;   ///< Messages received (replies and acks).
  std::uint64_t relayed_interrupts = 0;  ///< Relay call eventfd reads turned into `VirtioInterrupt::signal_queue`.
  std::uint64_t fallback_kicks = 0;      ///< `queue_notify` calls (notifications that reached the VMM as MMIO exits).
  std::uint64_t backend_errors = 0;      ///< Writes the backend made to an error eventfd (SET_VRING_ERR).
  std::uint64_t disconnects = 0;         ///< Times the connection was lost (0 or 1: a frontend never reconnects).
  std::uint64_t call_switches = 0;       ///< SET_VRING_CALLs sent by `update_call` (call fd re-pointed).
  /// @brief Equal when every counter is.
  bool operator==(const FrontendStats&) const = default;
};

/// @brief A virtio device served by a vhost-user backend ("vhost-user-blk", "vhost-user-rng"...).
///
/// **Connecting** (`connect`): GET_FEATURES (VIRTIO_F_VERSION_1 required); if the backend offers bit 30,
/// GET_PROTOCOL_FEATURES and SET_PROTOCOL_FEATURES with what both sides support of MQ, REPLY_ACK and CONFIG (memory
/// goes in one SET_MEM_TABLE, so CONFIGURE_MEM_SLOTS is not used); GET_QUEUE_NUM with MQ; SET_OWNER; GET_CONFIG
/// when the VMM expects configuration bytes (kept in a cache the driver reads; a backend without the CONFIG protocol
/// feature is refused then, rather than showing the driver a configuration of zeros). Then the event thread starts.
///
/// **Features** offered to the driver: the backend's, restricted to the device-specific bits 0..23 and
/// `virtio::kCommonFeatures`. Bit 30 (a vhost-user bit, not a virtio one), LOG_ALL, NOTIFY_ON_EMPTY, RING_PACKED and
/// ACCESS_PLATFORM are never offered: the transport and the memory model here do not implement what they promise.
///
/// **Activation** (the driver set DRIVER_OK): SET_FEATURES (the driver's features, plus bit 30 when protocol features
/// were negotiated), SET_MEM_TABLE with every guest memory region (each must have an fd: memfd-backed memory), then
/// for each enabled queue SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR (the rings' addresses in *this* process,
/// which the backend translates through the memory table), SET_VRING_KICK (`kick_event`), SET_VRING_CALL (the call
/// source's eventfd, or the frontend's relay) and SET_VRING_ERR; finally SET_VRING_ENABLE 1 for each when protocol
/// features were negotiated (otherwise rings start enabled). With REPLY_ACK every SET_* asks for an ack, so a backend
/// that refuses something fails the activation (the transport then refuses DRIVER_OK and sets DEVICE_NEEDS_RESET)
/// instead of failing silently later.
///
/// **Reset**: SET_VRING_ENABLE 0 and GET_VRING_BASE for each started queue (the backend stops the ring and answers
/// where it stopped), then the activation's interrupt and error callback are forgotten.
///
/// **The event thread** ("vu-frontend", started at connect) watches the socket for a hangup, the relay call
/// eventfds (each read becomes `signal_queue(q)`: the VMM in the interrupt path, for queues without an irqfd), the
/// error eventfds (a write means the backend gave up on a queue: `Activation::needs_reset`) and a stop eventfd.
///
/// **Disconnection**: when the backend goes away (hangup on the socket), or an exchange fails in a way that leaves
/// the stream unusable (EPIPE, ECONNRESET, a timeout, a malformed header), the frontend shuts the socket down and
/// marks itself disconnected for good; an active device reports `needs_reset` (DEVICE_NEEDS_RESET for the driver).
/// The VMM keeps running: configuration reads return the cache, `reset` works locally, `activate` fails cleanly.
///
/// **Locking**: `activate`, `reset`, the destructor and the setters are serialised by a lifecycle mutex; socket
/// exchanges by a channel mutex (one request/reply at a time, each bounded by `reply_timeout`); the activation's
/// interrupt and error callback by a third mutex, which the event thread holds while calling them, so that once
/// `reset` has returned nothing reaches the transport on behalf of the old activation. That is deadlock-free because
/// the transport never calls back into the device from those callbacks and never holds its own locks while calling
/// the device. `queue_notify` takes no lock.
class VhostUserFrontend final : public virtio::VirtioDevice {
 public:
  /// @brief Connects to the backend at `config.socket_path` and negotiates (see the class comment), then starts the
  /// event thread. Errors name the step ("GET_FEATURES", "SET_OWNER"...) and the socket.
  [[nodiscard]] static Result<std::shared_ptr<VhostUserFrontend>> connect(FrontendConfig config);
  /// @brief Stops the event thread; if active and connected, stops the rings (best effort, bounded by the reply
  /// timeout); closes the socket.
  ~VhostUserFrontend() override;

  /// @brief `FrontendConfig::device_type`.
  [[nodiscard]] std::uint16_t device_type() const override;
  /// @brief The backend's features restricted to bits 0..23 and `virtio::kCommonFeatures` (VERSION_1 always in).
  [[nodiscard]] std::uint64_t features() const override;
  /// @brief `FrontendConfig::queues` entries of `FrontendConfig::queue_size`.
  [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override;
  /// @brief `FrontendConfig::config_size`.
  [[nodiscard]] std::size_t config_size() const override;
  /// @brief Reads from the configuration fetched at connect (and updated by successful writes); bytes outside it
  /// read 0.
  void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override;
  /// @brief SET_CONFIG to the backend; the cache takes the bytes once the backend accepted them (with REPLY_ACK: it
  /// acked; without: the message went out). A refused or failed write is dropped and kept in `last_error`; when
  /// disconnected the write is dropped (traced).
  void write_config(std::uint64_t offset, std::span<const std::uint8_t> data) override;
  /// @brief Hands the backend the memory and the enabled queues (see the class comment). Refused, leaving the device
  /// idle, when disconnected, when a memory region has no fd (anonymous memory), there are more than 8 regions, a
  /// ring is not inside one region, or the backend refuses or does not answer a step. The `SplitQueue`s are only
  /// read for their layouts (the backend owns the rings now); `interrupt` and `needs_reset` are kept until `reset`.
  [[nodiscard]] Result<void> activate(virtio::Activation activation) override;
  /// @brief Stops the started rings (when connected), forgets the activation and drains the relay and error
  /// eventfds. Bounded by the reply timeout.
  void reset() override;
  /// @brief The MMIO fallback (no ioeventfd for this queue): writes the queue's kick eventfd, which the backend
  /// watches. Never blocks.
  void queue_notify(std::uint16_t queue_index) override;
  /// @brief "vhost-user-blk", "vhost-user-rng", or "vhost-user-<type>".
  [[nodiscard]] std::string name() const override;

  /// @brief Queue `queue`'s kick eventfd: created at connect and kept, so the VMM can register it as the queue's
  /// ioeventfd (`virtio::NotifyIoeventfds`) once. `queue` must be below `queue_count()` (aborts otherwise).
  [[nodiscard]] const event::EventFd& kick_event(std::uint16_t queue) const;
  /// @brief Number of queues.
  [[nodiscard]] std::uint16_t queue_count() const noexcept;
  /// @brief Where queue q's interrupts go: `source(q)` returns the eventfd to hand the backend as the call fd (the VMM
  /// returns the irqfd of the MSI-X vector the driver chose, so KVM injects without the VMM), or nullptr for the
  /// frontend's own relay eventfd (then the event thread signals the transport). Called during `activate`, with no
  /// lock of the transport held; set it while the device is idle. The VMM calls `update_call` when the answer may
  /// have changed (the guest masked or unmasked the vector).
  void set_call_source(std::function<const event::EventFd*(std::uint16_t queue)> source);
  /// @brief Asks the call source again for queue `queue` and, while the device is active and the answer changed,
  /// re-points the backend's call fd with SET_VRING_CALL (QEMU does the same when the guest masks a vector). Switching
  /// to the relay also writes it once: what the backend sent to the old eventfd after it stopped being delivered (a
  /// masked vector's irqfd has no route) is gone, so the frontend raises one interrupt in its place, which the
  /// transport keeps pending while the vector is masked. A surplus interrupt is harmless (the driver finds no new used
  /// buffers); a lost one can stall the driver. Writes to the relay stay honoured after switching back. Does
  /// nothing when idle, disconnected or for a queue that was not started. Errors come from the exchange.
  [[nodiscard]] Result<void> update_call(std::uint16_t queue);
  /// @brief Called with true at the end of a successful `activate` and with false at the start of the `reset` that
  /// follows (`virtio::NotifyIoeventfds::set_active` hooks in here, as with `virtio::ThreadedDevice`), with the
  /// lifecycle mutex held: the observer must not call `activate`, `reset` or a setter. Set it while idle.
  void set_activation_observer(std::function<void(bool active)> observer);

  /// @brief False once the backend went away (a frontend does not reconnect).
  [[nodiscard]] bool connected() const noexcept;
  /// @brief True between a successful `activate` and the next `reset`.
  [[nodiscard]] bool active() const;
  /// @brief What GET_FEATURES answered, unmasked.
  [[nodiscard]] std::uint64_t backend_features() const noexcept;
  /// @brief The protocol features in use (what SET_PROTOCOL_FEATURES sent; 0 without bit 30).
  [[nodiscard]] std::uint64_t protocol_features() const noexcept;
  /// @brief What GET_QUEUE_NUM answered (nothing without MQ).
  [[nodiscard]] std::optional<std::uint64_t> backend_queue_num() const noexcept;
  /// @brief Where the backend said queue `queue` stopped (GET_VRING_BASE at the last reset), if it was asked.
  [[nodiscard]] std::optional<std::uint32_t> stopped_vring_base(std::uint16_t queue) const;
  /// @brief The latest error: a disconnection, a refused or failed exchange, a backend-reported queue error.
  [[nodiscard]] std::optional<Error> last_error() const;
  /// @brief The counters.
  [[nodiscard]] FrontendStats stats() const noexcept;
  /// @brief The event thread's thread ID (gettid), while it runs.
  [[nodiscard]] std::optional<pid_t> event_thread_tid() const noexcept;

 private:
  class Subscriber;
  struct QueueFds {
    event::EventFd kick;   // the backend reads it: the driver's notifications
    event::EventFd relay;  // the backend writes it when no call source is set: the event thread signals
    event::EventFd err;    // the backend writes it on a queue error: the event thread reports needs_reset
  };

  VhostUserFrontend(FrontendConfig config, Connection connection, std::vector<QueueFds> queue_fds,
                    event::EventFd stop_event);

  // The handshake `connect` runs before the event thread starts.
  [[nodiscard]] Result<void> handshake();
  // Starts the event thread (and waits until it runs).
  [[nodiscard]] Result<void> start_event_thread();

  // One request, and its reply if it has one: a GET_*'s answer, or the ack of a SET_* sent with kNeedReply (checked:
  // non-zero is a refusal). `step` names what is going on for errors. Takes channel_mutex_. A failure that leaves
  // the stream unusable disconnects.
  [[nodiscard]] Result<Message> exchange(Message message, std::string_view step);
  [[nodiscard]] Result<Message> exchange_locked(Message message, std::string_view step);
  // A SET_* request carrying `payload` and `fds`, with kNeedReply when REPLY_ACK is in use.
  [[nodiscard]] Result<void> set(Request request, Payload payload, std::vector<Fd> fds = {});
  // The rings of the queues in `started_` stopped (SET_VRING_ENABLE 0, GET_VRING_BASE); best effort.
  void stop_rings_locked();
  // The activation ends: forget the interrupt and the error callback (activation_mutex_).
  void forget_activation();
  // Empties the relay, error and kick eventfds (stale events must not reach the next activation).
  void drain_events();

  // The connection is lost (hangup, or an exchange failure that leaves the stream unusable): shut the socket down,
  // keep `error` for last_error (the first one only), count it. Idempotent.
  void mark_disconnected(const Error& error);
  // Keeps `error` for last_error.
  void record_error(Error error);
  // ENOTCONN for `step`, with the cause of the disconnection.
  [[nodiscard]] Error disconnected_error(std::string_view step) const;
  // Event thread: the socket hung up; a relay or error eventfd of queue q is readable.
  void on_hangup();
  void on_relay(std::uint16_t queue);
  void on_backend_error(std::uint16_t queue);

  const FrontendConfig config_;
  const std::string name_;
  std::vector<QueueFds> queue_fds_;  // fixed after construction
  event::EventFd stop_event_;

  // Set during the handshake, constant afterwards (the event thread starts after it).
  std::uint64_t backend_features_ = 0;
  std::uint64_t offered_features_ = 0;
  std::uint64_t protocol_features_ = 0;
  bool protocol_features_negotiated_ = false;  // the backend offered bit 30
  std::optional<std::uint64_t> backend_queue_num_;

  // Serialises activate, reset, the destructor and the setters.
  std::mutex lifecycle_mutex_;
  std::function<const event::EventFd*(std::uint16_t)> call_source_;  // lifecycle_mutex_
  std::function<void(bool)> observer_;                               // lifecycle_mutex_
  std::vector<std::uint16_t> started_;        // lifecycle_mutex_: queues the backend was handed a kick fd for
  std::vector<const event::EventFd*> calls_;  // lifecycle_mutex_: the call eventfd each queue's backend has now
  std::atomic<bool> active_{false};           // written with lifecycle_mutex_ held

  // One exchange at a time on the socket.
  mutable std::mutex channel_mutex_;
  Connection connection_;  // channel_mutex_ for send/receive; shutdown() and socket() are safe from any thread

  // What the event thread needs of the activation; held while calling them (see the class comment).
  mutable std::mutex activation_mutex_;
  std::shared_ptr<virtio::VirtioInterrupt> interrupt_;  // activation_mutex_
  std::function<void(const Error&)> needs_reset_;       // activation_mutex_
  std::vector<bool> relayed_;  // activation_mutex_: queue q's relay was handed out in this activation (honoured)
  bool reported_ = false;      // activation_mutex_: needs_reset was called for this activation (once is enough)

  mutable std::mutex config_mutex_;
  std::vector<std::uint8_t> config_cache_;  // config_mutex_

  mutable std::mutex state_mutex_;
  std::optional<Error> last_error_;                          // state_mutex_
  std::optional<Error> disconnect_cause_;                    // state_mutex_: what mark_disconnected was told
  std::vector<std::optional<std::uint32_t>> stopped_bases_;  // state_mutex_

  std::atomic<bool> connected_{true};
  std::atomic<std::uint64_t> messages_sent_{0};
  std::atomic<std::uint64_t> messages_received_{0};
  std::atomic<std::uint64_t> relayed_interrupts_{0};
  std::atomic<std::uint64_t> fallback_kicks_{0};
  std::atomic<std::uint64_t> backend_errors_{0};
  std::atomic<std::uint64_t> disconnects_{0};
  std::atomic<std::uint64_t> call_switches_{0};

  std::thread event_thread_;
  std::atomic<pid_t> event_tid_{0};
};

}  // namespace vmm::vhost
