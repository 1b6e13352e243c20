#include "vmm/vhost/backend/memory_table.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include <fmt/format.h>

#include "vmm/memory/region.hpp"

namespace vmm::vhost {

namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

// [a, a + a_size) and [b, b + b_size) share a byte. Both ends are known not to overflow.
bool overlap(std::uint64_t a, std::uint64_t a_size, std::uint64_t b, std::uint64_t b_size) {
  return a < b + b_size && b < a + a_size;
}

bool same_region(const MemoryRegion& a, const MemoryRegion& b) {
  return a.guest_phys_addr == b.guest_phys_addr && a.memory_size == b.memory_size &&
         a.userspace_addr == b.userspace_addr;
}

}  // namespace

std::string describe_region(const MemoryRegion& region) {
  return fmt::format("gpa [{:#x}, +{:#x}) uaddr {:#x} off {:#x}", region.guest_phys_addr, region.memory_size,
                     region.userspace_addr, region.mmap_offset);
}

BackendMemoryTable::BackendMemoryTable() : memory_(std::make_unique<memory::GuestMemory>()) {}

BackendMemoryTable::BackendMemoryTable(std::vector<MemoryRegion> regions, std::unique_ptr<memory::GuestMemory> memory)
    : regions_(std::move(regions)), memory_(std::move(memory)) {}

// A moved-from table has no regions and a null memory_, which memory() answers with an empty GuestMemory.
BackendMemoryTable::BackendMemoryTable(BackendMemoryTable&& other) noexcept
    : regions_(std::move(other.regions_)), memory_(std::move(other.memory_)) {
  other.regions_.clear();
}

BackendMemoryTable& BackendMemoryTable::operator=(BackendMemoryTable&& other) noexcept {
  if (this != &other) {
    regions_ = std::move(other.regions_);
    memory_ = std::move(other.memory_);
    other.regions_.clear();
  }
  return *this;
}

BackendMemoryTable::~BackendMemoryTable() = default;

const memory::GuestMemory& BackendMemoryTable::memory() const noexcept {
  static const memory::GuestMemory kNoMemory;
  return memory_ ? *memory_ : kNoMemory;
}

Result<void> BackendMemoryTable::validate(std::span<const MemoryRegion> regions, std::size_t max_regions,
                                          std::string_view op) {
  if (regions.size() > max_regions) {
    return logic_error(
        op, fmt::format("{} memory regions, but the backend allows at most {}", regions.size(), max_regions));
  }
  for (std::size_t i = 0; i < regions.size(); ++i) {
    const MemoryRegion& r = regions[i];
    if (r.memory_size == 0) {
      return logic_error(op, fmt::format("region {} ({}) has size 0", i, describe_region(r)));
    }
    // The last byte must be addressable: start + size may be at most 2^64 - 1 so that every end fits in a u64.
    if (r.guest_phys_addr > kMax - r.memory_size) {
      return logic_error(op,
                         fmt::format("region {} ({}): guest-physical end overflows 64 bits", i, describe_region(r)));
    }
    if (r.userspace_addr > kMax - r.memory_size) {
      return logic_error(op,
                         fmt::format("region {} ({}): frontend address end overflows 64 bits", i, describe_region(r)));
    }
    if (r.mmap_offset > kMax - r.memory_size) {
      return logic_error(op, fmt::format("region {} ({}): file offset end overflows 64 bits", i, describe_region(r)));
    }
  }
  for (std::size_t i = 0; i < regions.size(); ++i) {
    for (std::size_t j = i + 1; j < regions.size(); ++j) {
      const MemoryRegion& a = regions[i];
      const MemoryRegion& b = regions[j];
      if (overlap(a.guest_phys_addr, a.memory_size, b.guest_phys_addr, b.memory_size)) {
        return logic_error(op, fmt::format("region {} ({}) overlaps region {} ({}) in guest-physical memory", j,
                                           describe_region(b), i, describe_region(a)));
      }
      // Ring addresses arrive as frontend virtual addresses: two regions claiming the same ones would make a ring
      // address mean two different guest-physical places.
      if (overlap(a.userspace_addr, a.memory_size, b.userspace_addr, b.memory_size)) {
        return logic_error(op, fmt::format("region {} ({}) overlaps region {} ({}) in the frontend's address space", j,
                                           describe_region(b), i, describe_region(a)));
      }
    }
  }
  return {};
}

