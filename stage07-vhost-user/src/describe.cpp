// describe(): the one-line rendering of a message that --trace-vhost-user prints, and the Tracer that prints it.

#include <array>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "vmm/vhost/connection.hpp"
#include "vmm/vhost/protocol.hpp"

namespace vmm::vhost {

namespace {

struct NamedBit {
  unsigned bit;
  std::string_view name;
};

// The device-independent virtio feature bits (virtio 1.2, section 6 "Reserved Feature Bits") plus the two bits
// vhost gives a meaning: LOG_ALL (26, vhost's VHOST_F_LOG_ALL) and PROTOCOL_FEATURES (30, vhost-user). Bits 0-23
// belong to the device type, which a feature word alone does not name: they print as "bitN".
constexpr std::array kFeatureNames = {
    NamedBit{24, "NOTIFY_ON_EMPTY"},   NamedBit{26, "LOG_ALL"},         NamedBit{27, "ANY_LAYOUT"},
    NamedBit{28, "INDIRECT_DESC"},     NamedBit{29, "EVENT_IDX"},       NamedBit{30, "PROTOCOL_FEATURES"},
    NamedBit{32, "VERSION_1"},         NamedBit{33, "ACCESS_PLATFORM"}, NamedBit{34, "RING_PACKED"},
    NamedBit{35, "IN_ORDER"},          NamedBit{36, "ORDER_PLATFORM"},  NamedBit{37, "SR_IOV"},
    NamedBit{38, "NOTIFICATION_DATA"}, NamedBit{40, "RING_RESET"},
};

// vhost-user.rst's VHOST_USER_PROTOCOL_F_* names, by bit.
constexpr std::array<std::string_view, 20> kProtocolFeatureNames = {
    "MQ",
    "LOG_SHMFD",
    "RARP",
    "REPLY_ACK",
    "NET_MTU",
    "BACKEND_REQ",
    "CROSS_ENDIAN",
    "CRYPTO_SESSION",
    "PAGEFAULT",
    "CONFIG",
    "BACKEND_SEND_FD",
    "HOST_NOTIFIER",
    "INFLIGHT_SHMFD",
    "RESET_DEVICE",
    "INBAND_NOTIFICATIONS",
    "CONFIGURE_MEM_SLOTS",
    "STATUS",
    "XEN_MMAP",
    "SHARED_OBJECT",
    "DEVICE_STATE",
};

template <typename NameOf>
std::string describe_bits(std::uint64_t bits, NameOf name_of) {
  std::string out;
  for (unsigned bit = 0; bit < 64; ++bit) {
    if ((bits & (1ull << bit)) == 0) {
      continue;
    }
    if (!out.empty()) {
      out += ' ';
    }
    std::string_view name = name_of(bit);
    out += name.empty() ? fmt::format("bit{}", bit) : std::string(name);
  }
  return out;
}

std::string describe_region(const MemoryRegion& region) {
  return fmt::format("gpa=0x{:x} size=0x{:x} uaddr=0x{:x} off=0x{:x}", region.guest_phys_addr, region.memory_size,
                     region.userspace_addr, region.mmap_offset);
}

// "u64=0x... (NAMES)", the parenthesis only when a bit is set.
std::string with_names(std::uint64_t value, const std::string& names) {
  return names.empty() ? fmt::format("u64=0x{:x}", value) : fmt::format("u64=0x{:x} ({})", value, names);
}

std::string describe_u64(const Message& message, std::uint64_t value) {
  // SET_FEATURES and SET_PROTOCOL_FEATURES carry feature words, but their replies are REPLY_ACKs.
  const bool ack_of_set = message.is_reply() &&
                          (message.request == Request::SetFeatures || message.request == Request::SetProtocolFeatures);
  switch (ack_of_set ? Request::SetOwner : message.request) {
    case Request::GetFeatures:
    case Request::SetFeatures:
      return with_names(value, describe_features(value));
    case Request::GetProtocolFeatures:
    case Request::SetProtocolFeatures:
      return with_names(value, describe_protocol_features(value));
    case Request::GetQueueNum:
    case Request::GetMaxMemSlots:
      return fmt::format("u64={}", value);
    case Request::SetVringKick:
    case Request::SetVringCall:
    case Request::SetVringErr:
      if (!message.is_reply()) {
        const VringFd vring = message.vring_fd();
        std::string out = fmt::format("index={}", vring.index);
        if (vring.no_fd) {
          out += " nofd";
        }
        if (const std::uint64_t rest = value & ~(kVringIndexMask | kVringNoFdMask); rest != 0) {
          out += fmt::format(" reserved=0x{:x}", rest);
        }
        return out;
      }
      break;
    default:
      break;
  }
  // A REPLY_ACK: 0 is success, anything else a failure.
  if (message.is_reply()) {
    return value == 0 ? "ack=0 (success)" : fmt::format("ack={} (failure)", value);
  }
  return fmt::format("u64=0x{:x}", value);
}

std::string describe_payload(const Message& message) {
  return std::visit(
      [&](const auto& payload) -> std::string {
        using T = std::decay_t<decltype(payload)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return {};
        } else if constexpr (std::is_same_v<T, std::uint64_t>) {
          return describe_u64(message, payload);
        } else if constexpr (std::is_same_v<T, vhost_vring_state>) {
          return fmt::format("index={} num={}", payload.index, payload.num);
        } else if constexpr (std::is_same_v<T, vhost_vring_addr>) {
          return fmt::format(
              "index={} flags=0x{:x} desc=0x{:x} used=0x{:x} avail=0x{:x} log=0x{:x}", payload.index, payload.flags,
              static_cast<std::uint64_t>(payload.desc_user_addr), static_cast<std::uint64_t>(payload.used_user_addr),
              static_cast<std::uint64_t>(payload.avail_user_addr), static_cast<std::uint64_t>(payload.log_guest_addr));
        } else if constexpr (std::is_same_v<T, MemoryTable>) {
          std::string out = fmt::format("{} region{}:", payload.regions.size(), payload.regions.size() == 1 ? "" : "s");
          for (std::size_t i = 0; i < payload.regions.size(); ++i) {
            out += i == 0 ? " " : "; ";
            out += describe_region(payload.regions[i]);
          }
          return out;
        } else if constexpr (std::is_same_v<T, SingleMemoryRegion>) {
          return describe_region(payload.region);
        } else {
          static_assert(std::is_same_v<T, DeviceConfig>);
          std::string out =
              fmt::format("offset={} size={} flags=0x{:x}", payload.offset, payload.bytes.size(), payload.flags);
          if (!payload.bytes.empty()) {
            out += " bytes=";
            for (std::uint8_t byte : payload.bytes) {
              out += fmt::format("{:02x}", byte);
            }
          }
          return out;
        }
      },
      message.payload);
}

}  // namespace

