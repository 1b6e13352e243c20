// Host-side tests of final-vmm's boot code against the specs: the x86 boot protocol (Documentation/x86/boot.rst),
// the Intel MP spec 1.4, the i8042 and MC146818 datasheets. No KVM needed.
#include <elf.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "vmm/boot/boot_params.hpp"
#include "vmm/boot/layout.hpp"
#include "vmm/boot/linux_loader.hpp"
#include "vmm/boot/mptable.hpp"
#include "vmm/devices/cmos/cmos.hpp"
#include "vmm/devices/i8042/i8042.hpp"
#include "vmm/machine/topology.hpp"
#include "vmm/memory/x86_layout.hpp"
#include "vmm/x86/cpuid.hpp"

namespace vmm {
namespace {

memory::GuestMemory ram(std::uint64_t size) {
  auto layout = memory::x86::layout_for(size);
  EXPECT_TRUE(layout.has_value());
  auto memory = memory::x86::allocate(*layout);
  EXPECT_TRUE(memory.has_value());
  return std::move(*memory);
}

template <typename T>
void put(std::vector<std::byte>& bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

// A minimal bzImage: one setup sector after the boot sector, `payload` bytes of "kernel".
std::vector<std::byte> bzimage(std::size_t payload, std::uint16_t version = 0x020f,
                               std::uint8_t loadflags = LOADED_HIGH, std::uint16_t xloadflags = XLF_KERNEL_64) {
  std::vector<std::byte> file(1024 + payload);
  for (std::size_t i = 0; i < payload; ++i) {
    file[1024 + i] = std::byte(i * 7 + 1);
  }
  put<std::uint8_t>(file, 0x1f1, 1);                                          // setup_sects
  put<std::uint32_t>(file, 0x1f4, static_cast<std::uint32_t>(payload / 16));  // syssize
  put<std::uint16_t>(file, 0x1fe, 0xaa55);
  put<std::uint8_t>(file, 0x201, 0x6a);  // jump: the header runs to 0x26c
  std::memcpy(file.data() + 0x202, "HdrS", 4);
  put<std::uint16_t>(file, 0x206, version);
  put<std::uint8_t>(file, 0x211, loadflags);
  put<std::uint32_t>(file, 0x22c, 0x7fffffff);  // initrd_addr_max
  put<std::uint16_t>(file, 0x236, xloadflags);
  put<std::uint32_t>(file, 0x238, 2048);      // cmdline_size
  put<std::uint32_t>(file, 0x260, 0x400000);  // init_size
  return file;
}

TEST(Loader, LoadsABzImageAtOneMiBWithTheEntry0x200Further) {
  auto memory = ram(64ull << 20);
  const auto file = bzimage(4096);
  auto kernel = boot::load_bzimage(memory, file);
  ASSERT_TRUE(kernel.has_value()) << kernel.error().message();
  EXPECT_EQ(kernel->load_address, 0x100000u);
  EXPECT_EQ(kernel->entry, 0x100200u);
  EXPECT_EQ(kernel->protocol, 0x020f);
  EXPECT_EQ(kernel->header.code32_start, 0x100000u);
  EXPECT_EQ(kernel->end, 0x100000u + 0x400000u);
  std::vector<std::byte> loaded(4096);
  ASSERT_TRUE(memory.read(memory::GuestAddress{0x100000}, loaded).has_value());
  EXPECT_TRUE(std::equal(loaded.begin(), loaded.end(), file.begin() + 1024));
}

TEST(Loader, RefusesBadBzImages) {
  auto memory = ram(64ull << 20);
  auto truncated = bzimage(4096);
  truncated.resize(1024 + 100);
  auto error = boot::load_bzimage(memory, truncated);
  ASSERT_FALSE(error.has_value());
  EXPECT_NE(error.error().message().find("truncated"), std::string::npos) << error.error().message();
  error = boot::load_bzimage(memory, bzimage(4096, 0x0209));
  ASSERT_FALSE(error.has_value());
  EXPECT_NE(error.error().message().find("2.12"), std::string::npos);
  error = boot::load_bzimage(memory, bzimage(4096, 0x020f, LOADED_HIGH, 0));
  ASSERT_FALSE(error.has_value());
  EXPECT_NE(error.error().message().find("XLF_KERNEL_64"), std::string::npos);
  error = boot::load_bzimage(memory, bzimage(4096, 0x020f, 0));
  ASSERT_FALSE(error.has_value());
  EXPECT_NE(error.error().message().find("LOADED_HIGH"), std::string::npos);
  std::vector<std::byte> junk(4096, std::byte{0x5a});
  auto format = boot::detect_kernel_format(junk);
  ASSERT_FALSE(format.has_value());
  EXPECT_NE(format.error().message().find("not a bzImage"), std::string::npos);
  EXPECT_FALSE(boot::detect_kernel_format({}).has_value());
}

// An ELF64 executable with one PT_LOAD at `paddr` (filesz 64, memsz 256) and a PVH note.
std::vector<std::byte> elf(std::uint64_t paddr, std::uint64_t entry) {
  std::vector<std::byte> file(0x400);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_entry = entry;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 2;
  put(file, 0, eh);
  Elf64_Phdr load{};
  load.p_type = PT_LOAD;
  load.p_offset = 0x200;
  load.p_paddr = paddr;
  load.p_filesz = 64;
  load.p_memsz = 256;
  put(file, eh.e_phoff, load);
  Elf64_Phdr note{};
  note.p_type = PT_NOTE;
  note.p_offset = 0x300;
  note.p_filesz = sizeof(Elf64_Nhdr) + 4 + 4;
  put(file, eh.e_phoff + sizeof(Elf64_Phdr), note);
  put(file, 0x300, Elf64_Nhdr{4, 4, 18});
  std::memcpy(file.data() + 0x300 + sizeof(Elf64_Nhdr), "Xen", 4);
  put<std::uint32_t>(file, 0x300 + sizeof(Elf64_Nhdr) + 4, 0x1234567);
  for (int i = 0; i < 64; ++i) {
    file[0x200 + i] = std::byte(i + 1);
  }
  return file;
}

TEST(Loader, LoadsAnElfZeroingBssAndFindsThePvhNote) {
  auto memory = ram(64ull << 20);
  std::vector<std::byte> dirty(256, std::byte{0xaa});
  ASSERT_TRUE(memory.write(memory::GuestAddress{0x1000000}, dirty).has_value());
  auto kernel = boot::load_kernel(memory, elf(0x1000000, 0x1000010));
  ASSERT_TRUE(kernel.has_value()) << kernel.error().message();
  EXPECT_EQ(kernel->format, boot::KernelFormat::Elf);
  EXPECT_EQ(kernel->entry, 0x1000010u);
  EXPECT_EQ(kernel->end, 0x1000100u);
  EXPECT_EQ(kernel->pvh_entry, 0x1234567u);
  std::vector<std::byte> loaded(256);
  ASSERT_TRUE(memory.read(memory::GuestAddress{0x1000000}, loaded).has_value());
  EXPECT_EQ(loaded[0], std::byte{1});
  EXPECT_EQ(loaded[63], std::byte{64});
  EXPECT_EQ(loaded[64], std::byte{0});  // .bss zeroed over the 0xaa
  EXPECT_EQ(loaded[255], std::byte{0});
}

TEST(Loader, RefusesElfSegmentsBelowOneMiBOrOutsideRamAndEntriesOutsideSegments) {
  auto memory = ram(64ull << 20);
  EXPECT_FALSE(boot::load_elf(memory, elf(0x8000, 0x8000)).has_value());
  EXPECT_FALSE(boot::load_elf(memory, elf(0x10000000, 0x10000000)).has_value());
  auto outside = boot::load_elf(memory, elf(0x1000000, 0xffffffff81000000));
  ASSERT_FALSE(outside.has_value());
  EXPECT_NE(outside.error().message().find("entry point"), std::string::npos);
  auto file = elf(0x1000000, 0x1000000);
  file.resize(0x210);  // the segment's bytes are cut off
  auto truncated = boot::load_elf(memory, file);
  ASSERT_FALSE(truncated.has_value());
  EXPECT_NE(truncated.error().message().find("outside"), std::string::npos);
}

TEST(Loader, PlacesTheInitramfsAsHighAsAllowed) {
  boot::LoadedKernel kernel;
  kernel.end = 0x2000000;
  kernel.header.initrd_addr_max = 0x7fffffff;
  auto at = boot::place_initramfs(kernel, 0x123456, 512ull << 20);
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(*at % 4096, 0u);
  EXPECT_LE(*at + 0x123456, 512ull << 20);
  EXPECT_GT(*at + 0x123456 + 4096, 512ull << 20);  // no higher page would fit
  kernel.header.initrd_addr_max = 0xffffff;        // below the kernel's end: no room
  EXPECT_FALSE(boot::place_initramfs(kernel, 0x1000, 512ull << 20).has_value());
}

TEST(BootParams, E820CarvesTheEbdaAndLegacyHoleAndSkipsThePciHole) {
  auto small = memory::x86::layout_for(512ull << 20);
  ASSERT_TRUE(small.has_value());
  const auto map = boot::e820_map(*small);
  ASSERT_EQ(map.size(), 3u);
  EXPECT_EQ(map[0], (boot::E820Entry{0, 0x9fc00, boot::E820Type::Ram}));
  EXPECT_EQ(map[1], (boot::E820Entry{0x9fc00, 0x100000 - 0x9fc00, boot::E820Type::Reserved}));
  EXPECT_EQ(map[2], (boot::E820Entry{0x100000, (512ull << 20) - 0x100000, boot::E820Type::Ram}));
  auto big = memory::x86::layout_for(5ull << 30);
  ASSERT_TRUE(big.has_value());
  const auto high = boot::e820_map(*big);
  ASSERT_EQ(high.size(), 4u);
  EXPECT_EQ(high[2].address + high[2].size, 3ull << 30);
  EXPECT_EQ(high[3], (boot::E820Entry{4ull << 30, 2ull << 30, boot::E820Type::Ram}));
}

TEST(BootParams, ZeroPageFieldsAtTheirSpecOffsets) {
  boot::LoadedKernel kernel;
  kernel.header.boot_flag = 0xaa55;
  kernel.header.cmdline_size = 2048;
  boot::BootParamsInput input{
      .cmdline_address = 0x20000,
      .cmdline_size = 100,
      .initramfs_address = 0x1'2345'6000,
      .initramfs_size = 0x10000,
      .e820 = {{0, 0x9fc00, boot::E820Type::Ram}, {0x9fc00, 0x60400, boot::E820Type::Reserved}}};
  auto params = boot::make_boot_params(kernel, input);
  ASSERT_TRUE(params.has_value());
  std::vector<std::byte> page(sizeof(boot_params));
  std::memcpy(page.data(), &*params, page.size());
  auto at = [&](std::size_t offset, auto type) {
    decltype(type) v{};
    std::memcpy(&v, page.data() + offset, sizeof(v));
    return v;
  };
  EXPECT_EQ(at(0x1fe, std::uint16_t{}), 0xaa55);             // boot_flag
  EXPECT_EQ(at(0x210, std::uint8_t{}), 0xff);                // type_of_loader: undefined
  EXPECT_EQ(at(0x228, std::uint32_t{}), 0x20000u);           // cmd_line_ptr
  EXPECT_EQ(at(0x218, std::uint32_t{}), 0x23456000u);        // ramdisk_image (low half)
  EXPECT_EQ(at(0x0c0, std::uint32_t{}), 0x1u);               // ext_ramdisk_image (high half)
  EXPECT_EQ(at(0x21c, std::uint32_t{}), 0x10000u);           // ramdisk_size
  EXPECT_EQ(at(0x1e8, std::uint8_t{}), 2);                   // e820_entries
  EXPECT_EQ(at(0x2d0 + 20 + 8, std::uint64_t{}), 0x60400u);  // e820_table[1].size
  EXPECT_EQ(at(0x2d0 + 20 + 16, std::uint32_t{}), 2u);       // e820_table[1].type: reserved
  input.cmdline_size = 2049;
  EXPECT_FALSE(boot::make_boot_params(kernel, input).has_value());
}

TEST(MpTable, ChecksumsCountsAndEntries) {
  constexpr std::uint64_t base = 0x9fc00;
  auto table = boot::build_mptable(base, {.cpus = 3});
  ASSERT_TRUE(table.has_value());
  const auto& b = *table;
  auto u8 = [&](std::size_t i) { return static_cast<std::uint8_t>(b[i]); };
  auto u16 = [&](std::size_t i) { return static_cast<std::uint16_t>(u8(i) | u8(i + 1) << 8); };
  auto u32 = [&](std::size_t i) { return static_cast<std::uint32_t>(u16(i) | u16(i + 2) << 16); };
  EXPECT_EQ(std::memcmp(b.data(), "_MP_", 4), 0);
  EXPECT_EQ(u32(4), base + 16);
  EXPECT_EQ(boot::checksum_byte(std::span(b).first(16)), 0);  // the bytes sum to 0
  EXPECT_EQ(std::memcmp(b.data() + 16, "PCMP", 4), 0);
  const std::size_t length = u16(16 + 4);
  EXPECT_EQ(length, b.size() - 16);
  EXPECT_EQ(boot::checksum_byte(std::span(b).subspan(16, length)), 0);
  // Walk the entries by type and size.
  std::size_t at = 16 + boot::mp::kHeaderSize;
  int processors = 0, buses = 0, ioapics = 0, irqs = 0, lints = 0, bsp = 0;
  for (int e = 0; e < u16(16 + 34); ++e) {
    switch (u8(at)) {
      case boot::mp::kEntryProcessor:
        EXPECT_EQ(u8(at + 1), processors);  // APIC IDs 0..n-1
        bsp += (u8(at + 3) & 2) != 0 ? 1 : 0;
        ++processors;
        at += boot::mp::kProcessorEntrySize;
        continue;
      case boot::mp::kEntryBus:
        ++buses;
        break;
      case boot::mp::kEntryIoapic:
        ++ioapics;
        EXPECT_EQ(u8(at + 1), 3);  // the first ID after the CPUs'
        EXPECT_EQ(u32(at + 4), 0xfec00000u);
        break;
      case boot::mp::kEntryIoInterrupt:
        EXPECT_EQ(u8(at + 5), u8(at + 7));  // ISA IRQ n on pin n
        ++irqs;
        break;
      case boot::mp::kEntryLocalInterrupt:
        ++lints;
        break;
      default:
        FAIL() << "entry type " << int(u8(at));
    }
    at += boot::mp::kSmallEntrySize;
  }
  EXPECT_EQ(at, b.size());
  EXPECT_EQ(processors, 3);
  EXPECT_EQ(bsp, 1);
  EXPECT_EQ(buses, 2);
  EXPECT_EQ(ioapics, 1);
  EXPECT_EQ(irqs, 16);
  EXPECT_EQ(lints, 2);
  EXPECT_FALSE(boot::build_mptable(base, {.cpus = 0}).has_value());
  EXPECT_FALSE(boot::build_mptable(base, {.cpus = boot::kMaxCpus + 1}).has_value());
}

kvm_cpuid_entry2 leaf(std::uint32_t function, std::uint32_t index = 0) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  e.eax = e.ebx = e.ecx = e.edx = 0xffffffff;
  return e;
}

TEST(Cpuid, ApicIdsTopologyAndHiddenFeatures) {
  const std::vector<kvm_cpuid_entry2> supported = {leaf(1),          leaf(0xb, 0),     leaf(0xb, 1),    leaf(0xb, 2),
                                                   leaf(0x80000001), leaf(0x80000008), leaf(0x8000001e)};
  const auto out = x86::cpuid_for_vcpu(supported, 3, 4);
  auto find = [&](std::uint32_t f, std::uint32_t i = 0) {
    for (const auto& e : out) {
      if (e.function == f && e.index == i)
        return e;
    }
    ADD_FAILURE() << "no leaf " << f;
    return kvm_cpuid_entry2{};
  };
  EXPECT_EQ(find(1).ebx >> 24, 3u);
  EXPECT_EQ((find(1).ebx >> 16) & 0xff, 4u);
  EXPECT_NE(find(1).ecx & x86::cpuid::kEcxHypervisor, 0u);
  EXPECT_EQ(find(1).ecx & x86::cpuid::kEcxVmx, 0u);
  EXPECT_EQ(find(0xb, 0).edx, 3u);
  EXPECT_EQ(find(0xb, 1).edx, 3u);
  EXPECT_EQ(find(0xb, 1).ebx, 4u);
  EXPECT_EQ((find(0xb, 1).ecx >> 8) & 0xff, x86::cpuid::kLevelCore);
  EXPECT_EQ(find(0xb, 1).eax, 2u);  // two bits of APIC ID for 4 cores
  EXPECT_EQ((find(0xb, 2).ecx >> 8) & 0xff, 0u);
  EXPECT_EQ(find(0x80000001).ecx & (x86::cpuid::kExtEcxSvm | x86::cpuid::kExtEcxTopoext), 0u);
  EXPECT_EQ(find(0x80000008).ecx & 0xff, 3u);
  for (const auto& e : out) {
    EXPECT_NE(e.function, x86::cpuid::kLeafAmdTopology);
  }
}

class CountingLine final : public devices::IrqLine {
 public:
  Result<void> raise() override {
    ++raises;
    return {};
  }
  Result<void> lower() override { return {}; }
  int raises = 0;
};

TEST(I8042, ResetLineSelfTestConfigByteAndKeyboardAcks) {
  CountingLine line;
  int resets = 0;
  devices::I8042 kbc(line, [&] { ++resets; });
  auto data = kbc.data_port();
  auto command = kbc.command_port();
  auto out = [](devices::BusDevice& d, std::uint8_t v) { d.write(0, std::span(&v, 1)); };
  auto in = [](devices::BusDevice& d) {
    std::uint8_t v = 0;
    d.read(0, std::span(&v, 1));
    return v;
  };
  EXPECT_EQ(in(*command) & devices::i8042::kStatusInputFull, 0);
  out(*command, devices::i8042::kCmdSelfTest);
  EXPECT_NE(in(*command) & devices::i8042::kStatusOutputFull, 0);
  EXPECT_EQ(in(*data), 0x55);
  EXPECT_EQ(in(*command) & devices::i8042::kStatusOutputFull, 0);
  out(*command, devices::i8042::kCmdWriteCtr);
  out(*data, 0x00);  // keyboard interrupt off
  out(*command, devices::i8042::kCmdReadCtr);
  EXPECT_EQ(in(*data), 0x00);
  out(*data, 0xf4);  // a keyboard command: acknowledged, but no IRQ while the config byte forbids it
  EXPECT_EQ(in(*data), devices::i8042::kKeyboardAck);
  EXPECT_EQ(line.raises, 0);
  out(*command, devices::i8042::kCmdWriteCtr);
  out(*data, devices::i8042::kCtrKeyboardIrq);
  out(*data, 0xf4);
  EXPECT_EQ(line.raises, 1);
  EXPECT_EQ(resets, 0);
  out(*command, devices::i8042::kCmdWriteOutput);
  out(*data, 0x01);  // reset line high: nothing happens
  EXPECT_EQ(resets, 0);
  out(*command, devices::i8042::kCmdPulseReset);
  EXPECT_EQ(resets, 1);
  out(*command, devices::i8042::kCmdWriteOutput);
  out(*data, 0x00);  // reset line low
  EXPECT_EQ(resets, 2);
  EXPECT_EQ(kbc.resets(), 2u);
}

TEST(Cmos, BcdTimeStatusRegistersAndNvram) {
  std::tm tm{};
  tm.tm_year = 2026 - 1900;
  tm.tm_mon = 10;
  tm.tm_mday = 22;
  tm.tm_hour = 13;
  tm.tm_min = 45;
  tm.tm_sec = 56;
  const auto when = std::chrono::system_clock::from_time_t(timegm(&tm));
  devices::Cmos cmos([when] { return when; });
  auto reg = [&](std::uint8_t index) {
    cmos.write(0, std::span(&index, 1));
    std::uint8_t v = 0;
    cmos.read(1, std::span(&v, 1));
    return v;
  };
  EXPECT_EQ(reg(devices::cmos::kSeconds), 0x56);
  EXPECT_EQ(reg(devices::cmos::kMinutes), 0x45);
  EXPECT_EQ(reg(devices::cmos::kHours), 0x13);
  EXPECT_EQ(reg(devices::cmos::kDay), 0x22);
  EXPECT_EQ(reg(devices::cmos::kMonth), 0x11);
  EXPECT_EQ(reg(devices::cmos::kYear), 0x26);
  EXPECT_EQ(reg(devices::cmos::kCentury), 0x20);
  EXPECT_EQ(reg(devices::cmos::kWeekday), 0x01);  // 2026-11-22 is a Sunday
  EXPECT_EQ(reg(devices::cmos::kStatusA) & 0x80, 0);
  EXPECT_EQ(reg(devices::cmos::kStatusD), 0x80);
  EXPECT_EQ(reg(0x80 | devices::cmos::kSeconds), 0x56);  // bit 7 is the NMI mask
  std::uint8_t index = 0x40, value = 0x5a;
  cmos.write(0, std::span(&index, 1));
  cmos.write(1, std::span(&value, 1));
  EXPECT_EQ(reg(0x40), 0x5a);
  index = devices::cmos::kSeconds;
  cmos.write(0, std::span(&index, 1));
  cmos.write(1, std::span(&value, 1));
  EXPECT_EQ(reg(devices::cmos::kSeconds), 0x56);  // the clock ignores writes
}

TEST(Topology, DotNamesPciFunctionsAndRendersWithGraphviz) {
  machine::Topology t;
  t.vcpus = 2;
  t.ram_bytes = 512ull << 20;
  t.bus_devices.push_back({"io", "serial0 (COM1)", 0x3f8, 8});
  machine::TopologyPciFunction f;
  f.slot = 1;
  f.name = "virtio-rng";
  f.vendor = 0x1af4;
  f.device = 0x1044;
  f.bars.push_back({0, false, 0xc0000000, 0x4000});
  f.vectors.push_back({.vector = 1, .gsi = 25, .address = 0xfee00000, .data = 0x4021});
  t.pci.push_back(f);
  const auto dot = machine::to_dot(t);
  EXPECT_NE(dot.find("00:01.0 1af4:1044"), std::string::npos);
  EXPECT_NE(dot.find("vcpu1"), std::string::npos);
  EXPECT_NE(dot.find("GSI 25"), std::string::npos);
  EXPECT_NE(dot.find("0xc0000000"), std::string::npos);
  const std::string path = ::testing::TempDir() + "/topology.dot";
  std::ofstream(path) << dot;
  EXPECT_EQ(std::system(("dot -Tsvg -o /dev/null " + path).c_str()), 0) << "dot refused:\n" << dot;
}

}  // namespace
}  // namespace vmm
