#pragma once
// What the frontend's tests share: a fixture with a temporary socket directory, a fake (or real) backend, memfd guest
// memory, the virtio-pci transport around the frontend with a recording MSI sink, stage05's register-level driver and
// its mock driver for the rings; and small helpers (bounded waits, eventfd I/O on received fds, inode comparison).

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fake_msi_sink.hpp"
#include "frontend_fake_backend.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/region.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/testing/virtio_pci_driver.hpp"
#include "vmm/vhost/backend/daemon.hpp"
#include "vmm/vhost/frontend.hpp"
#include "vmm/virtio/uapi.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace vmm::vhost::testing {

/// A timeout for things that happen at once on a sane machine (2 loaded cores included).
inline constexpr auto kGenerous = std::chrono::seconds(30);

/// Polls `done` until it holds or `kGenerous` has passed; returns its last value.
inline bool eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kGenerous;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

/// Adds `value` to the eventfd `fd` (a descriptor received over the socket, as the backend would).
inline bool write_eventfd(int fd, std::uint64_t value) {
  return ::write(fd, &value, sizeof value) == static_cast<ssize_t>(sizeof value);
}

/// Takes the eventfd's counter, nothing if it is 0 (the frontend's eventfds are non-blocking, and so are their dups).
inline std::optional<std::uint64_t> read_eventfd(int fd) {
  std::uint64_t value = 0;
  if (::read(fd, &value, sizeof value) != static_cast<ssize_t>(sizeof value)) {
    return std::nullopt;
  }
  return value;
}

