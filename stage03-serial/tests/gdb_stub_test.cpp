// The gdb stub's pieces without gdb: debug-register allocation, the --gdb argument, the page walk, and the stub as a
// peer sees it (raw packets over its socket, including broken ones) with a real vCPU held before its first
// instruction.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "vmm/gdb/debug_registers.hpp"
#include "vmm/gdb/page_walk.hpp"
#include "vmm/gdb/stub.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace {

using namespace vmm;
using namespace vmm::gdb;

TEST(DebugRegisters, EncodesConditionAndLengthPerSlot) {
  DebugRegisters dr;
  ASSERT_TRUE(dr.insert(HardwareKind::Execution, 0x1000, 1));
  ASSERT_TRUE(dr.insert(HardwareKind::Write, 0x2000, 4));
  ASSERT_TRUE(dr.insert(HardwareKind::Access, 0x3000, 8));
  EXPECT_EQ(dr.addresses()[0], 0x1000u);
  EXPECT_EQ(dr.addresses()[1], 0x2000u);
  EXPECT_EQ(dr.addresses()[2], 0x3000u);
  // L0 L1 L2, LE|GE; slot 0: R/W 00 LEN 00; slot 1: R/W 01 LEN 11; slot 2: R/W 11 LEN 10.
  const std::uint64_t expected =
      0x1 | 0x4 | 0x10 | 0x300 | (0b01ull << 20) | (0b11ull << 22) | (0b11ull << 24) | (0b10ull << 26);
  EXPECT_EQ(dr.dr7(), expected);
  auto hit = dr.hit(0x2);  // B1
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->kind, HardwareKind::Write);
  EXPECT_EQ(hit->address, 0x2000u);
  EXPECT_FALSE(dr.hit(0x4000));  // BS alone: a single step, none of ours
}

TEST(DebugRegisters, SplitsUnalignedRangesAndRefusesWhenFull) {
  DebugRegisters dr;
  // 8 bytes at 0x1004: two aligned 4-byte pieces.
  ASSERT_TRUE(dr.insert(HardwareKind::Write, 0x1004, 8));
  EXPECT_EQ(dr.addresses()[0], 0x1004u);
  EXPECT_EQ(dr.addresses()[1], 0x1008u);
  ASSERT_TRUE(dr.insert(HardwareKind::Execution, 0x5000, 1));
  // Three more bytes at an odd address need two slots; one is left: refused, and nothing changed.
  const auto before = dr.dr7();
  EXPECT_FALSE(dr.insert(HardwareKind::Write, 0x7001, 3));
  EXPECT_EQ(dr.dr7(), before);
  EXPECT_FALSE(dr.insert(HardwareKind::Execution, 0x6000, 2));  // execution breakpoints are one byte
  EXPECT_FALSE(dr.remove(HardwareKind::Write, 0x1004, 4));      // not what was inserted
  ASSERT_TRUE(dr.remove(HardwareKind::Write, 0x1004, 8));
  EXPECT_EQ(dr.addresses()[0], 0u);
  EXPECT_EQ(dr.addresses()[1], 0u);
  EXPECT_FALSE(dr.empty());
}

TEST(GdbEndpoint, ParsesTheThreeFormsAndRefusesTheRest) {
  auto tcp = GdbEndpoint::parse("tcp:1234");
  ASSERT_TRUE(tcp);
  EXPECT_EQ(tcp->kind, GdbEndpoint::Kind::Tcp);
  EXPECT_EQ(tcp->host, "127.0.0.1");
  EXPECT_EQ(tcp->port, 1234);
  auto host = GdbEndpoint::parse("tcp:0.0.0.0:99");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->host, "0.0.0.0");
  auto unix_socket = GdbEndpoint::parse("unix:/tmp/x.sock");
  ASSERT_TRUE(unix_socket);
  EXPECT_EQ(unix_socket->path, "/tmp/x.sock");
  for (const char* bad : {"", "1234", "tcp:", "tcp:65536", "tcp:12a", "tcp:host:1", "unix:", "udp:1"}) {
    EXPECT_FALSE(GdbEndpoint::parse(bad)) << bad;
  }
  EXPECT_FALSE(GdbEndpoint::parse("unix:/" + std::string(200, 'x')));
}

