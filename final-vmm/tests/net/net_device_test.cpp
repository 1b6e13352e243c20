// NetDevice against the mock driver and a fake backend, a SOCK_SEQPACKET socketpair whose far end the test plays as
// the host's network: frames the guest sends arrive there whole with a cleared header; frames written there land in
// the buffers the driver posted, with num_buffers 1. Malformed transmit chains, frames too big for their buffer or
// for any, receive chains with readable buffers; the receive thread leaving frames in the backend while the queue is
// empty; reset joining the thread and a second activation; ring errors; interrupts in both notification modes; the
// configuration space. Nothing sleeps to assert: the receive thread's work is awaited with a bounded wait (5 s) on
// what it produces.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dirent.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "vmm/fd.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/testing/result.hpp"
#include "vmm/virtio/net/net_device.hpp"

namespace vmm::virtio::net {
namespace {

using memory::GuestAddress;
using vmm::testing::error_of;
using vmm::testing::MockBuffer;
using vmm::testing::MockDriver;
using vmm::testing::MockLayout;

constexpr std::uint16_t kQueueSize = 16;
constexpr auto kWait = std::chrono::seconds(5);  // for things the receive thread does at once on a sane machine
constexpr std::array<std::uint8_t, 6> kMac{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
// Room for the largest frame a Linux guest with a 1500-byte MTU receives: header, Ethernet header, VLAN tag, payload.
constexpr std::uint32_t kRxBufferBytes = kNetHeaderBytes + 1518;

using Bytes = std::vector<std::uint8_t>;

// A frame as it crosses the backend: a 12-byte header with `header_fill` in every byte (what a careless or hostile
// side might put there), then `payload` bytes that depend on `seed` and their position.
Bytes frame(std::size_t payload, std::uint8_t seed, std::uint8_t header_fill = 0) {
  Bytes bytes(kNetHeaderBytes + payload, header_fill);
  for (std::size_t i = 0; i < payload; ++i) {
    bytes[kNetHeaderBytes + i] = static_cast<std::uint8_t>(seed + i * 7 + i / 256);
  }
  return bytes;
}

// `sent` with the header the device must put in front of it: all zero (no offloads) but num_buffers = 1 (LE).
Bytes with_header(Bytes sent, std::uint16_t num_buffers) {
  std::fill_n(sent.begin(), kNetHeaderBytes, std::uint8_t{0});
  sent[offsetof(virtio_net_hdr_v1, num_buffers)] = static_cast<std::uint8_t>(num_buffers & 0xff);
  sent[offsetof(virtio_net_hdr_v1, num_buffers) + 1] = static_cast<std::uint8_t>(num_buffers >> 8);
  return sent;
}

// Waits at most kWait for `done`, looking every millisecond: for effects of the receive thread that have no event
// of their own to wait on (a used index, a counter).
bool eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Threads of this process whose name (comm) is `name`: the receive thread is "net-rx".
int threads_named(const std::string& name) {
  int count = 0;
  DIR* tasks = ::opendir("/proc/self/task");
  if (tasks == nullptr) {
    ADD_FAILURE() << "opendir /proc/self/task";
    return -1;
  }
  while (const dirent* entry = ::readdir(tasks)) {
    std::ifstream comm(std::string("/proc/self/task/") + entry->d_name + "/comm");
    std::string line;
    if (comm && std::getline(comm, line) && line == name) {
      ++count;
    }
  }
  ::closedir(tasks);
  return count;
}

// The backend the device sees over one end of a SOCK_SEQPACKET socketpair; the test plays the network on the other.
// SEQPACKET keeps each write one datagram, the way each read and write of a tap is one frame.
class SocketBackend final : public NetBackend {
 public:
  SocketBackend() {
    std::array<int, 2> fds{};
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds.data()) != 0) {
      ADD_FAILURE() << "socketpair: " << std::strerror(errno);
      return;
    }
    device_end_ = Fd(fds[0]);
    peer_ = Fd(fds[1]);
  }

