// The MP table, read back the way Linux's mpparse.c reads it (Intel MultiProcessor Specification 1.4, chapter 4):
// find the floating pointer, follow PHYSPTR, check both checksums, then walk the entries by their type.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "vmm/boot/layout.hpp"
#include "vmm/boot/mptable.hpp"
#include "vmm/memory/x86_layout.hpp"
#include "vmm/testing/result.hpp"

namespace vmm::boot {
namespace {

using ::testing::HasSubstr;
using vmm::testing::error_of;

constexpr std::uint64_t kBase = layout::kEbda;

// The MP structures as bytes at guest-physical `base`, with little-endian readers.
struct Bytes {
  std::vector<std::byte> data;
  [[nodiscard]] unsigned u8(std::size_t at) const { return static_cast<unsigned>(data.at(at)); }
  [[nodiscard]] unsigned u16(std::size_t at) const { return u8(at) | u8(at + 1) << 8; }
  [[nodiscard]] std::uint32_t u32(std::size_t at) const { return u16(at) | u16(at + 2) << 16; }
  [[nodiscard]] std::string text(std::size_t at, std::size_t n) const {
    std::string s;
    for (std::size_t i = 0; i < n; ++i) {
      s.push_back(static_cast<char>(u8(at + i)));
    }
    return s;
  }
  [[nodiscard]] unsigned sum(std::size_t at, std::size_t n) const {
    unsigned total = 0;
    for (std::size_t i = 0; i < n; ++i) {
      total += u8(at + i);
    }
    return total % 256;
  }
};

Bytes build(const MpTableConfig& config) {
  auto bytes = build_mptable(kBase, config);
  EXPECT_TRUE(bytes) << bytes.error().message();
  return {bytes.value_or(std::vector<std::byte>{})};
}

// MP spec 4.2: the configuration table starts where the floating pointer's PHYSPTR says.
std::size_t table_offset(const Bytes& b) {
  return b.u32(4) - kBase;
}

// The entries of the base table, as offsets into the bytes, indexed by entry type (mp::kEntryProcessor ...
// mp::kEntryLocalInterrupt): processor entries are 20 bytes, all others 8.
struct Entries {
  std::array<std::vector<std::size_t>, 5> of_type;
  std::size_t count = 0;
  std::size_t end = 0;  // where the walk stopped
};

Entries walk(const Bytes& b) {
  Entries e;
  const std::size_t table = table_offset(b);
  const std::size_t length = b.u16(table + 4);
  std::size_t at = table + mp::kHeaderSize;
  while (at < table + length) {
    const unsigned type = b.u8(at);
    if (type >= e.of_type.size()) {
      ADD_FAILURE() << "entry type " << type << " at offset " << at - table << ": not a base table entry";
      break;
    }
    e.of_type[type].push_back(at);
    ++e.count;
    at += type == mp::kEntryProcessor ? mp::kProcessorEntrySize : mp::kSmallEntrySize;
  }
  e.end = at;
  return e;
}

TEST(MpTable, FloatingPointerPointsJustPastItselfWithAZeroChecksum) {
  const auto b = build({.cpus = 2});
  ASSERT_GE(b.data.size(), 16u);
  EXPECT_EQ(b.text(0, 4), "_MP_");
  EXPECT_EQ(b.u32(4), kBase + 16) << "PHYSPTR: the configuration table follows the 16-byte pointer";
  EXPECT_EQ(b.u8(8), 1u) << "LENGTH in 16-byte paragraphs";
  EXPECT_EQ(b.u8(9), 4u) << "SPEC_REV 1.4";
  EXPECT_EQ(b.sum(0, 16), 0u) << "all 16 bytes sum to 0";
  EXPECT_EQ(b.u8(11), 0u) << "MP FEATURE 1 = 0: a configuration table is present (not a default configuration)";
  EXPECT_EQ(b.u8(12) & 0x80, 0u) << "IMCRP clear: virtual wire mode";
}

TEST(MpTable, ConfigurationTableHeaderCountsItsBytesAndEntries) {
  const auto b = build({.cpus = 3});
  const std::size_t table = table_offset(b);
  ASSERT_EQ(table, 16u);
  EXPECT_EQ(b.text(table, 4), "PCMP");
  const std::size_t length = b.u16(table + 4);
  EXPECT_EQ(length, b.data.size() - table) << "BASE TABLE LENGTH: header and entries, all of it";
  EXPECT_EQ(b.u8(table + 6), 4u) << "SPEC_REV 1.4";
  EXPECT_EQ(b.sum(table, length), 0u) << "the base table sums to 0";
  EXPECT_EQ(b.u32(table + 36), layout::kLapic) << "ADDRESS OF LOCAL APIC";
  EXPECT_EQ(b.u16(table + 40), 0u) << "no extended table";
  const auto entries = walk(b);
  EXPECT_EQ(entries.end, table + length) << "the entries end exactly at the table's length";
  EXPECT_EQ(b.u16(table + 34), entries.count) << "ENTRY COUNT";
}

TEST(MpTable, OneProcessorEntryPerVcpuAndOnlyCpu0IsTheBsp) {
  const MpTableConfig config{.cpus = 4, .cpu_signature = 0x806ec, .cpu_features = 0x178bfbff};
  const auto b = build(config);
  const auto entries = walk(b);
  ASSERT_EQ(entries.of_type[mp::kEntryProcessor].size(), 4u);
  for (std::size_t cpu = 0; cpu < 4; ++cpu) {
    SCOPED_TRACE(cpu);
    const std::size_t at = entries.of_type[mp::kEntryProcessor][cpu];
    EXPECT_EQ(b.u8(at + 1), cpu) << "LOCAL APIC ID = vCPU index";
    EXPECT_NE(b.u8(at + 3) & 1, 0u) << "CPU FLAGS.EN";
    EXPECT_EQ((b.u8(at + 3) & 2) != 0, cpu == 0) << "CPU FLAGS.BP";
    EXPECT_EQ(b.u32(at + 4), 0x806ecu) << "CPU SIGNATURE";
    EXPECT_EQ(b.u32(at + 8), 0x178bfbffu) << "FEATURE FLAGS";
  }
}

TEST(MpTable, OneIoapicWhoseIdFollowsTheCpus) {
  // APIC IDs share one space: with N CPUs (0..N-1), the IOAPIC is N.
  for (const std::uint32_t cpus : {1u, 4u}) {
    SCOPED_TRACE(cpus);
    const auto b = build({.cpus = cpus});
    const auto entries = walk(b);
    ASSERT_EQ(entries.of_type[mp::kEntryIoapic].size(), 1u);
    const std::size_t at = entries.of_type[mp::kEntryIoapic][0];
    EXPECT_EQ(b.u8(at + 1), cpus) << "I/O APIC ID";
    EXPECT_NE(b.u8(at + 3) & 1, 0u) << "I/O APIC FLAGS.EN";
    EXPECT_EQ(b.u32(at + 4), layout::kIoapic) << "I/O APIC ADDRESS";
  }
  const auto moved = build({.cpus = 1, .ioapic_address = 0xfec01000, .lapic_address = 0xfee01000});
  EXPECT_EQ(moved.u32(walk(moved).of_type[mp::kEntryIoapic].at(0) + 4), 0xfec01000u);
  EXPECT_EQ(moved.u32(table_offset(moved) + 36), 0xfee01000u);
}

TEST(MpTable, TheSixteenIsaIrqsReachTheIoapicPinsOfTheSameNumber) {
  const auto b = build({.cpus = 2});
  const auto entries = walk(b);
  std::optional<unsigned> isa;
  for (const auto at : entries.of_type[mp::kEntryBus]) {
    if (b.text(at + 2, 6) == "ISA   ") {  // BUS TYPE STRING, space-padded (MP spec table 4-8)
      isa = b.u8(at + 1);
    }
  }
  ASSERT_TRUE(isa.has_value()) << "no ISA bus entry";
  ASSERT_EQ(entries.of_type[mp::kEntryIoInterrupt].size(), 16u);
  std::vector<unsigned> irqs;
  for (const auto at : entries.of_type[mp::kEntryIoInterrupt]) {
    EXPECT_EQ(b.u8(at + 1), 0u) << "INTERRUPT TYPE INT: vectored by the IOAPIC";
    EXPECT_EQ(b.u8(at + 4), *isa) << "SOURCE BUS ID";
    EXPECT_EQ(b.u8(at + 6), 2u) << "DESTINATION I/O APIC ID: the IOAPIC";
    // KVM's default routing: GSI n is IOAPIC pin n, and ISA IRQ n is GSI n, so no overrides.
    EXPECT_EQ(b.u8(at + 7), b.u8(at + 5)) << "DESTINATION I/O APIC INTIN# = SOURCE BUS IRQ";
    irqs.push_back(b.u8(at + 5));
  }
  std::sort(irqs.begin(), irqs.end());
  std::vector<unsigned> expected(16);
  std::iota(expected.begin(), expected.end(), 0u);
  EXPECT_EQ(irqs, expected);
}

TEST(MpTable, Lint0IsExtIntAndLint1IsNmiOnEveryLocalApic) {
  const auto b = build({.cpus = 2});
  const auto entries = walk(b);
  ASSERT_EQ(entries.of_type[mp::kEntryLocalInterrupt].size(), 2u);
  std::vector<std::pair<unsigned, unsigned>> wiring;  // (interrupt type, LINTIN#)
  for (const auto at : entries.of_type[mp::kEntryLocalInterrupt]) {
    EXPECT_EQ(b.u8(at + 6), 0xffu) << "DESTINATION LOCAL APIC ID: all of them";
    wiring.emplace_back(b.u8(at + 1), b.u8(at + 7));
  }
  std::sort(wiring.begin(), wiring.end());
  const std::vector<std::pair<unsigned, unsigned>> expected{{1, 1}, {3, 0}};  // NMI on LINT1, ExtINT on LINT0
  EXPECT_EQ(wiring, expected);
}

TEST(MpTable, ThirtyTwoCpusFitInTheLastKibOfLowMemory) {
  const auto b = build({.cpus = kMaxCpus});
  const auto entries = walk(b);
  EXPECT_EQ(entries.of_type[mp::kEntryProcessor].size(), 32u);
  EXPECT_EQ(b.u8(entries.of_type[mp::kEntryIoapic].at(0) + 1), 32u);
  EXPECT_LE(kBase + b.data.size(), 0xa0000u) << "the EBDA ends at 640 KiB";
  EXPECT_EQ(b.sum(table_offset(b), b.u16(table_offset(b) + 4)), 0u);
}

TEST(MpTable, RefusesNoCpusAndMoreThan32) {
  EXPECT_THAT(error_of(build_mptable(kBase, {.cpus = 0})), HasSubstr("0 CPUs"));
  EXPECT_THAT(error_of(build_mptable(kBase, {.cpus = 33})), HasSubstr("33 CPUs"));
}

TEST(MpTable, RefusesABaseAbove4GiB) {
  // PHYSPTR is 32 bits wide.
  EXPECT_THAT(error_of(build_mptable(0x1'0000'0000, {.cpus = 1})), HasSubstr("below 4 GiB"));
}

TEST(MpTable, WrittenToGuestMemoryAtItsBase) {
  auto ram_layout = memory::x86::layout_for(2ull << 20);
  ASSERT_TRUE(ram_layout);
  auto guest = memory::x86::allocate(*ram_layout);
  ASSERT_TRUE(guest) << guest.error().message();
  auto written = write_mptable(*guest, memory::GuestAddress{kBase}, {.cpus = 2});
  ASSERT_TRUE(written) << written.error().message();
  const auto expected = build({.cpus = 2}).data;
  ASSERT_EQ(*written, expected.size());
  std::vector<std::byte> in_guest(expected.size());
  ASSERT_TRUE(guest->read(memory::GuestAddress{kBase}, in_guest));
  EXPECT_EQ(in_guest, expected);
}

TEST(Checksum, IsTheByteThatMakesTheSumZero) {
  const std::vector<std::byte> bytes{std::byte{1}, std::byte{2}, std::byte{3}};
  EXPECT_EQ(checksum_byte(bytes), 250) << "256 - 6";
  EXPECT_EQ(checksum_byte({}), 0);
  const std::vector<std::byte> wraps{std::byte{0xff}, std::byte{0xff}, std::byte{0x02}};  // 0x200: already 0
  EXPECT_EQ(checksum_byte(wraps), 0);
  const std::vector<std::byte> large(1000, std::byte{0x81});  // 1000 * 0x81 = 129000 = 0x1f7e8: 0xe8 -> 0x18
  EXPECT_EQ(checksum_byte(large), 0x18);
}

}  // namespace
}  // namespace vmm::boot
