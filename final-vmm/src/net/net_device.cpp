#include "vmm/virtio/net/net_device.hpp"

#include <pthread.h>
#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace vmm::virtio::net {

namespace {

using memory::GuestAddress;

// What woke the receive thread: the `data` of each epoll registration.
enum class RxEvent : std::uint32_t { Stop, Kick, Backend };

// Every counter, for `stats`, which reads them one by one.
constexpr std::array kStatsFields{
    &NetDevice::Stats::tx_frames,  &NetDevice::Stats::tx_bytes,      &NetDevice::Stats::tx_dropped,
    &NetDevice::Stats::tx_errors,  &NetDevice::Stats::rx_frames,     &NetDevice::Stats::rx_bytes,
    &NetDevice::Stats::rx_dropped, &NetDevice::Stats::rx_bad_chains, &NetDevice::Stats::rx_no_buffers};

// Walks `buffers` in chain order alongside `bytes`, handing each buffer its share (`copy(address, piece)`) until
// `bytes` is used up. The callers checked that the buffers hold at least `bytes.size()` bytes; the chain walk checked
// that each lies in guest memory, and `copy` goes through `GuestMemory`, which checks again.
template <typename Byte, typename Copy>
Result<void> copy_chain(std::span<const Descriptor> buffers, std::span<Byte> bytes, Copy copy) {
  for (const Descriptor& buffer : buffers) {
    if (bytes.empty()) {
      break;
    }
    const std::size_t share = std::min<std::size_t>(buffer.length, bytes.size());
    if (auto ok = copy(buffer.address, bytes.first(share)); !ok) {
      return ok;
    }
    bytes = bytes.subspan(share);
  }
  return {};
}

// The next chain, or nothing once the ring is empty *and* notifications are back on: a chain
// published after the last pop but before `enable_notification` came without a kick, so the ring is read once more
// (virtio 1.2, 2.7.10). Notifications are off again whenever a chain is returned.
Result<std::optional<DescriptorChain>> next_chain(SplitQueue& queue) {
  auto popped = queue.pop();
  if (!popped || *popped) {
    return popped;
  }
  auto more = queue.enable_notification();
  if (!more) {
    return std::unexpected(std::move(more).error());
  }
  if (!*more) {
    return std::nullopt;
  }
  if (auto ok = queue.disable_notification(); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  return queue.pop();
}

// epoll_ctl(op) for the receive thread's set, naming what failed.
Result<void> epoll_control(const Fd& epoll, int op, int fd, std::uint32_t events, RxEvent what) {
  epoll_event event{};
  event.events = events;
  event.data.u32 = static_cast<std::uint32_t>(what);
  if (::epoll_ctl(epoll.get(), op, fd, &event) != 0) {
    return sys_error("epoll_ctl", errno, fmt::format("virtio-net receive thread, fd {}", fd));
  }
  return {};
}

}  // namespace

Result<std::shared_ptr<NetDevice>> NetDevice::create(std::shared_ptr<NetBackend> backend, NetConfig config) {
  const std::string op = "virtio-net";
  if (!backend) {
    return logic_error(op, "no backend");
  }
  if (!std::has_single_bit(config.queue_size)) {
    return logic_error(op, fmt::format("queue size {} is not a power of two", config.queue_size));
  }
  auto kick = event::EventFd::create(event::EventFd::Mode::Counter);
  if (!kick) {
    return std::unexpected(std::move(kick).error().with_context(op + ": receive kick eventfd"));
  }
  auto stop = event::EventFd::create(event::EventFd::Mode::Counter);
  if (!stop) {
    return std::unexpected(std::move(stop).error().with_context(op + ": stop eventfd"));
  }
  return std::shared_ptr<NetDevice>(new NetDevice(std::move(backend), config, std::move(*kick), std::move(*stop)));
}

NetDevice::NetDevice(std::shared_ptr<NetBackend> backend, NetConfig config, event::EventFd rx_kick, event::EventFd stop)
    : backend_(std::move(backend)),
      config_(config),
      rx_kick_(std::move(rx_kick)),
      stop_(std::move(stop)),
      rx_buffer_(kMaxFrameBytes + 1),
      tx_buffer_(kMaxFrameBytes) {}

NetDevice::~NetDevice() {
  // The receive thread uses `this`: it must be gone before any member is.
  reset();
}

std::uint16_t NetDevice::device_type() const {
  return VIRTIO_ID_NET;
}

std::uint64_t NetDevice::features() const {
  // No offloads, no MRG_RXBUF, no CTRL_VQ: see the class comment for what each would cost.
  return kCommonFeatures | (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS);
}

std::vector<std::uint16_t> NetDevice::queue_max_sizes() const {
  return {config_.queue_size, config_.queue_size};
}

std::size_t NetDevice::config_size() const {
  return sizeof(virtio_net_config);
}

void NetDevice::read_config(std::uint64_t offset, std::span<std::uint8_t> data) const {
  // Little-endian fields, as x86 stores them. The fields of features not offered (mtu, speed, duplex, RSS...) are 0.
  virtio_net_config space{};
  std::ranges::copy(config_.mac, std::begin(space.mac));
  space.status = VIRTIO_NET_S_LINK_UP;  // a tap's link is always up as far as the guest can tell
  const auto bytes = std::as_bytes(std::span(&space, 1));
  for (std::size_t i = 0; i < data.size(); ++i) {
    // Compared without offset + i, which could wrap for an offset near 2^64.
    const bool inside = offset < bytes.size() && i < bytes.size() - offset;
    data[i] = inside ? static_cast<std::uint8_t>(bytes[offset + i]) : 0;
  }
}

Result<void> NetDevice::activate(Activation activation) {
  const std::string op = "virtio-net activate";
  std::lock_guard lifecycle(lifecycle_mutex_);
  if (active_) {
    return logic_error(op, "already active");
  }
  if (activation.memory == nullptr || !activation.interrupt) {
    return logic_error(op, "no guest memory or no interrupt");
  }
  // A VERSION_1 driver without MQ uses exactly receiveq1 and transmitq1 (virtio 1.2, 5.1.2); one without the other
  // is not a working NIC.
  if (activation.queues.size() != 2 || !activation.queues[kReceiveQueue] || !activation.queues[kTransmitQueue]) {
    return logic_error(op, "the driver must enable both the receive queue (0) and the transmit queue (1)");
  }

  // Everything that can fail before the thread starts is done before any state changes, so an error has nothing to
  // undo.
  Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) {
    return sys_error("epoll_create1", errno, op);
  }
  for (const auto& [fd, what] : {std::pair{stop_.fd(), RxEvent::Stop}, std::pair{rx_kick_.fd(), RxEvent::Kick},
                                 std::pair{backend_->fd(), RxEvent::Backend}}) {
    if (auto ok = epoll_control(epoll, EPOLL_CTL_ADD, fd, EPOLLIN, what); !ok) {
      return std::unexpected(std::move(ok).error().with_context(op));
    }
  }
  // Kicks that arrived while the device was idle belong to no activation; the thread's first round looks at the
  // ring anyway (the driver may post buffers before DRIVER_OK).
  (void)rx_kick_.read();