  [[nodiscard]] int fd() const override { return device_end_.get(); }
  // MSG_TRUNC: a datagram longer than `frame` reports its full length, which the device must refuse.
  Result<std::optional<std::size_t>> receive(std::span<std::byte> frame) override {
    const ssize_t got = ::recv(device_end_.get(), frame.data(), frame.size(), MSG_TRUNC);
    if (got < 0) {
      if (errno == EAGAIN) {
        return std::nullopt;
      }
      return sys_error("recv", errno, "fake backend");
    }
    return static_cast<std::size_t>(got);
  }
  // MSG_NOSIGNAL: a closed peer is an EPIPE error, not a SIGPIPE that kills the test.
  Result<void> send(std::span<const iovec> parts) override {
    msghdr message{};
    message.msg_iov = const_cast<iovec*>(parts.data());  // sendmsg does not write through it
    message.msg_iovlen = parts.size();
    if (::sendmsg(device_end_.get(), &message, MSG_NOSIGNAL) < 0) {
      return sys_error("sendmsg", errno, "fake backend");
    }
    return {};
  }

  // The network sends a frame to the guest.
  void inject(const Bytes& bytes) const {
    ASSERT_EQ(::send(peer_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()))
        << std::strerror(errno);
  }
  // The next frame the guest sent, waiting at most kWait; nothing if none came.
  [[nodiscard]] std::optional<Bytes> next_sent(std::chrono::milliseconds wait = kWait) const {
    pollfd ready{.fd = peer_.get(), .events = POLLIN, .revents = 0};
    if (::poll(&ready, 1, static_cast<int>(wait.count())) != 1) {
      return std::nullopt;
    }
    Bytes bytes(kMaxFrameBytes + 1);
    const ssize_t got = ::recv(peer_.get(), bytes.data(), bytes.size(), 0);
    if (got < 0) {
      return std::nullopt;
    }
    bytes.resize(static_cast<std::size_t>(got));
    return bytes;
  }
  // Bytes of the next frame still waiting for the device (FIONREAD on a datagram socket): 0 when none.
  [[nodiscard]] int waiting_for_device() const {
    int bytes = -1;
    EXPECT_EQ(::ioctl(device_end_.get(), FIONREAD, &bytes), 0);
    return bytes;
  }
  // The network goes away.
  void hang_up() { peer_.reset(); }

 private:
  Fd device_end_;
  Fd peer_;
};

// The transport's side: used-buffer notifications per queue and DEVICE_NEEDS_RESET reports, from any thread.
class Transport final : public VirtioInterrupt {
 public:
  Result<void> signal_queue(std::uint16_t queue_index) override {
    std::lock_guard lock(mutex_);
    ++signals_.at(queue_index);
    return {};
  }
  Result<void> signal_config() override { return {}; }
  void needs_reset(const Error& error) {
    std::lock_guard lock(mutex_);
    resets_.push_back(error.message());
  }
  [[nodiscard]] std::uint64_t signals(std::uint16_t queue_index) const {
    std::lock_guard lock(mutex_);
    return signals_.at(queue_index);
  }
  [[nodiscard]] std::vector<std::string> resets() const {
    std::lock_guard lock(mutex_);
    return resets_;
  }

