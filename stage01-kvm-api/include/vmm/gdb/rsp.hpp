#pragma once
/// @file
/// @brief The GDB remote serial protocol's framing: packets, checksums, escaping, run-length encoding, hex.
///
/// The first piece of vmmlab's gdb stub (issue 11). It lives in stage01 because the stub serves every stage's demo,
/// and each demo links only its own stage's library: the codec is pure, so the earliest stage can hold it.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/error.hpp"

namespace vmm::gdb {

/// @brief The largest packet payload the stub accepts (and announces as PacketSize in qSupported).
inline constexpr std::size_t kMaxPacketBytes = 16384;

/// @brief The checksum the protocol uses: the sum of the bytes between '$' and '#' (as sent), modulo 256.
[[nodiscard]] std::uint8_t checksum(std::string_view sent);

/// @brief `data` with the four bytes that cannot appear raw in a packet ('#', '$', '}' and '*') escaped as '}' and
///        the byte XOR 0x20.
[[nodiscard]] std::string escape(std::string_view data);

/// @brief "$" + escape(payload) + "#" + two lower-case hex digits of the checksum: one packet ready to send.
[[nodiscard]] std::string frame(std::string_view payload);

/// @brief What the decoder found in the byte stream.
struct RspEvent {
  /// @brief The kinds of event.
  enum class Kind {
    Packet,       ///< A packet with a good checksum: `payload` is unescaped and run-length decoded.
    Interrupt,    ///< A 0x03 byte outside a packet: the user pressed Ctrl-C.
    Ack,          ///< '+': the peer received our last packet.
    Nak,          ///< '-': the peer wants our last packet again.
    BadChecksum,  ///< A packet whose checksum did not match (answer '-'): `payload` holds what was decoded.
    Overflow,     ///< A packet longer than kMaxPacketBytes: dropped, the decoder waits for the next '$'.
  };
  Kind kind = Kind::Packet;  ///< What happened.
  std::string payload;       ///< For Packet and BadChecksum.
  /// @brief Equal when both fields are.
  bool operator==(const RspEvent&) const = default;
};

/// @brief Turns the bytes gdb sends into events, however they are split across reads.
///
/// Outside a packet only '$', '+', '-' and 0x03 mean something; anything else is line noise and skipped. Inside,
/// '}' escapes the next byte, and "X*N" repeats X (N - 29) more times (the protocol's run-length encoding; N is a
/// printable byte from ' ' to '~', minus '#' and '$'). The checksum covers the bytes as sent. A packet that grows
/// past kMaxPacketBytes, or an RLE count that would, is dropped as Overflow: a hostile or broken peer cannot make
/// the stub allocate without bound.
class PacketDecoder {
 public:
  /// @brief Consumes `bytes`; returns the events they completed, in order.
  [[nodiscard]] std::vector<RspEvent> feed(std::span<const std::uint8_t> bytes);
  /// @brief True while a packet has started and not ended.
  [[nodiscard]] bool in_packet() const noexcept { return state_ != State::Idle; }

 private:
  enum class State { Idle, Body, Escape, Repeat, Checksum1, Checksum2, Discard };
  void append(char c, std::vector<RspEvent>& events);
  void body(std::uint8_t byte, std::vector<RspEvent>& events);

  State state_ = State::Idle;
  std::string payload_;
  unsigned sum_ = 0;  // of the bytes as sent, between '$' and '#'
  int received_checksum_ = 0;
};

/// @brief Bytes as lower-case hex, two digits each ("m" replies, register values).
[[nodiscard]] std::string to_hex(std::span<const std::uint8_t> bytes);
/// @brief Hex digits back to bytes; refuses an odd count or a non-hex digit.
[[nodiscard]] Result<std::vector<std::uint8_t>> from_hex(std::string_view hex);
/// @brief A hex number as gdb writes addresses and lengths ("ffffffff81000000"); refuses empty text, non-hex
///        digits and more than 16 digits.
[[nodiscard]] Result<std::uint64_t> parse_hex_number(std::string_view hex);

}  // namespace vmm::gdb
