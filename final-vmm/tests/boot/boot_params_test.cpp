// The zero page and the e820 map (Documentation/x86/boot.rst and zero-page.rst), checked both through the UAPI
// struct and at the byte offsets the kernel reads, and the boot GDT's descriptors decoded by the SDM's format.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "vmm/boot/boot_params.hpp"
#include "vmm/boot/layout.hpp"
#include "vmm/memory/x86_layout.hpp"
#include "vmm/testing/result.hpp"

namespace vmm::boot {
namespace {

using ::testing::HasSubstr;
using vmm::testing::error_of;

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

std::vector<E820Entry> map_for(std::uint64_t ram_bytes) {
  auto ram_layout = memory::x86::layout_for(ram_bytes);
  if (!ram_layout) {
    throw std::runtime_error(ram_layout.error().message());
  }
  return e820_map(*ram_layout);
}

TEST(E820, FiveHundredTwelveMiBIsLowRamTheLegacyHoleAndRamFromOneMiB) {
  const std::vector<E820Entry> expected{
      {0, 0x9fc00, E820Type::Ram},                        // up to the EBDA
      {0x9fc00, 0x100000 - 0x9fc00, E820Type::Reserved},  // EBDA (the MP table), VGA, BIOS
      {0x100000, 512 * kMiB - 0x100000, E820Type::Ram},
  };
  EXPECT_EQ(map_for(512 * kMiB), expected);
}

TEST(E820, FiveGiBLeavesThePciHoleOutAndPutsTheRestAboveFourGiB) {
  // Low RAM stops at 3 GiB (the 32-bit PCI hole is neither RAM nor reserved); the other 2 GiB start at 4 GiB.
  const std::vector<E820Entry> expected{
      {0, 0x9fc00, E820Type::Ram},
      {0x9fc00, 0x100000 - 0x9fc00, E820Type::Reserved},
      {0x100000, 3 * kGiB - 0x100000, E820Type::Ram},
      {4 * kGiB, 2 * kGiB, E820Type::Ram},
  };
  EXPECT_EQ(map_for(5 * kGiB), expected);
}

// A kernel's setup header with the fields a bzImage would bring, some of which the zero page must keep as they are.
LoadedKernel kernel() {
  LoadedKernel k;
  k.header.setup_sects = 27;
  k.header.boot_flag = 0xaa55;
  k.header.header = 0x53726448;
  k.header.version = 0x020f;
  k.header.loadflags = LOADED_HIGH | CAN_USE_HEAP;
  k.header.xloadflags = XLF_KERNEL_64;
  k.header.kernel_alignment = 0x200000;
  k.header.initrd_addr_max = 0x7fffffff;
  k.header.cmdline_size = 2047;
  k.header.init_size = 0x2000000;
  return k;
}

BootParamsInput input() {
  return {.cmdline_address = layout::kCmdline,
          .cmdline_size = 100,
          .initramfs_address = 0x1fc00000,
          .initramfs_size = 0x345678,
          .e820 = map_for(512 * kMiB)};
}

// The zero page as the kernel sees it: 4096 bytes, fields at fixed offsets (zero-page.rst).
std::array<std::uint8_t, 4096> bytes_of(const boot_params& params) {
  static_assert(sizeof(boot_params) == 4096);
  std::array<std::uint8_t, 4096> bytes{};
  std::memcpy(bytes.data(), &params, sizeof params);
  return bytes;
}

// make_boot_params' zero page for `in`, as bytes; a refusal throws (and fails the test with its message).
std::array<std::uint8_t, 4096> zero_page(const BootParamsInput& in) {
  auto params = make_boot_params(kernel(), in);
  if (!params) {
    throw std::runtime_error(params.error().message());
  }
  return bytes_of(*params);
}

template <typename T>
T at(const std::array<std::uint8_t, 4096>& bytes, std::size_t offset) {
  T value{};
  std::memcpy(&value, bytes.data() + offset, sizeof value);
  return value;
}

// Zero-page offsets: the setup header at 0x1f1, and boot.rst's offsets of its fields from the start of the page.
constexpr std::size_t kExtRamdiskImage = 0x0c0;
constexpr std::size_t kExtRamdiskSize = 0x0c4;
constexpr std::size_t kExtCmdLinePtr = 0x0c8;
constexpr std::size_t kE820Entries = 0x1e8;
constexpr std::size_t kSetupSects = 0x1f1;
constexpr std::size_t kBootFlag = 0x1fe;
constexpr std::size_t kVersion = 0x206;
constexpr std::size_t kTypeOfLoader = 0x210;
constexpr std::size_t kLoadflags = 0x211;
constexpr std::size_t kRamdiskImage = 0x218;
constexpr std::size_t kRamdiskSize = 0x21c;
constexpr std::size_t kCmdLinePtr = 0x228;  // 0x1f1 + 0x37
constexpr std::size_t kE820Table = 0x2d0;
constexpr std::size_t kE820EntrySize = 20;  // struct boot_e820_entry: u64 addr, u64 size, u32 type, packed

TEST(BootParams, KeepsTheKernelsHeaderAndAddsTheLoadersFields) {
  auto params = make_boot_params(kernel(), input());
  ASSERT_TRUE(params) << params.error().message();
  const auto bytes = bytes_of(*params);
  EXPECT_EQ(at<std::uint8_t>(bytes, kSetupSects), 27);
  EXPECT_EQ(at<std::uint16_t>(bytes, kBootFlag), 0xaa55);
  EXPECT_EQ(at<std::uint16_t>(bytes, kVersion), 0x020f);
  // boot.rst: type_of_loader 0xff means "undefined"; a loader without an assigned ID must use it.
  EXPECT_EQ(at<std::uint8_t>(bytes, kTypeOfLoader), 0xff);
  // LOADED_HIGH stays (the kernel is at 1 MiB); CAN_USE_HEAP goes: no heap_end_ptr was set.
  EXPECT_EQ(at<std::uint8_t>(bytes, kLoadflags), LOADED_HIGH);
  EXPECT_EQ(at<std::uint32_t>(bytes, kCmdLinePtr), layout::kCmdline);
  EXPECT_EQ(at<std::uint32_t>(bytes, kExtCmdLinePtr), 0u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kRamdiskImage), 0x1fc00000u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kRamdiskSize), 0x345678u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kExtRamdiskImage), 0u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kExtRamdiskSize), 0u);
  // The same through the struct.
  EXPECT_EQ(std::uint8_t{params->hdr.type_of_loader}, 0xff);
  EXPECT_EQ(std::uint32_t{params->hdr.cmd_line_ptr}, layout::kCmdline);
  EXPECT_EQ(std::uint32_t{params->hdr.ramdisk_image}, 0x1fc00000u);
}

