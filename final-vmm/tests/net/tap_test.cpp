// Tap against the real kernel: the interface appears in /sys/class/net, up, with the address and netmask asked for;
// the descriptor speaks 12-byte virtio-net headers and does not block; a frame sent through it reaches the host's
// network stack, which answers it (an ARP request for the tap's address gets its reply). Then the refusals: names
// that do not fit, addresses that do not parse, an interface another process holds. Without /dev/net/tun or
// CAP_NET_ADMIN the cases that need a tap skip with the reason, or fail under VMMLAB_REQUIRE_KVM=1 (CI).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vmm/fd.hpp"
#include "vmm/testing/kvm.hpp"
#include "vmm/testing/result.hpp"
#include "vmm/virtio/net/tap.hpp"

namespace vmm::virtio::net {
namespace {

using vmm::testing::error_of;

constexpr std::array<std::uint8_t, 6> kGuestMac{0x52, 0x54, 0x00, 0x7a, 0x9b, 0x01};

// A name no other test run uses at the same time: the pid, cut to the 15 characters an interface name may have.
std::string unique_name(std::string_view prefix) {
  std::string name = fmt::format("{}{}", prefix, ::getpid());
  name.resize(std::min<std::size_t>(name.size(), IFNAMSIZ - 1));
  return name;
}

// /sys/class/net/<name>/flags: the interface flags in hex ("0x1003" for an interface that is up).
std::optional<unsigned> interface_flags(const std::string& name) {
  std::ifstream file("/sys/class/net/" + name + "/flags");
  unsigned flags = 0;
  if (!(file >> std::hex >> flags)) {
    return std::nullopt;
  }
  return flags;
}

// SIOCGIFADDR or SIOCGIFNETMASK as text.
std::string interface_address(const std::string& name, unsigned long request) {
  Fd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  if (::ioctl(socket.get(), request, &ifr) != 0) {
    return fmt::format("ioctl failed: {}", std::strerror(errno));
  }
  sockaddr_in address{};
  std::memcpy(&address, &ifr.ifr_addr, sizeof(address));
  std::array<char, INET_ADDRSTRLEN> text{};
  ::inet_ntop(AF_INET, &address.sin_addr, text.data(), text.size());
  return text.data();
}

// An ARP request as the guest would send it (virtio-net header first): who has `target`? tell `sender`.
std::vector<std::uint8_t> arp_request(const std::array<std::uint8_t, 4>& sender,
                                      const std::array<std::uint8_t, 4>& target) {
  std::vector<std::uint8_t> frame(kNetHeaderBytes, 0);  // no offloads: an all-zero header
  const auto put = [&frame](std::initializer_list<std::uint8_t> bytes) { frame.insert(frame.end(), bytes); };
  const auto put_array = [&frame](const auto& bytes) { frame.insert(frame.end(), bytes.begin(), bytes.end()); };
  put({0xff, 0xff, 0xff, 0xff, 0xff, 0xff});  // Ethernet: to everyone
  put_array(kGuestMac);                       // from the guest
  put({0x08, 0x06});                          // ARP
  put({0x00, 0x01, 0x08, 0x00, 6, 4});        // Ethernet hardware, IPv4 protocol, address lengths
  put({0x00, 0x01});                          // request
  put_array(kGuestMac);
  put_array(sender);
  put({0, 0, 0, 0, 0, 0});
  put_array(target);
  return frame;
}

class TapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    subnet_ = static_cast<std::uint8_t>(::getpid() % 250 + 1);
    auto tap = Tap::open({.name = name_, .ip = fmt::format("10.213.{}.1", subnet_), .mask = "255.255.255.0"});
    if (!tap) {
      const int error = tap.error().errno_value;
      // No tun driver, or not allowed to use it: the environment's limit, not a bug (unless CI says it must work).
      if (error == ENOENT || error == ENODEV || error == ENXIO || error == EPERM || error == EACCES) {
        if (vmm::testing::kvm_required()) {
          FAIL() << "a tap is required (VMMLAB_REQUIRE_KVM=1) but cannot be opened: " << tap.error().message();
        }
        GTEST_SKIP() << "no tap: " << tap.error().message() << " (run as root where /dev/net/tun exists)";
      }
      FAIL() << tap.error().message();
    }
    tap_ = *tap;
  }

  const std::string name_ = unique_name("vmmlab-t");
  std::uint8_t subnet_ = 0;
  std::shared_ptr<Tap> tap_;
};

TEST_F(TapTest, TheInterfaceIsUpWithItsAddress) {
  EXPECT_EQ(tap_->name(), name_);
  ASSERT_TRUE(std::filesystem::exists("/sys/class/net/" + name_));
  const auto flags = interface_flags(name_);
  ASSERT_TRUE(flags);
  EXPECT_NE(*flags & IFF_UP, 0u) << std::hex << *flags;
  EXPECT_EQ(interface_address(name_, SIOCGIFADDR), fmt::format("10.213.{}.1", subnet_));
  EXPECT_EQ(interface_address(name_, SIOCGIFNETMASK), "255.255.255.0");
  // A tap made by `open` is not persistent: closing it removes the interface.
  tap_.reset();
  EXPECT_FALSE(std::filesystem::exists("/sys/class/net/" + name_));
}

