#pragma once
/// @file
/// @brief Lab 07's exercise interface: the functions you write (exercises/) and the reference (solutions/) share it.

// uapi.hpp first: it sets the macros the kernel's virtio headers (which protocol.hpp's vhost_types.h includes) need.
#include "vmm/virtio/uapi.hpp"

#include <cstdint>
#include <optional>
#include <span>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/vhost/connection.hpp"
#include "vmm/vhost/protocol.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace lab07 {

// --- Exercise 1 ------------------------------------------------------------------------------------------------

/// @brief Exercise 1a: what a frontend puts in SET_VRING_ADDR. The frontend's virtual address of the guest-physical
///        range [gpa, gpa + length), found through the memory table `regions` (what SET_MEM_TABLE sent). The whole
///        range must lie inside one region: refused (an error whose message names `gpa` in hex, "0x...") when it
///        starts in no region, runs past the end of its region, or wraps around 2^64. `length` 0 means only the
///        address itself, which must lie inside a region.
[[nodiscard]] vmm::Result<std::uint64_t> frontend_va_for(std::span<const vmm::vhost::MemoryRegion> regions,
                                                         std::uint64_t gpa, std::uint64_t length);

/// @brief Exercise 1b: what a backend does with a SET_VRING_ADDR address. The guest-physical address of the frontend
///        virtual range [uaddr, uaddr + length), through `regions`; the same rules as `frontend_va_for`, in the
///        frontend's address space (the error names `uaddr` in hex).
[[nodiscard]] vmm::Result<std::uint64_t> gpa_for(std::span<const vmm::vhost::MemoryRegion> regions, std::uint64_t uaddr,
                                                 std::uint64_t length);

/// @brief Exercise 1c: the byte offset into `region`'s fd (the memfd that came with SET_MEM_TABLE) that holds the
///        guest-physical byte `gpa`: what a backend would pread(2), or where its mmap of the fd puts that byte.
///        Refused (the error names `gpa` in hex) when `gpa` is not inside the region or the offset does not fit in
///        64 bits.
[[nodiscard]] vmm::Result<std::uint64_t> backend_offset_for(const vmm::vhost::MemoryRegion& region, std::uint64_t gpa);

// --- Exercise 2 ------------------------------------------------------------------------------------------------

/// @brief What the handshake settled.
struct Negotiated {
  std::uint64_t features = 0;              ///< GET_FEATURES' answer, as received (bit 30 included).
  std::uint64_t protocol_features = 0;     ///< What SET_PROTOCOL_FEATURES sent (0 if it was not sent).
  std::optional<std::uint64_t> queue_num;  ///< GET_QUEUE_NUM's answer; nothing when it was not asked.
  /// @brief Equal when every field is.
  bool operator==(const Negotiated&) const = default;
};

/// @brief Exercise 2: a frontend's startup sequence on `connection` (a connected socket to a backend), using the
///        protocol features in `wanted` that the backend offers:
///        1. GET_FEATURES;
///        2. only if the answer has bit 30 (`vmm::vhost::kProtocolFeaturesBit`): GET_PROTOCOL_FEATURES, then
///           SET_PROTOCOL_FEATURES with what both sides support (no ack: REPLY_ACK is what it negotiates);
///        3. only if MQ was negotiated: GET_QUEUE_NUM;
///        4. SET_OWNER; with REPLY_ACK negotiated, sent with `vmm::vhost::kNeedReply`, and a non-zero ack is an error.
///        Any failure to send or receive, or a refused SET_OWNER, is returned as an error.
[[nodiscard]] vmm::Result<Negotiated> negotiate(vmm::vhost::Connection& connection, std::uint64_t wanted);

// --- Exercise 3 ------------------------------------------------------------------------------------------------

/// @brief Exercise 3: the eventfd a frontend should hand the backend as queue `queue`'s call fd (SET_VRING_CALL), so
///        that the backend's "used buffers" notification becomes an interrupt without the VMM: the irqfd of the
///        MSI-X vector the driver chose for the queue, taken from `routes` (stage06). nullptr when that irqfd would
///        not interrupt the guest right now; the frontend then hands the backend its own relay eventfd and turns
///        each write into `VirtioInterrupt::signal_queue` through the transport (stage05's path).
[[nodiscard]] const vmm::event::EventFd* call_fd_for(vmm::virtio::VirtioPciDevice& transport,
                                                     const vmm::irq::MsixRoutes& routes, std::uint16_t queue);

}  // namespace lab07
