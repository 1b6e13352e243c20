#include "vmm/x86/long_mode.hpp"

#include <fmt/format.h>

#include "vmm/flex_array.hpp"

namespace vmm::x86 {

using memory::GuestAddress;

namespace {

constexpr std::uint64_t kPageSize = 4096;
constexpr std::uint64_t k2MiB = 2ull << 20;
constexpr std::uint64_t k1GiB = 1ull << 30;

// Descriptor encodings (Intel SDM vol. 3, 3.4.5). Type 0xb = code, execute/read, accessed; 0x3 = data, read/write,
// accessed. Presetting "accessed" keeps the CPU from writing the descriptor when a selector is loaded.
constexpr std::uint64_t kGdt[] = {
    0x0000000000000000,  // null
    0x00af9b000000ffff,  // 0x08: P=1 DPL=0 S=1 type=0xb, L=1 D=0 G=1
    0x00cf93000000ffff,  // 0x10: P=1 DPL=0 S=1 type=0x3, D/B=1 G=1
};

kvm_segment segment(std::uint16_t selector, std::uint8_t type, bool code) {
  return kvm_segment{
      .base = 0,
      .limit = 0xffffffff,
      .selector = selector,
      .type = type,
      .present = 1,
      .dpl = 0,
      .db = code ? std::uint8_t{0} : std::uint8_t{1},  // a 64-bit code segment must have D = 0
      .s = 1,
      .l = code ? std::uint8_t{1} : std::uint8_t{0},
      .g = 1,
      .avl = 0,
      .unusable = 0,
      .padding = 0,
  };
}

}  // namespace

Result<void> set_cpuid(kvm::Vcpu& vcpu, std::span<const kvm_cpuid_entry2> entries) {
  // kvm_cpuid2 ends in a flexible array: see vmm/flex_array.hpp for why the C++ sizeof cannot be used.
  constexpr std::size_t kHeaderSize = 2 * sizeof(std::uint32_t);
  constexpr unsigned long kSetCpuid2 = with_ioctl_size(KVM_SET_CPUID2, kHeaderSize);
  FlexArrayBuffer<kvm_cpuid2, kvm_cpuid_entry2> buffer(kHeaderSize, entries.size());
  buffer.header()->nent = static_cast<std::uint32_t>(entries.size());
  std::ranges::copy(entries, buffer.entries());
  if (auto rc = ioctl(vcpu.fd(), kSetCpuid2, "KVM_SET_CPUID2", buffer.header()); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("{} entries", entries.size())));
  }
  return {};
}

Result<void> write_gdt(const memory::GuestMemory& memory, GuestAddress at) {
  return memory.write(at, std::as_bytes(std::span(kGdt)));
}

Result<PageTables> write_identity_page_tables(const memory::GuestMemory& memory, GuestAddress base,
                                              std::uint64_t bytes) {
  if (bytes == 0 || bytes % k1GiB != 0 || bytes > 512 * k1GiB) {
    return logic_error("write_identity_page_tables",
                       fmt::format("{:#x} bytes: must be a non-zero multiple of 1 GiB, at most 512 GiB", bytes));
  }
  if (base.raw() % kPageSize != 0) {
    return logic_error("write_identity_page_tables", fmt::format("tables at {} are not page-aligned", base));
  }
  const std::uint64_t directories = bytes / k1GiB;  // one page directory (512 x 2 MiB) per GiB
  PageTables tables{.pml4 = base, .pages = {}, .mapped_bytes = bytes};
  auto page = [&](std::uint64_t index) -> Result<GuestAddress> { return base.checked_add(index * kPageSize); };
  auto pml4 = page(0);
  auto pdpt = page(1);
  if (!pml4 || !pdpt) {
    return std::unexpected(!pml4 ? pml4.error() : pdpt.error());
  }
  constexpr std::uint64_t kTable = kPtePresent | kPteWritable | kPteAccessed;
  std::vector<std::uint64_t> pml4_page(512, 0), pdpt_page(512, 0), pd_page(512, 0);
  pml4_page[0] = pdpt->raw() | kTable;
  for (std::uint64_t gib = 0; gib < directories; ++gib) {
    auto pd = page(2 + gib);
    if (!pd) {
      return std::unexpected(pd.error());
    }
    pdpt_page[gib] = pd->raw() | kTable;
    for (std::uint64_t i = 0; i < 512; ++i) {
      pd_page[i] = (gib * k1GiB + i * k2MiB) | kTable | kPteDirty | kPteHuge;
    }
    if (auto rc = memory.write(*pd, std::as_bytes(std::span(pd_page))); !rc) {
      return std::unexpected(rc.error().with_context("writing a page directory"));
    }
    tables.pages.push_back(*pd);
  }
  if (auto rc = memory.write(*pml4, std::as_bytes(std::span(pml4_page))); !rc) {
    return std::unexpected(rc.error().with_context("writing the PML4"));
  }
  if (auto rc = memory.write(*pdpt, std::as_bytes(std::span(pdpt_page))); !rc) {
    return std::unexpected(rc.error().with_context("writing the PDPT"));
  }
  tables.pages.insert(tables.pages.begin(), {*pml4, *pdpt});
  return tables;
}

kvm_sregs long_mode_sregs(const kvm_sregs& current, GuestAddress gdt, GuestAddress cr3) {
  kvm_sregs sregs = current;
  sregs.cs = segment(kCodeSelector, 0xb, true);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = segment(kDataSelector, 0x3, false);
  sregs.gdt.base = gdt.raw();
  sregs.gdt.limit = sizeof(kGdt) - 1;
  sregs.idt = {.base = 0, .limit = 0, .padding = {}};  // no interrupts yet: any exception shuts the guest down
  sregs.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
  sregs.cr3 = cr3.raw();
  sregs.cr4 = kCr4Pae;
  sregs.efer = kEferLme | kEferLma;  // LMA is what the CPU would set itself when paging turned on with LME
  return sregs;
}

Result<PageTables> enter_long_mode(kvm::Vcpu& vcpu, const memory::GuestMemory& memory,
                                   std::span<const kvm_cpuid_entry2> cpuid, const LongModeSetup& setup) {
  if (auto rc = set_cpuid(vcpu, cpuid); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = write_gdt(memory, setup.gdt); !rc) {
    return std::unexpected(rc.error().with_context("writing the GDT"));
  }
  auto tables = write_identity_page_tables(memory, setup.page_tables, setup.identity_map_bytes);
  if (!tables) {
    return std::unexpected(tables.error());
  }
  auto sregs = vcpu.get_sregs();
  if (!sregs) {
    return std::unexpected(sregs.error());
  }
  if (auto rc = vcpu.set_sregs(long_mode_sregs(*sregs, setup.gdt, tables->pml4)); !rc) {
    return std::unexpected(rc.error().with_context("entering long mode"));
  }
  kvm_regs regs{};
  regs.rip = setup.entry;
  regs.rsp = setup.stack_top;
  regs.rdi = setup.argument;
  regs.rflags = 0x2;
  if (auto rc = vcpu.set_regs(regs); !rc) {
    return std::unexpected(rc.error());
  }
  return tables;
}

}  // namespace vmm::x86
