#pragma once
/// @file
/// @brief The vhost-user protocol (QEMU's docs/interop/vhost-user.rst): request codes, the message header, payloads,
/// and the codec that turns bytes plus file descriptors into a validated `Message` and back.

// vhost_types.h includes <linux/virtio_ring.h>, whose legacy vring_init is not valid C++: uapi.hpp defines
// VIRTIO_RING_NO_LEGACY first.
#include "vmm/virtio/uapi.hpp"

#include <linux/vhost_types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"

namespace vmm::vhost {

/// @brief The message types ("requests") a frontend sends on the main channel, with the spec's numbers.
///
/// vmmlab implements the ones listed in `is_supported`; the others are named (for traces) and refused.
enum class Request : std::uint32_t {
  GetFeatures = 1,           ///< Reply: u64 virtio feature bits the backend offers (plus bit 30, see below).
  SetFeatures = 2,           ///< u64: the features the driver accepted.
  SetOwner = 3,              ///< The frontend claims the session (first message after feature negotiation).
  ResetOwner = 4,            ///< Deprecated reset of the whole session (features, rings, memory).
  SetMemTable = 5,           ///< `MemoryTable`, one fd per region: the guest's memory.
  SetLogBase = 6,            ///< Dirty logging (migration): not supported.
  SetLogFd = 7,              ///< Dirty logging: not supported.
  SetVringNum = 8,           ///< `vhost_vring_state`: queue size.
  SetVringAddr = 9,          ///< `vhost_vring_addr`: the three ring areas, as frontend virtual addresses.
  SetVringBase = 10,         ///< `vhost_vring_state`: the next available index to process.
  GetVringBase = 11,         ///< `vhost_vring_state` (index); stops the ring. Reply: the next available index.
  SetVringKick = 12,         ///< u64 `VringFd`: the eventfd the driver's notifications arrive on.
  SetVringCall = 13,         ///< u64 `VringFd`: the eventfd the backend writes to interrupt the driver.
  SetVringErr = 14,          ///< u64 `VringFd`: the eventfd the backend writes on an error.
  GetProtocolFeatures = 15,  ///< Reply: u64 protocol feature bits (`ProtocolFeature`).
  SetProtocolFeatures = 16,  ///< u64: the protocol features the frontend uses.
  GetQueueNum = 17,          ///< Reply: u64 maximum number of queues (needs `ProtocolFeature::Mq`).
  SetVringEnable = 18,       ///< `vhost_vring_state`: num 1 enables the ring, 0 disables it.
  SendRarp = 19,             ///< vhost-user-net: not supported.
  NetSetMtu = 20,            ///< vhost-user-net: not supported.
  SetBackendReqFd = 21,      ///< The backend-initiated channel: not supported.
  IotlbMsg = 22,             ///< vIOMMU: not supported.
  SetVringEndian = 23,       ///< Legacy cross-endian: not supported.
  GetConfig = 24,            ///< `DeviceConfig`; reply: the same with the bytes filled.
  SetConfig = 25,            ///< `DeviceConfig`: the driver wrote the device configuration.
  CreateCryptoSession = 26,  ///< vhost-user-crypto: not supported.
  CloseCryptoSession = 27,   ///< vhost-user-crypto: not supported.
  PostcopyAdvise = 28,       ///< Postcopy migration: not supported.
  PostcopyListen = 29,       ///< Postcopy migration: not supported.
  PostcopyEnd = 30,          ///< Postcopy migration: not supported.
  GetInflightFd = 31,        ///< Inflight tracking: not supported (not offered).
  SetInflightFd = 32,        ///< Inflight tracking: not supported.
  GpuSetSocket = 33,         ///< vhost-user-gpu: not supported.
  ResetDevice = 34,          ///< Reset the device (needs `ProtocolFeature::ResetDevice`).
  VringKick = 35,            ///< In-band notification: not supported.
  GetMaxMemSlots = 36,       ///< Reply: u64 how many regions ADD_MEM_REG may create.
  AddMemReg = 37,            ///< `SingleMemoryRegion`, one fd: add one region.
  RemMemReg = 38,            ///< `SingleMemoryRegion`, no fd: remove the region with that address and size.
  SetStatus = 39,            ///< Device status: not supported (not offered).
  GetStatus = 40,            ///< Device status: not supported.
};

/// @brief "SET_MEM_TABLE", or "REQUEST_77" for a number the spec does not define.
[[nodiscard]] std::string request_name(std::uint32_t request);

/// @brief True for the requests vmmlab's backend and frontend implement.
[[nodiscard]] bool is_supported(std::uint32_t request) noexcept;

/// @brief Protocol feature bits (GET/SET_PROTOCOL_FEATURES), by bit number.
enum class ProtocolFeature : unsigned {
  Mq = 0,                    ///< GET_QUEUE_NUM; several queues.
  LogShmfd = 1,              ///< Dirty log in shared memory.
  Rarp = 2,                  ///< SEND_RARP.
  ReplyAck = 3,              ///< The frontend may set `kNeedReply`; the backend then acks with a u64 (0 = success).
  NetMtu = 4,                ///< NET_SET_MTU.
  BackendReq = 5,            ///< A backend-to-frontend channel.
  CrossEndian = 6,           ///< SET_VRING_ENDIAN.
  CryptoSession = 7,         ///< Crypto sessions.
  Pagefault = 8,             ///< Postcopy.
  Config = 9,                ///< GET_CONFIG / SET_CONFIG.
  BackendSendFd = 10,        ///< fds on the backend channel.
  HostNotifier = 11,         ///< Notification areas mapped from the backend.
  InflightShmfd = 12,        ///< GET/SET_INFLIGHT_FD.
  ResetDevice = 13,          ///< RESET_DEVICE.
  InbandNotifications = 14,  ///< VRING_KICK in band.
  ConfigureMemSlots = 15,    ///< GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG.
  Status = 16,               ///< SET/GET_STATUS.
};

/// @brief The mask of one protocol feature.
[[nodiscard]] constexpr std::uint64_t bit(ProtocolFeature feature) noexcept {
  return 1ull << static_cast<unsigned>(feature);
}

/// @brief Virtio feature bit 30 in GET/SET_FEATURES: the backend speaks GET/SET_PROTOCOL_FEATURES. Not a virtio
/// feature (the driver never sees it); when negotiated, rings start disabled until SET_VRING_ENABLE.
inline constexpr unsigned kProtocolFeaturesBit = 30;

/// @brief Header flags: bits 0-1 are the protocol version, which must be 1.
inline constexpr std::uint32_t kVersion = 0x1;
/// @brief The mask of the version bits.
inline constexpr std::uint32_t kVersionMask = 0x3;
/// @brief Header flag: this message is a reply.
inline constexpr std::uint32_t kReplyFlag = 0x4;
/// @brief Header flag: the frontend wants a REPLY_ACK (only with `ProtocolFeature::ReplyAck`).
inline constexpr std::uint32_t kNeedReply = 0x8;

/// @brief In SET_VRING_KICK/CALL/ERR's u64: the low 8 bits are the queue index; this bit says "no fd attached"
/// (polling mode for a kick, no interrupt for a call).
inline constexpr std::uint64_t kVringNoFdMask = 0x100;
/// @brief In SET_VRING_KICK/CALL/ERR's u64: the queue index bits.
inline constexpr std::uint64_t kVringIndexMask = 0xff;

/// @brief At most this many fds travel with one message (QEMU's VHOST_MEMORY_BASELINE_NREGIONS).
inline constexpr std::size_t kMaxFds = 8;
/// @brief At most this many regions in SET_MEM_TABLE.
inline constexpr std::size_t kMaxMemTableRegions = 8;
/// @brief The largest device configuration GET/SET_CONFIG carries (QEMU's VHOST_USER_MAX_CONFIG_SIZE).
inline constexpr std::uint32_t kMaxConfigSize = 256;
/// @brief The size of the fixed header on the wire.
inline constexpr std::size_t kHeaderSize = 12;
/// @brief No valid payload is larger than this (a config message with 256 bytes is the largest): a header announcing
/// more is refused before a byte of payload is read.
inline constexpr std::uint32_t kMaxPayloadSize = 12 + kMaxConfigSize;

/// @brief The fixed header every message starts with (little-endian u32s on the wire).
struct Header {
  std::uint32_t request = 0;  ///< A `Request` number.
  std::uint32_t flags = 0;    ///< Version (must be `kVersion`), `kReplyFlag`, `kNeedReply`.
  std::uint32_t size = 0;     ///< Payload bytes that follow.
  /// @brief Equal when every field is.
  bool operator==(const Header&) const = default;
};

/// @brief One guest memory region as SET_MEM_TABLE and ADD_MEM_REG describe it. The backend maps
/// `memory_size` bytes of the region's fd at `mmap_offset`; the frontend sees the same bytes at `userspace_addr`
/// (which ring addresses use) and the guest at `guest_phys_addr` (which descriptors use).
struct MemoryRegion {
  std::uint64_t guest_phys_addr = 0;  ///< Guest-physical start.
  std::uint64_t memory_size = 0;      ///< Bytes.
  std::uint64_t userspace_addr = 0;   ///< Where the frontend has it mapped.
  std::uint64_t mmap_offset = 0;      ///< Offset of the region's first byte in its fd.
  /// @brief Equal when every field is.
  bool operator==(const MemoryRegion&) const = default;
};

/// @brief SET_MEM_TABLE's payload: u32 count, u32 padding, then `count` regions (count <= 8, one fd each).
struct MemoryTable {
  std::vector<MemoryRegion> regions;  ///< In the order of the fds.
  /// @brief Equal when the regions are.
  bool operator==(const MemoryTable&) const = default;
};

/// @brief ADD_MEM_REG / REM_MEM_REG's payload: u64 padding, then one region.
struct SingleMemoryRegion {
  MemoryRegion region;  ///< The region.
  /// @brief Equal when the regions are.
  bool operator==(const SingleMemoryRegion&) const = default;
};

/// @brief SET_VRING_KICK/CALL/ERR's u64, decoded.
struct VringFd {
  std::uint8_t index = 0;  ///< Queue index (bits 0-7).
  bool no_fd = false;      ///< `kVringNoFdMask`: no fd travels with the message.
  /// @brief Equal when both fields are.
  bool operator==(const VringFd&) const = default;
};

/// @brief GET/SET_CONFIG's payload: u32 offset, u32 size, u32 flags, then `size` bytes (<= 256).
struct DeviceConfig {
  std::uint32_t offset = 0;         ///< Offset into the device configuration.
  std::uint32_t flags = 0;          ///< 0: writable fields; 1: migration (SET_CONFIG only).
  std::vector<std::uint8_t> bytes;  ///< The bytes (GET_CONFIG request: zeroes of the wanted size).
  /// @brief Equal when every field is.
  bool operator==(const DeviceConfig&) const = default;
};

/// @brief The decoded payload. `std::monostate`: none. `std::uint64_t`: features, counts, acks and the raw
/// SET_VRING_KICK/CALL/ERR value (see `vring_fd`).
using Payload = std::variant<std::monostate, std::uint64_t, vhost_vring_state, vhost_vring_addr, MemoryTable,
                             SingleMemoryRegion, DeviceConfig>;

/// @brief One message: the request, its flags, the decoded payload and the fds that came with it (owned).
struct Message {
  Request request = Request::GetFeatures;  ///< What it is.
  std::uint32_t flags = kVersion;          ///< Header flags (version included).
  Payload payload;                         ///< Decoded payload.
  std::vector<Fd> fds;                     ///< fds received with it (or to send with it), in order.

