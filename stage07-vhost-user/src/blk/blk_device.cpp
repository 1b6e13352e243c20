#include "vmm/virtio/blk/blk_device.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace vmm::virtio::blk {

namespace {

using memory::GuestAddress;
using memory::GuestMemory;

// The smallest useful queue: a header, one data buffer and the status byte take three descriptors (without indirect
// tables), and the next power of two is 4. It also keeps seg_max = queue_size - 2 above 1.
constexpr std::uint16_t kMinQueueSize = 4;

// A descriptor's buffer `offset` bytes in. The chain walk checked that every buffer lies wholly inside guest memory,
// so the sum cannot wrap.
GuestAddress at(const Descriptor& buffer, std::uint64_t offset) {
  return GuestAddress(buffer.address.raw() + offset);
}

std::uint64_t total_bytes(std::span<const Descriptor> buffers) {
  std::uint64_t total = 0;
  for (const Descriptor& buffer : buffers) {
    total += buffer.length;
  }
  return total;
}

// The `length` bytes of `buffers`, taken as one byte stream, that start `skip` bytes in: the data part of a chain
// whose header or status shares a descriptor with data (any layout is allowed). Empty pieces are left out.
std::vector<Descriptor> sub_range(std::span<const Descriptor> buffers, std::uint64_t skip, std::uint64_t length) {
  std::vector<Descriptor> out;
  for (const Descriptor& buffer : buffers) {
    if (length == 0) {
      break;
    }
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    const std::uint64_t take = std::min<std::uint64_t>(buffer.length - skip, length);
    out.push_back({.address = at(buffer, skip), .length = static_cast<std::uint32_t>(take)});
    length -= take;
    skip = 0;
  }
  return out;
}

// Copies the first `out.size()` bytes of `buffers` (in chain order) out of guest memory.
Result<void> gather(const GuestMemory& memory, std::span<const Descriptor> buffers, std::span<std::byte> out) {
  std::size_t done = 0;
  for (const Descriptor& buffer : buffers) {
    if (done == out.size()) {
      break;
    }
    const std::size_t n = std::min<std::size_t>(buffer.length, out.size() - done);
    if (auto ok = memory.read(buffer.address, out.subspan(done, n)); !ok) {
      return ok;
    }
    done += n;
  }
  return {};
}

// Copies `in` into the first `in.size()` bytes of `buffers` (in chain order).
Result<void> scatter(const GuestMemory& memory, std::span<const Descriptor> buffers, std::span<const std::byte> in) {
  std::size_t done = 0;
  for (const Descriptor& buffer : buffers) {
    if (done == in.size()) {
      break;
    }
    const std::size_t n = std::min<std::size_t>(buffer.length, in.size() - done);
    if (auto ok = memory.write(buffer.address, in.subspan(done, n)); !ok) {
      return ok;
    }
    done += n;
  }
  return {};
}

// pread(2) of exactly `out.size()` bytes at `offset`, retrying EINTR and short reads. End of file before the end is
// an error (EIO): the capacity was fixed at open, so the image shrank under the device.
std::pair<std::size_t, std::optional<Error>> pread_full(int fd, std::span<std::byte> out, std::uint64_t offset,
                                                        std::string_view path) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t got = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) {
        continue;
      }
      return {done,
              Error{"pread", errno, fmt::format("{}: {} bytes at offset {}", path, out.size() - done, offset + done)}};
    }
    if (got == 0) {
      return {done, Error{"pread", EIO,
                          fmt::format("{}: end of file at offset {}, inside the disk: the image shrank since it was "
                                      "opened",
                                      path, offset + done)}};
    }
    done += static_cast<std::size_t>(got);
  }
  return {done, std::nullopt};
}

// pwrite(2) of all of `in` at `offset`, retrying EINTR and short writes.
std::pair<std::size_t, std::optional<Error>> pwrite_full(int fd, std::span<const std::byte> in, std::uint64_t offset,
                                                         std::string_view path) {
  std::size_t done = 0;
  while (done < in.size()) {
    const ssize_t put = ::pwrite(fd, in.data() + done, in.size() - done, static_cast<off_t>(offset + done));
    if (put < 0) {
      if (errno == EINTR) {
        continue;
      }
      return {done,
              Error{"pwrite", errno, fmt::format("{}: {} bytes at offset {}", path, in.size() - done, offset + done)}};
    }
    if (put == 0) {  // never for a regular file with room; without this check it would loop forever
      return {done, Error{"pwrite", EIO, fmt::format("{}: wrote 0 bytes at offset {}", path, offset + done)}};
    }
    done += static_cast<std::size_t>(put);
  }
  return {done, std::nullopt};
}