// A 4-level hierarchy by hand: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
class PageWalk : public ::testing::Test {
 protected:
  void SetUp() override {
    auto region = memory::GuestMemoryRegion::create(memory::GuestAddress(0), 4 << 20);
    ASSERT_TRUE(region);
    std::vector<memory::GuestMemoryRegion> regions;
    regions.push_back(std::move(*region));
    auto built = memory::GuestMemory::from_regions(std::move(regions));
    ASSERT_TRUE(built);
    memory_.emplace(std::move(*built));
    // 0xffff800000201000 -> 4 KiB page at 0x5000; 0xffff800000400000 -> 2 MiB page at 0x200000 (read-only);
    // 0x0000008000000000 (PML4 index 1) -> not present.
    const std::uint64_t base = 0xffff800000000000ull;
    put(0x1000 + 8 * ((base >> 39) & 0x1ff), 0x2003);
    put(0x2000 + 8 * ((base >> 30) & 0x1ff), 0x3003);
    put(0x3000 + 8 * 1, 0x4003);           // PD[1]: 0x200000..0x3fffff -> PT
    put(0x3000 + 8 * 2, 0x200000 | 0x81);  // PD[2]: a 2 MiB page, present, not writable
    put(0x4000 + 8 * 1, 0x5003);           // PT[1]
  }
  void put(std::uint64_t at, std::uint64_t entry) { ASSERT_TRUE(memory_->write_obj(memory::GuestAddress(at), entry)); }
  const PagingState long_mode{.cr0 = 0x80000011, .cr3 = 0x1000, .cr4 = 0x20, .efer = 0x500};
  std::optional<memory::GuestMemory> memory_;
};

TEST_F(PageWalk, FourLevelPagesLargePagesAndHoles) {
  auto small = translate(*memory_, long_mode, 0xffff800000201234ull);
  ASSERT_TRUE(small) << small.error().message();
  EXPECT_EQ(small->physical.raw(), 0x5234u);
  EXPECT_EQ(small->page_size, 4096u);
  EXPECT_EQ(small->levels, 4);
  EXPECT_TRUE(small->writable);
  auto large = translate(*memory_, long_mode, 0xffff800000412345ull);
  ASSERT_TRUE(large);
  EXPECT_EQ(large->physical.raw(), 0x212345u);
  EXPECT_EQ(large->page_size, 2u << 20);
  EXPECT_FALSE(large->writable);
  auto hole = translate(*memory_, long_mode, 0x0000008000000000ull);
  ASSERT_FALSE(hole);
  EXPECT_NE(hole.error().message().find("PML4[1]"), std::string::npos) << hole.error().message();
  auto odd = translate(*memory_, long_mode, 0x0000800000000000ull);
  ASSERT_FALSE(odd);
  EXPECT_NE(odd.error().message().find("not canonical"), std::string::npos);
}

TEST_F(PageWalk, NoPagingIsIdentityAndTablesOutsideRamAreRefused) {
  auto flat = translate(*memory_, {.cr0 = 0x11, .cr3 = 0, .cr4 = 0, .efer = 0}, 0x1234);
  ASSERT_TRUE(flat);
  EXPECT_EQ(flat->physical.raw(), 0x1234u);
  EXPECT_EQ(flat->levels, 0);
  // A hostile CR3 far outside guest RAM: an error, not a read out of bounds.
  auto wild = translate(*memory_, {.cr0 = 0x80000011, .cr3 = 0x7fff0000000, .cr4 = 0x20, .efer = 0x500}, 0x1000);
  ASSERT_FALSE(wild);
  EXPECT_NE(wild.error().message().find("not in guest RAM"), std::string::npos);
  EXPECT_EQ(PagingState({.cr0 = 0x80000011, .cr3 = 0, .cr4 = 0x20, .efer = 0}).mode(), PagingMode::Pae);
  EXPECT_EQ(PagingState({.cr0 = 0x80000011, .cr3 = 0, .cr4 = 0, .efer = 0}).mode(), PagingMode::Bits32);
  EXPECT_EQ(PagingState({.cr0 = 0x80000011, .cr3 = 0, .cr4 = 0x1020, .efer = 0x500}).mode(), PagingMode::FiveLevel);
}

TEST_F(PageWalk, ThirtyTwoBitPagingWithFourMegabytePages) {
  // PD at 0x1000 (32-bit entries): PDE[1] = 4 MiB page at 0x0 (PS), PDE[0] -> PT at 0x2000, PTE[3] -> 0x7000.
  ASSERT_TRUE(memory_->write_obj(memory::GuestAddress(0x1000 + 4), std::uint32_t{0x00000083}));
  ASSERT_TRUE(memory_->write_obj(memory::GuestAddress(0x1000), std::uint32_t{0x2003}));
  ASSERT_TRUE(memory_->write_obj(memory::GuestAddress(0x2000 + 12), std::uint32_t{0x7003}));
  const PagingState bits32{.cr0 = 0x80000011, .cr3 = 0x1000, .cr4 = 0x10, .efer = 0};
  auto big = translate(*memory_, bits32, 0x00412345);
  ASSERT_TRUE(big);
  EXPECT_EQ(big->physical.raw(), 0x12345u);
  auto small = translate(*memory_, bits32, 0x3abc);
  ASSERT_TRUE(small);
  EXPECT_EQ(small->physical.raw(), 0x7abcu);
}

}  // namespace
