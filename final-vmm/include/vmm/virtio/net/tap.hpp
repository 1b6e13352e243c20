#pragma once
/// @file
/// @brief `Tap`: a Linux tap interface as a `NetBackend`, opened and configured the way Cloud Hypervisor's
/// `--net tap=,ip=,mask=` does it.

#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/virtio/net/net_backend.hpp"

namespace vmm::virtio::net {

/// @brief How to open a tap.
struct TapConfig {
  /// @brief The interface name, at most 15 characters (IFNAMSIZ - 1). An existing tap of that name is attached to;
  /// otherwise one is created, and goes away when the `Tap` is closed. A name with "%d" ("vmtap%d") lets the kernel
  /// pick the first free number; empty lets it pick "tapN".
  std::string name;
  /// @brief The host side's IPv4 address ("192.168.249.1"). When given, the interface gets it and is brought up.
  std::optional<std::string> ip = std::nullopt;
  /// @brief The netmask that goes with `ip` (default 255.255.255.0). Refused without `ip`.
  std::optional<std::string> mask = std::nullopt;
};

/// @brief A tap interface: the host kernel's end of a virtual Ethernet cable whose other end is the guest's NIC.
///
/// Opened from /dev/net/tun with
/// - IFF_TAP: Ethernet frames (a tun would carry bare IP packets, and the guest speaks Ethernet);
/// - IFF_NO_PI: no 4-byte packet-information prefix in front of each frame;
/// - IFF_VNET_HDR with TUNSETVNETHDRSZ 12: each frame carries a `virtio_net_hdr_v1`, the very header a VERSION_1
///   driver puts in front of its frames, so the device copies frames through unchanged;
/// - TUNSETOFFLOAD 0: no checksum or segmentation offloads, matching the device, which offers none to the guest. The
///   kernel then hands over only complete frames with valid checksums, no larger than the MTU;
/// - O_NONBLOCK: the device's receive thread polls it, and a read when nothing waits must not block.
/// With an `ip`, the address and netmask are set (SIOCSIFADDR, SIOCSIFNETMASK on an AF_INET socket) and the link is
/// brought up (IFF_UP), so the host can reach the guest at once. Everything needs CAP_NET_ADMIN.
///
/// `receive` and `send` may be called from two threads at once (see `NetBackend`).
class Tap final : public NetBackend {
 public:
  /// @brief Opens (or creates) and configures the interface. Errors name the step, the errno and the interface:
  /// "TUNSETIFF: EPERM (tap vmtap0: needs CAP_NET_ADMIN)", "open: ENOENT (/dev/net/tun; ...)",
  /// "tap vmtap0: ip 300.1.1.1 is not an IPv4 address".
  [[nodiscard]] static Result<std::shared_ptr<Tap>> open(const TapConfig& config);

  /// @brief The /dev/net/tun descriptor (non-blocking, close-on-exec).
  [[nodiscard]] int fd() const override { return fd_.get(); }
  /// @brief read(2) of one frame; nothing on EAGAIN.
  [[nodiscard]] Result<std::optional<std::size_t>> receive(std::span<std::byte> frame) override;
  /// @brief writev(2) of one frame. A full queue in the kernel (EAGAIN) is an error: the frame is lost, as on a
  /// wire.
  [[nodiscard]] Result<void> send(std::span<const iovec> parts) override;
  /// @brief The interface's name as the kernel gave it ("%d" resolved).
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  Tap(Fd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}

  Fd fd_;
  std::string name_;
};

}  // namespace vmm::virtio::net