// fdatasync(2), retrying EINTR.
std::optional<Error> sync_data(int fd, std::string_view path) {
  while (::fdatasync(fd) != 0) {
    if (errno != EINTR) {
      return Error{"fdatasync", errno, std::string(path)};
    }
  }
  return std::nullopt;
}

std::string_view type_name(std::uint32_t type) {
  switch (type) {
    case VIRTIO_BLK_T_IN:
      return "IN";
    case VIRTIO_BLK_T_OUT:
      return "OUT";
    case VIRTIO_BLK_T_FLUSH:
      return "FLUSH";
    case VIRTIO_BLK_T_GET_ID:
      return "GET_ID";
    default:
      return "?";
  }
}

}  // namespace

Result<std::shared_ptr<BlkDevice>> BlkDevice::open(BlkConfig config) {
  const std::string op = "virtio-blk";
  if (config.path.empty()) {
    return logic_error(op, "no image file given");
  }
  if (config.serial.size() > VIRTIO_BLK_ID_BYTES) {
    return logic_error(op, fmt::format("serial \"{}\" is {} bytes long; GET_ID answers at most {}", config.serial,
                                       config.serial.size(), VIRTIO_BLK_ID_BYTES));
  }
  if (!std::has_single_bit(config.queue_size) || config.queue_size < kMinQueueSize) {
    return logic_error(
        op, fmt::format("queue size {} is not a power of two of at least {}", config.queue_size, kMinQueueSize));
  }
  if (config.queues == 0) {
    return logic_error(op, "at least one request queue is needed");
  }
  const std::string what = fmt::format("virtio-blk image {}{}", config.path, config.read_only ? " (read-only)" : "");
  auto file = Fd::open(config.path.c_str(), config.read_only ? O_RDONLY : O_RDWR);
  if (!file) {
    return std::unexpected(std::move(file).error().with_context(what));
  }
  struct stat info {};
  if (::fstat(file->get(), &info) != 0) {
    return sys_error("fstat", errno, what);
  }
  if (!S_ISREG(info.st_mode) && !S_ISBLK(info.st_mode)) {
    return logic_error(op, fmt::format("{} is not a regular file or a block device", config.path));
  }
  // lseek rather than st_size: it also gives a block device's size (st_size is 0 for one).
  const off_t size = ::lseek(file->get(), 0, SEEK_END);
  if (size < 0) {
    return sys_error("lseek", errno, what);
  }
  // A trailing partial sector cannot be addressed: the disk is the whole sectors.
  const std::uint64_t sectors = static_cast<std::uint64_t>(size) / kSectorBytes;
  return std::shared_ptr<BlkDevice>(new BlkDevice(std::move(config), std::move(file).value(), sectors));
}

BlkDevice::BlkDevice(BlkConfig config, Fd file, std::uint64_t capacity_sectors)
    : config_(std::move(config)), file_(std::move(file)), capacity_sectors_(capacity_sectors) {
  // Little-endian fields, as x86 stores them. Fields whose feature is not offered (size_max, geometry, topology,
  // discard...) stay 0.
  config_space_.capacity = capacity_sectors_;
  config_space_.seg_max = static_cast<std::uint32_t>(config_.queue_size - 2);  // header and status take one each
  config_space_.blk_size = static_cast<std::uint32_t>(kSectorBytes);
  config_space_.num_queues = config_.queues;
  queues_.reserve(config_.queues);
  for (std::uint16_t i = 0; i < config_.queues; ++i) {
    queues_.push_back(std::make_unique<QueueState>());
  }
}

std::uint16_t BlkDevice::device_type() const {
  return VIRTIO_ID_BLOCK;
}

std::uint64_t BlkDevice::features() const {
  std::uint64_t features =
      kCommonFeatures | (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH);
  if (config_.read_only) {
    features |= 1ull << VIRTIO_BLK_F_RO;
  }
  if (config_.queues > 1) {
    features |= 1ull << VIRTIO_BLK_F_MQ;
  }
  return features;
}

