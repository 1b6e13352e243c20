// Loading Linux into guest memory: a bzImage by the x86 boot protocol (Documentation/x86/boot.rst, protocol 2.15)
// and an uncompressed ELF vmlinux, on synthetic kernels built here byte by byte from the specs, then on the
// distribution's own kernel when the host has one in /boot. No KVM needed: guest memory is plain host memory.
#include <elf.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "vmm/boot/linux_loader.hpp"
#include "vmm/memory/x86_layout.hpp"
#include "vmm/testing/kvm.hpp"
#include "vmm/testing/result.hpp"

namespace vmm::boot {
namespace {

using memory::GuestAddress;
using ::testing::HasSubstr;
using vmm::testing::error_of;

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kOneMiB = 0x100000;  // where boot.rst says a bzImage's protected-mode code is loaded

memory::GuestMemory ram(std::uint64_t bytes) {
  auto ram_layout = memory::x86::layout_for(bytes);
  auto guest = ram_layout ? memory::x86::allocate(*ram_layout) : std::unexpected(ram_layout.error());
  if (!guest) {
    throw std::runtime_error(guest.error().message());
  }
  return std::move(*guest);
}

std::vector<std::byte> guest_bytes(const memory::GuestMemory& memory, std::uint64_t at, std::size_t size) {
  std::vector<std::byte> bytes(size);
  if (auto rc = memory.read(GuestAddress{at}, bytes); !rc) {
    throw std::runtime_error(rc.error().message());
  }
  return bytes;
}

void fill_guest(const memory::GuestMemory& memory, std::uint64_t at, std::size_t size, std::byte value) {
  if (auto rc = memory.write(GuestAddress{at}, std::vector<std::byte>(size, value)); !rc) {
    throw std::runtime_error(rc.error().message());
  }
}

template <typename T>
void put(std::vector<std::byte>& file, std::size_t offset, const T& value) {
  std::memcpy(file.data() + offset, &value, sizeof value);
}

// Bytes that are not all alike, so a copy from the wrong offset shows.
void pattern(std::vector<std::byte>& file, std::size_t offset, std::size_t size, unsigned seed) {
  for (std::size_t i = 0; i < size; ++i) {
    file[offset + i] = static_cast<std::byte>((i * 131 + seed) % 251 + 1);
  }
}

// `file`, detected as `format` and loaded; a refusal throws (and fails the test with the loader's message).
LoadedKernel load_as(const memory::GuestMemory& memory, std::span<const std::byte> file, KernelFormat format) {
  auto detected = detect_kernel_format(file);
  EXPECT_TRUE(detected && *detected == format) << "not detected as " << to_string(format);
  auto kernel = load_kernel(memory, file);
  if (!kernel) {
    throw std::runtime_error(kernel.error().message());
  }
  EXPECT_EQ(kernel->format, format);
  return *kernel;
}

// --- bzImage ---------------------------------------------------------------------------------------------------------

// A bzImage as boot.rst lays it out: the boot sector, `setup_sects` (here 1) sectors of real-mode setup code holding
// the setup header at 0x1f1, then the protected-mode kernel, which therefore starts at (1 + 1) * 512 = 1024.
struct BzImage {
  static constexpr std::size_t kSetupBytes = 1024;
  static constexpr std::size_t kVersionOffset = 0x300;  // the version string, inside the setup sector

  std::size_t payload = 8192;  // bytes of protected-mode kernel: 512 16-byte paragraphs
  std::uint16_t version = 0x020f;
  std::uint8_t loadflags = LOADED_HIGH;
  std::uint16_t xloadflags = XLF_KERNEL_64;
  std::uint32_t init_size = 4 * kMiB;
  std::uint8_t relocatable = 0;
  std::uint64_t pref_address = 0x1000000;
  // The header ends at 0x202 + this jump offset: 0x264, just past init_size (0x260-0x263). handover_offset, at
  // 0x264, is beyond this kernel's header.
  std::uint8_t jump = 0x62;
  std::string release = "6.99.0-vmmlab (test@vmmlab) #1 SMP";

