// The vhost-user codec: request names, payload kinds, encode/decode round trips for every supported request in both
// directions, every class of malformed message, and describe()'s trace lines.

#include "vmm/vhost/protocol.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vmm/vhost/connection.hpp"

// The kernel's payload structs have no operator==; these let Payload (a variant) compare in EXPECT_EQ. Global, so
// that argument-dependent lookup from std::variant's operator== finds them.
static bool operator==(const vhost_vring_state& a, const vhost_vring_state& b) {
  return a.index == b.index && a.num == b.num;
}
static bool operator==(const vhost_vring_addr& a, const vhost_vring_addr& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

namespace vmm::vhost {
namespace {

using ::testing::HasSubstr;

// An eventfd to attach to a message: a real, closable descriptor.
Fd make_fd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  EXPECT_GE(fd, 0);
  return Fd(fd);
}

std::vector<Fd> make_fds(std::size_t count) {
  std::vector<Fd> fds;
  for (std::size_t i = 0; i < count; ++i) {
    fds.push_back(make_fd());
  }
  return fds;
}

bool is_closed(int fd) {
  errno = 0;
  return ::fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

MemoryRegion region(std::uint64_t n) {
  return MemoryRegion{.guest_phys_addr = n * 0x100000,
                      .memory_size = 0x100000,
                      .userspace_addr = 0x7f0000000000 + n * 0x100000,
                      .mmap_offset = n * 0x1000};
}

vhost_vring_addr ring_addr(unsigned index) {
  vhost_vring_addr addr{};
  addr.index = index;
  addr.flags = 0;
  addr.desc_user_addr = 0x7f0000001000;
  addr.used_user_addr = 0x7f0000003000;
  addr.avail_user_addr = 0x7f0000002000;
  addr.log_guest_addr = 0;
  return addr;
}

Message make(Request request, Payload payload = {}, std::uint32_t flags = kVersion, std::vector<Fd> fds = {}) {
  return Message{.request = request, .flags = flags, .payload = std::move(payload), .fds = std::move(fds)};
}

// Encodes `message`, then decodes the bytes with the message's own fds (moved out), as the receiver would.
Result<Message> round_trip(Message message, Direction direction, std::optional<Request> expected = std::nullopt,
                           bool ack = false) {
  auto bytes = encode(message);
  if (!bytes) {
    return std::unexpected(bytes.error());
  }
  EXPECT_GE(bytes->size(), kHeaderSize);
  const Header header = decode_header(std::span<const std::uint8_t, kHeaderSize>(bytes->data(), kHeaderSize));
  EXPECT_EQ(header.request, static_cast<std::uint32_t>(message.request));
  EXPECT_EQ(header.flags, message.flags);
  EXPECT_EQ(header.size, bytes->size() - kHeaderSize);
  return decode(header, std::span<const std::uint8_t>(*bytes).subspan(kHeaderSize), std::move(message.fds), direction,
                expected, ack);
}

// Checks that `message` survives encode + decode with its payload, flags and fds intact.
void expect_round_trip(Message message, Direction direction, std::optional<Request> expected = std::nullopt,
                       bool ack = false) {
  const std::string name = request_name(static_cast<std::uint32_t>(message.request));
  SCOPED_TRACE(name);
  std::vector<int> fd_numbers;
  for (const Fd& fd : message.fds) {
    fd_numbers.push_back(fd.get());
  }
  const Request request = message.request;
  const std::uint32_t flags = message.flags;
  const Payload payload = message.payload;
  auto decoded = round_trip(std::move(message), direction, expected, ack);
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_EQ(decoded->request, request);
  EXPECT_EQ(decoded->flags, flags);
  EXPECT_EQ(decoded->payload, payload);
  std::vector<int> got;
  for (const Fd& fd : decoded->fds) {
    got.push_back(fd.get());
  }
  EXPECT_EQ(got, fd_numbers);
}

// A message assembled from raw header fields and payload bytes, decoded with `fd_count` fresh fds; the refusal must
// name `name` and say `why`, and the fds must be closed.
void expect_refused(std::uint32_t request, std::uint32_t flags, const std::vector<std::uint8_t>& payload,
                    std::size_t fd_count, Direction direction, const std::string& why,
                    std::optional<Request> expected = std::nullopt, bool ack = false) {
  const std::string name = request_name(request);
  SCOPED_TRACE(fmt::format("{} flags=0x{:x} size={} fds={} ({})", name, flags, payload.size(), fd_count, why));
  std::vector<Fd> fds = make_fds(fd_count);
  std::vector<int> numbers;
  for (const Fd& fd : fds) {
    numbers.push_back(fd.get());
  }
  const Header header{.request = request, .flags = flags, .size = static_cast<std::uint32_t>(payload.size())};
  auto decoded = decode(header, payload, std::move(fds), direction, expected, ack);
  ASSERT_FALSE(decoded) << describe(*decoded);
  EXPECT_THAT(decoded.error().message(), HasSubstr(name));
  EXPECT_THAT(decoded.error().message(), HasSubstr(why));
  for (int fd : numbers) {
    EXPECT_TRUE(is_closed(fd)) << "fd " << fd << " of a refused message is still open";
  }
}

std::vector<std::uint8_t> u32s(std::initializer_list<std::uint32_t> values, std::size_t extra_zero_bytes = 0) {
  std::vector<std::uint8_t> out;
  for (std::uint32_t v : values) {
    for (int i = 0; i < 4; ++i) {
      out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
  }
  out.resize(out.size() + extra_zero_bytes, 0);
  return out;
}

std::vector<std::uint8_t> zeros(std::size_t n) {
  return std::vector<std::uint8_t>(n, 0);
}

// A memory table payload: `count` in the header, `regions` regions of bytes after it.
std::vector<std::uint8_t> mem_table_bytes(std::uint32_t count, std::size_t regions, std::size_t extra = 0) {
  return u32s({count, 0}, regions * 32 + extra);
}

constexpr std::uint32_t R(Request request) {
  return static_cast<std::uint32_t>(request);
}
constexpr std::uint32_t kReply = kVersion | kReplyFlag;

// --- names and tables -----------------------------------------------------------------------------------------------

TEST(VhostProtocol, RequestNamesFollowTheSpecAndNumberTheUnknown) {
  EXPECT_EQ(request_name(1), "GET_FEATURES");
  EXPECT_EQ(request_name(5), "SET_MEM_TABLE");
  EXPECT_EQ(request_name(12), "SET_VRING_KICK");
  EXPECT_EQ(request_name(15), "GET_PROTOCOL_FEATURES");
  EXPECT_EQ(request_name(21), "SET_BACKEND_REQ_FD");
  EXPECT_EQ(request_name(24), "GET_CONFIG");
  EXPECT_EQ(request_name(34), "RESET_DEVICE");
  EXPECT_EQ(request_name(38), "REM_MEM_REG");
  EXPECT_EQ(request_name(40), "GET_STATUS");
  EXPECT_EQ(request_name(0), "REQUEST_0");
  EXPECT_EQ(request_name(41), "REQUEST_41");
  EXPECT_EQ(request_name(77), "REQUEST_77");
  EXPECT_EQ(request_name(0xffffffff), "REQUEST_4294967295");
}

TEST(VhostProtocol, SupportedRequestsAreExactlyTheImplementedOnes) {
  const std::set<std::uint32_t> supported = {1,  2,  3,  4,  5,  8,  9,  10, 11, 12, 13,
                                             14, 15, 16, 17, 18, 24, 25, 34, 36, 37, 38};
  for (std::uint32_t request = 0; request < 100; ++request) {
    EXPECT_EQ(is_supported(request), supported.contains(request)) << request_name(request);
  }
  EXPECT_FALSE(is_supported(0xffffffff));
}

TEST(VhostProtocol, PayloadKindsPerRequestAndDirection) {
  using enum PayloadKind;
  const auto to_backend = [](Request r) { return payload_kind(r, Direction::ToBackend); };
  const auto reply = [](Request r, bool ack = false) { return payload_kind(r, Direction::ToFrontend, ack); };
  for (Request r : {Request::GetFeatures, Request::GetProtocolFeatures, Request::GetQueueNum, Request::GetMaxMemSlots,
                    Request::SetOwner, Request::ResetOwner, Request::ResetDevice}) {
    EXPECT_EQ(to_backend(r), None) << request_name(R(r));
  }
  for (Request r : {Request::SetFeatures, Request::SetProtocolFeatures, Request::SetVringKick, Request::SetVringCall,
                    Request::SetVringErr}) {
    EXPECT_EQ(to_backend(r), U64) << request_name(R(r));
  }
  for (Request r : {Request::SetVringNum, Request::SetVringBase, Request::SetVringEnable, Request::GetVringBase}) {
    EXPECT_EQ(to_backend(r), VringState) << request_name(R(r));
  }
  EXPECT_EQ(to_backend(Request::SetVringAddr), VringAddr);
  EXPECT_EQ(to_backend(Request::SetMemTable), MemoryTable);
  EXPECT_EQ(to_backend(Request::AddMemReg), SingleMemoryRegion);
  EXPECT_EQ(to_backend(Request::RemMemReg), SingleMemoryRegion);
  EXPECT_EQ(to_backend(Request::GetConfig), Config);
  EXPECT_EQ(to_backend(Request::SetConfig), Config);

  for (Request r :
       {Request::GetFeatures, Request::GetProtocolFeatures, Request::GetQueueNum, Request::GetMaxMemSlots}) {
    EXPECT_EQ(reply(r), U64) << request_name(R(r));
    EXPECT_EQ(reply(r, true), U64) << request_name(R(r));
  }
  EXPECT_EQ(reply(Request::GetVringBase), VringState);
  EXPECT_EQ(reply(Request::GetVringBase, true), VringState);  // An explicit reply is the ack.
  EXPECT_EQ(reply(Request::GetConfig), Config);
  EXPECT_EQ(reply(Request::SetMemTable), None);
  EXPECT_EQ(reply(Request::SetMemTable, true), U64);
  EXPECT_EQ(reply(Request::SetVringEnable, true), U64);
  EXPECT_EQ(reply(Request::SetConfig, true), U64);

  // Unsupported requests have no layout vmmlab knows.
  EXPECT_EQ(to_backend(Request::SetLogBase), None);
  EXPECT_EQ(reply(Request::GetInflightFd, true), None);
}

// --- round trips ----------------------------------------------------------------------------------------------------

TEST(VhostProtocol, EveryRequestRoundTripsToTheBackend) {
  expect_round_trip(make(Request::GetFeatures), Direction::ToBackend);
  expect_round_trip(make(Request::SetFeatures, std::uint64_t{0x140000000}), Direction::ToBackend);
  expect_round_trip(make(Request::SetOwner), Direction::ToBackend);
  expect_round_trip(make(Request::ResetOwner), Direction::ToBackend);
  {
    MemoryTable table;
    for (std::uint64_t i = 0; i < 3; ++i) {
      table.regions.push_back(region(i));
    }
    expect_round_trip(make(Request::SetMemTable, table, kVersion, make_fds(3)), Direction::ToBackend);
    table.regions.resize(1);
    expect_round_trip(make(Request::SetMemTable, table, kVersion | kNeedReply, make_fds(1)), Direction::ToBackend);
    MemoryTable full;
    for (std::uint64_t i = 0; i < kMaxMemTableRegions; ++i) {
      full.regions.push_back(region(i));
    }
    expect_round_trip(make(Request::SetMemTable, full, kVersion, make_fds(kMaxMemTableRegions)), Direction::ToBackend);
  }
  expect_round_trip(make(Request::SetVringNum, vhost_vring_state{.index = 0, .num = 256}), Direction::ToBackend);
  expect_round_trip(make(Request::SetVringAddr, ring_addr(1)), Direction::ToBackend);
  expect_round_trip(make(Request::SetVringBase, vhost_vring_state{.index = 1, .num = 17}), Direction::ToBackend);
  expect_round_trip(make(Request::GetVringBase, vhost_vring_state{.index = 1, .num = 0}), Direction::ToBackend);
  for (Request r : {Request::SetVringKick, Request::SetVringCall, Request::SetVringErr}) {
    expect_round_trip(make(r, std::uint64_t{3}, kVersion, make_fds(1)), Direction::ToBackend);
    expect_round_trip(make(r, std::uint64_t{3} | kVringNoFdMask), Direction::ToBackend);
  }
  expect_round_trip(make(Request::GetProtocolFeatures), Direction::ToBackend);
  expect_round_trip(make(Request::SetProtocolFeatures, std::uint64_t{0x8209}), Direction::ToBackend);
  expect_round_trip(make(Request::GetQueueNum), Direction::ToBackend);
  expect_round_trip(make(Request::SetVringEnable, vhost_vring_state{.index = 0, .num = 1}, kVersion | kNeedReply),
                    Direction::ToBackend);
  expect_round_trip(make(Request::GetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = zeros(60)}),
                    Direction::ToBackend);
  expect_round_trip(make(Request::SetConfig, DeviceConfig{.offset = 20, .flags = 1, .bytes = {1, 2, 3}}),
                    Direction::ToBackend);
  expect_round_trip(make(Request::GetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = zeros(kMaxConfigSize)}),
                    Direction::ToBackend);
  expect_round_trip(make(Request::SetConfig, DeviceConfig{.offset = 8, .flags = 0, .bytes = {}}), Direction::ToBackend);
  expect_round_trip(make(Request::ResetDevice), Direction::ToBackend);
  expect_round_trip(make(Request::GetMaxMemSlots), Direction::ToBackend);
  expect_round_trip(make(Request::AddMemReg, SingleMemoryRegion{region(5)}, kVersion, make_fds(1)),
                    Direction::ToBackend);
  expect_round_trip(make(Request::RemMemReg, SingleMemoryRegion{region(5)}), Direction::ToBackend);
}

TEST(VhostProtocol, EveryReplyRoundTripsToTheFrontend) {
  expect_round_trip(make(Request::GetFeatures, std::uint64_t{0x170000000}, kReply), Direction::ToFrontend,
                    Request::GetFeatures);
  expect_round_trip(make(Request::GetProtocolFeatures, std::uint64_t{0x8f2b}, kReply), Direction::ToFrontend,
                    Request::GetProtocolFeatures);
  expect_round_trip(make(Request::GetQueueNum, std::uint64_t{1}, kReply), Direction::ToFrontend);
  expect_round_trip(make(Request::GetMaxMemSlots, std::uint64_t{32}, kReply), Direction::ToFrontend,
                    Request::GetMaxMemSlots);
  expect_round_trip(make(Request::GetVringBase, vhost_vring_state{.index = 0, .num = 42}, kReply),
                    Direction::ToFrontend, Request::GetVringBase);
  expect_round_trip(make(Request::GetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = {8, 0, 0, 0}}, kReply),
                    Direction::ToFrontend, Request::GetConfig);
  // REPLY_ACKs: a u64 for every supported request that has no reply of its own, when an ack was asked for.
  for (Request r : {Request::SetFeatures, Request::SetOwner, Request::ResetOwner, Request::SetMemTable,
                    Request::SetVringNum, Request::SetVringAddr, Request::SetVringBase, Request::SetVringKick,
                    Request::SetVringCall, Request::SetVringErr, Request::SetProtocolFeatures, Request::SetVringEnable,
                    Request::SetConfig, Request::ResetDevice, Request::AddMemReg, Request::RemMemReg}) {
    expect_round_trip(make(r, std::uint64_t{0}, kReply), Direction::ToFrontend, r, true);
    expect_round_trip(make(r, std::uint64_t{1}, kReply), Direction::ToFrontend, std::nullopt, true);
  }
  // With an ack asked for, a GET_* still answers with its own payload.
  expect_round_trip(make(Request::GetVringBase, vhost_vring_state{.index = 1, .num = 5}, kReply), Direction::ToFrontend,
                    Request::GetVringBase, true);
}

TEST(VhostProtocol, EncodeWritesTheDocumentedLittleEndianLayout) {
  auto bytes = encode(make(Request::SetVringCall, std::uint64_t{0x102}, kVersion | kNeedReply));
  ASSERT_TRUE(bytes) << bytes.error().message();
  EXPECT_EQ(*bytes, (std::vector<std::uint8_t>{13, 0, 0, 0, 0x09, 0, 0, 0, 8, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0}));

  MemoryTable table{
      .regions = {MemoryRegion{.guest_phys_addr = 0x1, .memory_size = 0x2, .userspace_addr = 0x3, .mmap_offset = 0x4}}};
  bytes = encode(make(Request::SetMemTable, table));
  ASSERT_TRUE(bytes) << bytes.error().message();
  std::vector<std::uint8_t> want = {5, 0, 0, 0, 1, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
  for (std::uint8_t v : {1, 2, 3, 4}) {
    want.push_back(v);
    want.resize(want.size() + 7, 0);
  }
  EXPECT_EQ(*bytes, want);

  bytes = encode(make(Request::RemMemReg, SingleMemoryRegion{table.regions[0]}));
  ASSERT_TRUE(bytes) << bytes.error().message();
  ASSERT_EQ(bytes->size(), kHeaderSize + 40);
  EXPECT_EQ(std::vector<std::uint8_t>(bytes->begin() + kHeaderSize, bytes->begin() + kHeaderSize + 8), zeros(8));
  EXPECT_EQ((*bytes)[kHeaderSize + 8], 1);

  bytes = encode(make(Request::SetConfig, DeviceConfig{.offset = 0x14, .flags = 1, .bytes = {0xaa, 0xbb}}));
  ASSERT_TRUE(bytes) << bytes.error().message();
  EXPECT_EQ(*bytes, (std::vector<std::uint8_t>{25, 0, 0, 0, 1, 0, 0, 0, 14, 0, 0, 0,    0x14,
                                               0,  0, 0, 2, 0, 0, 0, 1, 0,  0, 0, 0xaa, 0xbb}));

  const std::array<std::uint8_t, kHeaderSize> header = {0x18, 0, 0, 0, 0x05, 0, 0, 0, 0x10, 0x01, 0, 0};
  EXPECT_EQ(decode_header(header), (Header{.request = 24, .flags = 5, .size = 0x110}));
}

TEST(VhostProtocol, EncodeRefusesPayloadsThatDoNotFitTheirKind) {
  auto refused = [](Message message, const std::string& why) {
    auto bytes = encode(message);
    ASSERT_FALSE(bytes);
    EXPECT_THAT(bytes.error().message(), HasSubstr(request_name(R(message.request))));
    EXPECT_THAT(bytes.error().message(), HasSubstr(why));
  };
  refused(make(Request::SetMemTable, MemoryTable{}), "0 regions");
  MemoryTable nine;
  nine.regions.resize(9);
  refused(make(Request::SetMemTable, nine), "9 regions");
  refused(make(Request::SetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = zeros(257)}), "257 config bytes");
  refused(make(Request::SetVringNum, std::uint64_t{1}), "a vring state");
  refused(make(Request::GetFeatures, std::uint64_t{1}), "no payload");
  refused(make(Request::GetFeatures, {}, kReply), "GET_FEATURES reply cannot carry no payload");
  refused(make(Request::SetVringNum, vhost_vring_state{}, kReply), "SET_VRING_NUM reply cannot carry a vring state");
}

// --- malformed messages ---------------------------------------------------------------------------------------------

TEST(VhostProtocol, RefusesBadVersions) {
  for (std::uint32_t flags : {0u, 2u, 3u, 0x8u, 0x6u}) {
    expect_refused(R(Request::GetFeatures), flags, {}, 0, Direction::ToBackend, "version");
  }
  expect_refused(R(Request::GetFeatures), 0x4 | 0x2, u32s({0, 0}), 0, Direction::ToFrontend, "version");
}

TEST(VhostProtocol, RefusesAReplyFlagOnARequestAndItsAbsenceOnAReply) {
  expect_refused(R(Request::GetFeatures), kReply, {}, 0, Direction::ToBackend, "reply flag is set");
  expect_refused(R(Request::SetVringNum), kReply, zeros(8), 0, Direction::ToBackend, "reply flag is set");
  expect_refused(R(Request::GetFeatures), kVersion, zeros(8), 0, Direction::ToFrontend, "reply flag is not set");
}

TEST(VhostProtocol, RefusesUnknownAndUnsupportedRequests) {
  for (std::uint32_t request : {0u, 41u, 77u, 0xffffffffu}) {
    expect_refused(request, kVersion, {}, 0, Direction::ToBackend, "unknown request");
  }
  for (std::uint32_t request = 1; request <= 40; ++request) {
    if (!is_supported(request)) {
      expect_refused(request, kVersion, zeros(8), 0, Direction::ToBackend, "not supported");
      expect_refused(request, kReply, zeros(8), 0, Direction::ToFrontend, "not supported");
    }
  }
}

TEST(VhostProtocol, RefusesRepliesToTheWrongRequestOrToRequestsWithoutReply) {
  expect_refused(R(Request::GetProtocolFeatures), kReply, zeros(8), 0, Direction::ToFrontend,
                 "waiting for the reply to GET_FEATURES", Request::GetFeatures);
  expect_refused(R(Request::SetVringNum), kReply, zeros(8), 0, Direction::ToFrontend,
                 "waiting for the reply to SET_VRING_ENABLE", Request::SetVringEnable, true);
  // No ack asked for: SET_VRING_NUM and SET_MEM_TABLE have no reply at all.
  expect_refused(R(Request::SetVringNum), kReply, zeros(8), 0, Direction::ToFrontend, "has no reply",
                 Request::SetVringNum, false);
  expect_refused(R(Request::SetMemTable), kReply, zeros(8), 0, Direction::ToFrontend, "has no reply");
}

TEST(VhostProtocol, RefusesWrongSizesForEveryPayloadKind) {
  // None
  expect_refused(R(Request::GetFeatures), kVersion, zeros(8), 0, Direction::ToBackend, "payload of 8 bytes");
  expect_refused(R(Request::SetOwner), kVersion, zeros(1), 0, Direction::ToBackend, "payload of 1 bytes");
  // U64, both ways
  for (std::size_t size : {0u, 4u, 7u, 9u, 16u}) {
    expect_refused(R(Request::SetFeatures), kVersion, zeros(size), 0, Direction::ToBackend,
                   fmt::format("payload of {} bytes, a u64 is 8 bytes", size));
    expect_refused(R(Request::GetFeatures), kReply, zeros(size), 0, Direction::ToFrontend,
                   fmt::format("payload of {} bytes, a u64 is 8 bytes", size));
    expect_refused(R(Request::SetVringEnable), kReply, zeros(size), 0, Direction::ToFrontend,
                   fmt::format("payload of {} bytes, a u64 is 8 bytes", size), Request::SetVringEnable, true);
  }
  expect_refused(R(Request::SetVringKick), kVersion, zeros(4), 1, Direction::ToBackend, "a u64 is 8 bytes");
  // VringState
  for (std::size_t size : {0u, 4u, 7u, 9u, 12u, 40u}) {
    expect_refused(R(Request::SetVringNum), kVersion, zeros(size), 0, Direction::ToBackend,
                   fmt::format("payload of {} bytes, a vring state is 8 bytes", size));
    expect_refused(R(Request::GetVringBase), kReply, zeros(size), 0, Direction::ToFrontend, "a vring state is 8 bytes");
  }
  // VringAddr
  for (std::size_t size : {0u, 8u, 39u, 41u, 48u}) {
    expect_refused(R(Request::SetVringAddr), kVersion, zeros(size), 0, Direction::ToBackend,
                   fmt::format("payload of {} bytes, a vring address is 40 bytes", size));
  }
  // MemoryTable
  expect_refused(R(Request::SetMemTable), kVersion, zeros(4), 0, Direction::ToBackend, "payload of 4 bytes");
  expect_refused(R(Request::SetMemTable), kVersion, mem_table_bytes(2, 1), 2, Direction::ToBackend,
                 "payload of 40 bytes, a memory table of 2 regions is 72 bytes");
  expect_refused(R(Request::SetMemTable), kVersion, mem_table_bytes(1, 2), 1, Direction::ToBackend,
                 "payload of 72 bytes, a memory table of 1 regions is 40 bytes");
  expect_refused(R(Request::SetMemTable), kVersion, mem_table_bytes(1, 1, 1), 1, Direction::ToBackend,
                 "payload of 41 bytes");
  expect_refused(R(Request::SetMemTable), kVersion, u32s({1, 0}, 31), 1, Direction::ToBackend,
                 "payload of 39 bytes, a memory table of 1 regions is 40 bytes");
  // SingleMemoryRegion
  for (std::size_t size : {0u, 32u, 39u, 41u, 48u}) {
    expect_refused(R(Request::AddMemReg), kVersion, zeros(size), 1, Direction::ToBackend,
                   fmt::format("payload of {} bytes, a single memory region is 40 bytes", size));
    expect_refused(R(Request::RemMemReg), kVersion, zeros(size), 0, Direction::ToBackend,
                   "a single memory region is 40 bytes");
  }
  // Config
  expect_refused(R(Request::SetConfig), kVersion, zeros(11), 0, Direction::ToBackend, "payload of 11 bytes");
}

TEST(VhostProtocol, RefusesMemoryTablesWithNoneOrTooManyRegions) {
  expect_refused(R(Request::SetMemTable), kVersion, mem_table_bytes(0, 0), 0, Direction::ToBackend,
                 "memory table with 0 regions");
  expect_refused(R(Request::SetMemTable), kVersion, mem_table_bytes(9, 9), 8, Direction::ToBackend,
                 "memory table with 9 regions");
  expect_refused(R(Request::SetMemTable), kVersion, mem_table_bytes(0xffffffff, 1), 1, Direction::ToBackend,
                 "memory table with 4294967295 regions");
}

TEST(VhostProtocol, RefusesConfigsWhoseSizeFieldDisagreesOrIsTooLarge) {
  // size field 4, 3 bytes follow; size field 4, 5 bytes follow.
  expect_refused(R(Request::SetConfig), kVersion, u32s({0, 4, 0}, 3), 0, Direction::ToBackend,
                 "config size field says 4 bytes but 3 follow");
  expect_refused(R(Request::SetConfig), kVersion, u32s({0, 4, 0}, 5), 0, Direction::ToBackend,
                 "config size field says 4 bytes but 5 follow");
  expect_refused(R(Request::GetConfig), kReply, u32s({0, 60, 0}, 59), 0, Direction::ToFrontend,
                 "config size field says 60 bytes but 59 follow", Request::GetConfig);
  // Over 256, consistent or not.
  expect_refused(R(Request::GetConfig), kVersion, u32s({0, 257, 0}, 257), 0, Direction::ToBackend,
                 "device configuration of 257 bytes (at most 256)");
  expect_refused(R(Request::SetConfig), kVersion, u32s({0, 0xffffffff, 0}, 4), 0, Direction::ToBackend,
                 "device configuration of 4294967295 bytes");
}

TEST(VhostProtocol, RefusesWrongFdCounts) {
  // SET_MEM_TABLE: one per region.
  expect_refused(R(Request::SetMemTable), kVersion, mem_table_bytes(2, 2), 1, Direction::ToBackend,
                 "1 fds attached, expected one per region, 2");
  expect_refused(R(Request::SetMemTable), kVersion, mem_table_bytes(2, 2), 3, Direction::ToBackend,
                 "3 fds attached, expected one per region, 2");
  expect_refused(R(Request::SetMemTable), kVersion, mem_table_bytes(1, 1), 0, Direction::ToBackend, "0 fds attached");
  // ADD_MEM_REG: exactly one.
  expect_refused(R(Request::AddMemReg), kVersion, zeros(40), 0, Direction::ToBackend, "0 fds attached, expected 1");
  expect_refused(R(Request::AddMemReg), kVersion, zeros(40), 2, Direction::ToBackend, "2 fds attached, expected 1");
  // SET_VRING_KICK/CALL/ERR: one, or none with the no-fd bit.
  for (Request r : {Request::SetVringKick, Request::SetVringCall, Request::SetVringErr}) {
    expect_refused(R(r), kVersion, u32s({0, 0}), 0, Direction::ToBackend, "0 fds attached, expected 1");
    expect_refused(R(r), kVersion, u32s({0, 0}), 2, Direction::ToBackend, "2 fds attached, expected 1");
    expect_refused(R(r), kVersion, u32s({0x100, 0}), 1, Direction::ToBackend,
                   "1 fds attached, expected none with the no-fd bit");
  }
  // Stray fds on everything else, requests and replies.
  expect_refused(R(Request::GetFeatures), kVersion, {}, 1, Direction::ToBackend, "1 fds attached, expected 0");
  expect_refused(R(Request::SetFeatures), kVersion, zeros(8), 1, Direction::ToBackend, "expected 0");
  expect_refused(R(Request::SetVringNum), kVersion, zeros(8), 1, Direction::ToBackend, "expected 0");
  expect_refused(R(Request::SetVringAddr), kVersion, zeros(40), 1, Direction::ToBackend, "expected 0");
  expect_refused(R(Request::SetConfig), kVersion, u32s({0, 0, 0}), 1, Direction::ToBackend, "expected 0");
  expect_refused(R(Request::RemMemReg), kVersion, zeros(40), 2, Direction::ToBackend, "2 fds attached, expected 0");
  expect_refused(R(Request::GetFeatures), kReply, zeros(8), 1, Direction::ToFrontend, "expected 0");
  expect_refused(R(Request::SetVringKick), kReply, zeros(8), 1, Direction::ToFrontend, "expected 0",
                 Request::SetVringKick, true);
  expect_refused(R(Request::GetVringBase), kReply, zeros(8), 2, Direction::ToFrontend, "expected 0");
}

TEST(VhostProtocol, VringFdSplitsIndexAndNoFdBit) {
  Message message = make(Request::SetVringCall, std::uint64_t{0x105});
  EXPECT_EQ(message.u64(), 0x105u);
  EXPECT_EQ(message.vring_fd(), (VringFd{.index = 5, .no_fd = true}));
  message.payload = std::uint64_t{0xff};
  EXPECT_EQ(message.vring_fd(), (VringFd{.index = 255, .no_fd = false}));
  EXPECT_FALSE(message.is_reply());
  EXPECT_FALSE(message.needs_reply());
  message.flags = kVersion | kReplyFlag | kNeedReply;
  EXPECT_TRUE(message.is_reply());
  EXPECT_TRUE(message.needs_reply());
}

// --- describe -------------------------------------------------------------------------------------------------------

TEST(VhostDescribe, NamesFeatureBits) {
  EXPECT_EQ(describe_features(0x170000000), "INDIRECT_DESC EVENT_IDX PROTOCOL_FEATURES VERSION_1");
  EXPECT_EQ(describe_features((1ull << 34) | (1ull << 33) | (1ull << 27) | (1ull << 26) | (1ull << 24)),
            "NOTIFY_ON_EMPTY LOG_ALL ANY_LAYOUT ACCESS_PLATFORM RING_PACKED");
  EXPECT_EQ(describe_features((1ull << 1) | (1ull << 42) | (1ull << 63)), "bit1 bit42 bit63");
  EXPECT_EQ(describe_features(0), "");
  EXPECT_EQ(describe_protocol_features(0x8f2b),
            "MQ LOG_SHMFD REPLY_ACK BACKEND_REQ PAGEFAULT CONFIG BACKEND_SEND_FD HOST_NOTIFIER CONFIGURE_MEM_SLOTS");
  EXPECT_EQ(describe_protocol_features(bit(ProtocolFeature::ResetDevice) | bit(ProtocolFeature::Status) | (1ull << 40)),
            "RESET_DEVICE STATUS bit40");
}

TEST(VhostDescribe, OneLinePerMessageWithPayloadAndFdNumbers) {
  Message kick = make(Request::SetVringKick, std::uint64_t{0}, kVersion, make_fds(1));
  EXPECT_EQ(describe(kick), fmt::format("SET_VRING_KICK index=0 fds=[{}]", kick.fds[0].get()));
  EXPECT_EQ(describe(make(Request::SetVringCall, std::uint64_t{1} | kVringNoFdMask)), "SET_VRING_CALL index=1 nofd");

  Message table = make(Request::SetMemTable,
                       MemoryTable{.regions = {MemoryRegion{.guest_phys_addr = 0,
                                                            .memory_size = 0x1000000,
                                                            .userspace_addr = 0x7f1200000000,
                                                            .mmap_offset = 0},
                                               MemoryRegion{.guest_phys_addr = 0x100000000,
                                                            .memory_size = 0x1000,
                                                            .userspace_addr = 0x7f1300000000,
                                                            .mmap_offset = 0x2000}}},
                       kVersion | kNeedReply, make_fds(2));
  EXPECT_EQ(describe(table),
            fmt::format("SET_MEM_TABLE need_reply 2 regions: gpa=0x0 size=0x1000000 uaddr=0x7f1200000000 off=0x0; "
                        "gpa=0x100000000 size=0x1000 uaddr=0x7f1300000000 off=0x2000 fds=[{},{}]",
                        table.fds[0].get(), table.fds[1].get()));
  table.payload = MemoryTable{
      .regions = {MemoryRegion{
          .guest_phys_addr = 0, .memory_size = 0x1000000, .userspace_addr = 0x7f1200000000, .mmap_offset = 0}}};
  table.fds.resize(1);
  table.flags = kVersion;
  EXPECT_EQ(describe(table), fmt::format("SET_MEM_TABLE 1 region: gpa=0x0 size=0x1000000 uaddr=0x7f1200000000 "
                                         "off=0x0 fds=[{}]",
                                         table.fds[0].get()));

  EXPECT_EQ(describe(make(Request::GetFeatures, std::uint64_t{0x170000000}, kReply)),
            "GET_FEATURES reply u64=0x170000000 (INDIRECT_DESC EVENT_IDX PROTOCOL_FEATURES VERSION_1)");
  EXPECT_EQ(describe(make(Request::SetProtocolFeatures, std::uint64_t{0x8})),
            "SET_PROTOCOL_FEATURES u64=0x8 (REPLY_ACK)");
  EXPECT_EQ(describe(make(Request::GetFeatures)), "GET_FEATURES");
  EXPECT_EQ(describe(make(Request::GetQueueNum, std::uint64_t{2}, kReply)), "GET_QUEUE_NUM reply u64=2");
  EXPECT_EQ(describe(make(Request::SetVringNum, vhost_vring_state{.index = 0, .num = 256})),
            "SET_VRING_NUM index=0 num=256");
  EXPECT_EQ(describe(make(Request::SetVringAddr, ring_addr(1))),
            "SET_VRING_ADDR index=1 flags=0x0 desc=0x7f0000001000 used=0x7f0000003000 avail=0x7f0000002000 log=0x0");
  EXPECT_EQ(describe(make(Request::SetVringEnable, std::uint64_t{0}, kReply)),
            "SET_VRING_ENABLE reply ack=0 (success)");
  EXPECT_EQ(describe(make(Request::SetMemTable, std::uint64_t{1}, kReply)), "SET_MEM_TABLE reply ack=1 (failure)");
  EXPECT_EQ(
      describe(make(Request::GetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = {0x00, 0x20, 0, 0xff}}, kReply)),
      "GET_CONFIG reply offset=0 size=4 flags=0x0 bytes=002000ff");
  Message add = make(Request::AddMemReg, SingleMemoryRegion{region(1)}, kVersion, make_fds(1));
  EXPECT_EQ(describe(add), fmt::format("ADD_MEM_REG gpa=0x100000 size=0x100000 uaddr=0x7f0000100000 off=0x1000 "
                                       "fds=[{}]",
                                       add.fds[0].get()));
  // fds are shown whatever the message, also where they do not belong.
  Message odd = make(Request::GetFeatures, {}, kVersion, make_fds(2));
  EXPECT_EQ(describe(odd), fmt::format("GET_FEATURES fds=[{},{}]", odd.fds[0].get(), odd.fds[1].get()));
  EXPECT_EQ(describe(make(Request::SetLogBase, {}, 0x11)), "SET_LOG_BASE flags=0x11");
}