 private:
  mutable std::mutex mutex_;
  std::array<std::uint64_t, 2> signals_{};
  std::vector<std::string> resets_;
};

class NetDeviceTest : public ::testing::Test {
 protected:
  std::shared_ptr<NetDevice> make_device() {
    auto device = NetDevice::create(backend_, NetConfig{.mac = kMac, .queue_size = kQueueSize});
    EXPECT_TRUE(device) << device.error().message();
    return device ? *device : nullptr;
  }
  // What the transport hands over at DRIVER_OK: the two drivers' queues (nullptr: not enabled).
  Activation activation(MockDriver* rx, MockDriver* tx, std::uint64_t features = kCommonFeatures) {
    Activation result{.memory = &memory_,
                      .features = features,
                      .queues = {},
                      .interrupt = transport_,
                      .needs_reset = [transport = transport_](const Error& error) { transport->needs_reset(error); }};
    for (MockDriver* driver : {rx, tx}) {
      if (driver == nullptr) {
        result.queues.emplace_back();
        continue;
      }
      auto queue = SplitQueue::create(memory_, driver->queue_layout(), kQueueSize, driver->features());
      EXPECT_TRUE(queue) << queue.error().message();
      result.queues.emplace_back(std::move(queue).value());
    }
    return result;
  }
  std::shared_ptr<NetDevice> make_active(MockDriver& rx, MockDriver& tx) {
    auto device = make_device();
    auto ok = device->activate(activation(&rx, &tx));
    EXPECT_TRUE(ok) << ok.error().message();
    return device;
  }
  std::shared_ptr<NetDevice> make_active() { return make_active(rx_, tx_); }

  // A device-readable buffer holding `bytes`.
  MockBuffer readable(const Bytes& bytes, MockDriver* driver = nullptr) {
    MockDriver& d = driver != nullptr ? *driver : tx_;
    const MockBuffer buffer = d.allocate(static_cast<std::uint32_t>(bytes.size()), false);
    EXPECT_TRUE(memory_.write(buffer.address, std::as_bytes(std::span(bytes))));
    return buffer;
  }
  // A transmit chain holding `bytes`, cut into pieces of the given sizes (the rest in a last piece).
  std::uint16_t send_chain(const Bytes& bytes, std::initializer_list<std::size_t> cuts = {}) {
    std::vector<MockBuffer> pieces;
    std::size_t at = 0;
    for (const std::size_t cut : cuts) {
      pieces.push_back(readable(Bytes(bytes.begin() + at, bytes.begin() + at + cut)));
      at += cut;
    }
    pieces.push_back(readable(Bytes(bytes.begin() + at, bytes.end())));
    return tx_.add_chain(pieces);
  }
  // A receive chain: one writable buffer per length, filled with 0xEE so untouched bytes show.
  std::uint16_t post(std::initializer_list<std::uint32_t> lengths, MockDriver* driver = nullptr) {
    MockDriver& d = driver != nullptr ? *driver : rx_;
    std::vector<MockBuffer> buffers;
    for (const std::uint32_t length : lengths) {
      buffers.push_back(d.allocate(length, true, 0xee));
    }
    const std::uint16_t head = d.add_chain(buffers);
    posted_[&d].push_back(buffers);
    return head;
  }
  // The bytes of the `index`th receive chain posted to `driver`, the first `length` of them, read as one stream.
  Bytes received(std::size_t index, std::size_t length, MockDriver* driver = nullptr) {
    MockDriver& d = driver != nullptr ? *driver : rx_;
    Bytes bytes;
    for (const MockBuffer& buffer : posted_[&d].at(index)) {
      const auto part = d.read_bytes(buffer.address, buffer.length);
      bytes.insert(bytes.end(), part.begin(), part.end());
    }
    bytes.resize(std::min(bytes.size(), length));
    return bytes;
  }
  // Waits for `count` used entries in `driver`'s ring and collects them.
  std::vector<vring_used_elem> used(MockDriver& driver, std::uint16_t count) {
    EXPECT_TRUE(eventually([&] { return driver.used_index() == count; }))
        << "used index " << driver.used_index() << ", expected " << count;
    return driver.collect_used();
  }