TEST(BootParams, CopiesTheE820MapWithItsTypes) {
  const auto bytes = zero_page(input());
  const auto map = map_for(512 * kMiB);
  ASSERT_EQ(std::size_t{at<std::uint8_t>(bytes, kE820Entries)}, map.size());
  for (std::size_t i = 0; i < map.size(); ++i) {
    const std::size_t entry = kE820Table + i * kE820EntrySize;
    SCOPED_TRACE(i);
    EXPECT_EQ(at<std::uint64_t>(bytes, entry), map[i].address);
    EXPECT_EQ(at<std::uint64_t>(bytes, entry + 8), map[i].size);
    EXPECT_EQ(at<std::uint32_t>(bytes, entry + 16), static_cast<std::uint32_t>(map[i].type));
  }
  // ACPI's numbers: 1 usable RAM, 2 reserved.
  EXPECT_EQ(at<std::uint32_t>(bytes, kE820Table + 16), 1u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kE820Table + kE820EntrySize + 16), 2u);
  EXPECT_EQ(at<std::uint64_t>(bytes, kE820Table + map.size() * kE820EntrySize + 8), 0u) << "nothing after the map";
}

TEST(BootParams, SplitsAddressesAboveFourGiBIntoTheExtFields) {
  // boot.rst: ext_ramdisk_image, ext_ramdisk_size and ext_cmd_line_ptr are the upper 32 bits.
  auto in = input();
  in.cmdline_address = 0x1'0002'0000;
  in.initramfs_address = 0x1'2345'6000;
  in.initramfs_size = 0x2'0000'0100;
  const auto bytes = zero_page(in);
  EXPECT_EQ(at<std::uint32_t>(bytes, kCmdLinePtr), 0x00020000u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kExtCmdLinePtr), 1u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kRamdiskImage), 0x23456000u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kExtRamdiskImage), 1u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kRamdiskSize), 0x100u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kExtRamdiskSize), 2u);
}

TEST(BootParams, WithoutAnInitramfsTheRamdiskFieldsAreZero) {
  auto in = input();
  in.initramfs_address.reset();
  const auto bytes = zero_page(in);
  EXPECT_EQ(at<std::uint32_t>(bytes, kRamdiskImage), 0u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kRamdiskSize), 0u);
  EXPECT_EQ(at<std::uint32_t>(bytes, kExtRamdiskImage), 0u);
}

TEST(BootParams, RefusesACommandLineLongerThanTheKernelAccepts) {
  // boot.rst: cmdline_size is the longest command line "without the terminating zero".
  auto in = input();
  in.cmdline_size = 2047;
  EXPECT_TRUE(make_boot_params(kernel(), in).has_value()) << "exactly cmdline_size is fine";
  in.cmdline_size = 2048;
  EXPECT_THAT(error_of(make_boot_params(kernel(), in)), HasSubstr("the command line is 2048 bytes"));
}