  {
    std::lock_guard tx(tx_mutex_);
    memory_ = activation.memory;
    interrupt_ = std::move(activation.interrupt);
    needs_reset_ = std::move(activation.needs_reset);
    rx_queue_ = std::move(activation.queues[kReceiveQueue]);
    tx_queue_ = std::move(activation.queues[kTransmitQueue]);
    tx_failed_ = false;
    active_ = true;
  }
  try {
    rx_thread_ = std::thread(&NetDevice::rx_loop, this, std::move(epoll));
  } catch (const std::system_error& error) {
    std::lock_guard tx(tx_mutex_);
    memory_ = nullptr;
    interrupt_ = nullptr;
    needs_reset_ = nullptr;
    rx_queue_.reset();
    tx_queue_.reset();
    active_ = false;
    return sys_error("pthread_create", error.code().value(), fmt::format("{}: starting the receive thread", op));
  }

  // A driver may publish frames before DRIVER_OK, and it kicked (if it did) while the device was not listening.
  std::lock_guard tx(tx_mutex_);
  transmit_locked();
  return {};
}

void NetDevice::reset() {
  std::lock_guard lifecycle(lifecycle_mutex_);
  stop_rx_thread();
  // Declared before the lock so they are destroyed after it is released: the transport's objects are not destroyed
  // with the device's lock held.
  std::shared_ptr<VirtioInterrupt> interrupt;
  std::function<void(const Error&)> needs_reset;
  std::lock_guard tx(tx_mutex_);
  rx_queue_.reset();
  tx_queue_.reset();
  tx_failed_ = false;
  memory_ = nullptr;
  interrupt = std::exchange(interrupt_, nullptr);
  needs_reset = std::exchange(needs_reset_, nullptr);
  active_ = false;
}

