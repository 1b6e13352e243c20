// MSI-X: the capability as a guest reads it through ConfigSpace, the table and PBA with their access rules, and the
// masking / pending / release logic, with a fake MsiSink recording what would reach the guest.
#include <gtest/gtest.h>

#include <linux/pci_regs.h>

#include <array>
#include <cstdint>
#include <thread>
#include <vector>

#include "fake_msi_sink.hpp"
#include "vmm/pci/config_space.hpp"
#include "vmm/pci/msix.hpp"

namespace vmm::pci {
namespace {

using testing::FakeMsiSink;
using Signal = FakeMsiSink::Signal;

std::uint32_t read32(const MsixTable& t, std::uint64_t offset) {
  std::array<std::uint8_t, 4> b{};
  t.read_table(offset, b);
  return static_cast<std::uint32_t>(b[0] | b[1] << 8 | b[2] << 16) | static_cast<std::uint32_t>(b[3]) << 24;
}
std::uint64_t read64(const MsixTable& t, std::uint64_t offset) {
  std::array<std::uint8_t, 8> b{};
  t.read_table(offset, b);
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    v |= std::uint64_t{b[i]} << (8 * i);
  }
  return v;
}
std::uint64_t pba64(const MsixTable& t, std::uint64_t offset = 0) {
  std::array<std::uint8_t, 8> b{};
  t.read_pba(offset, b);
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    v |= std::uint64_t{b[i]} << (8 * i);
  }
  return v;
}
void write32(MsixTable& t, std::uint64_t offset, std::uint32_t value) {
  const std::array<std::uint8_t, 4> b{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                      static_cast<std::uint8_t>(value >> 16), static_cast<std::uint8_t>(value >> 24)};
  t.write_table(offset, b);
}
void write64(MsixTable& t, std::uint64_t offset, std::uint64_t value) {
  std::array<std::uint8_t, 8> b{};
  for (std::size_t i = 0; i < 8; ++i) {
    b[i] = static_cast<std::uint8_t>(value >> (8 * i));
  }
  t.write_table(offset, b);
}
std::uint64_t entry(std::uint16_t vector, std::uint64_t field) {
  return vector * PCI_MSIX_ENTRY_SIZE + field;
}

// Programs vector v with address/data and unmasks it.
void program(MsixTable& t, std::uint16_t v, std::uint64_t address, std::uint32_t data, bool unmask = true) {
  write32(t, entry(v, PCI_MSIX_ENTRY_LOWER_ADDR), static_cast<std::uint32_t>(address));
  write32(t, entry(v, PCI_MSIX_ENTRY_UPPER_ADDR), static_cast<std::uint32_t>(address >> 32));
  write32(t, entry(v, PCI_MSIX_ENTRY_DATA), data);
  if (unmask) {
    write32(t, entry(v, PCI_MSIX_ENTRY_VECTOR_CTRL), 0);
  }
}

std::unique_ptr<MsixTable> make(FakeMsiSink& sink, std::uint16_t vectors = 4) {
  auto t = MsixTable::create(vectors, sink);
  EXPECT_TRUE(t) << t.error().message();
  return std::move(*t);
}