  memory::GuestMemory memory_ = vmm::testing::make_test_memory(8ull << 20);
  MockDriver rx_{memory_,
                 MockLayout{.size = kQueueSize, .rings = GuestAddress(0x1000), .buffers = GuestAddress(0x10'0000)}};
  MockDriver tx_{memory_,
                 MockLayout{.size = kQueueSize, .rings = GuestAddress(0x2000), .buffers = GuestAddress(0x40'0000)}};
  std::shared_ptr<Transport> transport_ = std::make_shared<Transport>();
  std::shared_ptr<SocketBackend> backend_ = std::make_shared<SocketBackend>();
  std::map<MockDriver*, std::vector<std::vector<MockBuffer>>> posted_;
};

// --- Identity and configuration ---------------------------------------------------------------------------------

TEST_F(NetDeviceTest, OffersMacAndStatusWithoutOffloads) {
  auto device = make_device();
  EXPECT_EQ(device->device_type(), VIRTIO_ID_NET);
  EXPECT_EQ(device->name(), "virtio-net");
  EXPECT_EQ(device->queue_max_sizes(), (std::vector<std::uint16_t>{kQueueSize, kQueueSize}));
  const std::uint64_t features = device->features();
  for (const unsigned bit : {VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_NET_F_MAC,
                             VIRTIO_NET_F_STATUS}) {
    EXPECT_TRUE(has_feature(features, bit)) << "bit " << bit;
  }
  for (const unsigned bit :
       {VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MTU}) {
    EXPECT_FALSE(has_feature(features, bit)) << "bit " << bit;
  }
  EXPECT_EQ(features & ~(kCommonFeatures | (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS)), 0u);
}

TEST_F(NetDeviceTest, ConfigurationHoldsTheMacAndLinkUp) {
  auto device = make_device();
  ASSERT_EQ(device->config_size(), sizeof(virtio_net_config));
  std::vector<std::uint8_t> space(device->config_size(), 0xaa);
  device->read_config(0, space);
  EXPECT_TRUE(std::equal(kMac.begin(), kMac.end(), space.begin()));
  const std::size_t status = offsetof(virtio_net_config, status);
  EXPECT_EQ(space[status] | (space[status + 1] << 8), VIRTIO_NET_S_LINK_UP);
  for (std::size_t i = status + 2; i < space.size(); ++i) {
    EXPECT_EQ(space[i], 0) << "byte " << i;
  }

  // Any window: the last MAC bytes and the status, as a driver reading field by field gets them.
  std::array<std::uint8_t, 4> window{};
  device->read_config(4, window);
  EXPECT_EQ(window, (std::array<std::uint8_t, 4>{kMac[4], kMac[5], VIRTIO_NET_S_LINK_UP, 0}));
  // Past the end, even at an offset where offset + i would wrap: zeros, no out-of-bounds read.
  std::array<std::uint8_t, 4> tail{1, 1, 1, 1};
  device->read_config(space.size() - 1, tail);
  EXPECT_EQ(tail, (std::array<std::uint8_t, 4>{space.back(), 0, 0, 0}));
  std::array<std::uint8_t, 8> far{1, 1, 1, 1, 1, 1, 1, 1};
  device->read_config(~std::uint64_t{0} - 2, far);
  EXPECT_EQ(far, (std::array<std::uint8_t, 8>{}));

  // The MAC is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR: a write changes nothing.
  const std::array<std::uint8_t, 6> other{1, 2, 3, 4, 5, 6};
  device->write_config(0, other);
  std::array<std::uint8_t, 6> mac{};
  device->read_config(0, mac);
  EXPECT_EQ(mac, kMac);
}

TEST_F(NetDeviceTest, CreateRefusesAMissingBackendAndBadQueueSizes) {
  EXPECT_THAT(error_of(NetDevice::create(nullptr, NetConfig{})), ::testing::HasSubstr("no backend"));
  for (const std::uint16_t size : {0, 12, 100}) {
    EXPECT_THAT(error_of(NetDevice::create(backend_, NetConfig{.mac = kMac, .queue_size = size})),
                ::testing::HasSubstr("not a power of two"));
  }
}

TEST_F(NetDeviceTest, ActivateNeedsBothQueues) {
  auto device = make_device();
  EXPECT_THAT(error_of(device->activate(activation(nullptr, &tx_))), ::testing::HasSubstr("receive queue (0)"));
  EXPECT_THAT(error_of(device->activate(activation(&rx_, nullptr))), ::testing::HasSubstr("transmit queue (1)"));
  EXPECT_FALSE(device->active());
  EXPECT_EQ(threads_named("net-rx"), 0);

  ASSERT_TRUE(device->activate(activation(&rx_, &tx_)));
  EXPECT_TRUE(device->active());
  EXPECT_THAT(error_of(device->activate(activation(&rx_, &tx_))), ::testing::HasSubstr("already active"));
}

// --- Transmit ---------------------------------------------------------------------------------------------------

TEST_F(NetDeviceTest, TransmitSendsEachChainAsOneFrameWithAClearedHeader) {
  // One published before DRIVER_OK: sent at activation, the driver's kick having gone nowhere.
  const Bytes early = frame(60, 1, 0xab);
  const std::uint16_t early_head = send_chain(early);
  auto device = make_active();
  ASSERT_EQ(backend_->next_sent(), with_header(early, 0));

  // Any layout: header alone then the payload in two pieces; and an indirect table.
  const Bytes split = frame(300, 2, 0x11);
  const std::uint16_t split_head = send_chain(split, {kNetHeaderBytes, 100});
  const Bytes big = frame(1514, 3);
  const MockBuffer big_buffer = readable(big);
  const std::uint16_t big_head = tx_.add_indirect(std::vector<MockBuffer>{big_buffer});
  ASSERT_TRUE(tx_.kick_if_needed());
  device->queue_notify(kTransmitQueue);

  // The guest's header bytes never reach the network: no offload was negotiated, so they must mean nothing.
  EXPECT_EQ(backend_->next_sent(), with_header(split, 0));
  EXPECT_EQ(backend_->next_sent(), with_header(big, 0));
  EXPECT_EQ(backend_->next_sent(std::chrono::milliseconds(0)), std::nullopt);

  const auto entries = tx_.collect_used();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].id, early_head);
  EXPECT_EQ(entries[1].id, split_head);
  EXPECT_EQ(entries[2].id, big_head);
  for (const auto& entry : entries) {
    EXPECT_EQ(entry.len, 0u);  // the device writes nothing into a transmit chain
  }
  EXPECT_EQ(transport_->signals(kTransmitQueue), 2u);  // one per round: activation, then the kick
  const auto stats = device->stats();
  EXPECT_EQ(stats.tx_frames, 3u);
  EXPECT_EQ(stats.tx_bytes, early.size() + split.size() + big.size());
  EXPECT_EQ(stats.tx_dropped, 0u);
  EXPECT_TRUE(transport_->resets().empty());
}

TEST_F(NetDeviceTest, TransmitDropsMalformedChainsAndGoesOn) {
  auto device = make_active();
  // Readable frame followed by a writable buffer; shorter than the header; longer than any frame; then a good one.
  const std::uint16_t with_writable =
      tx_.add_chain(std::vector<MockBuffer>{readable(frame(40, 1)), tx_.allocate(64, true)});
  const std::uint16_t too_short = send_chain(Bytes(kNetHeaderBytes - 4, 0));
  const std::uint16_t too_long = send_chain(frame(kMaxFrameBytes + 1 - kNetHeaderBytes, 2));
  const Bytes good = frame(40, 3);
  const std::uint16_t good_head = send_chain(good);
  device->queue_notify(kTransmitQueue);

  EXPECT_EQ(backend_->next_sent(), with_header(good, 0));
  EXPECT_EQ(backend_->next_sent(std::chrono::milliseconds(0)), std::nullopt);  // nothing else went out
  const auto entries = tx_.collect_used();
  ASSERT_EQ(entries.size(), 4u);
  const std::array<std::uint16_t, 4> heads{with_writable, too_short, too_long, good_head};
  for (std::size_t i = 0; i < heads.size(); ++i) {
    EXPECT_EQ(entries[i].id, heads[i]);
    EXPECT_EQ(entries[i].len, 0u);
  }
  const auto stats = device->stats();
  EXPECT_EQ(stats.tx_dropped, 3u);
  EXPECT_EQ(stats.tx_frames, 1u);
  ASSERT_TRUE(device->last_error());
  EXPECT_THAT(device->last_error()->message(), ::testing::HasSubstr("dropped"));
  EXPECT_TRUE(transport_->resets().empty());  // a driver's bad frame is not a broken ring
  EXPECT_EQ(transport_->signals(kTransmitQueue), 1u);
}

TEST_F(NetDeviceTest, TransmitToAVanishedLinkLosesTheFrameAndReturnsTheChain) {
  auto device = make_active();
  backend_->hang_up();
  const std::uint16_t head = send_chain(frame(40, 1));
  device->queue_notify(kTransmitQueue);
  const auto entries = tx_.collect_used();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].id, head);
  const auto stats = device->stats();
  EXPECT_EQ(stats.tx_errors, 1u);
  EXPECT_EQ(stats.tx_frames, 0u);
  EXPECT_TRUE(transport_->resets().empty());
}

TEST_F(NetDeviceTest, TransmitInterruptsFollowEventIdx) {
  MockDriver rx(
      memory_, MockLayout{.size = kQueueSize, .rings = GuestAddress(0x3000), .buffers = GuestAddress(0x70'0000)}, true);
  MockDriver tx(
      memory_, MockLayout{.size = kQueueSize, .rings = GuestAddress(0x4000), .buffers = GuestAddress(0x78'0000)}, true);
  auto device = make_active(rx, tx);
  // The driver wants an interrupt only once the used index passes 1, i.e. with the second frame.
  tx.set_used_event(1);
  for (std::uint16_t n = 1; n <= 2; ++n) {
    const Bytes sent = frame(40, static_cast<std::uint8_t>(n));
    const MockBuffer buffer = readable(sent, &tx);
    tx.add_chain(std::vector<MockBuffer>{buffer});
    ASSERT_TRUE(tx.kick_if_needed());
    device->queue_notify(kTransmitQueue);
    EXPECT_EQ(backend_->next_sent(), with_header(sent, 0));
    EXPECT_EQ(transport_->signals(kTransmitQueue), n - 1u) << "after frame " << n;
  }
}

// --- Receive ----------------------------------------------------------------------------------------------------

TEST_F(NetDeviceTest, ReceivedFramesFillPostedBuffersWithNumBuffersOne) {
  post({kRxBufferBytes});
  post({kNetHeaderBytes, kRxBufferBytes - kNetHeaderBytes});  // header and data apart, as some drivers post them
  auto device = make_active();
  // The network's header bytes are not the guest's business either: the device writes its own.
  const Bytes small = frame(100, 1, 0x77);
  const Bytes full = frame(kRxBufferBytes - kNetHeaderBytes, 2, 0x55);
  backend_->inject(small);
  backend_->inject(full);

  const auto entries = used(rx_, 2);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].len, small.size());
  EXPECT_EQ(entries[1].len, full.size());
  EXPECT_EQ(received(0, small.size()), with_header(small, 1));
  EXPECT_EQ(received(1, full.size()), with_header(full, 1));
  // Nothing written past the frame.
  EXPECT_EQ(rx_.read_bytes(GuestAddress(posted_[&rx_][0][0].address.raw() + small.size()), 4), Bytes(4, 0xee));
  EXPECT_TRUE(eventually([&] { return transport_->signals(kReceiveQueue) >= 1; }));
  const auto stats = device->stats();
  EXPECT_EQ(stats.rx_frames, 2u);
  EXPECT_EQ(stats.rx_bytes, small.size() + full.size());
  EXPECT_EQ(stats.rx_dropped, 0u);
}

TEST_F(NetDeviceTest, AFrameLargerThanItsBufferIsDroppedAndTheBufferReturned) {
  post({100});
  post({kRxBufferBytes});
  auto device = make_active();
  const Bytes large = frame(188, 1);
  const Bytes small = frame(38, 2);
  backend_->inject(large);
  backend_->inject(small);

  const auto entries = used(rx_, 2);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].len, 0u);  // never a truncated frame: the guest would take it for a whole one
  EXPECT_EQ(entries[1].len, small.size());
  EXPECT_EQ(received(1, small.size()), with_header(small, 1));
  EXPECT_EQ(received(0, 100), Bytes(100, 0xee));
  const auto stats = device->stats();
  EXPECT_EQ(stats.rx_dropped, 1u);
  EXPECT_EQ(stats.rx_frames, 1u);
  ASSERT_TRUE(device->last_error());
  EXPECT_THAT(device->last_error()->message(), ::testing::HasSubstr("does not fit"));
  EXPECT_TRUE(transport_->resets().empty());
}

TEST_F(NetDeviceTest, FramesNoChainCouldHoldAreDroppedWithoutUsingABuffer) {
  post({kRxBufferBytes});
  auto device = make_active();
  backend_->inject(Bytes(kNetHeaderBytes - 7, 1));                     // shorter than a header
  backend_->inject(frame(kMaxFrameBytes - kNetHeaderBytes + 100, 2));  // longer than any frame
  const Bytes good = frame(50, 3);
  backend_->inject(good);

  const auto entries = used(rx_, 1);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].len, good.size());
  EXPECT_EQ(received(0, good.size()), with_header(good, 1));
  EXPECT_TRUE(eventually([&] { return device->stats().rx_dropped == 2; }));
}

TEST_F(NetDeviceTest, AReceiveChainWithReadableBuffersIsReturnedUnused) {
  const std::uint16_t bad =
      rx_.add_chain(std::vector<MockBuffer>{rx_.allocate(kNetHeaderBytes, false), rx_.allocate(kRxBufferBytes, true)});
  posted_[&rx_].push_back({});
  post({kRxBufferBytes});
  auto device = make_active();
  const Bytes sent = frame(64, 4);
  backend_->inject(sent);

  const auto entries = used(rx_, 2);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].id, bad);
  EXPECT_EQ(entries[0].len, 0u);
  EXPECT_EQ(entries[1].len, sent.size());
  EXPECT_EQ(received(1, sent.size()), with_header(sent, 1));
  EXPECT_EQ(device->stats().rx_bad_chains, 1u);
  EXPECT_TRUE(transport_->resets().empty());
}

TEST_F(NetDeviceTest, WithoutBuffersFramesWaitInTheBackendUntilTheDriverPostsSome) {
  const Bytes sent = frame(80, 5);
  backend_->inject(sent);  // waiting before the device is even active: it stays in the backend
  auto device = make_active();

  // The round found no buffer: the device stops reading the backend rather than drop the frame or spin on it.
  ASSERT_TRUE(eventually([&] { return device->stats().rx_no_buffers >= 1; }));
  EXPECT_EQ(backend_->waiting_for_device(), static_cast<int>(sent.size()));
  EXPECT_EQ(rx_.used_index(), 0);
  // A kick without buffers is one more round, not a loop: the waiting frame does not wake the thread by itself.
  device->queue_notify(kReceiveQueue);
  ASSERT_TRUE(eventually([&] { return device->stats().rx_no_buffers >= 2; }));
  EXPECT_EQ(device->stats().rx_no_buffers, 2u);
  EXPECT_EQ(backend_->waiting_for_device(), static_cast<int>(sent.size()));

  // Buffers, and the kick the empty queue asked for (notifications back on): the frame arrives.
  post({kRxBufferBytes});
  ASSERT_TRUE(rx_.kick_if_needed());
  device->queue_notify(kReceiveQueue);
  const auto entries = used(rx_, 1);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].len, sent.size());
  EXPECT_EQ(received(0, sent.size()), with_header(sent, 1));
  EXPECT_EQ(device->stats().rx_dropped, 0u);
  EXPECT_TRUE(eventually([&] { return transport_->signals(kReceiveQueue) == 1; }));
}