void NetDevice::queue_notify(std::uint16_t queue_index) {
  if (queue_index == kReceiveQueue) {
    // The receive thread does the work. Only fails on counter overflow, when the thread is certainly awake already.
    (void)rx_kick_.write(1);
    return;
  }
  if (queue_index == kTransmitQueue) {
    std::lock_guard tx(tx_mutex_);
    transmit_locked();
  }
}

NetDevice::Stats NetDevice::stats() const {
  Stats now;
  for (const auto counter : kStatsFields) {
    now.*counter = std::atomic_ref(counters_.*counter).load(std::memory_order_relaxed);
  }
  return now;
}

void NetDevice::count(std::uint64_t Stats::*counter, std::uint64_t n) noexcept {
  std::atomic_ref(counters_.*counter).fetch_add(n, std::memory_order_relaxed);
}

std::optional<Error> NetDevice::last_error() const {
  std::lock_guard lock(error_mutex_);
  return last_error_;
}

void NetDevice::remember(Error error) {
  std::lock_guard lock(error_mutex_);
  last_error_ = std::move(error);
}

void NetDevice::fail_queue(std::uint16_t index, Error error) {
  error =
      std::move(error).with_context(index == kReceiveQueue ? "virtio-net receive queue" : "virtio-net transmit queue");
  remember(error);
  if (needs_reset_) {
    needs_reset_(error);
  }
}

Result<void> NetDevice::signal_used(SplitQueue& queue, std::uint16_t index) {
  auto wanted = queue.needs_notification();
  if (!wanted) {
    return std::unexpected(std::move(wanted).error());
  }
  if (*wanted) {
    if (auto ok = interrupt_->signal_queue(index); !ok) {
      remember(std::move(ok).error());  // the transport's failure, not the ring's: the queue goes on
    }
  }
  return {};
}

void NetDevice::stop_rx_thread() {
  if (!rx_thread_.joinable()) {
    return;
  }
  // Can only fail on counter overflow, which one write per stop never reaches.
  (void)stop_.write(1);
  // The thread takes no lock of ours but error_mutex_ (a leaf), so this cannot wait on ourselves.
  rx_thread_.join();
  (void)stop_.read();
  (void)rx_kick_.read();
}

// --- Transmit ---------------------------------------------------------------------------------------------------

void NetDevice::transmit_locked() {
  if (!tx_queue_ || tx_failed_) {
    return;
  }
  SplitQueue& queue = *tx_queue_;
  const auto fail = [this](Error error) {
    tx_failed_ = true;
    fail_queue(kTransmitQueue, std::move(error));
  };
  // No kicks while the queue is drained: `next_chain` turns them back on when it finds the ring empty.
  if (auto ok = queue.disable_notification(); !ok) {
    fail(std::move(ok).error());
    return;
  }
  bool added = false;
  for (;;) {
    auto popped = next_chain(queue);
    if (!popped) {
      fail(std::move(popped).error());
      return;
    }
    if (!*popped) {
      break;
    }
    const DescriptorChain& chain = **popped;
    transmit_chain(chain);
    // Sent, refused or lost, the buffers go back: a transmit chain has nothing for the device to write.
    if (auto ok = queue.add_used(chain.head_index, 0); !ok) {
      fail(std::move(ok).error());
      return;
    }
    added = true;
  }
  if (added) {
    if (auto ok = signal_used(queue, kTransmitQueue); !ok) {
      fail(std::move(ok).error());
    }
  }
}

