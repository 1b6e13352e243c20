#include "vmm/boot/boot_params.hpp"

#include <fmt/format.h>

#include <cstring>

#include "vmm/boot/layout.hpp"

namespace vmm::boot {

std::vector<E820Entry> e820_map(const memory::x86::Layout& layout) {
  std::vector<E820Entry> map;
  for (const auto& range : layout.ram) {
    const std::uint64_t start = range.start.raw();
    const std::uint64_t end = range.end().raw();
    if (start < layout::kLegacyHoleEnd) {
      // Low RAM: usable up to the EBDA; [EBDA, 1 MiB) is firmware territory on a PC (the MP table lives at its
      // start), whether or not RAM backs it; RAM resumes at 1 MiB.
      map.push_back({start, std::min(end, layout::kEbda) - start, E820Type::Ram});
      map.push_back({layout::kEbda, layout::kLegacyHoleEnd - layout::kEbda, E820Type::Reserved});
      if (end > layout::kLegacyHoleEnd) {
        map.push_back({layout::kLegacyHoleEnd, end - layout::kLegacyHoleEnd, E820Type::Ram});
      }
    } else {
      map.push_back({start, end - start, E820Type::Ram});
    }
  }
  return map;
}

Result<boot_params> make_boot_params(const LoadedKernel& kernel, const BootParamsInput& input) {
  boot_params params;
  std::memset(&params, 0, sizeof(params));
  params.hdr = kernel.header;
  auto& hdr = params.hdr;
  // 0xff: "undefined" boot loader (boot.rst: type_of_loader). Loaders without an assigned ID use it.
  hdr.type_of_loader = 0xff;
  // No real-mode setup code runs (64-bit entry), so the heap fields mean nothing; CAN_USE_HEAP stays clear.
  hdr.loadflags &= static_cast<std::uint8_t>(~CAN_USE_HEAP);

  const std::uint32_t max_cmdline = hdr.cmdline_size != 0 ? hdr.cmdline_size : 255;
  if (input.cmdline_size > max_cmdline) {
    return logic_error("boot_params", fmt::format("the command line is {} bytes; this kernel accepts at most {}",
                                                  input.cmdline_size, max_cmdline));
  }
  hdr.cmd_line_ptr = static_cast<std::uint32_t>(input.cmdline_address);
  params.ext_cmd_line_ptr = static_cast<std::uint32_t>(input.cmdline_address >> 32);

  if (input.initramfs_address) {
    hdr.ramdisk_image = static_cast<std::uint32_t>(*input.initramfs_address);
    params.ext_ramdisk_image = static_cast<std::uint32_t>(*input.initramfs_address >> 32);
    hdr.ramdisk_size = static_cast<std::uint32_t>(input.initramfs_size);
    params.ext_ramdisk_size = static_cast<std::uint32_t>(input.initramfs_size >> 32);
  }

  if (input.e820.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    return logic_error("boot_params", fmt::format("{} e820 entries; the zero page holds {}", input.e820.size(),
                                                  E820_MAX_ENTRIES_ZEROPAGE));
  }
  params.e820_entries = static_cast<std::uint8_t>(input.e820.size());
  for (std::size_t i = 0; i < input.e820.size(); ++i) {
    params.e820_table[i].addr = input.e820[i].address;
    params.e820_table[i].size = input.e820[i].size;
    params.e820_table[i].type = static_cast<std::uint32_t>(input.e820[i].type);
  }
  return params;
}

Result<void> write_boot_gdt(const memory::GuestMemory& memory, memory::GuestAddress at) {
  // Flat 4 GiB descriptors, marked accessed so the CPU never writes them back: code is 64-bit (L=1) execute/read,
  // data is read/write. Slots 0 and 1 are unused so that the selectors land where the protocol says.
  constexpr std::uint64_t kGdt[] = {
      0, 0,
      0x00af9b000000ffff,  // 0x10 __BOOT_CS: P=1 DPL=0 S=1 type=0xb, L=1 D=0 G=1
      0x00cf93000000ffff,  // 0x18 __BOOT_DS: P=1 DPL=0 S=1 type=0x3, D/B=1 G=1
  };
  static_assert(layout::kBootCs == 2 * 8 && layout::kBootDs == 3 * 8);
  return memory.write(at, std::as_bytes(std::span(kGdt)));
}

}  // namespace vmm::boot