  [[nodiscard]] std::vector<std::byte> build() const {
    std::vector<std::byte> file(kSetupBytes + payload);
    put<std::uint8_t>(file, 0x1f1, 1);                                          // setup_sects
    put<std::uint32_t>(file, 0x1f4, static_cast<std::uint32_t>(payload / 16));  // syssize, in paragraphs
    put<std::uint16_t>(file, 0x1fe, 0xaa55);                                    // boot_flag
    put<std::uint8_t>(file, 0x200, 0xeb);                                       // jmp short ...
    put<std::uint8_t>(file, 0x201, jump);                                       // ... past the header
    std::memcpy(file.data() + 0x202, "HdrS", 4);
    put<std::uint16_t>(file, 0x206, version);
    put<std::uint16_t>(file, 0x20e, static_cast<std::uint16_t>(kVersionOffset - 0x200));  // kernel_version
    put<std::uint8_t>(file, 0x211, loadflags);
    put<std::uint32_t>(file, 0x22c, 0x7fffffff);  // initrd_addr_max
    put<std::uint32_t>(file, 0x230, 0x200000);    // kernel_alignment
    put<std::uint8_t>(file, 0x234, relocatable);
    put<std::uint16_t>(file, 0x236, xloadflags);
    put<std::uint32_t>(file, 0x238, 2048);  // cmdline_size
    put<std::uint64_t>(file, 0x258, pref_address);
    put<std::uint32_t>(file, 0x260, init_size);
    put<std::uint32_t>(file, 0x264, 0xdeadbeef);  // handover_offset: past the header's end, so not header
    std::memcpy(file.data() + kVersionOffset, release.c_str(), release.size() + 1);
    pattern(file, kSetupBytes, payload, 7);
    return file;
  }
};

TEST(BzImage, LoadsTheKernelAtOneMiBAndEntersIt0x200Further) {
  auto memory = ram(64 * kMiB);
  const BzImage image;
  const auto file = image.build();
  const auto kernel = load_as(memory, file, KernelFormat::BzImage);
  EXPECT_EQ(kernel.load_address, kOneMiB);
  // boot.rst, "64-bit Boot Protocol": the 64-bit entry is the load address of the protected-mode kernel + 0x200.
  EXPECT_EQ(kernel.entry, 0x100200u);
  EXPECT_EQ(kernel.end, kOneMiB + image.init_size) << "a non-relocatable kernel decompresses where it was loaded";
  EXPECT_EQ(kernel.protocol, 0x020f);
  EXPECT_EQ(kernel.version, image.release) << "kernel_version + 0x200 is the string's file offset";

  // The protected-mode code, exactly, at 1 MiB; nothing just below it or just past it.
  EXPECT_EQ(guest_bytes(memory, kOneMiB, image.payload),
            std::vector<std::byte>(file.begin() + BzImage::kSetupBytes, file.end()));
  EXPECT_EQ(guest_bytes(memory, kOneMiB - 64, 64), std::vector<std::byte>(64));
  EXPECT_EQ(guest_bytes(memory, kOneMiB + image.payload, 64), std::vector<std::byte>(64));

  // The setup header, as the file has it, for the zero page.
  const setup_header& hdr = kernel.header;
  EXPECT_EQ(std::uint8_t{hdr.setup_sects}, 1);
  EXPECT_EQ(std::uint32_t{hdr.syssize}, image.payload / 16);
  EXPECT_EQ(std::uint16_t{hdr.boot_flag}, 0xaa55);
  EXPECT_EQ(std::uint32_t{hdr.header}, 0x53726448u) << "\"HdrS\"";
  EXPECT_EQ(std::uint16_t{hdr.version}, 0x020f);
  EXPECT_EQ(std::uint8_t{hdr.loadflags}, LOADED_HIGH);
  EXPECT_EQ(std::uint16_t{hdr.xloadflags}, XLF_KERNEL_64);
  EXPECT_EQ(std::uint32_t{hdr.initrd_addr_max}, 0x7fffffffu);
  EXPECT_EQ(std::uint32_t{hdr.kernel_alignment}, 0x200000u);
  EXPECT_EQ(std::uint32_t{hdr.cmdline_size}, 2048u);
  EXPECT_EQ(std::uint32_t{hdr.init_size}, image.init_size);
  // boot.rst: code32_start "defaults to the load address of the kernel".
  EXPECT_EQ(std::uint32_t{hdr.code32_start}, kOneMiB);
}

TEST(BzImage, FieldsPastTheHeadersEndAreNotCopied) {
  // The jump at 0x200 says where this kernel's header ends (boot.rst: the header's length). The bytes after it are
  // setup code, not fields of a newer protocol: handover_offset must read 0, not the 0xdeadbeef stored there.
  auto memory = ram(64 * kMiB);
  auto kernel = load_bzimage(memory, BzImage{}.build());
  ASSERT_TRUE(kernel) << kernel.error().message();
  EXPECT_EQ(std::uint32_t{kernel->header.handover_offset}, 0u);
  EXPECT_EQ(std::uint32_t{kernel->header.init_size}, BzImage{}.init_size) << "the last field inside the header";

  // With the full 2.15 header (it ends at 0x26c), the same bytes are the field.
  auto full = load_bzimage(memory, BzImage{.jump = 0x6a}.build());
  ASSERT_TRUE(full) << full.error().message();
  EXPECT_EQ(std::uint32_t{full->header.handover_offset}, 0xdeadbeefu);
}

TEST(BzImage, ARelocatableKernelDecompressesAtItsPreferredAddress) {
  // boot.rst: a relocatable kernel runs at pref_address when loaded below it, and init_size counts from the
  // "runtime start address": the initramfs must go above pref_address + init_size.
  auto memory = ram(64 * kMiB);
  const BzImage image{.relocatable = 1, .pref_address = 16 * kMiB};
  auto kernel = load_bzimage(memory, image.build());
  ASSERT_TRUE(kernel) << kernel.error().message();
  EXPECT_EQ(kernel->load_address, kOneMiB);
  EXPECT_EQ(kernel->entry, 0x100200u);
  EXPECT_EQ(kernel->end, 16 * kMiB + image.init_size);
}

// A refused kernel: the error says why, and guest memory from 1 MiB on is as it was (nothing half-loaded).
void expect_refused(std::span<const std::byte> file, std::string_view why, std::uint64_t ram_bytes = 64 * kMiB) {
  auto memory = ram(ram_bytes);
  constexpr std::size_t kWatched = 3 * kMiB;  // the bzImage's payload and the test ELF's segments live here
  fill_guest(memory, kOneMiB, kWatched, std::byte{0xaa});
  EXPECT_THAT(error_of(load_kernel(memory, file)), HasSubstr(why));
  const auto after = guest_bytes(memory, kOneMiB, kWatched);
  EXPECT_TRUE(std::all_of(after.begin(), after.end(), [](std::byte b) { return b == std::byte{0xaa}; }))
      << "guest memory was written by a refused kernel";
}

TEST(BzImage, RefusesAFileShorterThanSyssizeSays) {
  auto file = BzImage{}.build();
  file.resize(file.size() - 16);  // one paragraph short
  expect_refused(file, "truncated");
}

TEST(BzImage, RefusesBootProtocol2_09) {
  // 2.12 added xloadflags, the only way to know the kernel has a 64-bit entry.
  expect_refused(BzImage{.version = 0x0209}.build(), "boot protocol 2.09");
}

TEST(BzImage, RefusesAKernelWithoutA64BitEntry) {
  expect_refused(BzImage{.xloadflags = 0}.build(), "XLF_KERNEL_64");
}

TEST(BzImage, RefusesAZImageThatWantsToLoadLow) {
  expect_refused(BzImage{.loadflags = 0}.build(), "LOADED_HIGH");
}

TEST(BzImage, RefusesAnInitSizeBeyondGuestRam) {
  // 8 MiB of RAM: the payload fits at 1 MiB, but decompressing needs [1 MiB, 1 MiB + 16 MiB).
  expect_refused(BzImage{.init_size = static_cast<std::uint32_t>(16 * kMiB)}.build(), "beyond guest RAM", 8 * kMiB);
}

TEST(BzImage, RefusesAnInitSizeSmallerThanTheKernel) {
  expect_refused(BzImage{.init_size = 4096}.build(), "init_size");
}

TEST(BzImage, RefusesABootSectorWithoutHdrS) {
  auto file = BzImage{}.build();
  std::memcpy(file.data() + 0x202, "HdrX", 4);
  expect_refused(file, "HdrS");
}

TEST(KernelFormat, RandomBytesAreNeitherBzImageNorElf) {
  std::mt19937 random(42);
  std::vector<std::byte> file(4096);
  std::generate(file.begin(), file.end(), [&] { return static_cast<std::byte>(random()); });
  file[0] = std::byte{0x12};  // whatever the seed, not ELF's 0x7f
  expect_refused(file, "not a bzImage");
  EXPECT_THAT(error_of(detect_kernel_format(file)), HasSubstr("4096 bytes, starting 12"));
}

TEST(KernelFormat, AnEmptyFileIsRefused) {
  expect_refused({}, "not a bzImage");
  EXPECT_THAT(error_of(detect_kernel_format({})), HasSubstr("0 bytes"));
}

TEST(KernelFormat, NamesBothFormats) {
  EXPECT_STREQ(to_string(KernelFormat::BzImage), "bzImage");
  EXPECT_STREQ(to_string(KernelFormat::Elf), "ELF vmlinux");
}

// --- ELF vmlinux
// -------------------------------------------------------------------------------------------------------

// A vmlinux-like ELF64 x86-64 executable: .text (PT_LOAD 0, all in the file), .data and .bss (PT_LOAD 1, memsz past
// filesz), and a PT_NOTE with a GNU build ID and then Xen's PHYS32_ENTRY note (the PVH entry).
struct ElfImage {
  static constexpr std::uint64_t kText = 2 * kMiB;
  static constexpr std::uint64_t kTextSize = 0x200;
  static constexpr std::uint64_t kData = 2 * kMiB + 0x10000;
  static constexpr std::uint64_t kDataFile = 0x100;  // .data
  static constexpr std::uint64_t kDataMem = 0x3000;  // .data and .bss
  static constexpr std::uint32_t kPvhEntry = 0x01000abc;

