#pragma once
/// @file
/// @brief `BackendHandler`: one vhost-user session on the backend side. It turns the frontend's messages (memory
/// table, vring setup, features) into `virtio::Activation`s of an ordinary `virtio::VirtioDevice`, and runs one worker
/// thread per ring while the device is active.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/vhost/backend/memory_table.hpp"
#include "vmm/vhost/backend/vring.hpp"
#include "vmm/vhost/connection.hpp"
#include "vmm/vhost/protocol.hpp"
#include "vmm/virtio/queue_counters.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::vhost {

/// @brief What a backend offers beyond its device model.
struct BackendOptions {
  /// @brief Protocol features offered in GET_PROTOCOL_FEATURES. The default is what QEMU's vhost-user-blk needs
  /// (CONFIG) and what QEMU 7.2 uses when offered (MQ, REPLY_ACK, CONFIGURE_MEM_SLOTS). Never INFLIGHT_SHMFD: QEMU
  /// then insists on GET_INFLIGHT_FD. CONFIG is dropped for a device whose `config_size()` is 0 (QEMU warns about a
  /// vhost-user-rng backend that offers it).
  std::uint64_t protocol_features = bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck) |
                                    bit(ProtocolFeature::Config) | bit(ProtocolFeature::ConfigureMemSlots);
  /// @brief GET_MAX_MEM_SLOTS' answer, and the most regions a memory table may hold.
  std::uint32_t max_mem_slots = 32;
  /// @brief `--trace-vhost-user`: messages (the daemon's `Connection` uses it) and the handler's notes (activations,
  /// refusals, device errors). Called from the session thread and from ring workers.
  Tracer tracer;
  /// @brief One line per thing that went wrong (a refused request, a device error, a broken kick fd), whether or not
  /// tracing is on; null: nowhere. Called from the session thread and from ring workers.
  TraceSink warn;
};

/// @brief One session's state, with no socket inside: tests drive it message by message, the `Daemon` feeds it what
/// a `Connection` receives.
///
/// Design (in the spirit of rust-vmm's vhost-user-backend, with its "backend" replaced by vmmlab's own
/// `VirtioDevice`): the device model is the very one the in-process virtio-pci transport drives. It does not know
/// whether virtio-pci in the VMM or vhost-user in another process carries it: both hand it an `Activation` (memory,
/// features, validated queues, an interrupt). This class plays the transport:
///
/// - memory: SET_MEM_TABLE replaces the table, ADD_MEM_REG / REM_MEM_REG (with CONFIGURE_MEM_SLOTS) change one
///   region (`BackendMemoryTable`);
/// - rings: SET_VRING_NUM / ADDR / BASE / KICK / CALL / ERR / ENABLE fill a `Vring` each; a ring is *ready* when it
///   has a size, addresses, a kick fd and is enabled (without VHOST_USER_F_PROTOCOL_FEATURES rings are enabled from
///   the start, with it they wait for SET_VRING_ENABLE 1);
/// - activation: whenever the set of ready rings (or their configuration, the memory or the features) changes, the
///   device is stopped if it ran (workers joined, `reset`), and activated again with a `SplitQueue` for every ready
///   ring whose addresses translate into guest memory, started at its base. The result never depends on the order of
///   messages: QEMU and DPDK order them differently (memory before or after the rings, ENABLE before or after KICK).
///   The call fd may change at any time without a restart;
/// - stopping: GET_VRING_BASE stops the ring (its kick fd is dropped; a new SET_VRING_KICK restarts it) and answers
///   where it stopped.
///
/// Errors: a request that breaks a rule (queue index out of range, a size that is not a power of two, overlapping
/// regions, a ring outside guest memory, feature bits never offered...) is refused with an error naming the request
/// and the values, and changes nothing. A device error (the driver broke a ring rule) arrives through
/// `Activation::needs_reset`: every ring's err fd is written and the error is kept (`last_error`). vmmlab's backend
/// has no backend-to-frontend channel, so a configuration change notification has nowhere to go: it is counted.
///
/// Threads: `handle`, `serve` and `disconnect` run on the session's thread, serialised by one mutex that also makes
/// every accessor below safe from any thread. Ring workers never take that mutex: they call into the device (which
/// has its own locks), write call/err fds under each ring's own leaf lock, and report errors under a leaf lock. So
/// the session thread may join a worker while holding the mutex without deadlock. (The trace and warn sinks are
/// called from workers too, possibly with the device's lock held: they must not call back into the handler.)
class BackendHandler {
 public:
  /// @brief A handler for `device` (required: one ring per `queue_max_sizes()` entry, up to 256). Options are checked:
  /// protocol features must include none the handler cannot do (only MQ, REPLY_ACK, CONFIG, CONFIGURE_MEM_SLOTS and
  /// RESET_DEVICE are implemented), and `max_mem_slots` must be at least 1.
  [[nodiscard]] static Result<std::unique_ptr<BackendHandler>> create(std::shared_ptr<virtio::VirtioDevice> device,
                                                                      BackendOptions options);
  BackendHandler(const BackendHandler&) = delete;
  BackendHandler& operator=(const BackendHandler&) = delete;
  BackendHandler(BackendHandler&&) = delete;
  BackendHandler& operator=(BackendHandler&&) = delete;
  /// @brief Stops the workers and resets the device (as `disconnect`).
  ~BackendHandler();