std::vector<std::uint16_t> BlkDevice::queue_max_sizes() const {
  return std::vector<std::uint16_t>(config_.queues, config_.queue_size);
}

std::size_t BlkDevice::config_size() const {
  return sizeof(virtio_blk_config);
}

void BlkDevice::read_config(std::uint64_t offset, std::span<std::uint8_t> data) const {
  std::ranges::fill(data, std::uint8_t{0});
  const auto bytes = std::as_bytes(std::span(&config_space_, 1));
  if (offset >= bytes.size()) {
    return;
  }
  const std::size_t n = std::min<std::size_t>(data.size(), bytes.size() - static_cast<std::size_t>(offset));
  std::memcpy(data.data(), bytes.data() + offset, n);
}

void BlkDevice::write_config(std::uint64_t offset, std::span<const std::uint8_t> data) {
  // Only `writeback` is writable, and only with VIRTIO_BLK_F_CONFIG_WCE, which is not offered.
  static_cast<void>(offset);
  static_cast<void>(data);
}

std::vector<std::unique_lock<std::mutex>> BlkDevice::lock_all_queues() const {
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(queues_.size());
  for (const auto& state : queues_) {
    locks.emplace_back(state->mutex);
  }
  return locks;
}

Result<void> BlkDevice::activate(Activation activation) {
  const std::string op = "virtio-blk activate";
  const auto locks = lock_all_queues();
  if (active_) {
    return logic_error(op, "already active");
  }
  if (activation.memory == nullptr || !activation.interrupt) {
    return logic_error(op, "no guest memory or no interrupt");
  }
  if (activation.queues.size() > queues_.size()) {
    return logic_error(
        op, fmt::format("{} queues handed over, the device has {}", activation.queues.size(), queues_.size()));
  }
  // A driver may use fewer queues than offered (Linux: at most one per CPU), but it must use one.
  if (std::ranges::none_of(activation.queues, [](const auto& queue) { return queue.has_value(); })) {
    return logic_error(op, "the driver enabled no request queue");
  }
  for (std::size_t i = 0; i < activation.queues.size(); ++i) {
    queues_[i]->queue = std::move(activation.queues[i]);
    queues_[i]->failed = false;
  }
  memory_ = activation.memory;
  interrupt_ = std::move(activation.interrupt);
  needs_reset_ = std::move(activation.needs_reset);
  driver_features_ = activation.features;
  active_ = true;
  // A driver may publish buffers before DRIVER_OK, and it kicked (if it did) while the device was not listening.
  for (std::size_t i = 0; i < queues_.size(); ++i) {
    process_locked(static_cast<std::uint16_t>(i));
  }
  return {};
}

void BlkDevice::reset() {
  // Declared before the locks so they are destroyed after the locks are released: the transport's objects are not
  // destroyed with the device's locks held.
  std::shared_ptr<VirtioInterrupt> interrupt;
  std::function<void(const Error&)> needs_reset;
  // Waits for any queue being processed to finish its round.
  const auto locks = lock_all_queues();
  for (const auto& state : queues_) {
    state->queue.reset();
    state->failed = false;
  }
  memory_ = nullptr;
  interrupt = std::exchange(interrupt_, nullptr);
  needs_reset = std::exchange(needs_reset_, nullptr);
  driver_features_ = 0;
  active_ = false;
}

void BlkDevice::queue_notify(std::uint16_t queue_index) {
  if (queue_index >= queues_.size()) {
    return;
  }
  std::lock_guard lock(queues_[queue_index]->mutex);
  process_locked(queue_index);
}

BlkDevice::Stats BlkDevice::stats() const {
  constexpr auto relaxed = std::memory_order_relaxed;
  return {.reads = counters_.reads.load(relaxed),
          .writes = counters_.writes.load(relaxed),
          .flushes = counters_.flushes.load(relaxed),
          .get_ids = counters_.get_ids.load(relaxed),
          .unsupported = counters_.unsupported.load(relaxed),
          .io_errors = counters_.io_errors.load(relaxed),
          .bytes_read = counters_.bytes_read.load(relaxed),
          .bytes_written = counters_.bytes_written.load(relaxed)};
}

bool BlkDevice::active() const {
  return active_;
}

