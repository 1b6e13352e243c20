// The long-mode structures the VMM writes, checked byte by byte against the architecture (no KVM needed).
#include <gtest/gtest.h>

#include <vector>

#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/x86_layout.hpp"
#include "vmm/x86/long_mode.hpp"

namespace vmm::x86 {
namespace {

using memory::GuestAddress;

class LongModeTables : public ::testing::Test {
 protected:
  void SetUp() override {
    auto layout = memory::x86::layout_for(1ull << 20);
    ASSERT_TRUE(layout) << layout.error().message();
    auto mem = memory::x86::allocate(*layout);
    ASSERT_TRUE(mem) << mem.error().message();
    memory_ = std::move(*mem);
  }
  std::uint64_t entry(std::uint64_t table, std::uint64_t index) {
    auto value = memory_.read_obj<std::uint64_t>(GuestAddress(table + index * 8));
    EXPECT_TRUE(value);
    return value ? *value : ~0ull;
  }
  memory::GuestMemory memory_;
};

TEST_F(LongModeTables, FourGibWithTwoMibPagesIsSixTables) {
  auto tables = write_identity_page_tables(memory_, GuestAddress(0x9000), 4ull << 30);
  ASSERT_TRUE(tables) << tables.error().message();
  EXPECT_EQ(tables->pml4, GuestAddress(0x9000));
  EXPECT_EQ(tables->mapped_bytes, 4ull << 30);
  ASSERT_EQ(tables->pages.size(), 6u) << "PML4, PDPT and one page directory per GiB";
  for (std::size_t i = 0; i < tables->pages.size(); ++i) {
    EXPECT_EQ(tables->pages[i], GuestAddress(0x9000 + i * 0x1000));
  }
  const std::uint64_t table_bits = kPtePresent | kPteWritable | kPteAccessed;
  EXPECT_EQ(entry(0x9000, 0), 0xa000 | table_bits) << "PML4[0] -> PDPT";
  EXPECT_EQ(entry(0x9000, 1), 0u) << "nothing above 512 GiB";
  for (std::uint64_t gib = 0; gib < 4; ++gib) {
    EXPECT_EQ(entry(0xa000, gib), (0xb000 + gib * 0x1000) | table_bits) << "PDPT[" << gib << "] -> PD";
  }
  EXPECT_EQ(entry(0xa000, 4), 0u);
  const std::uint64_t leaf_bits = table_bits | kPteDirty | kPteHuge;
  EXPECT_EQ(entry(0xb000, 0), 0x0 | leaf_bits) << "PD0[0] maps [0, 2 MiB)";
  EXPECT_EQ(entry(0xb000, 1), 0x200000 | leaf_bits);
  EXPECT_EQ(entry(0xe000, 511), 0xffe00000 | leaf_bits) << "the last 2 MiB below 4 GiB (the local APIC lives there)";
}

TEST_F(LongModeTables, BadSizesAndPlacesAreRefused) {
  EXPECT_FALSE(write_identity_page_tables(memory_, GuestAddress(0x9000), 0));
  EXPECT_FALSE(write_identity_page_tables(memory_, GuestAddress(0x9000), (1ull << 30) + 4096));
  EXPECT_FALSE(write_identity_page_tables(memory_, GuestAddress(0x9000), 513ull << 30));
  auto unaligned = write_identity_page_tables(memory_, GuestAddress(0x9008), 1ull << 30);
  ASSERT_FALSE(unaligned);
  EXPECT_NE(unaligned.error().message().find("not page-aligned"), std::string::npos) << unaligned.error().message();
  // 1 MiB of RAM: tables at 0xff000 would run past its end. Nothing may be written outside guest memory.
  auto outside = write_identity_page_tables(memory_, GuestAddress(0xff000), 1ull << 30);
  ASSERT_FALSE(outside);
}

TEST_F(LongModeTables, GdtHasFlatCodeAndDataMarkedAccessed) {
  ASSERT_TRUE(write_gdt(memory_, GuestAddress(0x1000)));
  EXPECT_EQ(entry(0x1000, 0), 0u);
  const std::uint64_t code = entry(0x1000, 1);
  const std::uint64_t data = entry(0x1000, 2);
  EXPECT_EQ((code >> 40) & 0xff, 0x9bu) << "present, DPL 0, code, execute/read, accessed";
  EXPECT_EQ((code >> 53) & 1, 1u) << "L: a 64-bit code segment";
  EXPECT_EQ((code >> 54) & 1, 0u) << "D must be 0 when L is 1";
  EXPECT_EQ((data >> 40) & 0xff, 0x93u) << "present, DPL 0, data, read/write, accessed";
}

TEST(LongModeSregs, ControlRegistersAndSegments) {
  const kvm_sregs sregs = long_mode_sregs(kvm_sregs{}, GuestAddress(0x1000), GuestAddress(0x9000));
  EXPECT_EQ(sregs.cr3, 0x9000u);
  EXPECT_EQ(sregs.cr0 & (kCr0Pe | kCr0Pg), kCr0Pe | kCr0Pg) << "protected mode with paging";
  EXPECT_EQ(sregs.cr4 & kCr4Pae, kCr4Pae) << "long mode needs PAE paging";
  EXPECT_EQ(sregs.efer & (kEferLme | kEferLma), kEferLme | kEferLma);
  EXPECT_EQ(sregs.cs.selector, kCodeSelector);
  EXPECT_EQ(sregs.cs.l, 1);
  EXPECT_EQ(sregs.cs.db, 0);
  EXPECT_EQ(sregs.ss.selector, kDataSelector);
  EXPECT_EQ(sregs.ds.present, 1);
  EXPECT_EQ(sregs.gdt.base, 0x1000u);
  EXPECT_EQ(sregs.gdt.limit, 3 * 8 - 1);
}

}  // namespace
}  // namespace vmm::x86