TEST(MsixCapability, GuestReadsTableSizeBirsAndOffsets) {
  ConfigSpace config;
  config.set_header(0x1af4, 0x10f1, 0xff, 0, 0, 1, PCI_HEADER_TYPE_NORMAL);
  const MsixCapability cap{.vectors = 4, .table_bar = 2, .table_offset = 0, .pba_bar = 2, .pba_offset = 0x800};
  auto at = cap.add_to(config);
  ASSERT_TRUE(at) << at.error().message();
  EXPECT_EQ(config.find_capability(PCI_CAP_ID_MSIX), *at);
  EXPECT_TRUE(config.read16(PCI_STATUS) & PCI_STATUS_CAP_LIST);
  EXPECT_EQ(config.read8(*at + PCI_CAP_LIST_ID), PCI_CAP_ID_MSIX);
  EXPECT_EQ(config.read16(*at + PCI_MSIX_FLAGS), 3) << "table size is N-1, Enable and Function Mask clear";
  EXPECT_EQ(config.read32(*at + PCI_MSIX_TABLE), 0x0000'0002u);
  EXPECT_EQ(config.read32(*at + PCI_MSIX_TABLE) & PCI_MSIX_TABLE_BIR, 2u);
  EXPECT_EQ(config.read32(*at + PCI_MSIX_PBA) & PCI_MSIX_PBA_OFFSET, 0x800u);
  EXPECT_EQ(config.read32(*at + PCI_MSIX_PBA) & PCI_MSIX_PBA_BIR, 2u);
}

TEST(MsixCapability, OnlyEnableAndFunctionMaskAreWritable) {
  ConfigSpace config;
  const MsixCapability cap{.vectors = 2048, .table_bar = 4, .table_offset = 0x2000, .pba_bar = 5, .pba_offset = 8};
  auto at = cap.add_to(config);
  ASSERT_TRUE(at) << at.error().message();
  EXPECT_EQ(config.read16(*at + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_QSIZE, 2047);
  config.write16(*at + PCI_MSIX_FLAGS, 0xffff);
  EXPECT_EQ(config.read16(*at + PCI_MSIX_FLAGS), PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL | 2047);
  config.write16(*at + PCI_MSIX_FLAGS, 0);
  EXPECT_EQ(config.read16(*at + PCI_MSIX_FLAGS), 2047) << "the table size survives a write of 0";
  config.write32(*at + PCI_MSIX_TABLE, 0xffff'ffff);
  config.write32(*at + PCI_MSIX_PBA, 0);
  config.write8(*at + PCI_CAP_LIST_ID, 0);
  EXPECT_EQ(config.read32(*at + PCI_MSIX_TABLE), 0x2004u);
  EXPECT_EQ(config.read32(*at + PCI_MSIX_PBA), 0x000du);
  EXPECT_EQ(config.read8(*at + PCI_CAP_LIST_ID), PCI_CAP_ID_MSIX);
}

TEST(MsixCapability, ValidateRefusesBadLayouts) {
  EXPECT_FALSE((MsixCapability{.vectors = 0}.validate()));
  EXPECT_FALSE((MsixCapability{.vectors = 2049, .pba_offset = 0x8000}.validate()));
  EXPECT_FALSE((MsixCapability{.vectors = 1, .table_bar = 6, .pba_bar = 0, .pba_offset = 0x10}.validate()));
  EXPECT_FALSE((MsixCapability{.vectors = 1, .table_offset = 4, .pba_offset = 0x10}.validate())) << "unaligned";
  EXPECT_FALSE((MsixCapability{.vectors = 4, .table_offset = 0, .pba_offset = 0x38}.validate())) << "overlap";
  EXPECT_TRUE((MsixCapability{.vectors = 4, .table_offset = 0, .pba_offset = 0x40}.validate()));
  EXPECT_TRUE((MsixCapability{.vectors = 4, .table_bar = 0, .pba_bar = 1}.validate())) << "different BARs";
  FakeMsiSink sink;
  EXPECT_FALSE(MsixTable::create(0, sink));
  EXPECT_FALSE(MsixTable::create(2049, sink));
  EXPECT_TRUE(MsixTable::create(2048, sink));
}

TEST(MsixTable, EntriesAreMaskedAtReset) {
  FakeMsiSink sink;
  auto t = make(sink, 70);
  EXPECT_EQ(t->table_size(), 70u * 16);
  EXPECT_EQ(t->pba_size(), 16u) << "70 bits take two qwords";
  for (std::uint16_t v = 0; v < 70; ++v) {
    EXPECT_EQ(read32(*t, entry(v, PCI_MSIX_ENTRY_VECTOR_CTRL)), PCI_MSIX_ENTRY_CTRL_MASKBIT) << v;
    EXPECT_EQ(read32(*t, entry(v, PCI_MSIX_ENTRY_DATA)), 0u);
  }
  EXPECT_FALSE(t->enabled());
  EXPECT_FALSE(t->function_masked());
  EXPECT_EQ(pba64(*t), 0u);
}

TEST(MsixTable, WritesAddressAndDataWith4And8ByteAccesses) {
  FakeMsiSink sink;
  auto t = make(sink);
  write32(*t, entry(1, PCI_MSIX_ENTRY_LOWER_ADDR), 0xfee0'1000);
  write32(*t, entry(1, PCI_MSIX_ENTRY_UPPER_ADDR), 0x1);
  write32(*t, entry(1, PCI_MSIX_ENTRY_DATA), 0x4041);
  EXPECT_EQ(t->entry(1), (MsixEntry{.address = 0x1'fee0'1000, .data = 0x4041, .control = 1}));
  EXPECT_EQ(read64(*t, entry(1, 0)), 0x1'fee0'1000u);
  EXPECT_EQ(read64(*t, entry(1, 8)), 0x1'0000'4041u) << "data then vector control";

  write64(*t, entry(3, 0), 0x2'fee0'0000);
  write64(*t, entry(3, 8), 0xffff'fffe'0000'0033);  // reserved control bits are dropped, mask cleared
  EXPECT_EQ(t->entry(3), (MsixEntry{.address = 0x2'fee0'0000, .data = 0x33, .control = 0}));
  EXPECT_EQ(read32(*t, entry(3, PCI_MSIX_ENTRY_VECTOR_CTRL)), 0u);
  EXPECT_TRUE(sink.signals().empty());
}

TEST(MsixTable, MaskedVectorSetsItsPendingBitAndFiresWhenUnmasked) {
  FakeMsiSink sink;
  auto t = make(sink);
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  program(*t, 2, 0xfee0'0000, 0x42, /*unmask=*/false);

  EXPECT_EQ(t->trigger(2), MsixTrigger::Pending);
  EXPECT_TRUE(t->pending(2));
  EXPECT_EQ(pba64(*t), 0b100u);
  std::array<std::uint8_t, 4> low{};
  t->read_pba(0, low);
  EXPECT_EQ(low[0], 0b100);
  EXPECT_TRUE(sink.signals().empty());

  write32(*t, entry(2, PCI_MSIX_ENTRY_VECTOR_CTRL), 0);
  EXPECT_EQ(sink.signals(), (std::vector<Signal>{{{0xfee0'0000, 0x42}, 2}}));
  EXPECT_FALSE(t->pending(2));
  EXPECT_EQ(pba64(*t), 0u);

  EXPECT_EQ(t->trigger(2), MsixTrigger::Delivered);
  EXPECT_EQ(sink.signals().size(), 2u);
}

TEST(MsixTable, UnmaskingAnotherVectorDoesNotReleaseAStillMaskedOne) {
  FakeMsiSink sink;
  auto t = make(sink);
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  program(*t, 0, 0xfee0'0000, 0x40, false);
  program(*t, 1, 0xfee0'0000, 0x41, false);
  EXPECT_EQ(t->trigger(0), MsixTrigger::Pending);
  write32(*t, entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL), 0);
  EXPECT_TRUE(sink.signals().empty());
  EXPECT_TRUE(t->pending(0));
}

TEST(MsixTable, FunctionMaskHoldsEveryVectorPendingAndReleasesThem) {
  FakeMsiSink sink;
  auto t = make(sink);
  for (std::uint16_t v = 0; v < 4; ++v) {
    program(*t, v, 0xfee0'0000, 0x40 + v);
  }
  t->set_control(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  EXPECT_EQ(t->trigger(3), MsixTrigger::Pending);
  EXPECT_EQ(t->trigger(1), MsixTrigger::Pending);
  EXPECT_EQ(pba64(*t), 0b1010u);
  EXPECT_EQ(read32(*t, entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL)), 0u) << "function mask does not touch vector masks";
  EXPECT_TRUE(sink.signals().empty());

  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(sink.signals(), (std::vector<Signal>{{{0xfee0'0000, 0x41}, 1}, {{0xfee0'0000, 0x43}, 3}}));
  EXPECT_EQ(pba64(*t), 0u);
}

TEST(MsixTable, DisabledMsixDoesNotFireOrRecord) {
  FakeMsiSink sink;
  auto t = make(sink);
  program(*t, 0, 0xfee0'0000, 0x40);
  EXPECT_EQ(t->trigger(0), MsixTrigger::Disabled);
  EXPECT_FALSE(t->pending(0));
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_TRUE(sink.signals().empty()) << "nothing was recorded to release";
  EXPECT_EQ(t->trigger(4), MsixTrigger::NoVector);
  EXPECT_EQ(t->trigger(0), MsixTrigger::Delivered);
  EXPECT_EQ(sink.signals().size(), 1u);
}

TEST(MsixTable, EnablingReleasesVectorsLeftPendingWhileDisabledAfterwards) {
  FakeMsiSink sink;
  auto t = make(sink);
  program(*t, 0, 0xfee0'0000, 0x40, false);
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(t->trigger(0), MsixTrigger::Pending);
  t->set_control(0);  // disable: the pending bit stays
  write32(*t, entry(0, PCI_MSIX_ENTRY_VECTOR_CTRL), 0);
  EXPECT_TRUE(sink.signals().empty()) << "disabled: not released";
  EXPECT_TRUE(t->pending(0));
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(sink.signals().size(), 1u);
  EXPECT_FALSE(t->pending(0));
}

TEST(MsixTable, OddOrOutOfRangeAccessesReadOnesAndChangeNothing) {
  FakeMsiSink sink;
  auto t = make(sink);
  program(*t, 0, 0xfee0'0000, 0x40, false);
  const auto before = t->entry(0);
  for (std::size_t size : {1, 2, 3, 5, 16}) {
    std::vector<std::uint8_t> buf(size, 0x00);
    t->read_table(0, buf);
    EXPECT_EQ(buf, std::vector<std::uint8_t>(size, 0xff)) << size;
    t->write_table(0, buf);
    t->write_table(PCI_MSIX_ENTRY_VECTOR_CTRL, std::vector<std::uint8_t>(size, 0));
    t->read_pba(0, buf);
    EXPECT_EQ(buf, std::vector<std::uint8_t>(size, 0xff)) << size;
  }
  EXPECT_EQ(read32(*t, 2), 0xffff'ffffu) << "unaligned dword";
  EXPECT_EQ(read64(*t, 4), ~std::uint64_t{0}) << "unaligned qword";
  write32(*t, 2, 0);
  write64(*t, 4, 0);
  EXPECT_EQ(read32(*t, 4 * 16), 0xffff'ffffu) << "past the table";
  EXPECT_EQ(read64(*t, ~std::uint64_t{7}), ~std::uint64_t{0}) << "near 2^64";
  write32(*t, 4 * 16, 0);
  write64(*t, ~std::uint64_t{7}, 0);
  EXPECT_EQ(pba64(*t, 8), ~std::uint64_t{0}) << "past the PBA";
  EXPECT_EQ(t->entry(0), before);
  EXPECT_EQ(t->entry(4), std::nullopt);
  EXPECT_FALSE(t->pending(4));
  EXPECT_TRUE(sink.signals().empty());
}

TEST(MsixTable, PbaIsReadOnlyToTheGuest) {
  FakeMsiSink sink;
  auto t = make(sink);
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(t->trigger(1), MsixTrigger::Pending);
  // There is no write_pba: a device routes PBA writes nowhere. The bit is only cleared by delivery.
  EXPECT_EQ(pba64(*t), 0b10u);
}

TEST(MsixTable, SinkErrorsAreReturnedAndKept) {
  FakeMsiSink sink;
  auto t = make(sink);
  program(*t, 0, 0xfee0'0000, 0x40, false);
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  sink.set_fail(true);
  EXPECT_EQ(t->trigger(0), MsixTrigger::Pending);
  write32(*t, entry(0, PCI_MSIX_ENTRY_VECTOR_CTRL), 0);
  ASSERT_TRUE(t->last_error());
  EXPECT_EQ(t->last_error()->operation, "fake MSI");
  EXPECT_FALSE(t->trigger(0));
}

TEST(MsixTable, ConfigWrittenFollowsMessageControl) {
  FakeMsiSink sink;
  ConfigSpace config;
  const MsixCapability cap{.vectors = 4, .table_bar = 0, .table_offset = 0, .pba_bar = 0, .pba_offset = 0x800};
  auto at = cap.add_to(config);
  ASSERT_TRUE(at);
  auto t = make(sink);
  config.write16(*at + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
  t->config_written(config, *at, *at, 4);  // a dword write covering ID, next and Message Control
  EXPECT_TRUE(t->enabled());
  config.write16(*at + PCI_MSIX_FLAGS, 0);
  t->config_written(config, *at, static_cast<std::uint16_t>(*at + PCI_MSIX_TABLE), 4);
  EXPECT_TRUE(t->enabled()) << "a write elsewhere does not re-read Message Control";
  t->config_written(config, *at, static_cast<std::uint16_t>(*at + PCI_MSIX_FLAGS + 1), 1);
  EXPECT_FALSE(t->enabled()) << "the high byte holds Enable";
}

TEST(MsixTable, ObserverHearsChangedVectorsAndMessageControl) {
  FakeMsiSink sink;
  auto t = make(sink);
  std::vector<std::uint16_t> heard;
  std::vector<bool> unmasked_when_heard;  // what the observer reads back: the state after the change
  t->set_observer([&](std::uint16_t v) {
    heard.push_back(v);
    unmasked_when_heard.push_back((t->entry(v)->control & PCI_MSIX_ENTRY_CTRL_MASKBIT) == 0);
  });

  write32(*t, entry(2, PCI_MSIX_ENTRY_DATA), 0x42);
  EXPECT_EQ(heard, (std::vector<std::uint16_t>{2})) << "data changed";
  write32(*t, entry(2, PCI_MSIX_ENTRY_DATA), 0x42);
  write64(*t, entry(1, 0), 0);
  EXPECT_EQ(heard.size(), 1u) << "writes that change nothing are not reported";
  write64(*t, entry(1, 0), 0xfee0'0000);
  write32(*t, entry(1, PCI_MSIX_ENTRY_VECTOR_CTRL), 0);
  EXPECT_EQ(heard, (std::vector<std::uint16_t>{2, 1, 1}));
  EXPECT_TRUE(unmasked_when_heard.back()) << "called after the change";
  std::array<std::uint8_t, 4> scratch{};
  t->read_table(entry(3, 0), scratch);
  write32(*t, entry(4, 0), 1);  // past the table
  EXPECT_EQ(heard.size(), 3u) << "reads and rejected writes are not reported";

  heard.clear();
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(heard, (std::vector<std::uint16_t>{0, 1, 2, 3})) << "Enable gates every vector";
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(heard.size(), 4u) << "Message Control unchanged";
  t->set_control(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  t->set_control(0);
  EXPECT_EQ(heard.size(), 12u) << "Function Mask, then Enable and Function Mask";

  t->set_observer({});
  write32(*t, entry(0, PCI_MSIX_ENTRY_DATA), 7);
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(heard.size(), 12u) << "removed";
}

TEST(MsixTable, ObserverRunsBeforeAReleasedVectorIsDelivered) {
  FakeMsiSink sink;
  auto t = make(sink);
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  program(*t, 0, 0xfee0'0000, 0x40, false);
  EXPECT_EQ(t->trigger(0), MsixTrigger::Pending);
  std::size_t signals_seen_by_observer = 99;
  t->set_observer([&](std::uint16_t) { signals_seen_by_observer = sink.signals().size(); });
  write32(*t, entry(0, PCI_MSIX_ENTRY_VECTOR_CTRL), 0);
  EXPECT_EQ(signals_seen_by_observer, 0u) << "a route that follows the table is updated before the message uses it";
  EXPECT_EQ(sink.signals().size(), 1u);
}

TEST(MsixTable, ConcurrentTriggersAndUnmasksLoseNothing) {
  FakeMsiSink sink;
  auto t = make(sink, 64);
  for (std::uint16_t v = 0; v < 64; ++v) {
    program(*t, v, 0xfee0'0000, v, false);
  }
  t->set_control(PCI_MSIX_FLAGS_ENABLE);
  std::thread trigger([&] {
    for (std::uint16_t v = 0; v < 64; ++v) {
      EXPECT_TRUE(t->trigger(v));
    }
  });
  std::thread unmask([&] {
    for (std::uint16_t v = 0; v < 64; ++v) {
      write32(*t, entry(v, PCI_MSIX_ENTRY_VECTOR_CTRL), 0);
    }
  });
  trigger.join();
  unmask.join();
  EXPECT_EQ(sink.signals().size(), 64u) << "each trigger is delivered exactly once, directly or on unmask";
  EXPECT_EQ(pba64(*t), 0u);
}

}  // namespace
}  // namespace vmm::pci
