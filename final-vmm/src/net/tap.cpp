#include "vmm/virtio/net/tap.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace vmm::virtio::net {

namespace {

constexpr std::string_view kDefaultMask = "255.255.255.0";

// An interface request naming `name`, which the caller checked fits (shorter than IFNAMSIZ, so it stays
// NUL-terminated in the zeroed array).
ifreq interface_request(const std::string& name) {
  ifreq request{};
  std::memcpy(request.ifr_name, name.data(), name.size());
  return request;
}

// "10.0.0.1" as the sockaddr SIOCSIFADDR and SIOCSIFNETMASK take. Checked before anything is opened, so a typo
// leaves no half-configured interface behind.
Result<sockaddr_in> parse_ipv4(const std::string& text, std::string_view what, const std::string& tap) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  if (::inet_pton(AF_INET, text.c_str(), &address.sin_addr) != 1) {
    return logic_error(fmt::format("tap {}", tap), fmt::format("{} {} is not an IPv4 address", what, text));
  }
  return address;
}

// SIOCSIFADDR or SIOCSIFNETMASK: the socket ioctls take the address in ifr_addr (ifr_netmask is the same bytes).
Result<void> set_address(const Fd& socket, const std::string& name, unsigned long request, std::string_view operation,
                         const sockaddr_in& address) {
  ifreq ifr = interface_request(name);
  std::memcpy(&ifr.ifr_addr, &address, sizeof(address));
  if (auto ok = ioctl(socket, request, operation, &ifr); !ok) {
    return std::unexpected(std::move(ok).error().with_context(fmt::format("tap {}", name)));
  }
  return {};
}

// Address, netmask, IFF_UP: what `ip addr add` and `ip link set up` would do, through an AF_INET socket (the
// interface ioctls need a socket of the address family, not the tun descriptor).
Result<void> configure_ipv4(const std::string& name, const sockaddr_in& ip, const sockaddr_in& mask) {
  Fd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket) {
    return sys_error("socket", errno, fmt::format("AF_INET, to configure tap {}", name));
  }
  // The address first: setting it also sets the class's default mask, which the netmask then replaces.
  if (auto ok = set_address(socket, name, SIOCSIFADDR, "SIOCSIFADDR", ip); !ok) {
    return ok;
  }
  if (auto ok = set_address(socket, name, SIOCSIFNETMASK, "SIOCSIFNETMASK", mask); !ok) {
    return ok;
  }
  // Read-modify-write: the other flags (IFF_BROADCAST, IFF_MULTICAST...) must stay as the kernel set them.
  ifreq flags = interface_request(name);
  if (auto ok = VMM_IOCTL(socket, SIOCGIFFLAGS, &flags); !ok) {
    return std::unexpected(std::move(ok).error().with_context(fmt::format("tap {}", name)));
  }
  flags.ifr_flags = static_cast<short>(flags.ifr_flags | IFF_UP);
  if (auto ok = VMM_IOCTL(socket, SIOCSIFFLAGS, &flags); !ok) {
    return std::unexpected(std::move(ok).error().with_context(fmt::format("tap {}: bringing it up", name)));
  }
  return {};
}

}  // namespace

Result<std::shared_ptr<Tap>> Tap::open(const TapConfig& config) {
  const std::string& name = config.name;
  if (name.size() >= IFNAMSIZ) {
    return logic_error("tap", fmt::format("name {} is {} characters long; an interface name has at most {}", name,
                                          name.size(), IFNAMSIZ - 1));
  }
  std::optional<sockaddr_in> ip;
  std::optional<sockaddr_in> mask;
  if (config.ip) {
    auto parsed_ip = parse_ipv4(*config.ip, "ip", name);
    if (!parsed_ip) {
      return std::unexpected(std::move(parsed_ip).error());
    }
    auto parsed_mask = parse_ipv4(config.mask.value_or(std::string(kDefaultMask)), "mask", name);
    if (!parsed_mask) {
      return std::unexpected(std::move(parsed_mask).error());
    }
    ip = *parsed_ip;
    mask = *parsed_mask;
  } else if (config.mask) {
    return logic_error(fmt::format("tap {}", name), "a mask without an ip configures nothing");
  }

  auto fd = Fd::open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  if (!fd) {
    return std::unexpected(
        std::move(fd).error().with_context("the tun driver: modprobe tun, or run where /dev/net/tun exists"));
  }
  ifreq ifr = interface_request(name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (auto ok = VMM_IOCTL(*fd, TUNSETIFF, &ifr); !ok) {
    const int error = ok.error().errno_value;
    // The usual failures, said in words: no privilege, or an interface of that name that is not a free tap.
    std::string why;
    if (error == EPERM || error == EACCES) {
      why = ": needs CAP_NET_ADMIN";
    } else if (error == EBUSY) {
      why = ": another process has it open";
    } else if (error == EINVAL) {
      why = ": it exists, but not as a tap with these flags";
    }
    return std::unexpected(std::move(ok).error().with_context(fmt::format("tap {}{}", name, why)));
  }
  // The kernel's name: "%d" resolved, or the one it chose for an empty name.
  std::string actual(ifr.ifr_name, ::strnlen(ifr.ifr_name, IFNAMSIZ));
  const std::string where = fmt::format("tap {}", actual);

  int header_bytes = static_cast<int>(kNetHeaderBytes);
  if (auto ok = VMM_IOCTL(*fd, TUNSETVNETHDRSZ, &header_bytes); !ok) {
    return std::unexpected(std::move(ok).error().with_context(where));
  }
  // No offloads: the device offers none to its driver, so the guest neither sends nor can take a frame with a partial
  // checksum or larger than the MTU. Turned off, the kernel checksums and segments everything before handing it over.
  if (auto ok = VMM_IOCTL(*fd, TUNSETOFFLOAD, 0u); !ok) {
    return std::unexpected(std::move(ok).error().with_context(where));
  }
  if (ip) {
    if (auto ok = configure_ipv4(actual, *ip, *mask); !ok) {
      return std::unexpected(std::move(ok).error());
    }
  }
  return std::shared_ptr<Tap>(new Tap(std::move(*fd), std::move(actual)));
}

Result<std::optional<std::size_t>> Tap::receive(std::span<std::byte> frame) {
  for (;;) {
    const ssize_t got = ::read(fd_.get(), frame.data(), frame.size());
    if (got >= 0) {
      return static_cast<std::size_t>(got);
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return std::nullopt;
    }
    return sys_error("read", errno, fmt::format("tap {}", name_));
  }
}

Result<void> Tap::send(std::span<const iovec> parts) {
  std::size_t total = 0;
  for (const iovec& part : parts) {
    total += part.iov_len;
  }
  for (;;) {
    const ssize_t put = ::writev(fd_.get(), parts.data(), static_cast<int>(parts.size()));
    if (put >= 0) {
      // A tap takes a frame whole or not at all; anything else would have put half a frame on the link.
      if (static_cast<std::size_t>(put) != total) {
        return sys_error("writev", EIO, fmt::format("tap {}: {} of {} bytes written", name_, put, total));
      }
      return {};
    }
    if (errno != EINTR) {
      return sys_error("writev", errno, fmt::format("tap {}: a {}-byte frame", name_, total));
    }
  }
}

}  // namespace vmm::virtio::net
