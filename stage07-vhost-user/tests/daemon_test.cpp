// Daemon over a real unix socket: a scripted frontend connects, sets the device up, gets requests served and goes
// away; the daemon accepts the next frontend. Hostile peers (garbage, a huge header, a message that does not decode)
// end their own session at worst, never the daemon; request_stop ends run().
#include "vmm/vhost/backend/daemon.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "scripted_frontend.hpp"
#include "vmm/virtio/rng/rng_device.hpp"

namespace {

// What the backend offers for the rng: the defaults without CONFIG (the rng has no configuration space).
const std::uint64_t kRngProtocolFeatures =
    vmm::vhost::BackendOptions{}.protocol_features & ~vmm::vhost::bit(vmm::vhost::ProtocolFeature::Config);

using namespace vmm;
using namespace vmm::vhost;
namespace vt = vmm::testing;
using vmm::testing::exchange;
using vmm::testing::make_message;
using vmm::testing::ScriptedFrontend;
using vmm::testing::wait_until;

constexpr std::uint64_t kFeatures = (1ull << VIRTIO_F_VERSION_1) | (1ull << kProtocolFeaturesBit);

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = fmt::format("/tmp/vmmlab-daemon-test-{}-{}.sock", ::getpid(),
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    path_.resize(std::min<std::size_t>(path_.size(), 100));
    auto device = virtio::rng::RngDevice::create(vt::counting_rng_config());
    ASSERT_TRUE(device) << device.error().message();
    rng_ = *device;
    BackendOptions options;
    options.warn = [this](std::string_view line) {
      std::lock_guard lock(mutex_);
      warnings_.emplace_back(line);
    };
    auto daemon = Daemon::create(path_, rng_, std::move(options));
    ASSERT_TRUE(daemon) << daemon.error().message();
    daemon_ = std::move(*daemon);
    daemon_->set_session_observer([this](std::uint64_t session, std::string_view reason) {
      std::lock_guard lock(mutex_);
      ended_.push_back(fmt::format("{}: {}", session, reason));
    });
    thread_ = std::thread([this] { result_ = daemon_->run(); });
  }

  void TearDown() override {
    if (daemon_) {
      daemon_->request_stop();
    }
    if (thread_.joinable()) {
      thread_.join();
    }
    EXPECT_TRUE(result_) << result_.error().message();
    daemon_.reset();
    EXPECT_FALSE(file_exists(path_)) << "the socket file outlived the daemon";
  }

  Connection connect() {
    auto connection = Connection::connect(path_, std::chrono::seconds(10));
    EXPECT_TRUE(connection) << connection.error().message();
    return std::move(*connection);
  }

  // Sends every message, checking that none failed; returns the replies.
  std::vector<Message> play(Connection& connection, std::vector<Message> messages, bool reply_ack) {
    std::vector<Message> replies;
    for (auto& message : messages) {
      auto reply = exchange(connection, message, reply_ack);
      EXPECT_TRUE(reply) << describe(message) << ": " << reply.error().message();
      if (reply && *reply) {
        replies.push_back(std::move(**reply));
      }
    }
    return replies;
  }

  // One whole session: start, serve a request, check it came back with its bytes and an interrupt.
  void serve_one_request(Connection& connection, ScriptedFrontend& frontend) {
    play(connection, frontend.qemu_start(kFeatures, kRngProtocolFeatures), true);
    frontend.add_rng_request(0, 32);
    frontend.kick(0);
    ASSERT_TRUE(wait_until([&] { return frontend.driver(0).used_index() == 1; }));
    const auto used = frontend.driver(0).collect_used();
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].len, 32u);
    ASSERT_TRUE(wait_until([&] { return frontend.take_calls(0) >= 1; })) << "no interrupt on the call eventfd";
  }

  std::vector<std::string> ended() {
    std::lock_guard lock(mutex_);
    return ended_;
  }
  std::vector<std::string> warnings() {
    std::lock_guard lock(mutex_);
    return warnings_;
  }

  std::string path_;
  std::shared_ptr<virtio::rng::RngDevice> rng_;
  std::unique_ptr<Daemon> daemon_;
  std::thread thread_;
  Result<void> result_;
  std::mutex mutex_;
  std::vector<std::string> ended_;
  std::vector<std::string> warnings_;
};

TEST_F(DaemonTest, ServesOneFrontendAfterAnother) {
  EXPECT_TRUE(file_exists(path_));
  EXPECT_EQ(daemon_->socket_path(), path_);
  for (std::uint64_t session = 1; session <= 2; ++session) {
    SCOPED_TRACE(fmt::format("session {}", session));
    ScriptedFrontend frontend;
    auto connection = connect();
    serve_one_request(connection, frontend);
    EXPECT_TRUE(daemon_->handler().running());
    EXPECT_EQ(daemon_->sessions(), session);
    connection.shutdown();
    // The daemon notices, cleans up (workers joined, device reset) and waits for the next frontend.
    ASSERT_TRUE(wait_until([&] { return ended().size() == session; }));
    EXPECT_EQ(ended().back(), fmt::format("{}: frontend disconnected", session));
    EXPECT_FALSE(daemon_->handler().running());
    EXPECT_FALSE(rng_->active());
    EXPECT_TRUE(daemon_->handler().worker_tids().empty());
  }
  EXPECT_EQ(rng_->bytes_served(), 64u);
}

