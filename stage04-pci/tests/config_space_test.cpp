// ConfigSpace: read-only bits, write-1-to-clear status, BAR sizing for every kind, capabilities, malformed accesses.
#include <gtest/gtest.h>

#include <linux/pci_regs.h>

#include <array>
#include <cstdint>
#include <limits>
#include <vector>

#include "vmm/pci/config_space.hpp"

namespace vmm::pci {
namespace {

ConfigSpace& with_header(ConfigSpace& config) {
  config.set_header(0x1af4, 0x1110, 0xff, 0x00, 0x00, 0x01, PCI_HEADER_TYPE_NORMAL);
  return config;
}

TEST(ConfigSpace, HeaderFieldsAreWhereTheSpecPutsThem) {
  ConfigSpace config;
  config.set_header(0x1234, 0xabcd, 0x02, 0x00, 0x10, 0x07, PCI_HEADER_TYPE_NORMAL);
  EXPECT_EQ(config.read32(PCI_VENDOR_ID), 0xabcd'1234u);
  EXPECT_EQ(config.read32(PCI_CLASS_REVISION), 0x0200'1007u) << "class, subclass, prog-if, revision";
  EXPECT_EQ(config.read8(PCI_HEADER_TYPE), PCI_HEADER_TYPE_NORMAL);
  EXPECT_EQ(config.size(), ConfigSpace::kConventionalSize);
}

TEST(ConfigSpace, ReadOnlyBitsIgnoreGuestWrites) {
  ConfigSpace config;
  with_header(config);
  config.write32(PCI_VENDOR_ID, 0xffff'ffff);
  EXPECT_EQ(config.read32(PCI_VENDOR_ID), 0x1110'1af4u) << "IDs are read-only";
  config.write16(PCI_COMMAND, 0xffff);
  EXPECT_EQ(config.read16(PCI_COMMAND), PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY |
                                            PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE)
      << "only the command bits a guest may set stick";
  config.write16(PCI_COMMAND, 0);
  EXPECT_EQ(config.read16(PCI_COMMAND), 0) << "writable bits clear too";
  config.set8(PCI_INTERRUPT_PIN, 1);
  config.write8(PCI_INTERRUPT_PIN, 4);
  config.write8(PCI_INTERRUPT_LINE, 11);
  EXPECT_EQ(config.read8(PCI_INTERRUPT_PIN), 1) << "the pin is the device's";
  EXPECT_EQ(config.read8(PCI_INTERRUPT_LINE), 11) << "the line is the guest's scratch";
  config.write32(PCI_BASE_ADDRESS_0, 0xffff'ffff);
  EXPECT_EQ(config.read32(PCI_BASE_ADDRESS_0), 0u) << "an undeclared BAR is hardwired to 0: the guest sees no BAR";
}

TEST(ConfigSpace, StatusErrorBitsAreWriteOneToClear) {
  ConfigSpace config;
  with_header(config);
  const std::uint16_t raised = PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_DETECTED_PARITY | PCI_STATUS_66MHZ;
  config.set16(PCI_STATUS, raised);
  config.write16(PCI_STATUS, 0);
  EXPECT_EQ(config.read16(PCI_STATUS), raised) << "writing 0 leaves W1C bits alone";
  config.write16(PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT);
  EXPECT_EQ(config.read16(PCI_STATUS), PCI_STATUS_DETECTED_PARITY | PCI_STATUS_66MHZ) << "only the 1s clear";
  config.write16(PCI_STATUS, 0xffff);
  EXPECT_EQ(config.read16(PCI_STATUS), PCI_STATUS_66MHZ) << "capability bits are read-only, not W1C";
  // A dword write to command+status (what a guest does with CF8/CFC) clears status bits and sets command bits at once.
  config.set16(PCI_STATUS, PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_66MHZ);
  config.write32(PCI_COMMAND, static_cast<std::uint32_t>(PCI_STATUS_SIG_SYSTEM_ERROR) << 16 | PCI_COMMAND_MEMORY);
  EXPECT_EQ(config.read32(PCI_COMMAND), static_cast<std::uint32_t>(PCI_STATUS_66MHZ) << 16 | PCI_COMMAND_MEMORY);
}

TEST(ConfigSpace, MalformedAccessesNeverCrashAndReadAllOnesOutside) {
  ConfigSpace config;
  with_header(config);
  std::array<std::uint8_t, 4> b{};
  config.read(254, b);
  EXPECT_EQ(b, (std::array<std::uint8_t, 4>{0, 0, 0xff, 0xff})) << "straddling the end: the outside half is all-ones";
  EXPECT_EQ(config.read32(256), 0xffff'ffffu);
  EXPECT_EQ(config.read32(4096), 0xffff'ffffu);
  EXPECT_EQ(config.read32(std::numeric_limits<std::uint64_t>::max() - 1), 0xffff'ffffu) << "offset + size wraps";
  config.write32(std::numeric_limits<std::uint64_t>::max() - 1, 0);
  config.write32(255, 0xffff'ffff);
  config.write(10, std::span<const std::uint8_t>{});
  std::vector<std::uint8_t> huge(10'000, 0xff);
  config.write(0, huge);
  EXPECT_EQ(config.read32(PCI_VENDOR_ID), 0x1110'1af4u) << "a write past the end changes only writable bytes inside";
  EXPECT_EQ(config.read8(PCI_INTERRUPT_LINE), 0xff);
  // An unaligned 3-byte write over cache line (writable), latency (writable) and header type (read-only).
  const std::array<std::uint8_t, 3> three{0x10, 0x20, 0x80};
  config.write(PCI_CACHE_LINE_SIZE, three);
  EXPECT_EQ(config.read8(PCI_CACHE_LINE_SIZE), 0x10);
  EXPECT_EQ(config.read8(PCI_LATENCY_TIMER), 0x20);
  EXPECT_EQ(config.read8(PCI_HEADER_TYPE), PCI_HEADER_TYPE_NORMAL);
}

TEST(ConfigSpace, ExpressSpaceReachesTheExtendedRegisters) {
  ConfigSpace express(ConfigSpace::kExpressSize);
  EXPECT_EQ(express.size(), ConfigSpace::kExpressSize);
  express.set_writable32(0xffc, 0xffff'ffff);
  express.write32(0xffc, 0xdead'beef);
  EXPECT_EQ(express.read32(0xffc), 0xdead'beefu);
  EXPECT_EQ(express.read32(0x100), 0u) << "no extended capability: a zero header, not all-ones";
  ConfigSpace conventional;
  EXPECT_EQ(conventional.read32(0x100), 0xffff'ffffu) << "how Linux tells a 256-byte space";
}

struct SizingCase {
  const char* name;
  Bar bar;
  std::uint32_t low_after_ones;   // what the guest reads after writing all-ones to the (low) register
  std::uint32_t high_after_ones;  // the same for the high dword of a 64-bit BAR
  std::uint32_t low_initial;      // type bits only
};

class BarSizing : public testing::TestWithParam<SizingCase> {};

TEST_P(BarSizing, AllOnesReadsBackTheSizeMaskWithTypeBits) {
  const auto& c = GetParam();
  ConfigSpace config;
  with_header(config);
  ASSERT_TRUE(config.add_bar(c.bar));
  const std::uint16_t reg = c.bar.register_offset();
  EXPECT_EQ(config.read32(reg), c.low_initial);
  config.write32(reg, 0xffff'ffff);
  EXPECT_EQ(config.read32(reg), c.low_after_ones);
  if (c.bar.is_64bit()) {
    EXPECT_EQ(config.read32(reg + 4U), 0u);
    config.write32(reg + 4U, 0xffff'ffff);
    EXPECT_EQ(config.read32(reg + 4U), c.high_after_ones);
  }
  // What the guest computes: size = ~(mask & ~type) + 1, over the register's width.
  std::uint64_t mask = c.low_after_ones & (c.bar.is_io() ? ~0x3u : ~0xfu);
  if (c.bar.is_64bit()) {
    mask |= static_cast<std::uint64_t>(c.high_after_ones) << 32;
  } else {
    mask |= 0xffff'ffff'0000'0000ULL;
  }
  EXPECT_EQ(~mask + 1, c.bar.size);
  // Restoring an address: the address bits take it; the type bits keep their value whatever is written.
  config.write32(reg, 0x1234'5fff);
  EXPECT_EQ(config.read32(reg), (0x1234'5fffu & static_cast<std::uint32_t>(c.bar.address_mask())) | c.low_initial);
}

INSTANTIATE_TEST_SUITE_P(
    EveryKind, BarSizing,
    testing::Values(
        SizingCase{"io32", {.index = 0, .kind = BarKind::Io, .size = 32}, 0xffff'ffe1, 0, 0x1},
        SizingCase{"mem32", {.index = 1, .kind = BarKind::Memory32, .size = 0x1000}, 0xffff'f000, 0, 0x0},
        SizingCase{"mem32pref",
                   {.index = 2, .kind = BarKind::Memory32, .prefetchable = true, .size = 0x10'0000},
                   0xfff0'0008,
                   0,
                   0x8},
        SizingCase{"mem64low",
                   {.index = 2, .kind = BarKind::Memory64, .prefetchable = true, .size = 0x4000},
                   0xffff'c00c,
                   0xffff'ffff,
                   0xc},
        SizingCase{
            "mem64high", {.index = 4, .kind = BarKind::Memory64, .size = 8ULL << 30}, 0x0000'0004, 0xffff'fffe, 0x4}),
    [](const testing::TestParamInfo<SizingCase>& sizing) { return std::string(sizing.param.name); });

TEST(ConfigSpace, BadBarDeclarationsAreRefused) {
  ConfigSpace config;
  EXPECT_FALSE(config.add_bar({.index = 0, .kind = BarKind::Memory32, .size = 0x3000})) << "not a power of two";
  EXPECT_FALSE(config.add_bar({.index = 0, .kind = BarKind::Memory32, .size = 8})) << "below 16";
  EXPECT_FALSE(config.add_bar({.index = 0, .kind = BarKind::Io, .size = 2})) << "below 4";
  EXPECT_FALSE(config.add_bar({.index = 0, .kind = BarKind::Io, .prefetchable = true, .size = 16}));
  EXPECT_FALSE(config.add_bar({.index = 5, .kind = BarKind::Memory64, .size = 16})) << "no register for the high half";
  EXPECT_FALSE(config.add_bar({.index = 6, .kind = BarKind::Memory32, .size = 16}));
  ASSERT_TRUE(config.add_bar({.index = 0, .kind = BarKind::Memory64, .size = 0x1000}));
  auto clash = config.add_bar({.index = 1, .kind = BarKind::Io, .size = 16});
  ASSERT_FALSE(clash) << "BAR1 is BAR0's high dword";
  EXPECT_EQ(clash.error().message(), "BAR1: its register is BAR0's");
  EXPECT_EQ(config.read32(PCI_BASE_ADDRESS_1), 0u) << "the refused BAR changed nothing";
  EXPECT_EQ(config.bars().size(), 1u);
}

TEST(ConfigSpace, CapabilitiesAreLinkedInOrderAndWalkable) {
  ConfigSpace config;
  with_header(config);
  EXPECT_TRUE(config.capabilities().empty());
  EXPECT_EQ(config.read16(PCI_STATUS) & PCI_STATUS_CAP_LIST, 0);
  const std::array<std::uint8_t, 3> vendor_body{5, 0xaa, 0xbb};  // odd length: the next one is realigned
  auto first = config.add_capability(PCI_CAP_ID_VNDR, vendor_body);
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, 0x40);
  const std::array<std::uint8_t, 10> msix_body{};
  std::array<std::uint8_t, 10> msix_writable{};
  msix_writable[1] = 0xc0;  // Message Control's high byte: MSI-X enable and function mask
  auto second = config.add_capability(PCI_CAP_ID_MSIX, msix_body, msix_writable);
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, 0x48) << "0x40 + 5 bytes, rounded up to a dword";
  EXPECT_NE(config.read16(PCI_STATUS) & PCI_STATUS_CAP_LIST, 0);
  EXPECT_EQ(config.read8(PCI_CAPABILITY_LIST), 0x40);
  EXPECT_EQ(config.read8(0x40 + PCI_CAP_LIST_NEXT), 0x48);
  EXPECT_EQ(config.read8(0x48 + PCI_CAP_LIST_NEXT), 0);
  EXPECT_EQ(config.capabilities(), (std::vector<Capability>{{.offset = 0x40, .id = PCI_CAP_ID_VNDR},
                                                            {.offset = 0x48, .id = PCI_CAP_ID_MSIX}}));
  EXPECT_EQ(config.find_capability(PCI_CAP_ID_MSIX), 0x48);
  EXPECT_EQ(config.find_capability(PCI_CAP_ID_MSI), std::nullopt);
  // The header and body bytes without a writable mask are read-only; the masked bits are the guest's.
  config.write16(0x48, 0);
  config.write16(0x4a, 0xffff);
  EXPECT_EQ(config.read8(0x48), PCI_CAP_ID_MSIX);
  EXPECT_EQ(config.read16(0x4a), 0xc000);
  EXPECT_EQ(config.read8(0x42), 5);
  config.write8(0x42, 9);
  EXPECT_EQ(config.read8(0x42), 5);
}

TEST(ConfigSpace, CapabilitiesThatDoNotFitOrHaveABadMaskAreRefused) {
  ConfigSpace config;
  std::vector<std::uint8_t> body(190);  // 0x40 + 2 + 190 = 256: exactly fits
  const std::array<std::uint8_t, 2> short_mask{};
  EXPECT_FALSE(config.add_capability(PCI_CAP_ID_VNDR, std::span(body).first(3), short_mask));
  ASSERT_TRUE(config.add_capability(PCI_CAP_ID_VNDR, body));
  EXPECT_FALSE(config.add_capability(PCI_CAP_ID_VNDR, std::span(body).first(0))) << "nothing left below 0x100";
  EXPECT_EQ(config.capabilities().size(), 1u);
}

TEST(ConfigSpace, WalkStopsOnLoopsAndPointersIntoTheHeader) {
  std::array<std::uint8_t, 256> raw{};
  raw[PCI_STATUS] = PCI_STATUS_CAP_LIST;
  raw[PCI_CAPABILITY_LIST] = 0x43;  // reserved low bits are ignored
  raw[0x40] = PCI_CAP_ID_PM;
  raw[0x41] = 0x50;
  raw[0x50] = PCI_CAP_ID_MSI;
  raw[0x51] = 0x40;  // back to the first: a loop
  const auto looped = walk_capabilities(raw);
  EXPECT_EQ(looped.size(), 48u) << "bounded like Linux's PCI_FIND_CAP_TTL";
  EXPECT_EQ(looped[0], (Capability{.offset = 0x40, .id = PCI_CAP_ID_PM}));
  EXPECT_EQ(looped[1], (Capability{.offset = 0x50, .id = PCI_CAP_ID_MSI}));
  raw[0x51] = 0x20;  // into the standard header: the end
  EXPECT_EQ(walk_capabilities(raw).size(), 2u);
  raw[PCI_STATUS] = 0;
  EXPECT_TRUE(walk_capabilities(raw).empty()) << "no capability list without PCI_STATUS_CAP_LIST";
  EXPECT_TRUE(walk_capabilities(std::span(raw).first(16)).empty());
}

}  // namespace
}  // namespace vmm::pci
