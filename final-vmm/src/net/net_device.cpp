#include "vmm/virtio/net/net_device.hpp"

#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <bit>
#include <cstring>

namespace vmm::virtio::net {
namespace {

constexpr std::uint16_t kReceiveQueue = 0;
constexpr std::uint16_t kTransmitQueue = 1;
// The config fields offered: mac[6] and status (VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS).
constexpr std::size_t kConfigBytes = offsetof(virtio_net_config, status) + sizeof(virtio_net_config::status);

}  // namespace

Result<std::shared_ptr<NetDevice>> NetDevice::create(std::shared_ptr<NetBackend> backend, NetConfig config) {
  if (!backend) {
    return logic_error("virtio-net", "no backend");
  }
  if (!std::has_single_bit(config.queue_size) || config.queue_size < 2) {
    return logic_error("virtio-net", fmt::format("queue size {} is not a power of two", config.queue_size));
  }
  auto kick = event::EventFd::create();
  auto stop = event::EventFd::create();
  if (!kick || !stop) {
    return std::unexpected(!kick ? kick.error() : stop.error());
  }
  return std::shared_ptr<NetDevice>(new NetDevice(std::move(backend), config, std::move(*kick), std::move(*stop)));
}

NetDevice::~NetDevice() {
  reset();
}

std::uint64_t NetDevice::features() const {
  return kCommonFeatures | (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS);
}

std::vector<std::uint16_t> NetDevice::queue_max_sizes() const {
  return {config_.queue_size, config_.queue_size};
}

std::size_t NetDevice::config_size() const {
  return kConfigBytes;
}

void NetDevice::read_config(std::uint64_t offset, std::span<std::uint8_t> data) const {
  virtio_net_config config{};
  std::memcpy(config.mac, config_.mac.data(), config_.mac.size());
  config.status = VIRTIO_NET_S_LINK_UP;  // little-endian on x86, as virtio 1.x wants
  std::array<std::uint8_t, kConfigBytes> bytes{};
  std::memcpy(bytes.data(), &config, bytes.size());
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < bytes.size() ? bytes[offset + i] : 0;
  }
}

Result<void> NetDevice::activate(Activation activation) {
  std::lock_guard lock(mutex_);
  if (activation_) {
    return logic_error("virtio-net activate", "already active");
  }
  if (activation.queues.size() != 2 || !activation.queues[kReceiveQueue] || !activation.queues[kTransmitQueue]) {
    return logic_error("virtio-net activate", "the driver must enable both the receive and the transmit queue");
  }
  activation_ = std::move(activation);
  failed_ = false;
  (void)stop_.read();  // a stop left over from the last reset
  rx_thread_ = std::thread([this] { rx_loop(); });
  transmit_locked();
  return {};
}

void NetDevice::reset() {
  if (rx_thread_.joinable()) {
    (void)stop_.write();
    rx_thread_.join();
  }
  std::lock_guard lock(mutex_);
  activation_.reset();
  failed_ = false;
}

void NetDevice::queue_notify(std::uint16_t queue_index) {
  if (queue_index == kReceiveQueue) {
    (void)rx_kick_.write();  // the receive thread takes it from here
    return;
  }
  std::lock_guard lock(mutex_);
  if (queue_index == kTransmitQueue) {
    transmit_locked();
  }
}

void NetDevice::fail_locked(Error error) {
  failed_ = true;
  last_error_ = error;
  if (activation_ && activation_->needs_reset) {
    activation_->needs_reset(error);
  }
}

void NetDevice::notify_locked(std::uint16_t queue) {
  auto& q = *activation_->queues[queue];
  auto wanted = q.needs_notification();
  if (!wanted) {
    fail_locked(std::move(wanted).error());
    return;
  }
  if (*wanted) {
    if (auto rc = activation_->interrupt->signal_queue(queue); !rc) {
      last_error_ = rc.error();
    }
  }
}

