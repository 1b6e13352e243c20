// Lab 09, exercise 1: reference solution.
#include <fmt/format.h>

#include <cstring>

#include "lab09.hpp"

namespace lab09 {

vmm::Result<boot_params> zero_page(const setup_header& header, const LoaderInfo& loader,
                                   std::span<const vmm::boot::E820Entry> e820) {
  if (loader.cmdline_length > header.cmdline_size) {
    return vmm::logic_error("zero_page", fmt::format("a {}-byte command line; the kernel takes {}",
                                                     loader.cmdline_length, std::uint32_t{header.cmdline_size}));
  }
  if (e820.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    return vmm::logic_error("zero_page", fmt::format("{} e820 entries", e820.size()));
  }
  boot_params params;
  std::memset(&params, 0, sizeof(params));
  params.hdr = header;
  params.hdr.type_of_loader = 0xff;  // "undefined": loaders without an assigned ID
  params.hdr.cmd_line_ptr = static_cast<std::uint32_t>(loader.cmdline_address);
  params.ext_cmd_line_ptr = static_cast<std::uint32_t>(loader.cmdline_address >> 32);
  if (loader.initramfs_address) {
    params.hdr.ramdisk_image = static_cast<std::uint32_t>(*loader.initramfs_address);
    params.ext_ramdisk_image = static_cast<std::uint32_t>(*loader.initramfs_address >> 32);
    params.hdr.ramdisk_size = static_cast<std::uint32_t>(loader.initramfs_size);
    params.ext_ramdisk_size = static_cast<std::uint32_t>(loader.initramfs_size >> 32);
  }
  params.e820_entries = static_cast<std::uint8_t>(e820.size());
  for (std::size_t i = 0; i < e820.size(); ++i) {
    params.e820_table[i].addr = e820[i].address;
    params.e820_table[i].size = e820[i].size;
    params.e820_table[i].type = static_cast<std::uint32_t>(e820[i].type);
  }
  return params;
}

}  // namespace lab09
