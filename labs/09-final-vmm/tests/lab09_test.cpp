// Lab 09's checks: each exercise against the spec, and against final-vmm's own code for the same input.
#include <gtest/gtest.h>

#include <cstring>

#include "lab09.hpp"
#include "vmm/boot/mptable.hpp"
#include "vmm/x86/cpuid.hpp"

namespace {

setup_header kernel_header() {
  setup_header h{};
  h.boot_flag = 0xaa55;
  h.header = 0x53726448;
  h.version = 0x020f;
  h.cmdline_size = 2048;
  h.initrd_addr_max = 0x7fffffff;
  return h;
}

template <typename T>
T field(const boot_params& params, std::size_t offset) {
  T value{};
  std::memcpy(&value, reinterpret_cast<const std::byte*>(&params) + offset, sizeof(T));
  return value;
}

TEST(Exercise1, TheLoaderFieldsAreAtTheirOffsetsInTheZeroPage) {
  const std::vector<vmm::boot::E820Entry> e820 = {{0, 0x9fc00, vmm::boot::E820Type::Ram},
                                                  {0x100000, 0x1ff00000, vmm::boot::E820Type::Ram}};
  auto params = lab09::zero_page(
      kernel_header(),
      {.cmdline_address = 0x20000, .cmdline_length = 30, .initramfs_address = 0x1f000000, .initramfs_size = 0x123456},
      e820);
  ASSERT_TRUE(params.has_value()) << params.error().message();
  EXPECT_EQ(field<std::uint16_t>(*params, 0x1fe), 0xaa55) << "the kernel's own header must be copied";
  EXPECT_EQ(field<std::uint8_t>(*params, 0x210), 0xff) << "type_of_loader: 0xff, undefined loader";
  EXPECT_EQ(field<std::uint32_t>(*params, 0x228), 0x20000u) << "cmd_line_ptr";
  EXPECT_EQ(field<std::uint32_t>(*params, 0x218), 0x1f000000u) << "ramdisk_image";
  EXPECT_EQ(field<std::uint32_t>(*params, 0x21c), 0x123456u) << "ramdisk_size";
  EXPECT_EQ(field<std::uint8_t>(*params, 0x1e8), 2) << "e820_entries";
  EXPECT_EQ(field<std::uint64_t>(*params, 0x2d0 + 20), 0x100000u) << "e820_table[1].addr";
  EXPECT_EQ(field<std::uint32_t>(*params, 0x2d0 + 20 + 16), 1u) << "e820_table[1].type";
}

TEST(Exercise1, AddressesAbove4GiBPutTheirHighHalvesInTheExtFields) {
  auto params = lab09::zero_page(kernel_header(),
                                 {.cmdline_address = 0x2'0000'1000,
                                  .cmdline_length = 5,
                                  .initramfs_address = 0x3'8000'0000,
                                  .initramfs_size = 0x1000},
                                 {});
  ASSERT_TRUE(params.has_value()) << params.error().message();
  EXPECT_EQ(field<std::uint32_t>(*params, 0x228), 0x1000u);
  EXPECT_EQ(field<std::uint32_t>(*params, 0xc8), 0x2u) << "ext_cmd_line_ptr";
  EXPECT_EQ(field<std::uint32_t>(*params, 0x218), 0x80000000u);
  EXPECT_EQ(field<std::uint32_t>(*params, 0xc0), 0x3u) << "ext_ramdisk_image";
}

TEST(Exercise1, YoursEqualsFinalVmmsAndRefusesWhatItRefuses) {
  const setup_header header = kernel_header();
  vmm::boot::LoadedKernel kernel;
  kernel.header = header;
  const std::vector<vmm::boot::E820Entry> e820 = {{0, 0x9fc00, vmm::boot::E820Type::Ram},
                                                  {0x9fc00, 0x60400, vmm::boot::E820Type::Reserved}};
  auto reference = vmm::boot::make_boot_params(kernel, {.cmdline_address = 0x20000,
                                                        .cmdline_size = 42,
                                                        .initramfs_address = std::nullopt,
                                                        .initramfs_size = 0,
                                                        .e820 = e820});
  auto yours = lab09::zero_page(
      header,
      {.cmdline_address = 0x20000, .cmdline_length = 42, .initramfs_address = std::nullopt, .initramfs_size = 0}, e820);
  ASSERT_TRUE(reference.has_value());
  ASSERT_TRUE(yours.has_value()) << yours.error().message();
  EXPECT_EQ(std::memcmp(&*reference, &*yours, sizeof(boot_params)), 0);
  EXPECT_FALSE(
      lab09::zero_page(
          header,
          {.cmdline_address = 0x20000, .cmdline_length = 2049, .initramfs_address = std::nullopt, .initramfs_size = 0},
          e820)
          .has_value())
      << "a command line longer than cmdline_size";
  const std::vector<vmm::boot::E820Entry> too_many(E820_MAX_ENTRIES_ZEROPAGE + 1);
  EXPECT_FALSE(
      lab09::zero_page(
          header,
          {.cmdline_address = 0x20000, .cmdline_length = 1, .initramfs_address = std::nullopt, .initramfs_size = 0},
          too_many)
          .has_value());
}

TEST(Exercise2, TheFloatingPointerHasItsSignaturePointerAndAZeroSum) {
  const auto p = lab09::mp_floating_pointer(0x9fc10);
  EXPECT_EQ(std::memcmp(p.data(), "_MP_", 4), 0);
  EXPECT_EQ(p[4] | p[5] << 8 | p[6] << 16 | p[7] << 24, 0x9fc10);
  EXPECT_EQ(p[8], 1);
  EXPECT_EQ(p[9], 4);
  unsigned sum = 0;
  for (const auto byte : p) {
    sum += byte;
  }
  EXPECT_EQ(sum % 256, 0u) << "Linux ignores a floating pointer whose bytes do not sum to 0";
}

TEST(Exercise2, YoursIsTheOneFinalVmmWrites) {
  auto table = vmm::boot::build_mptable(0x9fc00, {.cpus = 2});
  ASSERT_TRUE(table.has_value());
  const auto p = lab09::mp_floating_pointer(0x9fc10);
  EXPECT_EQ(std::memcmp(p.data(), table->data(), 16), 0);
}

TEST(Exercise3, EachVcpuSeesItsOwnApicIdAndTheCount) {
  kvm_cpuid_entry2 kvm{};
  kvm.function = 1;
  kvm.eax = 0x800f12;
  kvm.ebx = 0xaabb1234;
  kvm.ecx = 0x12345678;
  kvm.edx = 0x0f8bfbff;
  for (std::uint32_t i = 0; i < 4; ++i) {
    const auto leaf = lab09::cpuid_leaf1(kvm, i, 4);
    EXPECT_EQ(leaf.ebx >> 24, i) << "vCPU " << i << "'s initial APIC ID";
    EXPECT_EQ((leaf.ebx >> 16) & 0xff, 4u);
    EXPECT_EQ(leaf.ebx & 0xffff, 0x1234u) << "the low half of EBX (brand, CLFLUSH size) stays";
    EXPECT_NE(leaf.edx & (1u << 28), 0u) << "HTT: EBX[23:16] is valid";
    EXPECT_NE(leaf.ecx & (1u << 31), 0u) << "the hypervisor bit";
    EXPECT_EQ(leaf.eax, kvm.eax);
  }
}

TEST(Exercise3, YoursAgreesWithFinalVmmsCpuid) {
  kvm_cpuid_entry2 kvm{};
  kvm.function = 1;
  kvm.ebx = 0x00010800;
  kvm.edx = 0x178bfbff;
  const std::vector<kvm_cpuid_entry2> supported = {kvm};
  const auto reference = vmm::x86::cpuid_for_vcpu(supported, 2, 3).front();
  const auto yours = lab09::cpuid_leaf1(kvm, 2, 3);
  EXPECT_EQ(yours.ebx, reference.ebx);
  EXPECT_EQ(yours.edx, reference.edx);
  EXPECT_EQ(yours.ecx & (1u << 31), reference.ecx & (1u << 31));
}

}  // namespace