TEST(BootParams, RefusesMoreE820EntriesThanTheZeroPageHolds) {
  // e820_table has 128 slots (E820_MAX_ENTRIES_ZEROPAGE).
  auto in = input();
  in.e820.clear();
  for (std::uint64_t i = 0; i < 128; ++i) {
    in.e820.push_back({.address = (i + 1) * 2 * kMiB, .size = kMiB, .type = E820Type::Ram});
  }
  const auto bytes = zero_page(in);
  EXPECT_EQ(at<std::uint8_t>(bytes, kE820Entries), 128);
  EXPECT_EQ(at<std::uint64_t>(bytes, kE820Table + 127 * kE820EntrySize), 256 * kMiB);
  in.e820.push_back({.address = 512 * kMiB, .size = kMiB, .type = E820Type::Ram});
  EXPECT_THAT(error_of(make_boot_params(kernel(), in)), HasSubstr("129 e820 entries"));
}

// --- The boot GDT
// ------------------------------------------------------------------------------------------------------

// A segment descriptor's fields (Intel SDM vol. 3A, 3.4.5 "Segment Descriptors").
struct Descriptor {
  std::uint64_t raw;
  [[nodiscard]] std::uint32_t base() const {
    return static_cast<std::uint32_t>(((raw >> 16) & 0xffffff) | (((raw >> 56) & 0xff) << 24));
  }
  [[nodiscard]] std::uint32_t limit() const {
    return static_cast<std::uint32_t>((raw & 0xffff) | (((raw >> 48) & 0xf) << 16));
  }
  [[nodiscard]] unsigned type() const { return (raw >> 40) & 0xf; }
  [[nodiscard]] bool s() const { return ((raw >> 44) & 1) != 0; }  // code or data (not a system segment)
  [[nodiscard]] unsigned dpl() const { return (raw >> 45) & 3; }
  [[nodiscard]] bool present() const { return ((raw >> 47) & 1) != 0; }
  [[nodiscard]] bool l() const { return ((raw >> 53) & 1) != 0; }  // 64-bit code
  [[nodiscard]] bool d() const { return ((raw >> 54) & 1) != 0; }  // default operand size 32 (must be 0 with L)
  [[nodiscard]] bool g() const { return ((raw >> 55) & 1) != 0; }  // limit in 4 KiB units
};

// What both boot segments share: present, code or data (not system), ring 0, base 0, 4 GiB limit.
void expect_flat_ring0(const Descriptor& d) {
  EXPECT_TRUE(d.present());
  EXPECT_TRUE(d.s());
  EXPECT_EQ(d.dpl(), 0u);
  EXPECT_EQ(d.base(), 0u);
  EXPECT_EQ(d.limit(), 0xfffffu);
  EXPECT_TRUE(d.g()) << "limit in 4 KiB units: 4 GiB";
}

TEST(BootGdt, HasA64BitCodeSegmentAt0x10AndFlatDataAt0x18) {
  auto ram_layout = memory::x86::layout_for(2 * kMiB);
  ASSERT_TRUE(ram_layout);
  auto guest = memory::x86::allocate(*ram_layout);
  ASSERT_TRUE(guest) << guest.error().message();
  ASSERT_TRUE(write_boot_gdt(*guest, memory::GuestAddress{layout::kGdt}));
  auto read = [&](std::uint64_t selector) {
    auto raw = guest->read_obj<std::uint64_t>(memory::GuestAddress{layout::kGdt + selector});
    EXPECT_TRUE(raw);
    return Descriptor{raw.value_or(0)};
  };
  EXPECT_EQ(read(0x00).raw, 0u) << "the null descriptor";
  EXPECT_EQ(read(0x08).raw, 0u) << "unused: the protocol's selectors start at 0x10";

  const auto code = read(layout::kBootCs);
  EXPECT_EQ(layout::kBootCs, 0x10);
  expect_flat_ring0(code);
  EXPECT_EQ(code.type() & 0x8, 0x8u) << "executable";
  EXPECT_EQ(code.type() & 0x2, 0x2u) << "readable";
  EXPECT_TRUE(code.l()) << "64-bit code";
  EXPECT_FALSE(code.d()) << "L=1 requires D=0";

  const auto data = read(layout::kBootDs);
  EXPECT_EQ(layout::kBootDs, 0x18);
  expect_flat_ring0(data);
  EXPECT_EQ(data.type() & 0x8, 0u) << "data, not code";
  EXPECT_EQ(data.type() & 0x2, 0x2u) << "writable";
  EXPECT_FALSE(data.l());
}

}  // namespace
}  // namespace vmm::boot
