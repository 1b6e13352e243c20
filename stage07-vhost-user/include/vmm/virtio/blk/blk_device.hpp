#pragma once
/// @file
/// @brief `BlkDevice`: virtio-blk (virtio 1.2, 5.2), a disk backed by a raw image file. The same model runs inside
/// the `vhost-user-blk` daemon and, later, in-process behind virtio-pci.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/virtio/descriptor_chain.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/virtio_device.hpp"
// uapi.hpp first: it sets the macros the kernel's virtio headers need to compile as C++.
#include <linux/virtio_blk.h>
#include "vmm/virtio/uapi.hpp"

namespace vmm::virtio::blk {

/// @brief virtio-blk's fixed sector size: `sector` in a request and `capacity` in the configuration count these.
inline constexpr std::uint64_t kSectorBytes = 512;
/// @brief Size of the request header every chain starts with (`struct virtio_blk_outhdr`: type, ioprio, sector).
inline constexpr std::uint64_t kRequestHeaderBytes = sizeof(virtio_blk_outhdr);
/// @brief Bytes the bounce buffer moves at a time when a data buffer cannot be reached with one host span (it
/// straddles two guest memory regions).
inline constexpr std::size_t kBounceBytes = 64 * 1024;

/// @brief How to build the device.
struct BlkConfig {
  std::string path;                   ///< The raw image file (or block device).
  bool read_only = false;             ///< Open O_RDONLY, offer VIRTIO_BLK_F_RO, answer writes with IOERR.
  std::string serial = "vmmlab-blk";  ///< The GET_ID answer: at most VIRTIO_BLK_ID_BYTES (20) bytes.
  std::uint16_t queue_size = 256;     ///< Maximum size of each queue: a power of two, at least 4.
  std::uint16_t queues = 1;           ///< Request queues; more than one offers VIRTIO_BLK_F_MQ and num_queues.
};

/// @brief virtio-blk over a raw image: each request queue carries chains of
/// `[virtio_blk_outhdr][data...][status byte]`.
///
/// Requests (virtio 1.2, 5.2.6): the first 16 readable bytes are the header (it may be split over descriptors:
/// VERSION_1 implies ANY_LAYOUT, so buffer boundaries mean nothing); the last byte of the chain is the status the
/// device writes; the bytes between are the data, device-writable for IN (read from the disk) and GET_ID,
/// device-readable for OUT (write to the disk), absent for FLUSH. Data lengths for IN/OUT are multiples of 512 and
/// the range must lie within the capacity, else the answer is VIRTIO_BLK_S_IOERR and the file is not touched. Unknown
/// types get VIRTIO_BLK_S_UNSUPP. Without VIRTIO_BLK_F_FLUSH negotiated the disk is write-through (each write is
/// followed by fdatasync, 5.2.6.2: the cache is writeback only when FLUSH is negotiated).
///
/// Malformed chains (the choice the spec leaves to the device):
/// - a chain whose last byte is device-writable has a place for an answer: a header shorter than 16 readable bytes,
///   or data in the wrong direction for the type, is answered VIRTIO_BLK_S_IOERR and the queue goes on;
/// - a chain without a device-writable last byte cannot be answered at all (the driver would wait for it forever):
///   that is a protocol violation, reported through `Activation::needs_reset`, and the device stops processing that
///   queue until reset. The same happens for the ring errors `SplitQueue` reports (an invalid chain, a jumping index).
///
/// Guest memory is touched only through `GuestMemory`: a data buffer inside one region is read or written by
/// pread/pwrite straight into its checked host span; one that straddles two regions goes through a bounce buffer of
/// `kBounceBytes`, copied with `GuestMemory::read`/`write`.
///
/// Threads: each queue has its own lock, so different queues may be processed concurrently (vhost-user runs one
/// worker per queue); `activate` and `reset` take every queue's lock. pread/pwrite/fdatasync on the shared file are
/// thread-safe, the statistics are atomics and `last_error` has its own lock. `needs_reset` and the interrupt are
/// called with a queue's lock held: they must not call back into the device.
class BlkDevice final : public VirtioDevice {
 public:
  /// @brief What the device did, over all activations. Each request is counted once, by its answer.
  struct Stats {
    std::uint64_t reads = 0;          ///< IN requests completed with VIRTIO_BLK_S_OK.
    std::uint64_t writes = 0;         ///< OUT requests completed with VIRTIO_BLK_S_OK.
    std::uint64_t flushes = 0;        ///< FLUSH requests completed with VIRTIO_BLK_S_OK.
    std::uint64_t get_ids = 0;        ///< GET_ID requests completed with VIRTIO_BLK_S_OK.
    std::uint64_t unsupported = 0;    ///< Requests answered VIRTIO_BLK_S_UNSUPP (unknown type).
    std::uint64_t io_errors = 0;      ///< Requests answered VIRTIO_BLK_S_IOERR (refused, or the file failed).
    std::uint64_t bytes_read = 0;     ///< Bytes copied from the image into guest memory.
    std::uint64_t bytes_written = 0;  ///< Bytes copied from guest memory into the image.
  };