  Elf64_Ehdr ehdr{};
  std::vector<Elf64_Phdr> phdrs;
  std::vector<std::byte> notes;

  explicit ElfImage(bool pvh = true) {
    std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
    ehdr.e_ident[EI_CLASS] = ELFCLASS64;
    ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
    ehdr.e_ident[EI_VERSION] = EV_CURRENT;
    ehdr.e_type = ET_EXEC;
    ehdr.e_machine = EM_X86_64;
    ehdr.e_version = EV_CURRENT;
    ehdr.e_entry = kText + 0x40;
    ehdr.e_phoff = sizeof(Elf64_Ehdr);
    ehdr.e_ehsize = sizeof(Elf64_Ehdr);
    ehdr.e_phentsize = sizeof(Elf64_Phdr);
    ehdr.e_phnum = 3;
    add_note("GNU", NT_GNU_BUILD_ID, std::vector<std::byte>(20, std::byte{0x5c}));
    if (pvh) {
      std::vector<std::byte> entry(4);
      std::memcpy(entry.data(), &kPvhEntry, 4);
      add_note("Xen", 18, entry);  // XEN_ELFNOTE_PHYS32_ENTRY
    }
    phdrs = {segment(PT_LOAD, 0x1000, kText, kTextSize, kTextSize),
             segment(PT_LOAD, 0x1000 + kTextSize, kData, kDataFile, kDataMem),
             segment(PT_NOTE, 0x1400, 0, notes.size(), notes.size())};
  }