void NetDevice::transmit_chain(const DescriptorChain& chain) {
  const std::uint64_t length = chain.readable_bytes();
  if (!chain.writable.empty() || length < kNetHeaderBytes || length > kMaxFrameBytes) {
    count(&Stats::tx_dropped);
    remember(Error{"virtio-net transmit", 0,
                   fmt::format("chain {}: {} device-readable bytes and {} device-writable buffers; a frame is a "
                               "{}-byte header and at most {} bytes in all, device-readable only: dropped",
                               chain.head_index, length, chain.writable.size(), kNetHeaderBytes, kMaxFrameBytes)});
    return;
  }
  // A private copy: the driver may rewrite its buffers while the backend sends, and must not be able to change a
  // frame halfway.
  const auto frame = std::span(tx_buffer_).first(static_cast<std::size_t>(length));
  auto copied = copy_chain(chain.readable, frame, [this](GuestAddress address, std::span<std::byte> piece) {
    return memory_->read(address, piece);
  });
  if (!copied) {
    count(&Stats::tx_dropped);
    remember(std::move(copied).error().with_context(fmt::format("virtio-net transmit: chain {}", chain.head_index)));
    return;
  }
  // No offload was negotiated, so the driver's header has nothing to say (virtio 1.2, 5.1.6.2: flags 0, gso_type
  // NONE). Whatever it holds, the backend gets zeros: guest-controlled fields never reach the host's network stack.
  std::ranges::fill(frame.first(kNetHeaderBytes), std::byte{0});
  const iovec part{.iov_base = frame.data(), .iov_len = frame.size()};
  if (auto ok = backend_->send(std::span(&part, 1)); !ok) {
    count(&Stats::tx_errors);
    remember(std::move(ok).error().with_context("virtio-net transmit: the frame is lost"));
    return;
  }
  count(&Stats::tx_frames);
  count(&Stats::tx_bytes, length);
}

// --- Receive ----------------------------------------------------------------------------------------------------

void NetDevice::rx_loop(Fd epoll) {
  // A name for `info threads`, top -H and /proc/<pid>/task; a failure is only cosmetic.
  ::pthread_setname_np(::pthread_self(), "net-rx");
  bool watching = true;  // the backend is registered for EPOLLIN (activate registered it so)
  bool backend_gone = false;
  // The round that saw the end already remembered why; a hang-up seen by epoll brings its own reason.
  const auto stop_watching_backend = [&](std::optional<Error> why) {
    backend_gone = true;
    if (why) {
      remember(std::move(*why));
    }
    // Removed for good: a descriptor that hung up or failed would otherwise report EPOLLHUP/EPOLLERR forever, even
    // with no events asked for.
    if (auto ok = epoll_control(epoll, EPOLL_CTL_DEL, backend_->fd(), 0, RxEvent::Backend); !ok) {
      remember(std::move(ok).error());
    }
  };
  std::array<epoll_event, 3> events{};
  for (;;) {
    if (!backend_gone) {
      const RxRound round = receive_round();
      if (round == RxRound::Failed) {
        return;  // needs_reset was called; reset stops us (by joining) without a stop request needed
      }
      if (round == RxRound::BackendGone) {
        stop_watching_backend(std::nullopt);
      } else if (const bool want = round == RxRound::BackendEmpty; want != watching) {
        // Out of buffers: leave the frames in the backend until a kick says the driver posted more. Level-triggered
        // epoll would otherwise wake us for the same waiting frame over and over.
        if (auto ok = epoll_control(epoll, EPOLL_CTL_MOD, backend_->fd(), want ? EPOLLIN : 0u, RxEvent::Backend); !ok) {
          fail_queue(kReceiveQueue, std::move(ok).error());
          return;
        }
        watching = want;
      }
    }
    int ready = 0;
    do {
      ready = ::epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), -1);
    } while (ready < 0 && errno == EINTR);
    if (ready < 0) {
      fail_queue(kReceiveQueue, sys_error("epoll_wait", errno, "virtio-net receive thread").error());
      return;
    }
    for (const epoll_event& event : std::span(events).first(static_cast<std::size_t>(ready))) {
      switch (static_cast<RxEvent>(event.data.u32)) {
        case RxEvent::Stop:
          return;  // reset drains the stop eventfd after joining
        case RxEvent::Kick:
          (void)rx_kick_.read();  // N kicks, one round: it takes every buffer there is
          break;
        case RxEvent::Backend:
          // While buffers are posted, the round reads up to the end (0 or an error) and reports it. Without buffers
          // nothing reads, so the hang-up is handled here; frames still queued are lost with the link.
          if (!watching && !backend_gone && (event.events & (EPOLLHUP | EPOLLERR)) != 0) {
            stop_watching_backend(Error{"virtio-net receive", 0, "the backend hung up"});
          }
          break;
      }
    }
  }
}