void NetDevice::transmit_locked() {
  if (!activation_ || failed_) {
    return;
  }
  auto& queue = *activation_->queues[kTransmitQueue];
  bool used = false;
  // Kicks are off while the device drains the queue; turning them back on re-reads the index, because a chain
  // published in between came without a kick (with EVENT_IDX, avail_event is what asks for the next one).
  if (auto rc = queue.disable_notification(); !rc) {
    fail_locked(std::move(rc).error());
    return;
  }
  for (;;) {
    auto popped = queue.pop();
    if (!popped) {
      fail_locked(std::move(popped).error());
      return;
    }
    if (!*popped) {
      auto more = queue.enable_notification();
      if (!more) {
        fail_locked(std::move(more).error());
        return;
      }
      if (*more) {
        continue;
      }
      break;
    }
    const auto& chain = **popped;
    const std::uint64_t length = chain.readable_bytes();
    if (!chain.writable.empty() || length < kNetHeaderBytes || length > kMaxFrameBytes) {
      // A frame the device cannot send; the driver gets its buffer back and the link goes on.
      tx_dropped_.fetch_add(1, std::memory_order_relaxed);
      last_error_ =
          logic_error("virtio-net transmit", fmt::format("chain {}: {} readable bytes, {} writable buffers: dropped",
                                                         chain.head_index, length, chain.writable.size()))
              .error();
    } else {
      // Copied out of guest memory first: the driver may rewrite its buffers, and the tap must see one frame.
      std::size_t at = 0;
      bool ok = true;
      for (const auto& d : chain.readable) {
        if (auto rc = activation_->memory->read(d.address, std::span(tx_buffer_).subspan(at, d.length)); !rc) {
          last_error_ = rc.error();
          ok = false;
          break;
        }
        at += d.length;
      }
      if (ok) {
        const iovec part{tx_buffer_.data(), at};
        if (auto rc = backend_->send(std::span(&part, 1)); !rc) {
          last_error_ = rc.error();  // the link is down or full: the frame is lost, as on a wire
          tx_dropped_.fetch_add(1, std::memory_order_relaxed);
        } else {
          tx_frames_.fetch_add(1, std::memory_order_relaxed);
          tx_bytes_.fetch_add(at, std::memory_order_relaxed);
        }
      }
    }
    if (auto rc = queue.add_used(chain.head_index, 0); !rc) {
      fail_locked(std::move(rc).error());
      return;
    }
    used = true;
  }
  if (used) {
    notify_locked(kTransmitQueue);
  }
}

bool NetDevice::receive_locked() {
  if (!activation_ || failed_) {
    return true;
  }
  auto& queue = *activation_->queues[kReceiveQueue];
  bool used = false;
  bool starved = false;
  for (;;) {
    auto popped = queue.pop();
    if (!popped) {
      fail_locked(std::move(popped).error());
      return true;
    }
    if (!*popped) {
      // Out of buffers: ask for a kick when the driver adds some (and look once more, in case it just did).
      auto more = queue.enable_notification();
      if (!more) {
        fail_locked(std::move(more).error());
        return true;
      }
      if (*more) {
        continue;
      }
      starved = true;
      break;
    }
    const auto& chain = **popped;
    auto frame = backend_->receive(rx_buffer_);
    if (!frame || !*frame) {
      if (!frame) {
        last_error_ = frame.error();
      }
      queue.undo_pop();  // no frame for this buffer yet
      break;
    }
    std::size_t length = **frame;
    std::uint32_t written = 0;
    if (length < kNetHeaderBytes || length > chain.writable_bytes() || !chain.readable.empty()) {
      rx_dropped_.fetch_add(1, std::memory_order_relaxed);
      last_error_ =
          logic_error("virtio-net receive", fmt::format("a {}-byte frame for chain {} with {} writable bytes: dropped",
                                                        length, chain.head_index, chain.writable_bytes()))
              .error();
    } else {
      // num_buffers (the header's last field) is 1: every frame fits in one chain without MRG_RXBUF.
      const std::uint16_t one = 1;
      std::memcpy(rx_buffer_.data() + offsetof(virtio_net_hdr_v1, num_buffers), &one, sizeof(one));
      std::size_t at = 0;
      for (const auto& d : chain.writable) {
        const std::size_t n = std::min<std::size_t>(d.length, length - at);
        if (n == 0) {
          break;
        }
        if (auto rc = activation_->memory->write(d.address, std::span(rx_buffer_).subspan(at, n)); !rc) {
          last_error_ = rc.error();
          break;
        }
        at += n;
      }
      written = static_cast<std::uint32_t>(at);
      rx_frames_.fetch_add(1, std::memory_order_relaxed);
      rx_bytes_.fetch_add(at, std::memory_order_relaxed);
    }
    if (auto rc = queue.add_used(chain.head_index, written); !rc) {
      fail_locked(std::move(rc).error());
      return true;
    }
    used = true;
  }
  if (used) {
    notify_locked(kReceiveQueue);
  }
  return starved;
}

void NetDevice::rx_loop() {
  bool starved = false;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      starved = receive_locked();
    }
    // Watch the backend only while there are buffers to fill; the kick eventfd says when there are more.
    pollfd fds[3] = {{stop_.fd(), POLLIN, 0}, {rx_kick_.fd(), POLLIN, 0}, {backend_->fd(), POLLIN, 0}};
    const nfds_t count = starved ? 2 : 3;
    if (::poll(fds, count, -1) < 0 && errno != EINTR) {
      std::lock_guard lock(mutex_);
      last_error_ = sys_error("poll", errno, "virtio-net receive thread").error();
      return;
    }
    if ((fds[0].revents & POLLIN) != 0) {
      return;
    }
    if ((fds[1].revents & POLLIN) != 0) {
      (void)rx_kick_.read();
    }
  }
}

NetDevice::Stats NetDevice::stats() const {
  return {tx_frames_.load(), tx_bytes_.load(), tx_dropped_.load(),
          rx_frames_.load(), rx_bytes_.load(), rx_dropped_.load()};
}

std::optional<Error> NetDevice::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

}  // namespace vmm::virtio::net
