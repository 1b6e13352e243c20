// Interop, vmmlab's frontend against real block backends: `VhostUserFrontend` behind stage05's virtio-pci transport,
// with memfd guest memory, driven register by register (VirtioPciDriver) and ring by ring (MockDriver), against
// qemu-storage-daemon (QEMU 7.2's vhost-user-blk export) and, with the same test body, against vmmlab's own
// vhost-user-blk daemon. Every request is checked against the image file itself.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "frontend_test_support.hpp"
#include "interop_common.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/testing/virtio_pci_driver.hpp"
#include "vmm/vhost/connection.hpp"
#include "vmm/vhost/frontend.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

// clang-format off
// uapi.hpp first: it sets the macros the kernel's virtio headers need to compile as C++.
#include "vmm/virtio/uapi.hpp"
#include <linux/virtio_blk.h>
// clang-format on

namespace {

using namespace vmm;
using namespace vmm::stage07;
using namespace vmm::stage07::interop;
using memory::GuestAddress;

constexpr std::uint16_t kQueueSize = 128;
// The configuration bytes QEMU 7.2 knows: its virtio_blk_config ends with unused1[3] (60 bytes); Debian 12's kernel
// headers add the secure-erase fields (72). qemu-storage-daemon answers a GET_CONFIG for more than it knows with an
// empty payload (vhost-user's "error" answer), so ask for what QEMU itself asks for.
constexpr std::uint32_t kConfigBytes = offsetof(virtio_blk_config, max_secure_erase_sectors);
static_assert(kConfigBytes == 60);
constexpr std::uint64_t kCapacitySectors = kDiskBytes / kSectorBytes;
// Sectors the test writes into the image before the backend starts (the read path is checked on its own) and sectors
// it writes through the backend (then reads back, and finds in the file).
constexpr std::uint64_t kPresetSector = 100;
constexpr std::uint64_t kWrittenSector = 8;

// The features the driver asks for, of those the device offers: flush and both ring features (the mock driver
// writes indirect tables and follows EVENT_IDX hints).
constexpr std::uint64_t kWantedFeatures = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_FLUSH) |
                                          (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
                                          (1ull << VIRTIO_RING_F_INDIRECT_DESC);

/// The frontend's --trace-vhost-user lines, kept for failure messages and the report of what was sent.
class TraceLog {
 public:
  vhost::Tracer tracer() {
    return vhost::Tracer("frontend", [this](std::string_view line) {
      std::lock_guard lock(mutex_);
      text_ += line;
      text_ += '\n';
    });
  }
  std::string text() const {
    std::lock_guard lock(mutex_);
    return text_;
  }

 private:
  mutable std::mutex mutex_;
  std::string text_;
};

/// 512-byte sectors of recognisable bytes: `seed` and the offset.
std::vector<std::uint8_t> pattern(std::size_t bytes, std::uint8_t seed) {
  std::vector<std::uint8_t> data(bytes);
  for (std::size_t i = 0; i < bytes; ++i) {
    data[i] = static_cast<std::uint8_t>(seed + i * 7 + i / kSectorBytes);
  }
  return data;
}

/// Bytes of the image file at `offset` (pread).
std::vector<std::uint8_t> image_bytes(const std::string& path, std::uint64_t offset, std::size_t bytes) {
  std::vector<std::uint8_t> data(bytes);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return {};
  }
  const auto n = ::pread(fd, data.data(), bytes, static_cast<off_t>(offset));
  ::close(fd);
  return n == static_cast<ssize_t>(bytes) ? data : std::vector<std::uint8_t>{};
}

/// A 1 MiB image of zeros with `pattern(2 sectors, 0x5a)` at kPresetSector.
::testing::AssertionResult write_data_disk(const std::string& path) {
  std::string image(kDiskBytes, '\0');
  const auto preset = pattern(2 * kSectorBytes, 0x5a);
  std::memcpy(image.data() + kPresetSector * kSectorBytes, preset.data(), preset.size());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(image.data(), static_cast<std::streamsize>(image.size()));
  out.close();
  return out ? ::testing::AssertionSuccess() : ::testing::AssertionFailure() << "cannot write " << path;
}