std::optional<Error> BlkDevice::last_error() const {
  std::lock_guard lock(error_mutex_);
  return last_error_;
}

void BlkDevice::remember(Error error) {
  std::lock_guard lock(error_mutex_);
  last_error_ = std::move(error);
}

void BlkDevice::fail_locked(std::uint16_t index, Error error) {
  queues_[index]->failed = true;
  error = std::move(error).with_context(fmt::format("virtio-blk queue {}", index));
  remember(error);
  if (needs_reset_) {
    needs_reset_(error);
  }
}

BlkDevice::Answer BlkDevice::refuse(std::string reason) {
  counters_.io_errors.fetch_add(1, std::memory_order_relaxed);
  remember(Error{"virtio-blk request", 0, std::move(reason)});
  return {.status = VIRTIO_BLK_S_IOERR, .written = 0};
}

BlkDevice::Answer BlkDevice::io_failure(Error error, std::uint64_t written) {
  counters_.io_errors.fetch_add(1, std::memory_order_relaxed);
  remember(std::move(error));
  return {.status = VIRTIO_BLK_S_IOERR, .written = written};
}

bool BlkDevice::in_range(std::uint64_t sector, std::uint64_t bytes) const noexcept {
  // Never sector * 512 or sector + count before both are known to be small: a sector near 2^64 would wrap to a
  // small offset and pass a naive `sector * 512 + bytes <= size`.
  return sector <= capacity_sectors_ && bytes / kSectorBytes <= capacity_sectors_ - sector;
}

