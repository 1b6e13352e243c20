#pragma once
/// @file
/// @brief `NetBackend`: where a virtio-net device sends and receives Ethernet frames (a tap, or a socket in tests),
/// and the frame sizes both sides agree on.

#include <sys/uio.h>

#include <cstddef>
#include <optional>
#include <span>

#include "vmm/error.hpp"
// uapi.hpp first: it sets the macros the kernel's virtio headers need to compile as C++.
#include "vmm/virtio/uapi.hpp"
// <linux/virtio_net.h> has a field named `class` (the control queue's header), a C++ keyword: it is renamed while
// the header is read. The control queue is not offered, so nothing uses that field.
/// @cond
#define class class_
#include <linux/virtio_net.h>
#undef class
/// @endcond

namespace vmm::virtio::net {

/// @brief Bytes of `struct virtio_net_hdr_v1`, which precedes every frame on both sides of the device. A VERSION_1
/// driver always uses this size (virtio 1.2, 5.1.6: `num_buffers` is always there), and the tap is told to use it
/// too (TUNSETVNETHDRSZ), so a frame crosses the device as one run of bytes, never translated.
inline constexpr std::size_t kNetHeaderBytes = sizeof(virtio_net_hdr_v1);
static_assert(kNetHeaderBytes == 12, "virtio_net_hdr_v1 is 12 bytes (virtio 1.2, 5.1.6)");

/// @brief The largest frame the device moves, header included: the header, then an Ethernet header with a VLAN tag
/// (18 bytes) in front of the largest IP packet (65535 bytes). Without segmentation offloads no frame is larger than
/// the link's MTU allows, and a tap's MTU is at most 65535, so nothing legitimate is refused.
inline constexpr std::size_t kMaxFrameBytes = kNetHeaderBytes + 18 + 65535;

/// @brief One end of a network link, seen from the device: whole frames in and out, each one starting with its
/// `virtio_net_hdr_v1`.
///
/// A backend is used by two threads at once: the device's receive thread calls `receive`, whoever processes the
/// transmit queue calls `send`. Implementations must allow that (a tap or a socket does: the kernel serialises each
/// read and each write).
class NetBackend {
 public:
  NetBackend() = default;
  NetBackend(const NetBackend&) = delete;
  NetBackend& operator=(const NetBackend&) = delete;
  NetBackend(NetBackend&&) = delete;
  NetBackend& operator=(NetBackend&&) = delete;
  virtual ~NetBackend() = default;

  /// @brief A non-blocking descriptor that polls readable (EPOLLIN) while a frame waits, for the receive thread's
  /// epoll set. Owned by the backend.
  [[nodiscard]] virtual int fd() const = 0;
  /// @brief Reads one frame, header included, into `frame`: its length, or nothing when no frame waits (EAGAIN).
  /// A frame longer than `frame` may be cut short or report its full length (larger than `frame.size()`); either
  /// way the caller sees it is too long. 0 means the other end closed the link.
  [[nodiscard]] virtual Result<std::optional<std::size_t>> receive(std::span<std::byte> frame) = 0;
  /// @brief Sends one frame, header included, gathered from `parts` in order (one writev).
  [[nodiscard]] virtual Result<void> send(std::span<const iovec> parts) = 0;
};

}  // namespace vmm::virtio::net