/// What one request came back with.
struct Answer {
  std::uint8_t status = 0xff;     ///< The status byte the device wrote (0xff: untouched).
  std::uint32_t used_length = 0;  ///< The used element's length.
  std::vector<std::uint8_t> in;   ///< The device-writable data buffer.
};

/// The frontend tests' fixture (memfd memory, the transport, VirtioPciDriver and MockDriver around the frontend) with
/// a real backend in another process, and the test body both backends go through.
class InteropOurFrontend : public vmm::vhost::testing::FrontendFixture {
 protected:
  void TearDown() override {
    FrontendFixture::TearDown();  // the transport and the frontend first: they talk to the backend
    backend_process_.reset();     // then the backend (SIGTERM, SIGKILL if it does not go)
  }

  /// The image the backend serves, in the fixture's directory.
  [[nodiscard]] std::string image() const { return (dir() / "disk.img").string(); }

  /// The peer serving socket_path(); stopped at TearDown at the latest.
  std::optional<Peer> backend_process_;

  /// One request: header, optional device-readable data `out`, optional `in_bytes` of device-writable data, status.
  /// Published (as an indirect table when `indirect`), kicked if the device wants it, and waited for until the used
  /// index moves: the call interrupt proves nothing (qemu-storage-daemon writes the call eventfd once when it gets
  /// it, before any request).
  Answer request(std::uint32_t type, std::uint64_t sector, std::span<const std::uint8_t> out = {},
                 std::uint32_t in_bytes = 0, bool indirect = false) {
    auto& ring = mock();
    const auto header = ring.allocate(sizeof(virtio_blk_outhdr), false);
    const virtio_blk_outhdr outhdr{.type = type, .ioprio = 0, .sector = sector};
    EXPECT_TRUE(memory().write_obj(header.address, outhdr));
    std::vector<vmm::testing::MockBuffer> buffers{header};
    if (!out.empty()) {
      const auto data = ring.allocate(static_cast<std::uint32_t>(out.size()), false);
      EXPECT_TRUE(memory().write(data.address, std::as_bytes(out)));
      buffers.push_back(data);
    }
    std::optional<vmm::testing::MockBuffer> in;
    if (in_bytes > 0) {
      in = ring.allocate(in_bytes, true, 0xee);
      buffers.push_back(*in);
    }
    const auto status = ring.allocate(1, true, 0xff);
    buffers.push_back(status);

    const std::uint16_t before = ring.used_index();
    const std::uint16_t head = indirect ? ring.add_indirect(buffers) : ring.add_chain(buffers);
    if (ring.kick_if_needed()) {
      driver().notify(0);
    }
    Answer answer;
    if (!vmm::vhost::testing::eventually([&] { return ring.used_index() != before; })) {
      ADD_FAILURE() << fmt::format("request type {} sector {}: no answer", type, sector);
      return answer;
    }
    const auto used = ring.collect_used();
    EXPECT_EQ(used.size(), 1u);
    if (used.size() != 1) {
      return answer;
    }
    EXPECT_EQ(used[0].id, head);
    answer.used_length = used[0].len;
    answer.status = ring.read_bytes(status.address, 1)[0];
    if (in) {
      answer.in = ring.read_bytes(in->address, in_bytes);
    }
    return answer;
  }

  /// A 32-bit device configuration read (the transport forwards aligned 1-, 2- and 4-byte accesses).
  std::uint32_t config32(std::size_t offset) {
    return static_cast<std::uint32_t>(driver().read(virtio::VirtioPciDevice::kDeviceConfigOffset + offset, 4));
  }

