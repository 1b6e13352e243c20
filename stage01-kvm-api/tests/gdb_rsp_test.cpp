// The GDB remote serial protocol's framing (the gdb stub's first piece, issue 11): packets as gdb's own remote.c
// writes them, checksums, escapes, run-length encoding, noise, split reads, and the limits a broken peer meets.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "vmm/gdb/rsp.hpp"

namespace vmm::gdb {
namespace {

std::vector<RspEvent> feed(PacketDecoder& d, std::string_view bytes) {
  return d.feed(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}
RspEvent packet(std::string payload) {
  return {RspEvent::Kind::Packet, std::move(payload)};
}

TEST(Rsp, FramesWithTheChecksumOfTheBytesAsSent) {
  EXPECT_EQ(frame("OK"), "$OK#9a");  // 'O' 0x4f + 'K' 0x4b = 0x9a
  EXPECT_EQ(frame(""), "$#00");
  EXPECT_EQ(frame("g"), "$g#67");
  EXPECT_EQ(escape("a#b$c}d*e"),
            "a}\x03"
            "b}\x04"
            "c}]d}\x0a"
            "e");
  EXPECT_EQ(frame("}"), "$}]#da");     // sent as "}]": 0x7d + 0x5d = 0xda
  EXPECT_EQ(frame("#"), "$}\x03#80");  // 0x7d + 0x03
}

TEST(Rsp, DecodesWhatItFramesEvenOneByteAtATime) {
  const std::string payloads[] = {"qSupported:multiprocess+;swbreak+", "m1000,4", "X1000,4:a#$}*", ""};
  for (const auto& p : payloads) {
    PacketDecoder d;
    std::vector<RspEvent> events;
    for (const char c : frame(p)) {
      auto more = feed(d, std::string_view(&c, 1));
      events.insert(events.end(), more.begin(), more.end());
    }
    ASSERT_EQ(events.size(), 1u) << p;
    EXPECT_EQ(events[0], packet(p));
    EXPECT_FALSE(d.in_packet());
  }
}

TEST(Rsp, AcksNaksCtrlCAndNoiseBetweenPackets) {
  PacketDecoder d;
  const auto events = feed(d, "+\x03garbage-$c#63+");
  const std::vector<RspEvent> expected = {{RspEvent::Kind::Ack, {}},
                                          {RspEvent::Kind::Interrupt, {}},
                                          {RspEvent::Kind::Nak, {}},
                                          packet("c"),
                                          {RspEvent::Kind::Ack, {}}};
  EXPECT_EQ(events, expected);
}

TEST(Rsp, ACtrlCInsideAPacketIsData) {
  PacketDecoder d;
  const std::string body = "a\x03";
  const auto events = feed(d, "$" + body + "#" + fmt::format("{:02x}", checksum(body)));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], packet(body));
}

TEST(Rsp, BadChecksumsAreReportedWithThePayloadAndTheNextPacketStillDecodes) {
  PacketDecoder d;
  auto events = feed(d, "$OK#00$OK#zz$OK#9A");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0], (RspEvent{RspEvent::Kind::BadChecksum, "OK"}));
  EXPECT_EQ(events[1].kind, RspEvent::Kind::BadChecksum);
  EXPECT_EQ(events[2], packet("OK")) << "upper-case checksum digits are accepted";
}

TEST(Rsp, RunLengthEncodingRepeatsThePreviousByte) {
  PacketDecoder d;
  // "0* " = 0 and 3 more ("0000"); "x*!" = x and 4 more. The checksum covers the encoded bytes.
  const std::string sent = "0* 1x*!";
  const auto events = feed(d, "$" + sent + "#" + fmt::format("{:02x}", checksum(sent)));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], packet("00001xxxxx"));
}

TEST(Rsp, AStarAtTheStartOrBeforeTheEndIsData) {
  PacketDecoder d;
  for (const std::string sent : {"*a", "a*"}) {
    const auto events = feed(d, "$" + sent + "#" + fmt::format("{:02x}", checksum(sent)));
    ASSERT_EQ(events.size(), 1u) << sent;
    EXPECT_EQ(events[0], packet(sent));
  }
}

TEST(Rsp, OversizedPacketsAreDroppedAndTheStreamRecovers) {
  PacketDecoder d;
  const std::string huge(kMaxPacketBytes + 1, 'a');
  auto events = feed(d, "$" + huge + "#00" + frame("g"));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, RspEvent::Kind::Overflow);
  EXPECT_EQ(events[1], packet("g"));
  // A run-length count cannot grow a packet past the limit either.
  std::string sent = "a";
  while (sent.size() < kMaxPacketBytes / 30 * 3 + 30) {
    sent += "a*~";  // each adds 97 bytes
  }
  events = feed(d, "$" + sent + "#" + fmt::format("{:02x}", checksum(sent)));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].kind, RspEvent::Kind::Overflow);
}

TEST(Rsp, HexBothWaysAndItsRefusals) {
  const std::vector<std::uint8_t> bytes = {0x00, 0x7f, 0xff, 0x10};
  EXPECT_EQ(to_hex(bytes), "007fff10");
  EXPECT_EQ(from_hex("007FfF10").value(), bytes);
  EXPECT_FALSE(from_hex("abc").has_value());
  EXPECT_FALSE(from_hex("zz").has_value());
  EXPECT_EQ(parse_hex_number("ffffffff81000000").value(), 0xffffffff81000000u);
  EXPECT_EQ(parse_hex_number("0").value(), 0u);
  EXPECT_FALSE(parse_hex_number("").has_value());
  EXPECT_FALSE(parse_hex_number("1ffffffff81000000").has_value()) << "17 digits overflow 64 bits";
  EXPECT_FALSE(parse_hex_number("12g").has_value());
}

}  // namespace
}  // namespace vmm::gdb