  /// @brief Opens the image (O_RDWR, or O_RDONLY when `read_only`) and checks the configuration. Errors name the
  /// file and the errno (a missing file, a directory), or the setting that is wrong (a serial longer than 20 bytes,
  /// a queue size that is not a power of two of at least 4, no queues).
  [[nodiscard]] static Result<std::shared_ptr<BlkDevice>> open(BlkConfig config);

  /// @brief VIRTIO_ID_BLOCK (2).
  [[nodiscard]] std::uint16_t device_type() const override;
  /// @brief `kCommonFeatures`, SEG_MAX, BLK_SIZE, FLUSH, plus RO when read-only and MQ with several queues.
  [[nodiscard]] std::uint64_t features() const override;
  /// @brief `queues` entries of `queue_size`.
  [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override;
  /// @brief sizeof(virtio_blk_config).
  [[nodiscard]] std::size_t config_size() const override;
  /// @brief Reads the configuration: capacity (in 512-byte sectors), seg_max (queue_size - 2: header and status take
  /// a descriptor each), blk_size 512, num_queues; every other field 0. Bytes past the structure read 0.
  void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override;
  /// @brief Ignored: no writable field is offered (no CONFIG_WCE).
  void write_config(std::uint64_t offset, std::span<const std::uint8_t> data) override;
  /// @brief Takes the queues (at most `queues` entries, at least one enabled), the memory and the interrupt, then
  /// processes whatever the driver published before DRIVER_OK. Refused when already active or incomplete.
  [[nodiscard]] Result<void> activate(Activation activation) override;
  /// @brief Waits for every queue's processing to finish, then drops the queues, the memory and the interrupt.
  void reset() override;
  /// @brief Processes queue `queue_index` (ignored when idle, out of range, not enabled or failed).
  void queue_notify(std::uint16_t queue_index) override;
  /// @brief "virtio-blk".
  [[nodiscard]] std::string name() const override { return "virtio-blk"; }

  /// @brief The disk size in 512-byte sectors: the image size at `open`, rounded down to a whole sector.
  [[nodiscard]] std::uint64_t capacity_sectors() const noexcept { return capacity_sectors_; }
  /// @brief The configuration the device was opened with.
  [[nodiscard]] const BlkConfig& config() const noexcept { return config_; }
  /// @brief The counters, read now (each one atomically; not a snapshot of all of them at one instant).
  [[nodiscard]] Stats stats() const;
  /// @brief True while activated.
  [[nodiscard]] bool active() const;
  /// @brief The latest thing that went wrong: a refused request (why it got IOERR), a host I/O error, or the
  /// protocol violation that stopped a queue.
  [[nodiscard]] std::optional<Error> last_error() const;

 private:
  // One request queue: its lock, the ring while active, and its own bounce buffer (queues run concurrently).
  struct QueueState {
    std::mutex mutex;
    std::optional<SplitQueue> queue;
    bool failed = false;  // a protocol violation was reported: ignore kicks until reset
    std::vector<std::byte> bounce;
  };
  // What a request's answer is: the status byte and the data bytes written into the guest before it.
  struct Answer {
    std::uint8_t status = VIRTIO_BLK_S_OK;
    std::uint64_t written = 0;
  };
  // Bytes moved between the file and guest memory, and the error that stopped the transfer, if one did.
  struct Transfer {
    std::uint64_t done = 0;
    std::optional<Error> error;
  };
  // The statistics, bumped from every queue's thread.
  struct Counters {
    std::atomic<std::uint64_t> reads{0};
    std::atomic<std::uint64_t> writes{0};
    std::atomic<std::uint64_t> flushes{0};
    std::atomic<std::uint64_t> get_ids{0};
    std::atomic<std::uint64_t> unsupported{0};
    std::atomic<std::uint64_t> io_errors{0};
    std::atomic<std::uint64_t> bytes_read{0};
    std::atomic<std::uint64_t> bytes_written{0};
  };

  BlkDevice(BlkConfig config, Fd file, std::uint64_t capacity_sectors);

  // Every queue's lock, in index order (the only order anyone takes more than one).
  [[nodiscard]] std::vector<std::unique_lock<std::mutex>> lock_all_queues() const;
  // Serves queue `index` until its ring is empty; the queue's lock is held.
  void process_locked(std::uint16_t index);
  // Serves one chain: its used length, or the protocol violation that leaves no way to answer it.
  [[nodiscard]] Result<std::uint32_t> serve_locked(QueueState& state, const DescriptorChain& chain);
  // Decodes and executes a chain whose status byte exists; `data_in` is the writable part minus the status byte.
  [[nodiscard]] Answer execute_locked(QueueState& state, const DescriptorChain& chain,
                                      std::span<const Descriptor> data_in);
  // The IN/OUT/FLUSH/GET_ID requests.
  [[nodiscard]] Answer read_locked(QueueState& state, std::uint64_t sector, std::span<const Descriptor> data);
  [[nodiscard]] Answer write_locked(QueueState& state, std::uint64_t sector, std::span<const Descriptor> data,
                                    std::uint64_t bytes);
  [[nodiscard]] Answer flush_locked();
  [[nodiscard]] Answer get_id_locked(std::span<const Descriptor> data);
  // File <-> guest copies, direct into one region's host span where possible, else through the bounce buffer.
  [[nodiscard]] Transfer file_to_guest(QueueState& state, std::span<const Descriptor> data, std::uint64_t offset);
  [[nodiscard]] Transfer guest_to_file(QueueState& state, std::span<const Descriptor> data, std::uint64_t offset);
  // True when `bytes` (a multiple of 512) starting at `sector` lie within the capacity; overflow-safe.
  [[nodiscard]] bool in_range(std::uint64_t sector, std::uint64_t bytes) const noexcept;
  // IOERR for a request the device refuses (counted, remembered as last_error).
  [[nodiscard]] Answer refuse(std::string reason);
  // IOERR for a request the file failed (counted, remembered), with the bytes already written into the guest.
  [[nodiscard]] Answer io_failure(Error error, std::uint64_t written);
  void remember(Error error);
  // A protocol violation on queue `index`: remember it, ignore the queue until reset, tell the transport.
  void fail_locked(std::uint16_t index, Error error);

  BlkConfig config_;
  Fd file_;
  std::uint64_t capacity_sectors_;
  virtio_blk_config config_space_{};
  std::vector<std::unique_ptr<QueueState>> queues_;
  // Written only with every queue's lock held (activate, reset), so any one queue's lock is enough to read them.
  const memory::GuestMemory* memory_ = nullptr;
  std::shared_ptr<VirtioInterrupt> interrupt_;
  std::function<void(const Error&)> needs_reset_;
  std::uint64_t driver_features_ = 0;
  std::atomic<bool> active_{false};
  Counters counters_;
  mutable std::mutex error_mutex_;  // a leaf: taken under a queue's lock, never the other way round
  std::optional<Error> last_error_;
};

}  // namespace vmm::virtio::blk
