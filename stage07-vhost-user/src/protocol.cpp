#include "vmm/vhost/protocol.hpp"

#include <array>
#include <bit>
#include <cassert>
#include <cstring>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

namespace vmm::vhost {

// On the wire every integer is little-endian: both ends run on the same host, and vmmlab's host is x86-64. The codec
// therefore copies integers and the kernel's payload structs with memcpy, which on x86 is exactly a little-endian
// load/store; this assertion makes that assumption explicit instead of silently byte-swapping on another host.
static_assert(std::endian::native == std::endian::little, "the vhost-user codec assumes a little-endian host");

// The kernel's structs are the payload layouts byte for byte (QEMU sends them as they are).
static_assert(sizeof(vhost_vring_state) == 8, "vhost_vring_state is 8 bytes on the wire");
static_assert(sizeof(vhost_vring_addr) == 40, "vhost_vring_addr is 40 bytes on the wire");
static_assert(std::is_trivially_copyable_v<vhost_vring_state> && std::is_trivially_copyable_v<vhost_vring_addr>);

namespace {

constexpr std::size_t kU64Size = 8;
constexpr std::size_t kRegionSize = 32;            // gpa, size, uaddr, mmap_offset: four u64s.
constexpr std::size_t kMemTableHeaderSize = 8;     // u32 nregions + u32 padding.
constexpr std::size_t kSingleRegionSize = 8 + 32;  // u64 padding + one region.
constexpr std::size_t kConfigHeaderSize = 12;      // u32 offset, u32 size, u32 flags.
constexpr std::uint32_t kLastRequest = 40;         // GET_STATUS: the highest number `request_name` knows.

constexpr std::array<std::string_view, kLastRequest + 1> kRequestNames = {
    "NONE",  // 0: not a request.
    "GET_FEATURES",
    "SET_FEATURES",
    "SET_OWNER",
    "RESET_OWNER",
    "SET_MEM_TABLE",
    "SET_LOG_BASE",
    "SET_LOG_FD",
    "SET_VRING_NUM",
    "SET_VRING_ADDR",
    "SET_VRING_BASE",
    "GET_VRING_BASE",
    "SET_VRING_KICK",
    "SET_VRING_CALL",
    "SET_VRING_ERR",
    "GET_PROTOCOL_FEATURES",
    "SET_PROTOCOL_FEATURES",
    "GET_QUEUE_NUM",
    "SET_VRING_ENABLE",
    "SEND_RARP",
    "NET_SET_MTU",
    "SET_BACKEND_REQ_FD",
    "IOTLB_MSG",
    "SET_VRING_ENDIAN",
    "GET_CONFIG",
    "SET_CONFIG",
    "CREATE_CRYPTO_SESSION",
    "CLOSE_CRYPTO_SESSION",
    "POSTCOPY_ADVISE",
    "POSTCOPY_LISTEN",
    "POSTCOPY_END",
    "GET_INFLIGHT_FD",
    "SET_INFLIGHT_FD",
    "GPU_SET_SOCKET",
    "RESET_DEVICE",
    "VRING_KICK",
    "GET_MAX_MEM_SLOTS",
    "ADD_MEM_REG",
    "REM_MEM_REG",
    "SET_STATUS",
    "GET_STATUS",
};

// Little-endian field access into a byte buffer (memcpy: no alignment requirement, no aliasing issue).
template <typename T>
T load(std::span<const std::uint8_t> bytes, std::size_t offset) {
  T value{};
  assert(offset + sizeof(T) <= bytes.size());
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

template <typename T>
void store(std::vector<std::uint8_t>& out, const T& value) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

MemoryRegion load_region(std::span<const std::uint8_t> bytes, std::size_t offset) {
  return MemoryRegion{
      .guest_phys_addr = load<std::uint64_t>(bytes, offset),
      .memory_size = load<std::uint64_t>(bytes, offset + 8),
      .userspace_addr = load<std::uint64_t>(bytes, offset + 16),
      .mmap_offset = load<std::uint64_t>(bytes, offset + 24),
  };
}

void store_region(std::vector<std::uint8_t>& out, const MemoryRegion& region) {
  store(out, region.guest_phys_addr);
  store(out, region.memory_size);
  store(out, region.userspace_addr);
  store(out, region.mmap_offset);
}

// The payload kind of the reply to `request`, if it has one at all: explicit replies first (a GET_* answers with its
// own payload even when kNeedReply was set), then the REPLY_ACK u64 when one was asked for.
std::optional<PayloadKind> reply_kind(Request request, bool ack) noexcept {
  if (!is_supported(static_cast<std::uint32_t>(request))) {
    return std::nullopt;
  }
  switch (request) {
    case Request::GetFeatures:
    case Request::GetProtocolFeatures:
    case Request::GetQueueNum:
    case Request::GetMaxMemSlots:
      return PayloadKind::U64;
    case Request::GetVringBase:
      return PayloadKind::VringState;
    case Request::GetConfig:
      return PayloadKind::Config;
    default:
      break;
  }
  if (ack) {
    return PayloadKind::U64;
  }
  return std::nullopt;
}

std::string_view kind_name(PayloadKind kind) {
  switch (kind) {
    case PayloadKind::None:
      return "no payload";
    case PayloadKind::U64:
      return "a u64";
    case PayloadKind::VringState:
      return "a vring state";
    case PayloadKind::VringAddr:
      return "a vring address";
    case PayloadKind::MemoryTable:
      return "a memory table";
    case PayloadKind::SingleMemoryRegion:
      return "a single memory region";
    case PayloadKind::Config:
      return "a device configuration";
  }
  return "?";
}

PayloadKind kind_of(const Payload& payload) {
  switch (payload.index()) {
    case 0:
      return PayloadKind::None;
    case 1:
      return PayloadKind::U64;
    case 2:
      return PayloadKind::VringState;
    case 3:
      return PayloadKind::VringAddr;
    case 4:
      return PayloadKind::MemoryTable;
    case 5:
      return PayloadKind::SingleMemoryRegion;
    default:
      return PayloadKind::Config;
  }
}

bool is_vring_fd_request(Request request) {
  return request == Request::SetVringKick || request == Request::SetVringCall || request == Request::SetVringErr;
}

}  // namespace

std::string request_name(std::uint32_t request) {
  if (request >= 1 && request <= kLastRequest) {
    return std::string(kRequestNames[request]);
  }
  return fmt::format("REQUEST_{}", request);
}

bool is_supported(std::uint32_t request) noexcept {
  return (request >= 1 && request <= 5) || (request >= 8 && request <= 18) || request == 24 || request == 25 ||
         request == 34 || (request >= 36 && request <= 38);
}

PayloadKind payload_kind(Request request, Direction direction, bool ack) noexcept {
  if (!is_supported(static_cast<std::uint32_t>(request))) {
    return PayloadKind::None;
  }
  if (direction == Direction::ToFrontend) {
    return reply_kind(request, ack).value_or(PayloadKind::None);
  }
  switch (request) {
    case Request::SetFeatures:
    case Request::SetProtocolFeatures:
    case Request::SetVringKick:
    case Request::SetVringCall:
    case Request::SetVringErr:
      return PayloadKind::U64;
    case Request::SetVringNum:
    case Request::SetVringBase:
    case Request::SetVringEnable:
    case Request::GetVringBase:
      return PayloadKind::VringState;
    case Request::SetVringAddr:
      return PayloadKind::VringAddr;
    case Request::SetMemTable:
      return PayloadKind::MemoryTable;
    case Request::AddMemReg:
    case Request::RemMemReg:
      return PayloadKind::SingleMemoryRegion;
    case Request::GetConfig:
    case Request::SetConfig:
      return PayloadKind::Config;
    default:
      // GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_OWNER, RESET_OWNER, RESET_DEVICE.
      return PayloadKind::None;
  }
}

std::uint64_t Message::u64() const {
  assert(std::holds_alternative<std::uint64_t>(payload));
  return std::get<std::uint64_t>(payload);
}

VringFd Message::vring_fd() const {
  const std::uint64_t value = u64();
  return VringFd{.index = static_cast<std::uint8_t>(value & kVringIndexMask), .no_fd = (value & kVringNoFdMask) != 0};
}

Result<std::vector<std::uint8_t>> encode(const Message& message) {
  const auto request = static_cast<std::uint32_t>(message.request);
  const std::string name = request_name(request);
  const PayloadKind have = kind_of(message.payload);

  // Supported requests must carry the payload their direction calls for: sending anything else is a bug in the
  // sender, and the peer would refuse it anyway. (A reply's kind depends on whether an ack was asked for, which the
  // message does not record: a u64 is accepted for any reply, since every supported request can be acked.)
  if (is_supported(request)) {
    if (message.is_reply()) {
      const auto want = reply_kind(message.request, have == PayloadKind::U64);
      if (!want || *want != have) {
        return logic_error("vhost-user encode", fmt::format("{} reply cannot carry {}", name, kind_name(have)));
      }
    } else if (const PayloadKind want = payload_kind(message.request, Direction::ToBackend); want != have) {
      return logic_error("vhost-user encode",
                         fmt::format("{} carries {}, not {}", name, kind_name(want), kind_name(have)));
    }
  }

  std::vector<std::uint8_t> out;
  out.reserve(kHeaderSize + 64);
  store(out, request);
  store(out, message.flags);
  store(out, std::uint32_t{0});  // size, patched below.

  bool ok = true;
  std::string what;
  std::visit(
      [&](const auto& payload) {
        using T = std::decay_t<decltype(payload)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          // No payload.
        } else if constexpr (std::is_same_v<T, std::uint64_t> || std::is_same_v<T, vhost_vring_state> ||
                             std::is_same_v<T, vhost_vring_addr>) {
          store(out, payload);
        } else if constexpr (std::is_same_v<T, MemoryTable>) {
          if (payload.regions.empty() || payload.regions.size() > kMaxMemTableRegions) {
            ok = false;
            what = fmt::format("{} with {} regions (1 to {})", name, payload.regions.size(), kMaxMemTableRegions);
            return;
          }
          store(out, static_cast<std::uint32_t>(payload.regions.size()));
          store(out, std::uint32_t{0});  // padding
          for (const MemoryRegion& region : payload.regions) {
            store_region(out, region);
          }
        } else if constexpr (std::is_same_v<T, SingleMemoryRegion>) {
          store(out, std::uint64_t{0});  // padding
          store_region(out, payload.region);
        } else if constexpr (std::is_same_v<T, DeviceConfig>) {
          if (payload.bytes.size() > kMaxConfigSize) {
            ok = false;
            what = fmt::format("{} with {} config bytes (at most {})", name, payload.bytes.size(), kMaxConfigSize);
            return;
          }
          store(out, payload.offset);
          store(out, static_cast<std::uint32_t>(payload.bytes.size()));
          store(out, payload.flags);
          out.insert(out.end(), payload.bytes.begin(), payload.bytes.end());
        }
      },
      message.payload);
  if (!ok) {
    return logic_error("vhost-user encode", what);
  }