void BlkDevice::process_locked(std::uint16_t index) {
  QueueState& state = *queues_[index];
  if (!active_ || state.failed || !state.queue) {
    return;
  }
  SplitQueue& queue = *state.queue;
  bool added = false;
  for (;;) {
    if (auto ok = queue.disable_notification(); !ok) {
      fail_locked(index, std::move(ok).error());
      return;
    }
    for (;;) {
      auto popped = queue.pop();
      if (!popped) {
        fail_locked(index, std::move(popped).error());
        return;
      }
      if (!*popped) {
        break;  // the ring is empty
      }
      const DescriptorChain chain = std::move(**popped);
      auto used = serve_locked(state, chain);
      if (!used) {
        fail_locked(index, std::move(used).error());
        return;
      }
      if (auto ok = queue.add_used(chain.head_index, *used); !ok) {
        fail_locked(index, std::move(ok).error());
        return;
      }
      added = true;
    }
    // The driver may have published a chain after the last pop without kicking (notifications were off).
    auto more = queue.enable_notification();
    if (!more) {
      fail_locked(index, std::move(more).error());
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
    fail_locked(index, std::move(wanted).error());
    return;
  }
  if (*wanted) {
    if (auto ok = interrupt_->signal_queue(index); !ok) {
      remember(std::move(ok).error());
    }
  }
}

Result<std::uint32_t> BlkDevice::serve_locked(QueueState& state, const DescriptorChain& chain) {
  // The status is the chain's last byte. Readable buffers all precede writable ones, so it is the last byte of the
  // last non-empty writable buffer; if there is none, the chain ends in a readable byte (or has no bytes at all) and
  // the device has nowhere to answer.
  const auto last = std::ranges::find_if(chain.writable.rbegin(), chain.writable.rend(),
                                         [](const Descriptor& buffer) { return buffer.length > 0; });
  if (last == chain.writable.rend()) {
    return logic_error("virtio-blk request",
                       fmt::format("chain {} has no device-writable status byte at its end ({} readable bytes, {} "
                                   "writable): it cannot be answered",
                                   chain.head_index, chain.readable_bytes(), chain.writable_bytes()));
  }
  const GuestAddress status_at = at(*last, last->length - 1);
  // The writable bytes before the status: room for IN and GET_ID data.
  const auto data_in = sub_range(chain.writable, 0, chain.writable_bytes() - 1);

  const Answer answer = execute_locked(state, chain, data_in);
  if (auto ok = memory_->write_obj(status_at, answer.status); !ok) {
    return std::unexpected(std::move(ok).error().with_context("writing a virtio-blk status byte"));
  }
  // The used ring's length is 32 bits; a chain holds at most 2^32 bytes, so at most the count saturates.
  return static_cast<std::uint32_t>(
      std::min<std::uint64_t>(answer.written + 1, std::numeric_limits<std::uint32_t>::max()));
}

BlkDevice::Answer BlkDevice::execute_locked(QueueState& state, const DescriptorChain& chain,
                                            std::span<const Descriptor> data_in) {
  const std::uint64_t readable = chain.readable_bytes();
  if (readable < kRequestHeaderBytes) {
    return refuse(fmt::format("chain {}: the header needs {} device-readable bytes, the chain has {}", chain.head_index,
                              kRequestHeaderBytes, readable));
  }
  // A private copy, gathered across however many descriptors hold it: the guest may change its buffer meanwhile.
  virtio_blk_outhdr header{};
  if (auto ok = gather(*memory_, chain.readable, std::as_writable_bytes(std::span(&header, 1))); !ok) {
    return refuse(ok.error().message());
  }
  const std::uint64_t out_bytes = readable - kRequestHeaderBytes;  // readable data after the header
  const std::uint64_t in_bytes = total_bytes(data_in);             // writable data before the status
  const std::uint32_t type = header.type;
  const std::uint64_t sector = header.sector;

  // Data the type does not move in that direction: the driver built the chain wrong.
  const auto wrong_direction = [&](std::string_view what, std::uint64_t bytes) {
    return refuse(
        fmt::format("chain {}: a {} request with {} {} data bytes", chain.head_index, type_name(type), bytes, what));
  };
  switch (type) {
    case VIRTIO_BLK_T_IN:
      if (out_bytes != 0) {
        return wrong_direction("device-readable", out_bytes);
      }
      return read_locked(state, sector, data_in);
    case VIRTIO_BLK_T_OUT: {
      if (in_bytes != 0) {
        return wrong_direction("device-writable", in_bytes);
      }
      if (config_.read_only) {
        return refuse(fmt::format("chain {}: a write to sector {} on a read-only disk", chain.head_index, sector));
      }
      const auto data_out = sub_range(chain.readable, kRequestHeaderBytes, out_bytes);
      return write_locked(state, sector, data_out, out_bytes);
    }
    case VIRTIO_BLK_T_FLUSH:
      if (out_bytes != 0 || in_bytes != 0) {
        return wrong_direction(out_bytes != 0 ? "device-readable" : "device-writable", out_bytes + in_bytes);
      }
      return flush_locked();
    case VIRTIO_BLK_T_GET_ID:
      if (out_bytes != 0) {
        return wrong_direction("device-readable", out_bytes);
      }
      return get_id_locked(data_in);
    default:
      counters_.unsupported.fetch_add(1, std::memory_order_relaxed);
      return {.status = VIRTIO_BLK_S_UNSUPP, .written = 0};
  }
}

BlkDevice::Answer BlkDevice::read_locked(QueueState& state, std::uint64_t sector, std::span<const Descriptor> data) {
  const std::uint64_t bytes = total_bytes(data);
  if (bytes % kSectorBytes != 0) {
    return refuse(fmt::format("a read of {} bytes: not a multiple of {}", bytes, kSectorBytes));
  }
  if (!in_range(sector, bytes)) {
    return refuse(fmt::format("a read of {} sectors at sector {}: past the end of the disk ({} sectors)",
                              bytes / kSectorBytes, sector, capacity_sectors_));
  }
  const Transfer transfer = file_to_guest(state, data, sector * kSectorBytes);
  counters_.bytes_read.fetch_add(transfer.done, std::memory_order_relaxed);
  if (transfer.error) {
    return io_failure(*transfer.error, transfer.done);
  }
  counters_.reads.fetch_add(1, std::memory_order_relaxed);
  return {.status = VIRTIO_BLK_S_OK, .written = bytes};
}

BlkDevice::Answer BlkDevice::write_locked(QueueState& state, std::uint64_t sector, std::span<const Descriptor> data,
                                          std::uint64_t bytes) {
  if (bytes % kSectorBytes != 0) {
    return refuse(fmt::format("a write of {} bytes: not a multiple of {}", bytes, kSectorBytes));
  }
  if (!in_range(sector, bytes)) {
    return refuse(fmt::format("a write of {} sectors at sector {}: past the end of the disk ({} sectors)",
                              bytes / kSectorBytes, sector, capacity_sectors_));
  }
  const Transfer transfer = guest_to_file(state, data, sector * kSectorBytes);
  counters_.bytes_written.fetch_add(transfer.done, std::memory_order_relaxed);
  if (transfer.error) {
    return io_failure(*transfer.error, 0);
  }
  // Without FLUSH negotiated the driver believes the disk has no volatile cache (5.2.6.2: writeback only when FLUSH
  // is negotiated), so a completed write must be on stable storage.
  if (!has_feature(driver_features_, VIRTIO_BLK_F_FLUSH)) {
    if (auto error = sync_data(file_.get(), config_.path)) {
      return io_failure(std::move(*error), 0);
    }
  }
  counters_.writes.fetch_add(1, std::memory_order_relaxed);
  return {.status = VIRTIO_BLK_S_OK, .written = 0};
}

BlkDevice::Answer BlkDevice::flush_locked() {
  if (auto error = sync_data(file_.get(), config_.path)) {
    return io_failure(std::move(*error), 0);
  }
  counters_.flushes.fetch_add(1, std::memory_order_relaxed);
  return {.status = VIRTIO_BLK_S_OK, .written = 0};
}

BlkDevice::Answer BlkDevice::get_id_locked(std::span<const Descriptor> data) {
  // The serial padded with NULs to 20 bytes (strncpy-style, as QEMU does): NUL-terminated when shorter, not when it
  // is exactly 20. The driver gets as much of it as its buffer holds.
  std::array<std::byte, VIRTIO_BLK_ID_BYTES> id{};
  std::memcpy(id.data(), config_.serial.data(), config_.serial.size());  // open checked the length
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(total_bytes(data), id.size()));
  if (auto ok = scatter(*memory_, data, std::span(id).first(n)); !ok) {
    return refuse(ok.error().message());
  }
  counters_.get_ids.fetch_add(1, std::memory_order_relaxed);
  return {.status = VIRTIO_BLK_S_OK, .written = n};
}