  static Elf64_Phdr segment(std::uint32_t type, std::uint64_t offset, std::uint64_t paddr, std::uint64_t filesz,
                            std::uint64_t memsz) {
    Elf64_Phdr ph{};
    ph.p_type = type;
    ph.p_offset = offset;
    ph.p_vaddr = paddr + 0xffffffff80000000;  // a vmlinux links at the kernel's virtual addresses ...
    ph.p_paddr = paddr;                       // ... and is loaded at the physical ones
    ph.p_filesz = filesz;
    ph.p_memsz = memsz;
    ph.p_align = 0x1000;
    return ph;
  }

  // An ELF note: {namesz, descsz, type}, then the name and the descriptor, each padded to 4 bytes.
  void add_note(std::string_view name, std::uint32_t type, const std::vector<std::byte>& desc) {
    const Elf64_Nhdr header{static_cast<std::uint32_t>(name.size() + 1), static_cast<std::uint32_t>(desc.size()), type};
    const auto at = notes.size();
    notes.resize(at + sizeof header + (name.size() + 1 + 3) / 4 * 4 + (desc.size() + 3) / 4 * 4);
    std::memcpy(notes.data() + at, &header, sizeof header);
    std::memcpy(notes.data() + at + sizeof header, name.data(), name.size());
    std::memcpy(notes.data() + at + sizeof header + (name.size() + 1 + 3) / 4 * 4, desc.data(), desc.size());
  }