  const auto size = static_cast<std::uint32_t>(out.size() - kHeaderSize);
  std::memcpy(out.data() + 8, &size, sizeof size);
  return out;
}

Header decode_header(std::span<const std::uint8_t, kHeaderSize> bytes) noexcept {
  std::span<const std::uint8_t> all(bytes);
  return Header{
      .request = load<std::uint32_t>(all, 0),
      .flags = load<std::uint32_t>(all, 4),
      .size = load<std::uint32_t>(all, 8),
  };
}

Result<Message> decode(const Header& header, std::span<const std::uint8_t> payload, std::vector<Fd> fds,
                       Direction direction, std::optional<Request> expected, bool ack) {
  // `fds` is ours: every early return below closes them, so a refused message never leaks a descriptor.
  const std::string name = request_name(header.request);
  const bool to_frontend = direction == Direction::ToFrontend;
  const std::string_view what = to_frontend ? " reply" : "";
  auto refuse = [&](std::string reason) {
    return logic_error("vhost-user decode", fmt::format("{}{}: {}", name, what, reason));
  };

  if ((header.flags & kVersionMask) != kVersion) {
    return refuse(fmt::format("protocol version {} (flags 0x{:x}), only version 1 exists", header.flags & kVersionMask,
                              header.flags));
  }
  if (header.request == 0 || header.request > kLastRequest) {
    return refuse("unknown request");
  }
  if (!is_supported(header.request)) {
    return refuse("request not supported by vmmlab");
  }
  if (header.size != payload.size()) {
    // A caller bug (Connection reads exactly header.size bytes), but cheap to rule out before trusting either.
    return refuse(fmt::format("header announces {} payload bytes but {} were given", header.size, payload.size()));
  }
  const bool reply_flag = (header.flags & kReplyFlag) != 0;
  if (to_frontend && !reply_flag) {
    return refuse("the reply flag is not set on a message to the frontend");
  }
  if (!to_frontend && reply_flag) {
    return refuse("the reply flag is set on a request to the backend");
  }

  const auto request = static_cast<Request>(header.request);
  PayloadKind kind = PayloadKind::None;
  if (to_frontend) {
    if (expected && *expected != request) {
      return refuse(
          fmt::format("unexpected, waiting for the reply to {}", request_name(static_cast<std::uint32_t>(*expected))));
    }
    const auto reply = reply_kind(request, ack);
    if (!reply) {
      return refuse("this request has no reply (none was asked for)");
    }
    kind = *reply;
  } else {
    kind = payload_kind(request, Direction::ToBackend);
  }

  const std::size_t size = payload.size();
  auto wrong_size = [&](std::size_t want) {
    return refuse(fmt::format("payload of {} bytes, {} is {} bytes", size, kind_name(kind), want));
  };

  Message message{.request = request, .flags = header.flags, .payload = {}, .fds = {}};
  std::size_t want_fds = 0;
  bool drop_fds = false;  // a REM_MEM_REG with the fd old QEMUs attached: accepted, and the fd closed
  switch (kind) {
    case PayloadKind::None:
      if (size != 0) {
        return wrong_size(0);
      }
      break;
    case PayloadKind::U64: {
      if (size != kU64Size) {
        return wrong_size(kU64Size);
      }
      const auto value = load<std::uint64_t>(payload, 0);
      message.payload = value;
      if (!to_frontend && is_vring_fd_request(request)) {
        want_fds = (value & kVringNoFdMask) != 0 ? 0 : 1;
      }
      break;
    }
    case PayloadKind::VringState:
      if (size != sizeof(vhost_vring_state)) {
        return wrong_size(sizeof(vhost_vring_state));
      }
      message.payload = load<vhost_vring_state>(payload, 0);
      break;
    case PayloadKind::VringAddr:
      if (size != sizeof(vhost_vring_addr)) {
        return wrong_size(sizeof(vhost_vring_addr));
      }
      message.payload = load<vhost_vring_addr>(payload, 0);
      break;
    case PayloadKind::MemoryTable: {
      if (size < kMemTableHeaderSize) {
        return refuse(fmt::format("payload of {} bytes, a memory table is 8 + 32 * regions bytes", size));
      }
      const auto count = load<std::uint32_t>(payload, 0);
      if (count == 0 || count > kMaxMemTableRegions) {
        return refuse(fmt::format("memory table with {} regions (1 to {})", count, kMaxMemTableRegions));
      }
      const std::size_t want = kMemTableHeaderSize + kRegionSize * count;
      if (size != want) {
        return refuse(fmt::format("payload of {} bytes, a memory table of {} regions is {} bytes", size, count, want));
      }
      MemoryTable table;
      table.regions.reserve(count);
      for (std::size_t i = 0; i < count; ++i) {
        table.regions.push_back(load_region(payload, kMemTableHeaderSize + i * kRegionSize));
      }
      message.payload = std::move(table);
      want_fds = count;
      break;
    }
    case PayloadKind::SingleMemoryRegion:
      if (size != kSingleRegionSize) {
        return wrong_size(kSingleRegionSize);
      }
      message.payload = SingleMemoryRegion{.region = load_region(payload, 8)};
      // ADD_MEM_REG brings the region's fd. REM_MEM_REG identifies the region by its addresses and needs none, but
      // QEMU 5.1 to 7.0 attached one by mistake (fixed in 7.1 by commit a81d8d4a72, "vhost-user: Don't pass file
      // descriptor for VHOST_USER_REM_MEM_REG"), and the spec asks backends to accept and close it: one is allowed,
      // and dropped below.
      if (request == Request::AddMemReg) {
        want_fds = 1;
      } else if (!to_frontend && fds.size() == 1) {
        want_fds = 1;
        drop_fds = true;
      }
      break;
    case PayloadKind::Config: {
      if (to_frontend && size == 0) {
        // An empty GET_CONFIG reply is how a backend says it refused (libvhost-user does; QEMU's frontend reports it
        // as an error): decoded as a configuration with no bytes, for the frontend to refuse with that reason.
        message.payload = DeviceConfig{};
        break;
      }
      if (size < kConfigHeaderSize) {
        return refuse(fmt::format("payload of {} bytes, a device configuration is 12 + size bytes", size));
      }
      const auto offset = load<std::uint32_t>(payload, 0);
      const auto config_size = load<std::uint32_t>(payload, 4);
      const auto flags = load<std::uint32_t>(payload, 8);
      if (config_size > kMaxConfigSize) {
        return refuse(fmt::format("device configuration of {} bytes (at most {})", config_size, kMaxConfigSize));
      }
      if (config_size != size - kConfigHeaderSize) {
        return refuse(fmt::format("config size field says {} bytes but {} follow the 12-byte config header",
                                  config_size, size - kConfigHeaderSize));
      }
      const auto bytes = payload.subspan(kConfigHeaderSize);
      message.payload = DeviceConfig{.offset = offset, .flags = flags, .bytes = {bytes.begin(), bytes.end()}};
      break;
    }
  }

  if (fds.size() != want_fds) {
    std::string rule;
    if (want_fds == 0 && is_vring_fd_request(request) && !to_frontend) {
      rule = "none with the no-fd bit (0x100) set";
    } else if (request == Request::SetMemTable && !to_frontend) {
      rule = fmt::format("one per region, {}", want_fds);
    } else {
      rule = fmt::format("{}", want_fds);
    }
    return refuse(fmt::format("{} fds attached, expected {}", fds.size(), rule));
  }
  if (!drop_fds) {
    message.fds = std::move(fds);
  }
  return message;
}

}  // namespace vmm::vhost
