// Lab 10, exercise 1, a reference answer: the 4-level walk alone (the stub's vmm::gdb::translate also does 32-bit,
// PAE and 5-level paging).
#include <fmt/format.h>

#include <array>

#include "lab10.hpp"

namespace lab10 {

vmm::Result<std::uint64_t> translate_four_level(const vmm::memory::GuestMemory& memory, std::uint64_t cr3,
                                                std::uint64_t linear) {
  constexpr std::uint64_t kAddress = 0x000f'ffff'ffff'f000ull;
  const auto high = static_cast<std::int64_t>(linear) >> 47;
  if (high != 0 && high != -1) {
    return vmm::logic_error("page walk", fmt::format("{:#x} is not canonical", linear));
  }
  static constexpr std::array<const char*, 4> kNames = {"PT", "PD", "PDPT", "PML4"};
  std::uint64_t table = cr3 & kAddress;
  for (int level = 3; level >= 0; --level) {
    const unsigned shift = 12 + 9 * static_cast<unsigned>(level);
    const std::uint64_t index = (linear >> shift) & 0x1ff;
    auto entry = memory.read_obj<std::uint64_t>(vmm::memory::GuestAddress(table + 8 * index));
    if (!entry) {
      return vmm::logic_error("page walk", fmt::format("the {} at {:#x} is not in guest memory", kNames[level], table));
    }
    if ((*entry & 1) == 0) {
      return vmm::logic_error("page walk", fmt::format("{}[{}] = {:#x} is not present", kNames[level], index, *entry));
    }
    const bool large = (level == 1 || level == 2) && (*entry & 0x80) != 0;
    if (level == 0 || large) {
      const std::uint64_t size = 1ull << shift;
      return (*entry & kAddress & ~(size - 1)) | (linear & (size - 1));
    }
    table = *entry & kAddress;
  }
  return vmm::logic_error("page walk", "unreachable");
}

}  // namespace lab10