  [[nodiscard]] std::vector<std::byte> build() const {
    std::vector<std::byte> file(0x1400 + notes.size());
    put(file, 0, ehdr);
    if (ehdr.e_phoff + phdrs.size() * sizeof(Elf64_Phdr) <= file.size()) {
      for (std::size_t i = 0; i < phdrs.size(); ++i) {
        put(file, ehdr.e_phoff + i * sizeof(Elf64_Phdr), phdrs[i]);
      }
    }
    pattern(file, 0x1000, kTextSize, 3);
    pattern(file, 0x1000 + kTextSize, kDataFile, 5);
    std::memcpy(file.data() + 0x1400, notes.data(), notes.size());
    return file;
  }
};

TEST(Elf, LoadsSegmentsAtTheirPhysicalAddressesAndZeroesBss) {
  auto memory = ram(64 * kMiB);
  // Guest memory is not zero when a kernel is loaded after a reboot: fill it, so that only the loader zeroes .bss.
  fill_guest(memory, ElfImage::kText, 0x20000, std::byte{0xaa});
  const ElfImage image;
  const auto file = image.build();
  const auto kernel = load_as(memory, file, KernelFormat::Elf);
  EXPECT_EQ(kernel.entry, ElfImage::kText + 0x40) << "e_entry: a physical address inside .text";
  EXPECT_EQ(kernel.load_address, ElfImage::kText);
  EXPECT_EQ(kernel.end, ElfImage::kData + ElfImage::kDataMem) << "the end of the last segment's memory image";
  EXPECT_EQ(kernel.pvh_entry, ElfImage::kPvhEntry);

  EXPECT_EQ(guest_bytes(memory, ElfImage::kText, ElfImage::kTextSize),
            std::vector<std::byte>(file.begin() + 0x1000, file.begin() + 0x1000 + ElfImage::kTextSize));
  EXPECT_EQ(guest_bytes(memory, ElfImage::kData, ElfImage::kDataFile),
            std::vector<std::byte>(file.begin() + 0x1000 + ElfImage::kTextSize,
                                   file.begin() + 0x1000 + ElfImage::kTextSize + ElfImage::kDataFile));
  EXPECT_EQ(guest_bytes(memory, ElfImage::kData + ElfImage::kDataFile, ElfImage::kDataMem - ElfImage::kDataFile),
            std::vector<std::byte>(ElfImage::kDataMem - ElfImage::kDataFile))
      << ".bss: p_memsz - p_filesz bytes of zeros";
  const std::vector<std::byte> untouched(64, std::byte{0xaa});
  EXPECT_EQ(guest_bytes(memory, ElfImage::kData + ElfImage::kDataMem, 64), untouched) << "nothing past p_memsz";
  EXPECT_EQ(guest_bytes(memory, ElfImage::kText + ElfImage::kTextSize, 64), untouched) << "nor between segments";
}

TEST(Elf, MakesUpTheSetupHeaderTheKernelReads) {
  // A vmlinux has no setup header; the zero page still needs one that says "boot protocol, 64-bit kernel".
  auto memory = ram(64 * kMiB);
  auto kernel = load_elf(memory, ElfImage{}.build());
  ASSERT_TRUE(kernel) << kernel.error().message();
  const setup_header& hdr = kernel->header;
  EXPECT_EQ(kernel->protocol, 0) << "no protocol in the file";
  EXPECT_EQ(std::uint16_t{hdr.boot_flag}, 0xaa55);
  EXPECT_EQ(std::uint32_t{hdr.header}, 0x53726448u);
  EXPECT_GE(std::uint16_t{hdr.version}, kMinBootProtocol);
  EXPECT_NE(hdr.loadflags & LOADED_HIGH, 0);
  EXPECT_NE(hdr.xloadflags & XLF_KERNEL_64, 0);
  EXPECT_GT(std::uint32_t{hdr.cmdline_size}, 0u) << "else no command line is allowed";
  EXPECT_GT(std::uint32_t{hdr.initrd_addr_max}, kernel->end) << "else no initramfs fits above the kernel";
}

TEST(Elf, WithoutTheXenNoteThereIsNoPvhEntry) {
  auto memory = ram(64 * kMiB);
  auto kernel = load_elf(memory, ElfImage(false).build());
  ASSERT_TRUE(kernel) << kernel.error().message();
  EXPECT_FALSE(kernel->pvh_entry.has_value());
}

TEST(Elf, RefusesA32BitElf) {
  ElfImage image;
  image.ehdr.e_ident[EI_CLASS] = ELFCLASS32;
  expect_refused(image.build(), "not a 64-bit little-endian ELF");
}

TEST(Elf, RefusesAnI386Kernel) {
  ElfImage image;
  image.ehdr.e_machine = EM_386;
  expect_refused(image.build(), "e_machine 3: not an x86-64 kernel");
}

TEST(Elf, RefusesASegmentBelowOneMiB) {
  // [0, 1 MiB) holds the zero page, command line, page tables and MP table.
  ElfImage image;
  image.phdrs[1].p_paddr = 0x80000;
  expect_refused(image.build(), "segment 1 at 0x80000 is below 1 MiB");
}

TEST(Elf, RefusesASegmentReachingPastGuestRam) {
  // .bss ends one page past the last byte of RAM: its file bytes would fit, its memory image does not.
  ElfImage image;
  image.phdrs[1].p_paddr = 64 * kMiB - ElfImage::kDataMem + 0x1000;
  expect_refused(image.build(), "not inside guest RAM");
}

TEST(Elf, RefusesFileBytesThatExceedTheMemoryImage) {
  ElfImage image;
  image.phdrs[1].p_memsz = ElfImage::kDataFile - 1;
  expect_refused(image.build(), "segment 1: p_filesz 0x100 > p_memsz 0xff");
}

TEST(Elf, RefusesAProgramHeaderTablePastTheEndOfTheFile) {
  ElfImage image;
  image.ehdr.e_phoff = image.build().size() - sizeof(Elf64_Phdr);  // room for one of the three
  expect_refused(image.build(), "program headers");
}

TEST(Elf, RefusesASegmentWhoseBytesLieOutsideTheFile) {
  // A vmlinux cut short: the segment's file bytes run past the end.
  ElfImage image;
  image.phdrs[1].p_offset = image.build().size() - 0x10;
  expect_refused(image.build(), "segment 1: bytes");
}

TEST(Elf, RefusesAnEntryPointOutsideEverySegment) {
  // A virtual entry address (an ELF linked for the kernel's high mapping with p_paddr ignored) is not loaded code.
  ElfImage image;
  image.ehdr.e_entry = 0xffffffff81000000;
  expect_refused(image.build(), "entry point 0xffffffff81000000 is not inside a loaded segment");
}

// --- place_initramfs
// ---------------------------------------------------------------------------------------------------

LoadedKernel kernel_ending_at(std::uint64_t end, std::uint32_t initrd_addr_max = 0x7fffffff) {
  LoadedKernel kernel;
  kernel.end = end;
  kernel.header.initrd_addr_max = initrd_addr_max;
  return kernel;
}

TEST(PlaceInitramfs, GoesAsHighAsPossibleOnAPageBoundaryBelowTheEndOfRam) {
  // 512 MiB = 0x20000000; 0x20000000 - 0x1234 = 0x1fffedcc, rounded down to 4 KiB.
  auto at = place_initramfs(kernel_ending_at(17 * kMiB), 0x1234, 512 * kMiB);
  ASSERT_TRUE(at) << at.error().message();
  EXPECT_EQ(*at, 0x1fffe000u);
}

TEST(PlaceInitramfs, StaysBelowInitrdAddrMax) {
  // boot.rst: initrd_addr_max is the highest address the initrd may occupy (0x37ffffff for old kernels), so with
  // 2 GiB of RAM the limit is 0x38000000: 0x38000000 - 0x100001 = 0x37efffff, rounded down.
  auto at = place_initramfs(kernel_ending_at(17 * kMiB, 0x37ffffff), kMiB + 1, 2048 * kMiB);
  ASSERT_TRUE(at) << at.error().message();
  EXPECT_EQ(*at, 0x37eff000u);
}

TEST(PlaceInitramfs, FitsExactlyBetweenTheKernelAndTheEndOfRam) {
  auto at = place_initramfs(kernel_ending_at(16 * kMiB), 2 * kMiB, 18 * kMiB);
  ASSERT_TRUE(at) << at.error().message();
  EXPECT_EQ(*at, 16 * kMiB);
  EXPECT_THAT(error_of(place_initramfs(kernel_ending_at(16 * kMiB), 2 * kMiB + 1, 18 * kMiB)), HasSubstr("do not fit"));
}

TEST(PlaceInitramfs, NeverStartsInsideTheKernelsLastPage) {
  // The kernel ends one byte into a page: the first page the initramfs may use is the next one.
  const auto kernel = kernel_ending_at(16 * kMiB + 1);
  auto at = place_initramfs(kernel, 0x1000, 16 * kMiB + 0x2000);
  ASSERT_TRUE(at) << at.error().message();
  EXPECT_EQ(*at, 16 * kMiB + 0x1000);
  EXPECT_THAT(error_of(place_initramfs(kernel, 0x1001, 16 * kMiB + 0x2000)), HasSubstr("give the VM more memory"));
}

TEST(PlaceInitramfs, RefusesAnInitramfsLargerThanRam) {
  EXPECT_THAT(error_of(place_initramfs(kernel_ending_at(17 * kMiB), 1024 * kMiB, 512 * kMiB)), HasSubstr("do not fit"));
}

// --- read_file
// ---------------------------------------------------------------------------------------------------------

TEST(ReadFile, ReadsAWholeFileAndRefusesOneTooLarge) {
  const auto path = std::filesystem::path(::testing::TempDir()) / "final_boot_read_file.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out << "kernel bytes";
  }
  auto bytes = read_file(path, 12);
  ASSERT_TRUE(bytes) << bytes.error().message();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size()), "kernel bytes");
  EXPECT_THAT(error_of(read_file(path, 11)), HasSubstr("is 12 bytes, more than the 11"));
  EXPECT_THAT(error_of(read_file(::testing::TempDir(), 1 << 20)), HasSubstr("not a regular file"));
  EXPECT_THAT(error_of(read_file(path.string() + ".missing", 1 << 20)), HasSubstr("ENOENT"));
  std::filesystem::remove(path);
}