BlkDevice::Transfer BlkDevice::file_to_guest(QueueState& state, std::span<const Descriptor> data,
                                             std::uint64_t offset) {
  Transfer result;
  for (const Descriptor& buffer : data) {
    if (buffer.length == 0) {
      continue;
    }
    // Inside one region: straight into the guest's pages (the span is checked; the guest owns its contents).
    if (auto host = memory_->to_host(buffer.address, buffer.length); host) {
      auto [done, error] = pread_full(file_.get(), *host, offset + result.done, config_.path);
      result.done += done;
      if (error) {
        result.error = std::move(error);
        return result;
      }
      continue;
    }
    // Across a region boundary: through the bounce buffer, which GuestMemory::write spreads over both regions.
    state.bounce.resize(kBounceBytes);
    for (std::uint64_t copied = 0; copied < buffer.length;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kBounceBytes, buffer.length - copied));
      auto [done, error] =
          pread_full(file_.get(), std::span(state.bounce).first(n), offset + result.done, config_.path);
      if (auto ok = memory_->write(at(buffer, copied), std::span(state.bounce).first(done)); !ok) {
        result.error = std::move(ok).error();
        return result;
      }
      result.done += done;
      copied += done;
      if (error) {
        result.error = std::move(error);
        return result;
      }
    }
  }
  return result;
}

BlkDevice::Transfer BlkDevice::guest_to_file(QueueState& state, std::span<const Descriptor> data,
                                             std::uint64_t offset) {
  Transfer result;
  for (const Descriptor& buffer : data) {
    if (buffer.length == 0) {
      continue;
    }
    if (auto host = memory_->to_host(buffer.address, buffer.length); host) {
      auto [done, error] = pwrite_full(file_.get(), *host, offset + result.done, config_.path);
      result.done += done;
      if (error) {
        result.error = std::move(error);
        return result;
      }
      continue;
    }
    state.bounce.resize(kBounceBytes);
    for (std::uint64_t copied = 0; copied < buffer.length;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kBounceBytes, buffer.length - copied));
      const auto chunk = std::span(state.bounce).first(n);
      if (auto ok = memory_->read(at(buffer, copied), chunk); !ok) {
        result.error = std::move(ok).error();
        return result;
      }
      auto [done, error] = pwrite_full(file_.get(), chunk, offset + result.done, config_.path);
      result.done += done;
      copied += done;
      if (error) {
        result.error = std::move(error);
        return result;
      }
    }
  }
  return result;
}

}  // namespace vmm::virtio::blk