TEST_F(TapTest, TheDescriptorSpeaksTwelveByteVnetHeadersAndDoesNotBlock) {
  int header_bytes = 0;
  ASSERT_EQ(::ioctl(tap_->fd(), TUNGETVNETHDRSZ, &header_bytes), 0) << std::strerror(errno);
  EXPECT_EQ(header_bytes, 12);
  ifreq ifr{};
  ASSERT_EQ(::ioctl(tap_->fd(), TUNGETIFF, &ifr), 0) << std::strerror(errno);
  EXPECT_EQ(ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  EXPECT_NE(::fcntl(tap_->fd(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(tap_->fd(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST_F(TapTest, AFrameSentThroughTheTapReachesTheHostWhichAnswers) {
  const std::array<std::uint8_t, 4> host{10, 213, subnet_, 1};
  const std::array<std::uint8_t, 4> guest{10, 213, subnet_, 2};
  const auto request = arp_request(guest, host);
  const iovec part{.iov_base = const_cast<std::uint8_t*>(request.data()), .iov_len = request.size()};
  ASSERT_TRUE(tap_->send(std::span(&part, 1)));

  // Other frames may come first (IPv6 router solicitations from a link that just came up): read until the reply.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::vector<std::byte> frame(kMaxFrameBytes);
  bool answered = false;
  while (!answered && std::chrono::steady_clock::now() < deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd ready{.fd = tap_->fd(), .events = POLLIN, .revents = 0};
    if (::poll(&ready, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0))) != 1) {
      break;
    }
    auto got = tap_->receive(frame);
    ASSERT_TRUE(got) << got.error().message();
    if (!*got) {
      continue;
    }
    ASSERT_GE(**got, kNetHeaderBytes);
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(frame.data()) + kNetHeaderBytes;
    const std::size_t length = **got - kNetHeaderBytes;
    // Ethernet type ARP, operation 2 (reply), sender protocol address = the tap's, addressed to the guest's MAC.
    if (length >= 42 && bytes[12] == 0x08 && bytes[13] == 0x06 && bytes[20] == 0 && bytes[21] == 2 &&
        std::equal(host.begin(), host.end(), bytes + 28) && std::equal(kGuestMac.begin(), kGuestMac.end(), bytes)) {
      answered = true;
    }
  }
  EXPECT_TRUE(answered) << "no ARP reply from " << name_ << " within 5 s";
}

TEST_F(TapTest, AnInterfaceInUseIsRefusedWithTheReason) {
  // Not IFF_MULTI_QUEUE: a tap has one owner at a time.
  EXPECT_THAT(error_of(Tap::open({.name = name_})),
              ::testing::HasSubstr(fmt::format("TUNSETIFF: EBUSY (tap {}: another process has it open)", name_)));
}

TEST_F(TapTest, ANumberedNameIsResolvedByTheKernel) {
  auto tap = Tap::open({.name = "vmmlabn%d"});
  ASSERT_TRUE(tap) << tap.error().message();
  const std::string& name = (*tap)->name();
  ASSERT_GT(name.size(), 7u);
  EXPECT_EQ(name.substr(0, 7), "vmmlabn");
  EXPECT_TRUE(std::ranges::all_of(name.substr(7), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
      << name;
  EXPECT_TRUE(std::filesystem::exists("/sys/class/net/" + name));
  // Without an ip it is left down: configuring it is the caller's business then.
  const auto flags = interface_flags(name);
  ASSERT_TRUE(flags);
  EXPECT_EQ(*flags & IFF_UP, 0u);
}

// Checked before /dev/net/tun is opened: no privileges needed, and nothing half-configured is left behind.
TEST(TapConfigTest, BadSettingsAreRefusedBeforeOpening) {
  EXPECT_THAT(error_of(Tap::open({.name = "a-name-far-too-long"})),
              ::testing::HasSubstr("is 19 characters long; an interface name has at most 15"));
  EXPECT_THAT(error_of(Tap::open({.name = "vmmlab-x", .ip = "300.1.1.1"})),
              ::testing::HasSubstr("tap vmmlab-x: ip 300.1.1.1 is not an IPv4 address"));
  EXPECT_THAT(error_of(Tap::open({.name = "vmmlab-x", .ip = "10.0.0.1", .mask = "255.255.0"})),
              ::testing::HasSubstr("mask 255.255.0 is not an IPv4 address"));
  EXPECT_THAT(error_of(Tap::open({.name = "vmmlab-x", .ip = std::nullopt, .mask = "255.255.255.0"})),
              ::testing::HasSubstr("a mask without an ip configures nothing"));
}

}  // namespace
}  // namespace vmm::virtio::net