  /// The test body both backends go through, with the backend listening at socket_path() and serving image():
  /// connect, negotiate, read the configuration, read, write, read back, flush, GET_ID, a refused request, reset
  /// (GET_VRING_BASE), disconnect. `serial` is what GET_ID must answer.
  void exercise_blk_backend(std::string_view serial) {
    TraceLog trace;
    auto config = base_config();
    config.device_type = VIRTIO_ID_BLOCK;
    config.queue_size = kQueueSize;
    config.config_size = kConfigBytes;
    config.connect_timeout = kStartTimeout;
    config.tracer = trace.tracer();
    auto frontend = connect_with(config);
    ASSERT_NE(frontend, nullptr) << connect_error().message() << "\n" << trace.text();
    EXPECT_TRUE(virtio::has_feature(frontend->backend_features(), VIRTIO_F_VERSION_1));
    ASSERT_TRUE(make_transport(memfd_memory()));

    // The configuration, as GET_CONFIG fetched it: the capacity is the image's size in sectors.
    const std::uint64_t capacity = config32(offsetof(virtio_blk_config, capacity)) |
                                   (std::uint64_t{config32(offsetof(virtio_blk_config, capacity) + 4)} << 32);
    EXPECT_EQ(capacity, kCapacitySectors) << trace.text();

    ASSERT_TRUE(driver().reset());
    const std::uint64_t features = driver().device_features() & kWantedFeatures;
    if (virtio::has_feature(features, VIRTIO_BLK_F_BLK_SIZE)) {
      EXPECT_EQ(config32(offsetof(virtio_blk_config, blk_size)), kSectorBytes);
    }
    ASSERT_TRUE(start_driver({.size = kQueueSize, .rings = GuestAddress(0x1000), .buffers = GuestAddress(0x10'0000)},
                             {}, features & ~(1ull << VIRTIO_F_VERSION_1)))
        << (transport().last_error() ? transport().last_error()->message() : "") << "\n"
        << trace.text();
    std::uint16_t requests = 0;

    // IN: sectors the test wrote into the file before the backend opened it.
    auto answer = request(VIRTIO_BLK_T_IN, kPresetSector, {}, 2 * kSectorBytes);
    ++requests;
    EXPECT_EQ(answer.status, VIRTIO_BLK_S_OK) << trace.text();
    EXPECT_EQ(answer.in, pattern(2 * kSectorBytes, 0x5a));
    EXPECT_EQ(answer.used_length, 2 * kSectorBytes + 1) << "the data and the status byte";

    // OUT: three sectors; the file has them afterwards.
    const auto written = pattern(3 * kSectorBytes, 0xc3);
    answer = request(VIRTIO_BLK_T_OUT, kWrittenSector, written);
    ++requests;
    EXPECT_EQ(answer.status, VIRTIO_BLK_S_OK) << trace.text();
    EXPECT_EQ(image_bytes(image(), kWrittenSector * kSectorBytes, written.size()), written);

    // IN again, through an indirect table when negotiated: the same bytes come back.
    const bool indirect = virtio::has_feature(features, VIRTIO_RING_F_INDIRECT_DESC);
    answer = request(VIRTIO_BLK_T_IN, kWrittenSector, {}, 3 * kSectorBytes, indirect);
    ++requests;
    EXPECT_EQ(answer.status, VIRTIO_BLK_S_OK);
    EXPECT_EQ(answer.in, written);

    if (virtio::has_feature(features, VIRTIO_BLK_F_FLUSH)) {
      answer = request(VIRTIO_BLK_T_FLUSH, 0);
      ++requests;
      EXPECT_EQ(answer.status, VIRTIO_BLK_S_OK);
    }

    // GET_ID: the serial, NUL-padded when shorter than 20 bytes.
    answer = request(VIRTIO_BLK_T_GET_ID, 0, {}, VIRTIO_BLK_ID_BYTES);
    ++requests;
    EXPECT_EQ(answer.status, VIRTIO_BLK_S_OK);
    ASSERT_EQ(answer.in.size(), VIRTIO_BLK_ID_BYTES);
    const std::string id(answer.in.begin(), answer.in.end());
    EXPECT_EQ(id.substr(0, id.find('\0')), serial);

    // A read that ends past the capacity is refused, and the queue goes on.
    answer = request(VIRTIO_BLK_T_IN, kCapacitySectors - 1, {}, 2 * kSectorBytes);
    ++requests;
    EXPECT_EQ(answer.status, VIRTIO_BLK_S_IOERR);
    answer = request(VIRTIO_BLK_T_IN, kPresetSector, {}, kSectorBytes);
    ++requests;
    EXPECT_EQ(answer.status, VIRTIO_BLK_S_OK);
    EXPECT_EQ(answer.in, pattern(kSectorBytes, 0x5a));

    // Reset: the frontend stops the ring (GET_VRING_BASE); the backend consumed every request.
    EXPECT_TRUE(driver().reset());
    EXPECT_FALSE(transport().active());
    EXPECT_EQ(frontend->stopped_vring_base(0), std::optional<std::uint32_t>(requests)) << trace.text();
    EXPECT_TRUE(frontend->connected()) << trace.text();

    const auto text = trace.text();
    for (const auto* sent : {"SET_MEM_TABLE", "SET_VRING_KICK", "SET_VRING_CALL", "GET_VRING_BASE"}) {
      EXPECT_NE(text.find(fmt::format("frontend > {}", sent)), std::string::npos) << text;
    }
    EXPECT_EQ(text.find("failure"), std::string::npos) << "a refused request:\n" << text;
    show_trace("our frontend", text);

    // The last references: the socket closes, the backend's session ends.
    frontend.reset();
    drop_transport();
    release_frontend();
  }
};

// Our frontend against qemu-storage-daemon's vhost-user-blk export (libvhost-user inside QEMU 7.2).
TEST_F(InteropOurFrontend, QemuStorageDaemonServesTheBlockDevice) {
  std::string qsd;
  ASSERT_TRUE(find_peer("qemu-storage-daemon", "qemu-system-x86", qsd));
  ASSERT_TRUE(write_data_disk(image()));
  const auto pidfile = (dir() / "qsd.pid").string();

  // No --daemonize: the test owns the process. The pid file appears once the export listens (qemu-storage-daemon
  // writes it after creating its exports, before accepting connections: a documented order).
  auto started = Peer::start(
      {qsd, "--pidfile", pidfile, "--blockdev", "driver=file,node-name=f0,filename=" + image(), "--export",
       "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=" + socket_path() + ",writable=on"});
  ASSERT_TRUE(started) << started.error().message();
  auto& daemon = backend_process_.emplace(std::move(*started));
  ASSERT_TRUE(wait_for_file(pidfile, daemon, kStartTimeout)) << daemon.command() << ":\n" << daemon.output();

  exercise_blk_backend("vhost_user_blk");

  // qemu-storage-daemon serves until told to stop: SIGTERM ends it with status 0.
  auto ended = daemon.stop();
  ASSERT_TRUE(ended) << ended.error().message();
  EXPECT_EQ(ended->code, 0) << ended->describe() << "\n" << daemon.output();
}

// The same test body against vmmlab's vhost-user-blk daemon: both backends answer alike.
TEST_F(InteropOurFrontend, VmmlabBlkDaemonServesTheBlockDevice) {
  ASSERT_TRUE(write_data_disk(image()));
  auto started = Peer::start(
      {VMMLAB_VHOST_USER_BLK, "--socket", socket_path(), "--image", image(), "--once", "--trace-vhost-user"});
  ASSERT_TRUE(started) << started.error().message();
  auto& daemon = backend_process_.emplace(std::move(*started));
  auto ready = daemon.process().wait_for_output("listening", kStartTimeout);
  ASSERT_TRUE(ready && *ready) << (ready ? daemon.output() : ready.error().message());

  exercise_blk_backend("vmmlab-blk");

  // The frontend is gone: --once ends the daemon with status 0.
  auto ended = daemon.wait(kStopTimeout);
  ASSERT_TRUE(ended) << ended.error().message() << "\n" << daemon.output();
  EXPECT_EQ(ended->code, 0) << ended->describe() << "\n" << daemon.output();
  EXPECT_TRUE(contains(daemon.output(), "session 1 ended: frontend disconnected")) << daemon.output();
  show_trace("vhost-user-blk daemon", daemon.output());
}

}  // namespace
