#pragma once
/// @file
/// @brief `NetBackend`, where a virtio-net device sends and receives Ethernet frames, and `Tap`, the Linux tap
///        interface that implements it.

#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"

namespace vmm::virtio::net {

/// @brief Bytes of `struct virtio_net_hdr_v1`, which precedes every frame on both sides of the device: a VERSION_1
/// driver always uses this size, and the tap is told to use it too (TUNSETVNETHDRSZ), so frames pass unchanged.
inline constexpr std::size_t kNetHeaderBytes = 12;
/// @brief The largest frame (header included) the device moves: a 64 KiB packet plus the Ethernet and VLAN header.
inline constexpr std::size_t kMaxFrameBytes = kNetHeaderBytes + 65535 + 18;

/// @brief One end of a network link, seen from the device: frames in and out, each with its virtio-net header.
class NetBackend {
 public:
  NetBackend() = default;
  NetBackend(const NetBackend&) = delete;
  NetBackend& operator=(const NetBackend&) = delete;
  NetBackend(NetBackend&&) = delete;
  NetBackend& operator=(NetBackend&&) = delete;
  virtual ~NetBackend() = default;

  /// @brief A non-blocking descriptor that polls readable when a frame waits.
  [[nodiscard]] virtual int fd() const = 0;
  /// @brief Reads one frame into `frame`: its length, or nothing when none waits.
  [[nodiscard]] virtual Result<std::optional<std::size_t>> receive(std::span<std::byte> frame) = 0;
  /// @brief Sends one frame gathered from `parts`.
  [[nodiscard]] virtual Result<void> send(std::span<const iovec> parts) = 0;
};

/// @brief How to open a tap.
struct TapConfig {
  std::string name;                 ///< Interface name (at most 15 characters); created if it does not exist.
  std::optional<std::string> ip;    ///< IPv4 address for the host's side of the link.
  std::optional<std::string> mask;  ///< Its netmask.
};

/// @brief A tap interface: the host kernel's end of a virtual Ethernet cable whose other end is the guest.
///
/// Opened with IFF_TAP (Ethernet frames), IFF_NO_PI (no extra packet-information prefix) and IFF_VNET_HDR (each
/// frame carries a virtio_net_hdr, so no translation is needed), with offloads off to match the device, which
/// offers none. With an `ip`, the interface gets that address and is brought up, as Cloud Hypervisor's
/// `--net ip=,mask=` does. Needs CAP_NET_ADMIN.
class Tap final : public NetBackend {
 public:
  /// @brief Opens (or creates) the interface. Errors name the ioctl, the errno and the interface.
  [[nodiscard]] static Result<std::shared_ptr<Tap>> open(const TapConfig& config);
  /// @brief The /dev/net/tun descriptor (non-blocking).
  [[nodiscard]] int fd() const override { return fd_.get(); }
  /// @brief read(2) of one frame.
  [[nodiscard]] Result<std::optional<std::size_t>> receive(std::span<std::byte> frame) override;
  /// @brief writev(2) of one frame.
  [[nodiscard]] Result<void> send(std::span<const iovec> parts) override;
  /// @brief The interface's name as the kernel gave it.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  Tap(Fd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  Fd fd_;
  std::string name_;
};

}  // namespace vmm::virtio::net