  /// @brief Handles one decoded request. On success returns the reply to send, if any: the request's own reply
  /// (GET_FEATURES, GET_VRING_BASE, GET_CONFIG...), or, when REPLY_ACK is negotiated and the request has `kNeedReply`
  /// and no reply of its own, an ack of 0. On failure returns the error and changes nothing; the frontend may still
  /// be waiting for an answer then, which `serve` (what the daemon calls) gives. Either way a refusal is kept
  /// (`last_error`), counted (`refused`), traced and sent to `BackendOptions::warn`.
  [[nodiscard]] Result<std::optional<Message>> handle(Message request);

  /// @brief `handle`, answering a refused request as the frontend expects, since a frontend waiting for a reply
  /// would otherwise hang: an ack of 1 when it asked for one (REPLY_ACK negotiated, `kNeedReply`); for a request with
  /// a reply of its own, that reply in a failed form: GET_VRING_BASE with num 0, GET_CONFIG with no bytes (QEMU
  /// takes a size that differs from the one asked for as a failure), the u64 GETs with 0.
  [[nodiscard]] std::optional<Message> serve(Message request);

  /// @brief The frontend is gone: stop the workers, reset the device, close every ring fd, unmap the memory, forget
  /// the features, the protocol features and the owner. The handler is then ready for a new frontend. Cumulative
  /// counters, `activations` and `last_error` stay.
  void disconnect();

  /// @brief Virtio features offered in GET_FEATURES: the device's plus VHOST_USER_F_PROTOCOL_FEATURES (bit 30).
  [[nodiscard]] std::uint64_t offered_features() const;
  /// @brief SET_FEATURES' value (bit 30 included), 0 before it.
  [[nodiscard]] std::uint64_t acked_features() const;
  /// @brief True once SET_FEATURES was accepted (in this session).
  [[nodiscard]] bool features_set() const;
  /// @brief SET_PROTOCOL_FEATURES' value, 0 before it.
  [[nodiscard]] std::uint64_t protocol_features() const;
  /// @brief True after SET_OWNER (until RESET_OWNER or a disconnect).
  [[nodiscard]] bool owned() const;
  /// @brief True while the device is activated (with at least one ring).
  [[nodiscard]] bool running() const;
  /// @brief Number of rings (the device's queues).
  [[nodiscard]] std::size_t queue_count() const noexcept { return max_sizes_.size(); }
  /// @brief Every ring's state.
  [[nodiscard]] std::vector<VringSnapshot> rings() const;
  /// @brief Ring `index`'s state (`index` < `queue_count()`).
  [[nodiscard]] VringSnapshot ring(std::uint16_t index) const;
  /// @brief The memory regions, sorted by guest-physical address.
  [[nodiscard]] std::vector<MemoryRegion> memory_regions() const;
  /// @brief Every ring's counters over the handler's life (`VringSnapshot::counters`).
  [[nodiscard]] std::vector<virtio::QueueCountersSnapshot> queue_counters() const;
  /// @brief The latest error: a refused request, a device error, a broken kick fd.
  [[nodiscard]] std::optional<Error> last_error() const;
  /// @brief Successful device activations so far.
  [[nodiscard]] std::uint64_t activations() const;
  /// @brief Requests refused so far.
  [[nodiscard]] std::uint64_t refused() const;
  /// @brief Configuration-change notifications the device raised (dropped: no backend channel).
  [[nodiscard]] std::uint64_t config_signals() const;
  /// @brief Times the device reported that it needs a reset.
  [[nodiscard]] std::uint64_t needs_reset_reports() const;
  /// @brief The thread ids of the running ring workers.
  [[nodiscard]] std::vector<pid_t> worker_tids() const;
  /// @brief The device model.
  [[nodiscard]] const std::shared_ptr<virtio::VirtioDevice>& device() const noexcept { return device_; }