TEST_F(NetDeviceTest, AHungUpBackendStopsTheReceiveSideOnly) {
  auto device = make_active();
  backend_->hang_up();
  ASSERT_TRUE(eventually([&] {
    const auto error = device->last_error();
    return error && error->message().find("hung up") != std::string::npos;
  }));
  // The thread still answers kicks and the stop request; the transmit side is untouched.
  post({kRxBufferBytes});
  device->queue_notify(kReceiveQueue);
  device->reset();
  EXPECT_EQ(threads_named("net-rx"), 0);
  EXPECT_EQ(rx_.used_index(), 0);
  EXPECT_TRUE(transport_->resets().empty());
}

// --- Lifecycle and ring errors ----------------------------------------------------------------------------------

TEST_F(NetDeviceTest, ResetJoinsTheReceiveThreadAndASecondActivationWorks) {
  post({kRxBufferBytes});
  auto device = make_active();
  ASSERT_TRUE(eventually([] { return threads_named("net-rx") == 1; }));
  const Bytes first = frame(60, 1);
  backend_->inject(first);
  ASSERT_EQ(used(rx_, 1).size(), 1u);

  device->reset();
  EXPECT_FALSE(device->active());
  EXPECT_EQ(threads_named("net-rx"), 0);  // joined, not merely told to stop
  // Idle: frames wait in the backend, kicks do nothing.
  const Bytes second = frame(70, 2);
  backend_->inject(second);
  device->queue_notify(kReceiveQueue);
  device->queue_notify(kTransmitQueue);
  EXPECT_EQ(backend_->waiting_for_device(), static_cast<int>(second.size()));

  // The driver sets the device up again, with new rings (as after a guest reboot).
  MockDriver rx(memory_,
                MockLayout{.size = kQueueSize, .rings = GuestAddress(0x3000), .buffers = GuestAddress(0x70'0000)});
  MockDriver tx(memory_,
                MockLayout{.size = kQueueSize, .rings = GuestAddress(0x4000), .buffers = GuestAddress(0x78'0000)});
  post({kRxBufferBytes}, &rx);
  ASSERT_TRUE(device->activate(activation(&rx, &tx)));
  const auto entries = used(rx, 1);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(received(0, second.size(), &rx), with_header(second, 1));
  const Bytes out = frame(40, 3);
  tx.add_chain(std::vector<MockBuffer>{readable(out, &tx)});
  device->queue_notify(kTransmitQueue);
  EXPECT_EQ(backend_->next_sent(), with_header(out, 0));
  EXPECT_EQ(device->stats().rx_frames, 2u);
}

TEST_F(NetDeviceTest, RingErrorsNeedAResetAndStopTheQueue) {
  auto device = make_active();
  // Transmit: a head index outside the descriptor table.
  tx_.publish(kQueueSize + 3);
  device->queue_notify(kTransmitQueue);
  ASSERT_EQ(transport_->resets().size(), 1u);
  EXPECT_THAT(transport_->resets()[0], ::testing::HasSubstr("transmit queue"));
  // The queue is left alone until reset: a good chain after it is not served.
  send_chain(frame(40, 1));
  device->queue_notify(kTransmitQueue);
  EXPECT_EQ(backend_->next_sent(std::chrono::milliseconds(0)), std::nullopt);
  EXPECT_EQ(tx_.used_index(), 0);

  // Receive: an available index that jumped past the queue size.
  rx_.set_avail_index(kQueueSize + 5);
  device->queue_notify(kReceiveQueue);
  ASSERT_TRUE(eventually([&] { return transport_->resets().size() == 2; }));
  EXPECT_THAT(transport_->resets()[1], ::testing::HasSubstr("receive queue"));
  ASSERT_TRUE(device->last_error());
  EXPECT_THAT(device->last_error()->message(), ::testing::HasSubstr("receive queue"));

  device->reset();
  EXPECT_EQ(threads_named("net-rx"), 0);
}

}  // namespace
}  // namespace vmm::virtio::net
