#include "vmm/gdb/page_walk.hpp"

#include <fmt/format.h>

#include <array>

namespace vmm::gdb {

namespace {

constexpr std::uint64_t kCr0Pg = 1ull << 31;
constexpr std::uint64_t kCr4Pse = 1ull << 4;
constexpr std::uint64_t kCr4Pae = 1ull << 5;
constexpr std::uint64_t kCr4La57 = 1ull << 12;
constexpr std::uint64_t kEferLma = 1ull << 10;

constexpr std::uint64_t kPresent = 1ull << 0;
constexpr std::uint64_t kWritable = 1ull << 1;
constexpr std::uint64_t kPageSize = 1ull << 7;  // PS: this entry maps a large page instead of pointing to a table
// Bits 12..51 of a 64-bit entry: the next table's (or the page's) physical address. Bit 63 is NX, bits 52..62 are
// ignored or protection keys: none of them is address.
constexpr std::uint64_t kAddressMask = 0x000f'ffff'ffff'f000ull;

template <typename Entry>
Result<Entry> read_entry(const memory::GuestMemory& memory, std::uint64_t table, std::uint64_t index,
                         std::string_view level, std::uint64_t linear) {
  const std::uint64_t at = table + index * sizeof(Entry);
  auto entry = memory.read_obj<Entry>(memory::GuestAddress(at));
  if (!entry) {
    return logic_error("page walk", fmt::format("{:#x}: the {} entry at {:#x} is not in guest RAM ({})", linear, level,
                                                at, entry.error().message()));
  }
  return *entry;
}

std::unexpected<Error> not_present(std::string_view level, std::uint64_t index, std::uint64_t entry,
                                   std::uint64_t linear) {
  return logic_error("page walk", fmt::format("{:#x}: {}[{}] = {:#x} is not present", linear, level, index, entry));
}

// The 64-bit-entry walks (PAE, 4-level, 5-level) differ only in how many levels sit above the page directory and in
// which levels may map large pages, so one loop serves them.
Result<Translation> walk64(const memory::GuestMemory& memory, std::uint64_t top, std::uint64_t linear, int levels) {
  static constexpr std::array<std::string_view, 5> kNames = {"PT", "PD", "PDPT", "PML4", "PML5"};
  Translation result;
  std::uint64_t table = top;
  for (int level = levels - 1; level >= 0; --level) {
    const unsigned shift = 12 + 9 * static_cast<unsigned>(level);
    // PAE's PDPT has only four entries, indexed by bits 30..31.
    const std::uint64_t index = (linear >> shift) & ((levels == 3 && level == 2) ? 0x3 : 0x1ff);
    auto entry = read_entry<std::uint64_t>(memory, table, index, kNames[level], linear);
    if (!entry) {
      return std::unexpected(entry.error());
    }
    ++result.levels;
    if ((*entry & kPresent) == 0) {
      return not_present(kNames[level], index, *entry, linear);
    }
    // PAE's PDPTEs have no R/W bit (bit 1 is reserved): writability is decided below them.
    if (!(levels == 3 && level == 2) && (*entry & kWritable) == 0) {
      result.writable = false;
    }
    const bool large = (level == 1 || (level == 2 && levels >= 4)) && (*entry & kPageSize) != 0;
    if (level == 0 || large) {
      const std::uint64_t page_size = 1ull << shift;
      const std::uint64_t base = *entry & kAddressMask & ~(page_size - 1);
      result.physical = memory::GuestAddress(base | (linear & (page_size - 1)));
      result.page_size = page_size;
      return result;
    }
    table = *entry & kAddressMask;
  }
  return logic_error("page walk", "unreachable");  // level 0 always returns
}

Result<Translation> walk32(const memory::GuestMemory& memory, const PagingState& paging, std::uint64_t linear) {
  Translation result;
  const std::uint64_t pd_index = (linear >> 22) & 0x3ff;
  auto pde = read_entry<std::uint32_t>(memory, paging.cr3 & 0xffff'f000u, pd_index, "PD", linear);
  if (!pde) {
    return std::unexpected(pde.error());
  }
  result.levels = 1;
  if ((*pde & kPresent) == 0) {
    return not_present("PD", pd_index, *pde, linear);
  }
  result.writable = (*pde & kWritable) != 0;
  if ((paging.cr4 & kCr4Pse) != 0 && (*pde & kPageSize) != 0) {
    // A 4 MiB page. (PSE-36's extra address bits 13..20 are not used by any guest vmmlab runs.)
    result.physical = memory::GuestAddress((*pde & 0xffc0'0000u) | (linear & 0x3f'ffff));
    result.page_size = 4ull << 20;
    return result;
  }
  const std::uint64_t pt_index = (linear >> 12) & 0x3ff;
  auto pte = read_entry<std::uint32_t>(memory, *pde & 0xffff'f000u, pt_index, "PT", linear);
  if (!pte) {
    return std::unexpected(pte.error());
  }
  result.levels = 2;
  if ((*pte & kPresent) == 0) {
    return not_present("PT", pt_index, *pte, linear);
  }
  result.writable = result.writable && (*pte & kWritable) != 0;
  result.physical = memory::GuestAddress((*pte & 0xffff'f000u) | (linear & 0xfff));
  result.page_size = 4096;
  return result;
}

}  // namespace

const char* to_string(PagingMode mode) {
  switch (mode) {
    case PagingMode::None:
      return "none";
    case PagingMode::Bits32:
      return "32-bit";
    case PagingMode::Pae:
      return "PAE";
    case PagingMode::FourLevel:
      return "4-level";
    case PagingMode::FiveLevel:
      return "5-level";
  }
  return "?";
}

PagingMode PagingState::mode() const {
  if ((cr0 & kCr0Pg) == 0) {
    return PagingMode::None;
  }
  if ((efer & kEferLma) != 0) {
    return (cr4 & kCr4La57) != 0 ? PagingMode::FiveLevel : PagingMode::FourLevel;
  }
  return (cr4 & kCr4Pae) != 0 ? PagingMode::Pae : PagingMode::Bits32;
}

Result<Translation> translate(const memory::GuestMemory& memory, const PagingState& paging, std::uint64_t linear) {
  switch (paging.mode()) {
    case PagingMode::None:
      return Translation{.physical = memory::GuestAddress(linear), .page_size = 0, .writable = true, .levels = 0};
    case PagingMode::Bits32:
      if (linear > 0xffff'ffffull) {
        return logic_error("page walk", fmt::format("{:#x} is beyond 4 GiB, and paging is 32-bit", linear));
      }
      return walk32(memory, paging, linear);
    case PagingMode::Pae:
      if (linear > 0xffff'ffffull) {
        return logic_error("page walk", fmt::format("{:#x} is beyond 4 GiB, and paging is PAE", linear));
      }
      return walk64(memory, paging.cr3 & 0xffff'ffe0u, linear, 3);
    case PagingMode::FourLevel:
    case PagingMode::FiveLevel: {
      // Canonical: bits above the top translated bit (47, or 56 with LA57) all equal to it.
      const int levels = paging.mode() == PagingMode::FiveLevel ? 5 : 4;
      const unsigned top_bit = 12 + 9 * static_cast<unsigned>(levels) - 1;
      const auto high = static_cast<std::int64_t>(linear) >> top_bit;
      if (high != 0 && high != -1) {
        return logic_error("page walk", fmt::format("{:#x} is not canonical ({}-level paging)", linear, levels));
      }
      return walk64(memory, paging.cr3 & kAddressMask, linear, levels);
    }
  }
  return logic_error("page walk", "unknown paging mode");
}

}  // namespace vmm::gdb