/// True when both descriptors refer to the same file (device and inode): a memfd passed over the socket is the one
/// the region maps.
inline bool same_file(int a, int b) {
  struct stat sa {};
  struct stat sb {};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/// Where guest address `gpa` is mapped in this process (0 if it is not guest memory).
inline std::uint64_t host_address(const memory::GuestMemory& memory, memory::GuestAddress gpa) {
  auto span = memory.to_host(gpa, 1);
  return span ? reinterpret_cast<std::uint64_t>(span->data()) : 0;
}

/// Guest memory of memfd-backed regions, one per {start, size}.
inline Result<memory::GuestMemory> make_memfd_memory(
    const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges) {
  std::vector<memory::GuestMemoryRegion> regions;
  for (const auto& [start, size] : ranges) {
    auto region =
        memory::GuestMemoryRegion::create(memory::GuestAddress(start), size, {.backing = memory::Backing::memfd});
    if (!region) {
      return std::unexpected(region.error());
    }
    regions.push_back(std::move(*region));
  }
  return memory::GuestMemory::from_regions(std::move(regions));
}

/// The frontend behind a virtio-pci transport, against a backend on a socket in a fresh temporary directory.
class FrontendFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (std::filesystem::temp_directory_path() / "vmmlab-vu-frontend-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    socket_path_ = (dir_ / "backend.sock").string();
  }
  void TearDown() override {
    // In dependency order: the transport resets the frontend, which talks to the backend.
    drop_transport();
    release_frontend();
    backend_.reset();
    stop_daemon();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  /// The socket path the backend listens on.
  [[nodiscard]] const std::string& socket_path() const { return socket_path_; }
  /// A frontend configuration for it: one queue of 256, no configuration, rng, generous timeouts.
  [[nodiscard]] FrontendConfig base_config() const {
    FrontendConfig config;
    config.socket_path = socket_path_;
    config.device_type = VIRTIO_ID_RNG;
    config.queues = 1;
    config.queue_size = 256;
    config.connect_timeout = std::chrono::seconds(10);
    config.reply_timeout = std::chrono::seconds(10);
    return config;
  }

  /// Starts a fake backend with `script` and connects a frontend to it (`change` adjusts the configuration). Null on
  /// failure, with the error in `connect_error`.
  std::shared_ptr<VhostUserFrontend> connect_to(const FakeBackendScript& script,
                                                const std::function<void(FrontendConfig&)>& change = {}) {
    auto backend = FakeBackend::start(socket_path_, script);
    if (!backend) {
      ADD_FAILURE() << backend.error().message();
      return nullptr;
    }
    backend_ = std::move(*backend);
    FrontendConfig config = base_config();
    if (change) {
      change(config);
    }
    return connect_with(std::move(config));
  }
  /// Serves `device` with the real backend library (a `Daemon` on a thread) at the socket path, then connects a
  /// frontend with the device's type, queues and configuration size. Null on failure (`connect_error`).
  std::shared_ptr<VhostUserFrontend> connect_to_daemon(std::shared_ptr<virtio::VirtioDevice> device) {
    FrontendConfig config = base_config();
    config.device_type = device->device_type();
    config.queues = static_cast<std::uint16_t>(device->queue_max_sizes().size());
    config.queue_size = device->queue_max_sizes().front();
    config.config_size = static_cast<std::uint32_t>(device->config_size());
    auto daemon = Daemon::create(socket_path_, std::move(device), BackendOptions{});
    if (!daemon) {
      ADD_FAILURE() << daemon.error().message();
      return nullptr;
    }
    daemon_ = std::move(*daemon);
    daemon_thread_ = std::thread([this] {
      if (auto ran = daemon_->run(); !ran) {
        ADD_FAILURE() << "daemon: " << ran.error().message();
      }
    });
    return connect_with(std::move(config));
  }
  /// The daemon started by `connect_to_daemon`.
  [[nodiscard]] Daemon& daemon() { return *daemon_; }
  /// Stops and joins the daemon, if one runs.
  void stop_daemon() {
    if (daemon_thread_.joinable()) {
      daemon_->request_stop();
      daemon_thread_.join();
    }
    daemon_.reset();
  }

  /// Connects a frontend with `config` to whatever listens (null on failure, error in `connect_error`).
  std::shared_ptr<VhostUserFrontend> connect_with(FrontendConfig config) {
    auto frontend = VhostUserFrontend::connect(std::move(config));
    if (!frontend) {
      connect_error_ = frontend.error();
      return nullptr;
    }
    frontend_ = *frontend;
    return frontend_;
  }
  /// Why the last connect failed.
  [[nodiscard]] const Error& connect_error() const { return *connect_error_; }

  /// 4 MiB of memfd memory at 0, or the given ranges.
  memory::GuestMemory memfd_memory(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges = {
                                       {0x0, 4ull << 20}}) {
    auto memory = make_memfd_memory(ranges);
    if (!memory) {
      ADD_FAILURE() << memory.error().message();
      return {};
    }
    return std::move(*memory);
  }

  /// Puts the connected frontend behind a transport over `memory`.
  bool make_transport(memory::GuestMemory memory) {
    memory_ = std::make_unique<memory::GuestMemory>(std::move(memory));
    auto transport = virtio::VirtioPciDevice::create(frontend_, *memory_, sink_);
    if (!transport) {
      ADD_FAILURE() << transport.error().message();
      return false;
    }
    transport_ = *transport;
    driver_ = std::make_unique<vmm::testing::VirtioPciDriver>(*transport_);
    return true;
  }

  /// What a guest driver does: negotiate VERSION_1 (plus `features`), lay out queue 0 with the mock driver, call
  /// `before_enable` (MSI-X vectors...), enable the queue and set DRIVER_OK. True when DRIVER_OK reads back set.
  bool start_driver(vmm::testing::MockLayout layout = {}, const std::function<void()>& before_enable = {},
                    std::uint64_t features = 0) {
    if (!driver_->negotiate((1ull << VIRTIO_F_VERSION_1) | features)) {
      ADD_FAILURE() << "FEATURES_OK refused";
      return false;
    }
    mock_ = std::make_unique<vmm::testing::MockDriver>(*memory_, layout,
                                                       virtio::has_feature(features, VIRTIO_RING_F_EVENT_IDX));
    if (before_enable) {
      before_enable();
    }
    driver_->enable_queue(0, mock_->queue_layout());
    driver_->add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    return (driver_->status() & VIRTIO_CONFIG_S_DRIVER_OK) != 0;
  }

  /// Destroys the transport (which resets an active device).
  void drop_transport() {
    driver_.reset();
    transport_.reset();
  }
  /// Drops the fixture's reference to the frontend.
  void release_frontend() { frontend_.reset(); }

  [[nodiscard]] FakeBackend& backend() { return *backend_; }
  [[nodiscard]] virtio::VirtioPciDevice& transport() { return *transport_; }
  [[nodiscard]] vmm::testing::VirtioPciDriver& driver() { return *driver_; }
  [[nodiscard]] vmm::testing::MockDriver& mock() { return *mock_; }
  [[nodiscard]] const memory::GuestMemory& memory() const { return *memory_; }
  [[nodiscard]] pci::testing::FakeMsiSink& sink() { return sink_; }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::string socket_path_;
  std::unique_ptr<FakeBackend> backend_;
  std::unique_ptr<Daemon> daemon_;
  std::thread daemon_thread_;
  std::optional<Error> connect_error_;
  std::unique_ptr<memory::GuestMemory> memory_;  // outlives the transport and the mock driver
  pci::testing::FakeMsiSink sink_;
  std::shared_ptr<VhostUserFrontend> frontend_;
  std::shared_ptr<virtio::VirtioPciDevice> transport_;
  std::unique_ptr<vmm::testing::VirtioPciDriver> driver_;
  std::unique_ptr<vmm::testing::MockDriver> mock_;
};

}  // namespace vmm::vhost::testing