TEST(VhostDescribe, TracerPrefixesSideAndDirection) {
  std::vector<std::string> lines;
  Tracer tracer("frontend", [&](std::string_view line) { lines.emplace_back(line); });
  EXPECT_TRUE(tracer.enabled());
  Message call = make(Request::SetVringCall, std::uint64_t{0}, kVersion, make_fds(1));
  tracer.sent(call);
  tracer.received(make(Request::GetFeatures, std::uint64_t{1ull << 32}, kReply));
  tracer.note("backend disconnected");
  EXPECT_EQ(lines, (std::vector<std::string>{
                       fmt::format("frontend > SET_VRING_CALL index=0 fds=[{}]", call.fds[0].get()),
                       "frontend < GET_FEATURES reply u64=0x100000000 (VERSION_1)", "frontend: backend disconnected"}));
  Tracer off;
  EXPECT_FALSE(off.enabled());
  off.sent(call);  // Nothing to check but that it does nothing and does not crash.
}

}  // namespace
}  // namespace vmm::vhost

namespace vmm::vhost {
namespace {

TEST(ProtocolDecode, RemMemRegAcceptsTheFdOldQemusAttachedAndClosesIt) {
  // QEMU 5.1-7.0 sent the region's fd with REM_MEM_REG; the spec asks backends to accept it and close it.
  std::vector<Fd> fds = make_fds(1);
  const int number = fds[0].get();
  const Header header{.request = R(Request::RemMemReg), .flags = kVersion, .size = 40};
  auto decoded = decode(header, zeros(40), std::move(fds), Direction::ToBackend);
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_TRUE(decoded->fds.empty());
  EXPECT_TRUE(is_closed(number)) << "the stray fd is closed, not kept";
}

TEST(ProtocolDecode, AnEmptyGetConfigReplyIsARefusalNotAFramingError) {
  // libvhost-user (qemu-storage-daemon) answers a GET_CONFIG it refuses with an empty payload.
  const Header header{.request = R(Request::GetConfig), .flags = kReply, .size = 0};
  auto decoded = decode(header, {}, {}, Direction::ToFrontend, Request::GetConfig);
  ASSERT_TRUE(decoded) << decoded.error().message();
  ASSERT_TRUE(std::holds_alternative<DeviceConfig>(decoded->payload));
  EXPECT_TRUE(std::get<DeviceConfig>(decoded->payload).bytes.empty());
}

TEST(ProtocolDescribe, AcksToSetFeaturesAreAcksNotFeatureWords) {
  Message ack{.request = Request::SetFeatures, .flags = kVersion | kReplyFlag, .payload = std::uint64_t{0}, .fds = {}};
  EXPECT_EQ(describe(ack), "SET_FEATURES reply ack=0 (success)");
  ack.request = Request::SetProtocolFeatures;
  ack.payload = std::uint64_t{1};
  EXPECT_EQ(describe(ack), "SET_PROTOCOL_FEATURES reply ack=1 (failure)");
}

}  // namespace
}  // namespace vmm::vhost