 private:
  struct Shared;
  class Interrupt;

  BackendHandler(std::shared_ptr<virtio::VirtioDevice> device, BackendOptions options,
                 std::vector<std::uint16_t> max_sizes);

  // Everything *_locked runs with mutex_ held.
  [[nodiscard]] Result<std::optional<Message>> dispatch_locked(Message& request);
  [[nodiscard]] Result<std::optional<Message>> set_features_locked(std::uint64_t features);
  [[nodiscard]] Result<std::optional<Message>> set_protocol_features_locked(std::uint64_t features);
  [[nodiscard]] Result<std::optional<Message>> set_mem_table_locked(Message& request);
  [[nodiscard]] Result<std::optional<Message>> add_mem_reg_locked(Message& request);
  [[nodiscard]] Result<std::optional<Message>> rem_mem_reg_locked(const Message& request);
  [[nodiscard]] Result<std::optional<Message>> set_vring_num_locked(const Message& request);
  [[nodiscard]] Result<std::optional<Message>> set_vring_addr_locked(const Message& request);
  [[nodiscard]] Result<std::optional<Message>> set_vring_base_locked(const Message& request);
  [[nodiscard]] Result<std::optional<Message>> get_vring_base_locked(const Message& request);
  [[nodiscard]] Result<std::optional<Message>> set_vring_fd_locked(Message& request);
  [[nodiscard]] Result<std::optional<Message>> set_vring_enable_locked(const Message& request);
  [[nodiscard]] Result<std::optional<Message>> get_config_locked(const Message& request);
  [[nodiscard]] Result<std::optional<Message>> set_config_locked(const Message& request);

  // The ring a per-ring request names, or an error naming the request and the index.
  [[nodiscard]] Result<Vring*> ring_locked(std::uint64_t index, Request request);
  // The vring state a per-ring request carries, and the ring it names.
  [[nodiscard]] Result<std::pair<const vhost_vring_state*, Vring*>> vring_state_locked(const Message& request);
  // The three areas of `ring` as guest-physical addresses (needs memory, a size and addresses).
  [[nodiscard]] Result<virtio::QueueLayout> translate_locked(const Vring& ring, std::uint16_t num,
                                                             const vhost_vring_addr& addr) const;
  // Enabled by default: VHOST_USER_F_PROTOCOL_FEATURES was not negotiated.
  [[nodiscard]] bool enabled_by_default_locked() const noexcept;
  [[nodiscard]] bool ready_locked(const Vring& ring) const noexcept;
  [[nodiscard]] bool negotiated_locked(ProtocolFeature feature) const noexcept;
  // Applies a change to one ring, stopping the device first if the ring runs and restarting it afterwards if the
  // set of ready rings changed.
  template <typename Apply>
  void update_ring_locked(Vring& ring, Apply apply);
  // Applies a change to memory or features: stop if running, apply, start again.
  template <typename Apply>
  void restart_locked(Apply apply);
  // Activates the device with every ready ring (no-op when running, or with no memory, no features or no ready ring).
  void start_locked();
  // Joins the workers, resets the device and records where each ring stopped (no-op when not running).
  void stop_locked();
  // RESET_OWNER, RESET_DEVICE and disconnect: back to a fresh session (protocol features and owner too if `all`).
  void reset_session_locked(bool all);

  std::shared_ptr<virtio::VirtioDevice> device_;
  BackendOptions options_;
  std::vector<std::uint16_t> max_sizes_;
  std::shared_ptr<Shared> shared_;  // the rings, the error and the tracer: what workers and the interrupt use

  mutable std::mutex mutex_;  // the session state below
  std::uint64_t acked_features_ = 0;
  bool features_set_ = false;
  std::uint64_t protocol_features_ = 0;
  bool owned_ = false;
  BackendMemoryTable memory_;
  bool running_ = false;
  std::vector<std::unique_ptr<VringWorker>> workers_;
  std::uint64_t activations_ = 0;
  std::uint64_t refused_ = 0;
};

}  // namespace vmm::vhost