Result<BackendMemoryTable> BackendMemoryTable::create(std::span<const MemoryRegion> regions, std::vector<Fd> fds,
                                                      std::size_t max_regions, std::string_view op) {
  if (fds.size() != regions.size()) {
    // The codec checks this already; a caller building messages by hand might not.
    return logic_error(op, fmt::format("{} regions but {} fds", regions.size(), fds.size()));
  }
  if (auto ok = validate(regions, max_regions, op); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  return map_all(std::vector<MemoryRegion>(regions.begin(), regions.end()), std::move(fds), op);
}

Result<BackendMemoryTable> BackendMemoryTable::with_region(const MemoryRegion& region, Fd fd, std::size_t max_regions,
                                                           std::string_view op) const {
  std::vector<MemoryRegion> regions = regions_;
  regions.push_back(region);
  if (auto ok = validate(regions, max_regions, op); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  std::vector<Fd> fds;
  fds.reserve(regions.size());
  for (const MemoryRegion& existing : regions_) {
    auto dup = duplicate_fd(existing.guest_phys_addr, op);
    if (!dup) {
      return std::unexpected(std::move(dup).error());
    }
    fds.push_back(std::move(*dup));
  }
  fds.push_back(std::move(fd));
  return map_all(std::move(regions), std::move(fds), op);
}

Result<BackendMemoryTable> BackendMemoryTable::without_region(const MemoryRegion& region, std::string_view op) const {
  const auto found =
      std::find_if(regions_.begin(), regions_.end(), [&](const MemoryRegion& r) { return same_region(r, region); });
  if (found == regions_.end()) {
    return logic_error(op, fmt::format("no region matches {} (guest address, size and frontend address must all "
                                       "match one of the {} regions)",
                                       describe_region(region), regions_.size()));
  }
  std::vector<MemoryRegion> regions;
  std::vector<Fd> fds;
  for (auto it = regions_.begin(); it != regions_.end(); ++it) {
    if (it == found) {
      continue;
    }
    auto dup = duplicate_fd(it->guest_phys_addr, op);
    if (!dup) {
      return std::unexpected(std::move(dup).error());
    }
    regions.push_back(*it);
    fds.push_back(std::move(*dup));
  }
  return map_all(std::move(regions), std::move(fds), op);
}

Result<BackendMemoryTable> BackendMemoryTable::map_all(std::vector<MemoryRegion> regions, std::vector<Fd> fds,
                                                       std::string_view op) {
  std::vector<memory::GuestMemoryRegion> mapped;
  mapped.reserve(regions.size());
  for (std::size_t i = 0; i < regions.size(); ++i) {
    const MemoryRegion& r = regions[i];
    // map_file refuses unaligned values and a file shorter than offset + size (which would SIGBUS us later).
    auto region = memory::GuestMemoryRegion::map_file(memory::GuestAddress(r.guest_phys_addr), r.memory_size,
                                                      std::move(fds[i]), r.mmap_offset);
    if (!region) {
      return std::unexpected(
          std::move(region).error().with_context(fmt::format("{}: region {} ({})", op, i, describe_region(r))));
    }
    mapped.push_back(std::move(*region));
  }
  auto memory = memory::GuestMemory::from_regions(std::move(mapped));
  if (!memory) {
    return std::unexpected(std::move(memory).error().with_context(op));
  }
  std::sort(regions.begin(), regions.end(),
            [](const MemoryRegion& a, const MemoryRegion& b) { return a.guest_phys_addr < b.guest_phys_addr; });
  return BackendMemoryTable(std::move(regions), std::make_unique<memory::GuestMemory>(std::move(*memory)));
}

Result<Fd> BackendMemoryTable::duplicate_fd(std::uint64_t gpa, std::string_view op) const {
  const memory::GuestMemoryRegion* region = memory().find_region(memory::GuestAddress(gpa));
  if (region == nullptr) {
    return logic_error(op, fmt::format("internal: no mapped region at {:#x}", gpa));
  }
  auto dup = region->fd().duplicate();
  if (!dup) {
    return std::unexpected(std::move(dup).error().with_context(fmt::format("{}: keeping region at {:#x}", op, gpa)));
  }
  return dup;
}

Result<memory::GuestAddress> BackendMemoryTable::translate(std::uint64_t uaddr, std::uint64_t length) const {
  for (const MemoryRegion& r : regions_) {
    if (uaddr < r.userspace_addr || uaddr - r.userspace_addr >= r.memory_size) {
      continue;
    }
    const std::uint64_t offset = uaddr - r.userspace_addr;
    if (length > r.memory_size - offset) {
      return logic_error("vhost-user ring address",
                         fmt::format("frontend range [{:#x}, +{:#x}) runs past the end of region {}", uaddr, length,
                                     describe_region(r)));
    }
    return memory::GuestAddress(r.guest_phys_addr + offset);
  }
  return logic_error("vhost-user ring address",
                     fmt::format("frontend address {:#x} (+{:#x}) is in none of the {} memory regions", uaddr, length,
                                 regions_.size()));
}

}  // namespace vmm::vhost