  /// @brief True when `kReplyFlag` is set.
  [[nodiscard]] bool is_reply() const noexcept { return (flags & kReplyFlag) != 0; }
  /// @brief True when `kNeedReply` is set.
  [[nodiscard]] bool needs_reply() const noexcept { return (flags & kNeedReply) != 0; }
  /// @brief The u64 payload (asserts it is one).
  [[nodiscard]] std::uint64_t u64() const;
  /// @brief The payload decoded as a `VringFd` (for SET_VRING_KICK/CALL/ERR).
  [[nodiscard]] VringFd vring_fd() const;
};

/// @brief Which way a message travels: the payload type depends on it (GET_FEATURES carries nothing to the backend
/// and a u64 back; a SET_* with `kNeedReply` comes back as a u64 ack).
enum class Direction : std::uint8_t {
  ToBackend,   ///< A request, frontend -> backend.
  ToFrontend,  ///< A reply, backend -> frontend.
};

/// @brief The payload layout a message must have: what `decode` checks the size against.
enum class PayloadKind : std::uint8_t { None, U64, VringState, VringAddr, MemoryTable, SingleMemoryRegion, Config };

/// @brief The payload a `request` carries in `direction` (for a reply, `ack` says it is a REPLY_ACK to a message
/// that normally has no reply: then it is a u64). Unsupported requests: `None`.
[[nodiscard]] PayloadKind payload_kind(Request request, Direction direction, bool ack = false) noexcept;

/// @brief The header and payload bytes of `message` (fds travel separately). A payload that does not fit its kind
/// (e.g. 0 or more than 8 regions, config bytes over 256), or a supported request whose payload alternative is not the
/// one `payload_kind` names for its direction (a reply may always carry a u64: the REPLY_ACK), is a programmer error
/// in the sender and is refused. Unsupported requests are encoded as given (to test a peer's refusal).
[[nodiscard]] Result<std::vector<std::uint8_t>> encode(const Message& message);

/// @brief Parses the 12 header bytes.
[[nodiscard]] Header decode_header(std::span<const std::uint8_t, kHeaderSize> bytes) noexcept;

/// @brief Validates and decodes one message: `header` and its `payload` bytes, received with `fds`, travelling in
/// `direction` (for replies, `expected` is the request it answers and `ack` whether a REPLY_ACK was asked for).
///
/// Refused, with an error naming the request and what is wrong (operation "vhost-user decode", errno 0;
/// `Connection::receive` reports it as EBADMSG), the fds closed:
/// - a version other than 1; a reply flag on a request or none on a reply; a reply to another request than
///   `expected`;
/// - an unknown or unsupported request;
/// - a payload size other than the request's payload needs (exactly: 0, 8, 8, 40, 8 + 32n, 40, 12 + n);
/// - a memory table with 0 or more than 8 regions, a config with more than 256 bytes or whose size field disagrees
///   with the payload;
/// - the wrong number of fds: SET_MEM_TABLE one per region, ADD_MEM_REG one, SET_VRING_KICK/CALL/ERR one unless
///   `kVringNoFdMask` is set (then none), everything else none. REM_MEM_REG included: QEMU 5.1 to 7.0 attached an
///   fd to it by mistake (the spec now lets a backend accept and close one), but QEMU 7.1 stopped (commit a81d8d4a72,
///   "vhost-user: Don't pass file descriptor for VHOST_USER_REM_MEM_REG"), so QEMU 7.2 sends none and vmmlab refuses
///   a stray fd there like anywhere else.
/// Semantic checks (queue index in range, regions not overlapping, ring addresses inside regions) need the
/// session's state and are the backend's (`BackendHandler`).
[[nodiscard]] Result<Message> decode(const Header& header, std::span<const std::uint8_t> payload, std::vector<Fd> fds,
                                     Direction direction, std::optional<Request> expected = std::nullopt,
                                     bool ack = false);

/// @brief One line for traces: the request, the flags, the payload decoded, and which fds it carries, e.g.
/// "SET_VRING_KICK index=0 fds=[17]" or "SET_MEM_TABLE 1 region: gpa=0x0 size=0x1000000 uaddr=0x7f12... off=0x0
/// fds=[9]" or "GET_FEATURES reply u64=0x170000000 (INDIRECT_DESC EVENT_IDX PROTOCOL_FEATURES VERSION_1)". Flags show
/// as " reply" and " need_reply" after the name (raw "flags=0x..." if the version is not 1 or unknown bits are set);
/// feature words are named in bit order; a REPLY_ACK is "ack=0 (success)"; fds, whenever there are any, as
/// "fds=[a,b]" with this process's fd numbers.
[[nodiscard]] std::string describe(const Message& message);

/// @brief Virtio feature bits by name, in bit order ("INDIRECT_DESC EVENT_IDX ... VERSION_1"; device-specific bits
/// 0-23 and unknown ones as "bit42").
[[nodiscard]] std::string describe_features(std::uint64_t features);
/// @brief Protocol feature bits by name, in bit order ("MQ REPLY_ACK CONFIG ..."; unknown ones as "bit40").
[[nodiscard]] std::string describe_protocol_features(std::uint64_t features);

}  // namespace vmm::vhost
