// Lab 10's checks: your walk against hand-built tables, against the stub's vmm::gdb::translate, and against the
// page tables stage02 builds for every guest (identity-mapped, 2 MiB pages).
#include <gtest/gtest.h>

#include "lab10.hpp"
#include "vmm/gdb/page_walk.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/x86/long_mode.hpp"

namespace {

using vmm::memory::GuestAddress;

class Exercise1 : public ::testing::Test {
 protected:
  void SetUp() override {
    auto region = vmm::memory::GuestMemoryRegion::create(GuestAddress(0), 8 << 20);
    ASSERT_TRUE(region);
    std::vector<vmm::memory::GuestMemoryRegion> regions;
    regions.push_back(std::move(*region));
    auto memory = vmm::memory::GuestMemory::from_regions(std::move(regions));
    ASSERT_TRUE(memory);
    memory_.emplace(std::move(*memory));
    // Linux's kernel text mapping: 0xffffffff81000000 -> 0x1000000 with 2 MiB pages, and one 4 KiB page and one
    // 1 GiB page besides.
    put(0x1000 + 8 * 511, 0x2003);           // PML4[511] -> PDPT 0x2000
    put(0x2000 + 8 * 510, 0x3003);           // PDPT[510] -> PD 0x3000
    put(0x3000 + 8 * 8, 0x1000000 | 0x83);   // PD[8]: 2 MiB at 0x1000000
    put(0x3000 + 8 * 9, 0x4003);             // PD[9] -> PT 0x4000
    put(0x4000 + 8 * 5, 0x6003);             // PT[5]: 4 KiB at 0x6000
    put(0x2000 + 8 * 0, 0x40000000 | 0x83);  // PDPT[0]: 1 GiB at 0x40000000
  }
  void put(std::uint64_t at, std::uint64_t value) { ASSERT_TRUE(memory_->write_obj(GuestAddress(at), value)); }
  std::optional<vmm::memory::GuestMemory> memory_;
};

TEST_F(Exercise1, TwoMegabyteFourKilobyteAndOneGigabytePages) {
  auto text = lab10::translate_four_level(*memory_, 0x1000, 0xffffffff81012345ull);
  ASSERT_TRUE(text) << text.error().message();
  EXPECT_EQ(*text, 0x1012345u);
  auto small = lab10::translate_four_level(*memory_, 0x1000, 0xffffffff81205abcull);
  ASSERT_TRUE(small) << small.error().message();
  EXPECT_EQ(*small, 0x6abcu);
  auto huge = lab10::translate_four_level(*memory_, 0x1000, 0xffffff8000123456ull);
  ASSERT_TRUE(huge) << huge.error().message();
  EXPECT_EQ(*huge, 0x40123456u);
}

TEST_F(Exercise1, RefusesHolesNonCanonicalAddressesAndWildTables) {
  auto hole = lab10::translate_four_level(*memory_, 0x1000, 0xffffffff81400000ull);  // PD[10]: empty
  ASSERT_FALSE(hole);
  EXPECT_NE(hole.error().message().find("PD[10]"), std::string::npos) << hole.error().message();
  EXPECT_FALSE(lab10::translate_four_level(*memory_, 0x1000, 0x0000800000000000ull));
  EXPECT_FALSE(lab10::translate_four_level(*memory_, 0x7fff0000000ull, 0x1000));
}

TEST_F(Exercise1, AgreesWithTheStubOnStage02sTables) {
  // The tables every stage02+ guest runs on: identity-mapped low memory.
  auto tables = vmm::x86::write_identity_page_tables(*memory_, GuestAddress(0x100000), 1ull << 30);
  ASSERT_TRUE(tables) << tables.error().message();
  const std::uint64_t cr3 = tables->pml4.raw();
  const vmm::gdb::PagingState paging{.cr0 = 0x80000011, .cr3 = cr3, .cr4 = 0x20, .efer = 0x500};
  for (std::uint64_t linear : {0x0ull, 0x1234ull, 0x200000ull, 0x3fffffull, 0x3fffffffull}) {
    auto theirs = vmm::gdb::translate(*memory_, paging, linear);
    auto yours = lab10::translate_four_level(*memory_, cr3, linear);
    ASSERT_TRUE(theirs) << theirs.error().message();
    ASSERT_TRUE(yours) << yours.error().message();
    EXPECT_EQ(*yours, theirs->physical.raw()) << std::hex << linear;
  }
}

}  // namespace