// --- The distribution's kernel
// -----------------------------------------------------------------------------------------

// /boot/vmlinuz-<release>, the newest by name, if the host has one (CI installs Debian's linux-image-amd64).
std::optional<std::filesystem::path> host_kernel() {
  std::optional<std::filesystem::path> newest;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/boot", ec)) {
    const auto name = entry.path().filename().string();
    if (name.starts_with("vmlinuz-") && entry.is_regular_file() && (!newest || entry.path() > *newest)) {
      newest = entry.path();
    }
  }
  return newest;
}

TEST(DebianKernel, LoadsTheHostsBzImageInto512MiB) {
  const auto path = host_kernel();
  if (!path) {
    if (vmm::testing::kvm_required()) {
      FAIL() << "no /boot/vmlinuz-* (VMMLAB_REQUIRE_KVM=1: CI installs linux-image-amd64)";
    }
    GTEST_SKIP() << "no /boot/vmlinuz-* on this host";
  }
  auto file = read_file(*path, 256 * kMiB);
  ASSERT_TRUE(file) << file.error().message();
  auto format = detect_kernel_format(*file);
  ASSERT_TRUE(format) << format.error().message();
  EXPECT_EQ(*format, KernelFormat::BzImage);

  auto memory = ram(512 * kMiB);
  auto kernel = load_kernel(memory, *file);
  ASSERT_TRUE(kernel) << kernel.error().message();
  EXPECT_GE(kernel->protocol, kMinBootProtocol);
  const auto release = path->filename().string().substr(std::string_view("vmlinuz-").size());
  EXPECT_TRUE(kernel->version.starts_with(release)) << "version \"" << kernel->version << "\", file " << *path;
  EXPECT_EQ(kernel->entry, 0x100200u);
  EXPECT_LE(kernel->end, 512 * kMiB);

  // The protected-mode code starts after the boot sector and setup_sects sectors (0 meaning 4).
  const auto sects = static_cast<std::size_t>((*file)[0x1f1]);
  const std::size_t setup = ((sects == 0 ? 4 : sects) + 1) * 512;
  EXPECT_EQ(guest_bytes(memory, kOneMiB, 4096),
            std::vector<std::byte>(file->begin() + setup, file->begin() + setup + 4096));

  // And a 16 MiB initramfs finds its place above what the kernel needs.
  auto initramfs = place_initramfs(*kernel, 16 * kMiB, 512 * kMiB);
  ASSERT_TRUE(initramfs) << initramfs.error().message();
  EXPECT_GE(*initramfs, kernel->end);
  EXPECT_LE(*initramfs + 16 * kMiB, std::min<std::uint64_t>(512 * kMiB, kernel->header.initrd_addr_max + 1ull));
}

}  // namespace
}  // namespace vmm::boot
