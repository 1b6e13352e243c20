#include "vmm/boot/linux_loader.hpp"

#include <elf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "vmm/boot/layout.hpp"
#include "vmm/fd.hpp"

namespace vmm::boot {
namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::size_t kSetupHeaderOffset = 0x1f1;  // where struct setup_header starts in the file and the zero page
constexpr std::uint16_t kBootFlag = 0xaa55;
constexpr std::uint32_t kHdrS = 0x53726448;  // "HdrS", little-endian
constexpr std::uint32_t kPvhNoteType = 18;   // XEN_ELFNOTE_PHYS32_ENTRY

template <typename T>
T read_at(std::span<const std::byte> bytes, std::size_t offset) {
  T value{};
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

std::string hex(std::uint64_t value) {
  return fmt::format("{:#x}", value);
}

// The NUL-terminated string at `offset`, at most `max` bytes, if it is inside the file.
std::string c_string_at(std::span<const std::byte> bytes, std::size_t offset, std::size_t max) {
  std::string text;
  for (std::size_t i = offset; i < bytes.size() && text.size() < max; ++i) {
    const auto c = static_cast<char>(bytes[i]);
    if (c == '\0') {
      break;
    }
    text.push_back(c);
  }
  return text;
}

// Every byte of [address, address + size) must be RAM, and none of it below 1 MiB: that is where the zero page,
// the command line, the page tables and the MP table go.
Result<void> check_destination(const memory::GuestMemory& memory, std::uint64_t address, std::uint64_t size,
                               std::string_view what) {
  if (address < layout::kLegacyHoleEnd) {
    return logic_error("load kernel",
                       fmt::format("{} at {} is below 1 MiB, where the VMM's boot structures go", what, hex(address)));
  }
  if (auto rc = memory.check_range(memory::GuestAddress{address}, size); !rc) {
    return logic_error("load kernel", fmt::format("{} [{}, +{:#x}) is not inside guest RAM ({} MiB): {}", what,
                                                  hex(address), size, memory.total_size() >> 20, rc.error().message()));
  }
  return {};
}

}  // namespace

const char* to_string(KernelFormat format) {
  switch (format) {
    case KernelFormat::BzImage:
      return "bzImage";
    case KernelFormat::Elf:
      return "ELF vmlinux";
  }
  return "?";
}

Result<std::vector<std::byte>> read_file(const std::string& path, std::uint64_t max_bytes) {
  auto fd = Fd::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (!fd) {
    return std::unexpected(fd.error().with_context(path));
  }
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) {
    return sys_error("fstat", errno, path);
  }
  if (!S_ISREG(st.st_mode)) {
    return logic_error("read file", fmt::format("{} is not a regular file", path));
  }
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    return logic_error("read file",
                       fmt::format("{} is {} bytes, more than the {} this VMM accepts", path, st.st_size, max_bytes));
  }
  std::vector<std::byte> bytes(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pread(fd->get(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return sys_error("pread", errno, path);
    }
    if (n == 0) {
      bytes.resize(done);  // the file shrank under us: use what is there, the format checks judge it
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  return bytes;
}

Result<KernelFormat> detect_kernel_format(std::span<const std::byte> file) {
  if (file.size() >= SELFMAG && std::memcmp(file.data(), ELFMAG, SELFMAG) == 0) {
    return KernelFormat::Elf;
  }
  if (file.size() >= kSetupHeaderOffset + sizeof(setup_header)) {
    const auto flag = read_at<std::uint16_t>(file, 0x1fe);
    const auto magic = read_at<std::uint32_t>(file, 0x202);
    if (flag == kBootFlag && magic == kHdrS) {
      return KernelFormat::BzImage;
    }
    if (flag == kBootFlag) {
      return logic_error("load kernel",
                         "a boot sector without the \"HdrS\" setup header: a kernel older than boot "
                         "protocol 2.00, or not a Linux kernel");
    }
  }
  std::string start;
  for (std::size_t i = 0; i < std::min<std::size_t>(file.size(), 8); ++i) {
    start += fmt::format("{:02x}", static_cast<unsigned>(file[i]));
  }
  return logic_error("load kernel",
                     fmt::format("not a bzImage (no 0xAA55 boot flag and \"HdrS\" at 0x1fe/0x202) and not an ELF file "
                                 "({} bytes, starting {})",
                                 file.size(), start.empty() ? "with nothing" : start));
}

Result<LoadedKernel> load_bzimage(const memory::GuestMemory& memory, std::span<const std::byte> file) {
  if (file.size() < kSetupHeaderOffset + sizeof(setup_header)) {
    return logic_error("load bzImage", fmt::format("{} bytes: too short for a setup header", file.size()));
  }
  LoadedKernel kernel;
  kernel.format = KernelFormat::BzImage;
  // The header's length is in the file: the 2-byte jump at 0x200 skips it, so 0x202 + jump offset is its end. Copy
  // only that much; fields past it do not exist in this protocol version and must stay 0.
  const std::size_t header_end = 0x202 + static_cast<std::uint8_t>(file[0x201]);
  const std::size_t copy = std::min(header_end, kSetupHeaderOffset + sizeof(setup_header)) - kSetupHeaderOffset;
  std::memcpy(&kernel.header, file.data() + kSetupHeaderOffset, copy);
  auto& hdr = kernel.header;

  if (hdr.boot_flag != kBootFlag || hdr.header != kHdrS) {
    return logic_error("load bzImage", "no 0xAA55 boot flag or \"HdrS\" magic");
  }
  kernel.protocol = hdr.version;
  if (hdr.version < kMinBootProtocol) {
    return logic_error("load bzImage", fmt::format("boot protocol {}.{:02}: final-vmm needs 2.12 or newer (Linux 3.8+)",
                                                   hdr.version >> 8, std::uint16_t{hdr.version} & 0xff));
  }
  if ((hdr.loadflags & LOADED_HIGH) == 0) {
    return logic_error("load bzImage", "LOADED_HIGH is clear: a zImage that wants to be loaded at 0x10000");
  }
  if ((hdr.xloadflags & XLF_KERNEL_64) == 0) {
    return logic_error("load bzImage", "XLF_KERNEL_64 is clear: the kernel has no 64-bit entry point");
  }
  // setup_sects 0 means 4, for compatibility with ancient kernels. The boot sector is one more sector.
  const std::uint64_t setup_sects = hdr.setup_sects == 0 ? 4 : hdr.setup_sects;
  const std::uint64_t setup_bytes = (setup_sects + 1) * 512;
  if (setup_bytes >= file.size()) {
    return logic_error("load bzImage", fmt::format("setup_sects {} puts the kernel at byte {}, past the end of the "
                                                   "{}-byte file (truncated?)",
                                                   setup_sects, setup_bytes, file.size()));
  }
  // syssize counts 16-byte paragraphs of protected-mode code; a file shorter than that was cut off.
  const std::uint64_t kernel_bytes = file.size() - setup_bytes;
  if (static_cast<std::uint64_t>(hdr.syssize) * 16 > kernel_bytes) {
    return logic_error("load bzImage", fmt::format("the header says the kernel is {} bytes but the file holds {} after "
                                                   "its setup code: truncated",
                                                   static_cast<std::uint64_t>(hdr.syssize) * 16, kernel_bytes));
  }
  if (hdr.init_size < kernel_bytes) {
    return logic_error("load bzImage", fmt::format("init_size {:#x} is smaller than the kernel itself ({:#x} bytes)",
                                                   std::uint32_t{hdr.init_size}, kernel_bytes));
  }
  kernel.load_address = layout::kKernelLoad;
  // A relocatable kernel's decompressor moves itself up to its preferred address (LOAD_PHYSICAL_ADDR, normally
  // 16 MiB) and works in init_size bytes from there; it needs that much RAM.
  const std::uint64_t runs_at =
      (hdr.relocatable_kernel != 0 && hdr.pref_address > kernel.load_address) ? hdr.pref_address : kernel.load_address;
  kernel.end = runs_at + hdr.init_size;
  if (auto rc = check_destination(memory, kernel.load_address, kernel_bytes, "the kernel"); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = memory.check_range(memory::GuestAddress{runs_at}, hdr.init_size); !rc) {
    return logic_error("load bzImage", fmt::format("the kernel decompresses in [{}, {}) (init_size {} MiB), beyond "
                                                   "guest RAM: give the VM more memory",
                                                   hex(runs_at), hex(kernel.end), std::uint32_t{hdr.init_size} >> 20));
  }
  if (auto rc = memory.write(memory::GuestAddress{kernel.load_address}, file.subspan(setup_bytes)); !rc) {
    return std::unexpected(rc.error());
  }
  // The 64-bit entry is 0x200 past the start of the protected-mode code (boot.rst, "64-bit Boot Protocol").
  kernel.entry = kernel.load_address + 0x200;
  hdr.code32_start = static_cast<std::uint32_t>(kernel.load_address);
  if (hdr.kernel_version != 0 && hdr.kernel_version + 0x200u < file.size()) {
    kernel.version = c_string_at(file, hdr.kernel_version + 0x200u, 128);
  }
  return kernel;
}

Result<LoadedKernel> load_elf(const memory::GuestMemory& memory, std::span<const std::byte> file) {
  if (file.size() < sizeof(Elf64_Ehdr)) {
    return logic_error("load ELF", fmt::format("{} bytes: too short for an ELF header", file.size()));
  }
  const auto ehdr = read_at<Elf64_Ehdr>(file, 0);
  if (ehdr.e_ident[EI_CLASS] != ELFCLASS64 || ehdr.e_ident[EI_DATA] != ELFDATA2LSB) {
    return logic_error("load ELF", "not a 64-bit little-endian ELF file");
  }
  if (ehdr.e_machine != EM_X86_64) {
    return logic_error("load ELF", fmt::format("e_machine {}: not an x86-64 kernel", ehdr.e_machine));
  }
  if (ehdr.e_type != ET_EXEC) {
    return logic_error("load ELF", fmt::format("e_type {}: not an executable (a vmlinux is ET_EXEC)", ehdr.e_type));
  }
  if (ehdr.e_phentsize != sizeof(Elf64_Phdr) || ehdr.e_phnum == 0 || ehdr.e_phoff > file.size() ||
      static_cast<std::uint64_t>(ehdr.e_phnum) * sizeof(Elf64_Phdr) > file.size() - ehdr.e_phoff) {
    return logic_error("load ELF", fmt::format("program headers ({} of {} bytes at {}) do not fit in the {}-byte file",
                                               ehdr.e_phnum, ehdr.e_phentsize, ehdr.e_phoff, file.size()));
  }
  std::vector<Elf64_Phdr> loads;
  LoadedKernel kernel;
  kernel.format = KernelFormat::Elf;
  for (std::uint16_t i = 0; i < ehdr.e_phnum; ++i) {
    const auto ph = read_at<Elf64_Phdr>(file, ehdr.e_phoff + std::size_t{i} * sizeof(Elf64_Phdr));
    if (ph.p_offset > file.size() || ph.p_filesz > file.size() - ph.p_offset) {
      return logic_error("load ELF", fmt::format("segment {}: bytes [{}, +{:#x}) lie outside the {}-byte file "
                                                 "(truncated?)",
                                                 i, hex(ph.p_offset), ph.p_filesz, file.size()));
    }
    if (ph.p_type == PT_NOTE) {
      // Notes: 4-byte aligned {namesz, descsz, type, name, desc}. Only the PVH entry matters here.
      std::size_t at = ph.p_offset;
      const std::size_t end = ph.p_offset + ph.p_filesz;
      while (end - at >= sizeof(Elf64_Nhdr)) {
        const auto note = read_at<Elf64_Nhdr>(file, at);
        const std::size_t name = at + sizeof(Elf64_Nhdr);
        const std::uint64_t desc = name + ((std::uint64_t{note.n_namesz} + 3) & ~3ull);
        const std::uint64_t next = desc + ((std::uint64_t{note.n_descsz} + 3) & ~3ull);
        if (next > end) {
          break;
        }
        if (note.n_type == kPvhNoteType && note.n_namesz == 4 && std::memcmp(file.data() + name, "Xen", 4) == 0 &&
            note.n_descsz >= 4) {
          kernel.pvh_entry = read_at<std::uint32_t>(file, desc);
        }
        at = next;
      }
    }
    if (ph.p_type != PT_LOAD) {
      continue;
    }
    if (ph.p_filesz > ph.p_memsz) {
      return logic_error("load ELF",
                         fmt::format("segment {}: p_filesz {:#x} > p_memsz {:#x}", i, ph.p_filesz, ph.p_memsz));
    }
    if (ph.p_paddr + ph.p_memsz < ph.p_paddr) {
      return logic_error("load ELF",
                         fmt::format("segment {}: [{}, +{:#x}) wraps around", i, hex(ph.p_paddr), ph.p_memsz));
    }
    if (auto rc = check_destination(memory, ph.p_paddr, ph.p_memsz, fmt::format("segment {}", i)); !rc) {
      return std::unexpected(rc.error());
    }
    loads.push_back(ph);
  }
  if (loads.empty()) {
    return logic_error("load ELF", "no PT_LOAD segment");
  }
  // A vmlinux's e_entry is the physical address of startup_64 (ENTRY(phys_startup_64) in vmlinux.lds.S), which
  // takes the same zero page in RSI as the bzImage's 64-bit entry.
  const bool entry_loaded = std::any_of(loads.begin(), loads.end(), [&](const Elf64_Phdr& ph) {
    return ehdr.e_entry >= ph.p_paddr && ehdr.e_entry - ph.p_paddr < ph.p_filesz;
  });
  if (!entry_loaded) {
    return logic_error("load ELF", fmt::format("entry point {} is not inside a loaded segment (a virtual address? "
                                               "this is not a vmlinux)",
                                               hex(ehdr.e_entry)));
  }
  // Every check passed: only now touch guest memory.
  kernel.load_address = UINT64_MAX;
  for (const auto& ph : loads) {
    const auto at = memory::GuestAddress{ph.p_paddr};
    if (auto rc = memory.write(at, file.subspan(ph.p_offset, ph.p_filesz)); !rc) {
      return std::unexpected(rc.error());
    }
    const std::vector<std::byte> zeros(ph.p_memsz - ph.p_filesz);
    if (auto rc = memory.write(memory::GuestAddress{ph.p_paddr + ph.p_filesz}, zeros); !rc) {
      return std::unexpected(rc.error());
    }
    kernel.load_address = std::min(kernel.load_address, ph.p_paddr);
    kernel.end = std::max(kernel.end, ph.p_paddr + ph.p_memsz);
  }
  kernel.entry = ehdr.e_entry;
  // No setup header in the file: make up the fields the kernel reads (boot.rst: the "64-bit boot protocol" only
  // needs the zero page to be valid).
  auto& hdr = kernel.header;
  hdr.boot_flag = kBootFlag;
  hdr.header = kHdrS;
  hdr.version = kMinBootProtocol;
  hdr.loadflags = LOADED_HIGH;
  hdr.xloadflags = XLF_KERNEL_64;
  hdr.kernel_alignment = 0x1000000;
  hdr.initrd_addr_max = 0x7fffffff;
  hdr.cmdline_size = 2048;  // COMMAND_LINE_SIZE on x86
  return kernel;
}

Result<LoadedKernel> load_kernel(const memory::GuestMemory& memory, std::span<const std::byte> file) {
  auto format = detect_kernel_format(file);
  if (!format) {
    return std::unexpected(format.error());
  }
  return *format == KernelFormat::Elf ? load_elf(memory, file) : load_bzimage(memory, file);
}

Result<std::uint64_t> place_initramfs(const LoadedKernel& kernel, std::uint64_t size, std::uint64_t ram_end) {
  const std::uint64_t limit = std::min<std::uint64_t>(ram_end, std::uint64_t{kernel.header.initrd_addr_max} + 1);
  const std::uint64_t floor = (kernel.end + kPage - 1) & ~(kPage - 1);
  if (size == 0 || size > limit || ((limit - size) & ~(kPage - 1)) < floor) {
    return logic_error("place initramfs",
                       fmt::format("{} bytes do not fit between the kernel's end {} and {} (RAM ends at {}, "
                                   "initrd_addr_max {}): give the VM more memory",
                                   size, hex(floor), hex(limit), hex(ram_end), hex(kernel.header.initrd_addr_max)));
  }
  return (limit - size) & ~(kPage - 1);
}

}  // namespace vmm::boot