NetDevice::RxRound NetDevice::receive_round() {
  SplitQueue& queue = *rx_queue_;
  const auto fail = [this](Error error) {
    fail_queue(kReceiveQueue, std::move(error));
    return RxRound::Failed;
  };
  // Kicks only matter once the queue is empty: `next_chain` turns them back on then.
  if (auto ok = queue.disable_notification(); !ok) {
    return fail(std::move(ok).error());
  }
  RxRound outcome = RxRound::BackendEmpty;
  bool added = false;
  for (;;) {
    auto popped = next_chain(queue);
    if (!popped) {
      return fail(std::move(popped).error());
    }
    if (!*popped) {
      count(&Stats::rx_no_buffers);
      outcome = RxRound::QueueEmpty;
      break;
    }
    const DescriptorChain& chain = **popped;
    std::uint32_t written = 0;
    if (!chain.readable.empty()) {
      // Receive buffers are device-writable (virtio 1.2, 5.1.6.3): no frame goes near this one.
      count(&Stats::rx_bad_chains);
      remember(Error{"virtio-net receive", 0,
                     fmt::format("chain {} has {} device-readable bytes: returned unused", chain.head_index,
                                 chain.readable_bytes())});
    } else {
      auto frame = backend_->receive(rx_buffer_);
      if (!frame || !*frame || **frame == 0) {
        queue.undo_pop();  // the chain waits for the next frame
        if (!frame) {
          remember(std::move(frame).error().with_context("virtio-net receive"));
          outcome = RxRound::BackendGone;
        } else if (*frame) {
          remember(Error{"virtio-net receive", 0, "the backend closed the link (a read of 0 bytes)"});
          outcome = RxRound::BackendGone;
        }
        break;
      }
      const std::size_t length = **frame;
      if (length < kNetHeaderBytes || length > kMaxFrameBytes) {
        // Not a frame this device can describe: dropped, and the chain keeps waiting for a good one.
        count(&Stats::rx_dropped);
        remember(Error{"virtio-net receive", 0,
                       fmt::format("a {}-byte frame from the backend: a frame is a {}-byte header and at most {} "
                                   "bytes in all: dropped",
                                   length, kNetHeaderBytes, kMaxFrameBytes)});
        queue.undo_pop();
        continue;
      }
      written = deliver(chain, length);
    }
    if (auto ok = queue.add_used(chain.head_index, written); !ok) {
      return fail(std::move(ok).error());
    }
    added = true;
  }
  if (added) {
    if (auto ok = signal_used(queue, kReceiveQueue); !ok) {
      return fail(std::move(ok).error());
    }
  }
  return outcome;
}

std::uint32_t NetDevice::deliver(const DescriptorChain& chain, std::size_t length) {
  if (length > chain.writable_bytes()) {
    // Without MRG_RXBUF a frame cannot continue in another chain, and a cut frame is a corrupt one.
    count(&Stats::rx_dropped);
    remember(Error{"virtio-net receive", 0,
                   fmt::format("a {}-byte frame does not fit chain {} ({} device-writable bytes): dropped", length,
                               chain.head_index, chain.writable_bytes())});
    return 0;
  }
  // A fresh header rather than the backend's: no offload was negotiated, so every field is 0 but num_buffers, which
  // is 1 (the frame is in this one chain). Little-endian, as x86 stores it.
  virtio_net_hdr_v1 header{};
  header.num_buffers = 1;
  std::memcpy(rx_buffer_.data(), &header, sizeof(header));
  const auto frame = std::span<const std::byte>(rx_buffer_).first(length);
  auto copied = copy_chain(chain.writable, frame, [this](GuestAddress address, std::span<const std::byte> piece) {
    return memory_->write(address, piece);
  });
  if (!copied) {
    count(&Stats::rx_dropped);
    remember(std::move(copied).error().with_context(fmt::format("virtio-net receive: chain {}", chain.head_index)));
    return 0;
  }
  count(&Stats::rx_frames);
  count(&Stats::rx_bytes, length);
  return static_cast<std::uint32_t>(length);  // at most kMaxFrameBytes
}

}  // namespace vmm::virtio::net
