#include "vmm/virtio/net/tap.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace vmm::virtio::net {
namespace {

Result<void> set_address(int sock, const std::string& name, unsigned long request, const std::string& text,
                         std::string_view what) {
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  if (::inet_pton(AF_INET, text.c_str(), &address.sin_addr) != 1) {
    return logic_error("tap", fmt::format("{} {}: not an IPv4 address", what, text));
  }
  std::memcpy(&ifr.ifr_addr, &address, sizeof(address));
  if (::ioctl(sock, request, &ifr) != 0) {
    return sys_error(what, errno, fmt::format("tap {}: {}", name, text));
  }
  return {};
}

}  // namespace

Result<std::shared_ptr<Tap>> Tap::open(const TapConfig& config) {
  if (config.name.empty() || config.name.size() >= IFNAMSIZ) {
    return logic_error("tap", fmt::format("'{}': an interface name has 1 to {} characters", config.name, IFNAMSIZ - 1));
  }
  auto fd = Fd::open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  if (!fd) {
    return std::unexpected(fd.error().with_context("load the tun module, or run where /dev/net/tun exists"));
  }
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, config.name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd->get(), TUNSETIFF, &ifr) != 0) {
    return sys_error("TUNSETIFF", errno,
                     fmt::format("tap {}{}", config.name, errno == EPERM ? ": needs CAP_NET_ADMIN" : ""));
  }
  const std::string name = ifr.ifr_name;
  int header = static_cast<int>(kNetHeaderBytes);
  if (::ioctl(fd->get(), TUNSETVNETHDRSZ, &header) != 0) {
    return sys_error("TUNSETVNETHDRSZ", errno, fmt::format("tap {}", name));
  }
  // No checksum or segmentation offloads: the device offers none to the guest, so the frames never need them.
  if (::ioctl(fd->get(), TUNSETOFFLOAD, 0) != 0) {
    return sys_error("TUNSETOFFLOAD", errno, fmt::format("tap {}", name));
  }
  if (config.ip) {
    Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!sock.valid()) {
      return sys_error("socket", errno, "AF_INET, to configure the tap");
    }
    if (auto rc = set_address(sock.get(), name, SIOCSIFADDR, *config.ip, "SIOCSIFADDR"); !rc) {
      return std::unexpected(rc.error());
    }
    if (auto rc =
            set_address(sock.get(), name, SIOCSIFNETMASK, config.mask.value_or("255.255.255.0"), "SIOCSIFNETMASK");
        !rc) {
      return std::unexpected(rc.error());
    }
    ifreq flags{};
    std::strncpy(flags.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (::ioctl(sock.get(), SIOCGIFFLAGS, &flags) != 0) {
      return sys_error("SIOCGIFFLAGS", errno, fmt::format("tap {}", name));
    }
    flags.ifr_flags = static_cast<short>(flags.ifr_flags | IFF_UP | IFF_RUNNING);
    if (::ioctl(sock.get(), SIOCSIFFLAGS, &flags) != 0) {
      return sys_error("SIOCSIFFLAGS", errno, fmt::format("tap {}", name));
    }
  }
  return std::shared_ptr<Tap>(new Tap(std::move(*fd), name));
}

Result<std::optional<std::size_t>> Tap::receive(std::span<std::byte> frame) {
  for (;;) {
    const ssize_t n = ::read(fd_.get(), frame.data(), frame.size());
    if (n >= 0) {
      return static_cast<std::size_t>(n);
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN) {
      return std::nullopt;
    }
    return sys_error("read", errno, fmt::format("tap {}", name_));
  }
}

Result<void> Tap::send(std::span<const iovec> parts) {
  for (;;) {
    if (::writev(fd_.get(), parts.data(), static_cast<int>(parts.size())) >= 0) {
      return {};
    }
    if (errno != EINTR) {
      return sys_error("writev", errno, fmt::format("tap {}", name_));
    }
  }
}

}  // namespace vmm::virtio::net
