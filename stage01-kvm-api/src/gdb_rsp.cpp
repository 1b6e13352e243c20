#include <fmt/format.h>

#include "vmm/gdb/rsp.hpp"

namespace vmm::gdb {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

bool needs_escape(char c) {
  return c == '#' || c == '$' || c == '}' || c == '*';
}

}  // namespace

std::uint8_t checksum(std::string_view sent) {
  unsigned sum = 0;
  for (const char c : sent) {
    sum += static_cast<std::uint8_t>(c);
  }
  return static_cast<std::uint8_t>(sum);
}

std::string escape(std::string_view data) {
  std::string out;
  out.reserve(data.size());
  for (const char c : data) {
    if (needs_escape(c)) {
      out.push_back('}');
      out.push_back(static_cast<char>(c ^ 0x20));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string frame(std::string_view payload) {
  const std::string body = escape(payload);
  return fmt::format("${}#{:02x}", body, checksum(body));
}

void PacketDecoder::append(char c, std::vector<RspEvent>& events) {
  if (payload_.size() >= kMaxPacketBytes) {
    events.push_back({RspEvent::Kind::Overflow, {}});
    payload_.clear();
    state_ = State::Discard;
    return;
  }
  payload_.push_back(c);
}

void PacketDecoder::body(std::uint8_t byte, std::vector<RspEvent>& events) {
  const char c = static_cast<char>(byte);
  if (c == '#') {
    state_ = State::Checksum1;
    return;
  }
  sum_ += byte;
  if (c == '}') {
    state_ = State::Escape;
  } else if (c == '*' && !payload_.empty()) {
    state_ = State::Repeat;
  } else {
    append(c, events);
  }
}

std::vector<RspEvent> PacketDecoder::feed(std::span<const std::uint8_t> bytes) {
  std::vector<RspEvent> events;
  for (const std::uint8_t byte : bytes) {
    const char c = static_cast<char>(byte);
    switch (state_) {
      case State::Idle:
        if (c == '$') {
          payload_.clear();
          sum_ = 0;
          state_ = State::Body;
        } else if (c == '+') {
          events.push_back({RspEvent::Kind::Ack, {}});
        } else if (c == '-') {
          events.push_back({RspEvent::Kind::Nak, {}});
        } else if (byte == 0x03) {
          events.push_back({RspEvent::Kind::Interrupt, {}});
        }
        break;  // anything else between packets is noise
      case State::Discard:
        if (c == '#') {
          state_ = State::Idle;  // the overflowing packet's checksum digits follow: noise to Idle
        } else if (c == '$') {
          payload_.clear();
          sum_ = 0;
          state_ = State::Body;
        }
        break;
      case State::Body:
        body(byte, events);
        break;
      case State::Escape:
        sum_ += byte;
        state_ = State::Body;
        append(static_cast<char>(c ^ 0x20), events);
        break;
      case State::Repeat: {
        state_ = State::Body;
        if (byte >= ' ' && byte <= '~' && c != '#' && c != '$') {
          // "X*N": X repeated N - 29 more times (' ' = 3 more, so "0* " is "0000").
          sum_ += byte;
          const char repeated = payload_.back();
          for (int i = 0; i < static_cast<int>(byte) - 29 && state_ == State::Body; ++i) {
            append(repeated, events);
          }
          break;
        }
        // Not a repeat count: the '*' was data, and this byte is read as usual.
        append('*', events);
        if (state_ == State::Body) {
          body(byte, events);
        }
        break;
      }
      case State::Checksum1:
        received_checksum_ = hex_value(c) << 4;
        state_ = hex_value(c) < 0 ? State::Idle : State::Checksum2;
        if (state_ == State::Idle) {
          events.push_back({RspEvent::Kind::BadChecksum, std::move(payload_)});
          payload_.clear();
        }
        break;
      case State::Checksum2: {
        state_ = State::Idle;
        const int low = hex_value(c);
        const bool good = low >= 0 && (received_checksum_ | low) == static_cast<int>(sum_ & 0xff);
        events.push_back({good ? RspEvent::Kind::Packet : RspEvent::Kind::BadChecksum, std::move(payload_)});
        payload_.clear();
        break;
      }
    }
  }
  return events;
}

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const auto b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

Result<std::vector<std::uint8_t>> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) {
    return logic_error("gdb hex", fmt::format("'{}': an odd number of digits", hex));
  }
  std::vector<std::uint8_t> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int high = hex_value(hex[2 * i]);
    const int low = hex_value(hex[2 * i + 1]);
    if (high < 0 || low < 0) {
      return logic_error("gdb hex", fmt::format("'{}': not a hex digit at {}", hex, 2 * i + (high < 0 ? 0 : 1)));
    }
    out[i] = static_cast<std::uint8_t>(high << 4 | low);
  }
  return out;
}

Result<std::uint64_t> parse_hex_number(std::string_view hex) {
  if (hex.empty() || hex.size() > 16) {
    return logic_error("gdb hex", fmt::format("'{}': 1 to 16 hex digits expected", hex));
  }
  std::uint64_t value = 0;
  for (const char c : hex) {
    const int digit = hex_value(c);
    if (digit < 0) {
      return logic_error("gdb hex", fmt::format("'{}': '{}' is not a hex digit", hex, c));
    }
    value = value << 4 | static_cast<std::uint64_t>(digit);
  }
  return value;
}

}  // namespace vmm::gdb