std::string describe_features(std::uint64_t features) {
  return describe_bits(features, [](unsigned bit) -> std::string_view {
    for (const NamedBit& named : kFeatureNames) {
      if (named.bit == bit) {
        return named.name;
      }
    }
    return {};
  });
}

std::string describe_protocol_features(std::uint64_t features) {
  return describe_bits(features, [](unsigned bit) -> std::string_view {
    return bit < kProtocolFeatureNames.size() ? kProtocolFeatureNames[bit] : std::string_view{};
  });
}

std::string describe(const Message& message) {
  std::string out = request_name(static_cast<std::uint32_t>(message.request));
  if (message.is_reply()) {
    out += " reply";
  }
  if (message.needs_reply()) {
    out += " need_reply";
  }
  // A well-formed message has version 1 and no other bits; show the raw flags when that is not so (a hand-built or
  // hostile message), since they are then the interesting part.
  if ((message.flags & kVersionMask) != kVersion || (message.flags & ~(kVersionMask | kReplyFlag | kNeedReply)) != 0) {
    out += fmt::format(" flags=0x{:x}", message.flags);
  }
  if (std::string payload = describe_payload(message); !payload.empty()) {
    out += ' ';
    out += payload;
  }
  if (!message.fds.empty()) {
    out += " fds=[";
    for (std::size_t i = 0; i < message.fds.size(); ++i) {
      if (i != 0) {
        out += ',';
      }
      out += fmt::format("{}", message.fds[i].get());
    }
    out += ']';
  }
  return out;
}

void Tracer::sent(const Message& message) const {
  if (sink_) {
    sink_(fmt::format("{} > {}", side_, describe(message)));
  }
}

void Tracer::received(const Message& message) const {
  if (sink_) {
    sink_(fmt::format("{} < {}", side_, describe(message)));
  }
}

void Tracer::note(std::string_view text) const {
  if (sink_) {
    sink_(side_.empty() ? std::string(text) : fmt::format("{}: {}", side_, text));
  }
}

}  // namespace vmm::vhost