TEST_F(DaemonTest, GarbageEndsTheSessionNotTheDaemon) {
  {
    auto connection = connect();
    // A header announcing 4 GiB of payload: the framing cannot be trusted, the daemon hangs up.
    const std::array<std::uint8_t, 12> huge{1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    ASSERT_TRUE(connection.send_raw(huge));
    ASSERT_TRUE(wait_until([&] { return ended().size() == 1; }));
    auto reply = connection.receive(Direction::ToFrontend, std::chrono::seconds(10));
    ASSERT_FALSE(reply);
    EXPECT_EQ(reply.error().errno_value, ECONNRESET) << reply.error().message();
  }
  {
    auto connection = connect();
    std::vector<std::uint8_t> garbage(4096);
    for (std::size_t i = 0; i < garbage.size(); ++i) {
      garbage[i] = static_cast<std::uint8_t>(i * 7 + 13);
    }
    ASSERT_TRUE(connection.send_raw(garbage));
    ASSERT_TRUE(wait_until([&] { return ended().size() == 2; }));
  }
  // Still serving.
  ScriptedFrontend frontend;
  auto connection = connect();
  serve_one_request(connection, frontend);
  EXPECT_EQ(daemon_->sessions(), 3u);
}

TEST_F(DaemonTest, AMessageThatDoesNotDecodeIsPassedOver) {
  auto connection = connect();
  // GET_FEATURES with an 8-byte payload: framed correctly, but the wrong size for its type.
  const std::array<std::uint8_t, 20> wrong_size{1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  ASSERT_TRUE(connection.send_raw(wrong_size));
  // The session goes on: the next request is answered.
  auto reply = exchange(connection, make_message(Request::GetFeatures), false);
  ASSERT_TRUE(reply) << reply.error().message();
  ASSERT_TRUE(*reply);
  EXPECT_EQ((*reply)->u64(), rng_->features() | (1ull << kProtocolFeaturesBit));
  EXPECT_EQ(daemon_->decode_errors(), 1u);
  EXPECT_TRUE(ended().empty());
  EXPECT_FALSE(warnings().empty());

  // A refused request is answered (REPLY_ACK) and does not end the session either.
  ASSERT_TRUE(exchange(connection, vt::u64_message(Request::SetProtocolFeatures, kRngProtocolFeatures), false));
  auto nack = exchange(
      connection,
      make_message(Request::SetVringNum, vhost_vring_state{.index = 5, .num = 16}, {}, kVersion | kNeedReply), true);
  ASSERT_TRUE(nack) << nack.error().message();
  ASSERT_TRUE(*nack);
  EXPECT_EQ((*nack)->u64(), 1u);
  EXPECT_TRUE(ended().empty());
}

TEST_F(DaemonTest, RequestStopEndsAnIdleSession) {
  ScriptedFrontend frontend;
  auto connection = connect();
  serve_one_request(connection, frontend);
  daemon_->request_stop();
  thread_.join();
  EXPECT_TRUE(result_);
  ASSERT_EQ(ended().size(), 1u);
  EXPECT_EQ(ended()[0], "1: stop requested");
  EXPECT_FALSE(rng_->active());
  EXPECT_TRUE(daemon_->stop_requested());
  // The daemon dropped the connection when the session ended: the frontend sees the socket closed.
  auto reply = connection.receive(Direction::ToFrontend, std::chrono::seconds(10));
  EXPECT_FALSE(reply);
}

TEST(DaemonStop, RequestStopBeforeRunAndWithoutFrontend) {
  const std::string path = fmt::format("/tmp/vmmlab-daemon-stop-{}.sock", ::getpid());
  auto device = virtio::rng::RngDevice::create({});
  ASSERT_TRUE(device);
  auto daemon = Daemon::create(path, *device, {});
  ASSERT_TRUE(daemon) << daemon.error().message();
  // Another daemon cannot take the same live socket.
  auto second = Daemon::create(path, *device, {});
  ASSERT_FALSE(second);
  (*daemon)->request_stop();
  EXPECT_TRUE((*daemon)->run());
  auto once = (*daemon)->serve_one();
  ASSERT_TRUE(once);
  EXPECT_FALSE(*once);
  EXPECT_EQ((*daemon)->sessions(), 0u);
  daemon->reset();
  EXPECT_FALSE(file_exists(path));
}

}  // namespace
