#pragma once
/// @file
/// @brief Loading a Linux kernel into guest memory: a bzImage (the x86 boot protocol's setup header) or an
///        uncompressed ELF `vmlinux`. Both end at the kernel's 64-bit entry point with a boot_params ("zero page").

#include <asm/bootparam.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace vmm::boot {

/// @brief The two kernel file formats final-vmm boots.
enum class KernelFormat {
  BzImage,  ///< The boot sector + setup code + compressed kernel that distributions ship (/boot/vmlinuz-*).
  Elf,      ///< The uncompressed kernel the build leaves at the top of the tree (`vmlinux`).
};

/// @brief "bzImage" or "ELF vmlinux".
[[nodiscard]] const char* to_string(KernelFormat format);

/// @brief The oldest boot protocol final-vmm accepts: 2.12 (Linux 3.8) added `xloadflags`, which says whether the
/// kernel has the 64-bit entry point this loader jumps to.
inline constexpr std::uint16_t kMinBootProtocol = 0x020c;

/// @brief A kernel placed in guest memory, and what the rest of boot needs to know about it.
struct LoadedKernel {
  KernelFormat format = KernelFormat::BzImage;  ///< What the file was.
  std::uint64_t entry = 0;                      ///< Guest-physical 64-bit entry point (RIP at the first KVM_RUN).
  std::uint64_t load_address = 0;               ///< First guest-physical byte written.
  /// One past the last byte the kernel claims: for a bzImage, the load address plus `init_size` (the decompressor
  /// works in that space); for an ELF, the end of its last segment. The initramfs must go above it.
  std::uint64_t end = 0;
  /// The setup header that goes into boot_params: a bzImage's own (copied from the file), or one made up for an ELF
  /// kernel, which has none (as Firecracker does).
  setup_header header{};
  std::uint16_t protocol = 0;              ///< Boot protocol version (0x020f = 2.15); 0 for an ELF kernel.
  std::optional<std::uint32_t> pvh_entry;  ///< An ELF kernel's PVH entry (XEN_ELFNOTE_PHYS32_ENTRY), if it has one.
  std::string version;                     ///< The kernel's version string, when the file says ("6.1.0-...").
};

/// @brief Reads a whole file (a kernel or an initramfs), refusing one larger than `max_bytes`.
[[nodiscard]] Result<std::vector<std::byte>> read_file(const std::string& path, std::uint64_t max_bytes);

/// @brief Which format `file` is: ELF magic, or the boot protocol's "HdrS" and 0xAA55 boot flag. Anything else is
///        refused with an error that says what was found instead.
[[nodiscard]] Result<KernelFormat> detect_kernel_format(std::span<const std::byte> file);

/// @brief Validates a bzImage's setup header (boot flag, "HdrS", protocol >= 2.12, LOADED_HIGH, XLF_KERNEL_64,
///        sizes consistent with the file) and copies its protected-mode part to `layout::kKernelLoad`. Guest memory
///        is not touched when validation fails.
[[nodiscard]] Result<LoadedKernel> load_bzimage(const memory::GuestMemory& memory, std::span<const std::byte> file);

/// @brief Validates a 64-bit x86 ELF executable (header, every program header inside the file, segments inside
///        guest RAM and not overlapping what the VMM writes below 1 MiB) and copies its PT_LOAD segments to their
///        physical addresses, zeroing the rest of each segment (.bss).
[[nodiscard]] Result<LoadedKernel> load_elf(const memory::GuestMemory& memory, std::span<const std::byte> file);

/// @brief `detect_kernel_format`, then the right loader.
[[nodiscard]] Result<LoadedKernel> load_kernel(const memory::GuestMemory& memory, std::span<const std::byte> file);

/// @brief Where to put an initramfs of `size` bytes: the highest page-aligned address such that it ends below both
///        `ram_end` and the kernel's `initrd_addr_max` + 1, and starts at or above `kernel.end`. This is what the
///        boot protocol asks ("as high as possible, below initrd_addr_max"), so the decompressed kernel never
///        overwrites it. Fails, with the sizes, when it does not fit.
[[nodiscard]] Result<std::uint64_t> place_initramfs(const LoadedKernel& kernel, std::uint64_t size,
                                                    std::uint64_t ram_end);

}  // namespace vmm::boot
