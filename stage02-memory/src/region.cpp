#include "vmm/memory/region.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

namespace vmm::memory {

std::uint64_t host_page_size() {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

namespace {

struct Mapping {
  Mmap map;
  Fd fd;
  HugePages huge_pages = HugePages::none;
};

// Huge pages are a hint, not a requirement: MADV_HUGEPAGE fails with EINVAL on kernels built without transparent
// huge pages, and the region is still usable with ordinary pages, so only record whether the advice was taken.
HugePages advise_transparent(const Mmap& map) {
  return ::madvise(map.data(), map.size(), MADV_HUGEPAGE) == 0 ? HugePages::transparent : HugePages::none;
}

Result<Mapping> map_anonymous(std::uint64_t size, const RegionOptions& options, int populate) {
  if (options.hugepages && size % kHugePageSize == 0) {
    // Fails with ENOMEM unless the administrator reserved enough hugetlbfs pages (vm.nr_hugepages); that is the
    // common case on a development machine, hence the fallback rather than an error.
    if (auto map = Mmap::anonymous(size, PROT_READ | PROT_WRITE, MAP_HUGETLB | populate)) {
      return Mapping{std::move(*map), Fd(), HugePages::hugetlb};
    }
  }
  auto map = Mmap::anonymous(size, PROT_READ | PROT_WRITE, populate);
  if (!map) {
    return std::unexpected(std::move(map).error());
  }
  const auto huge = options.hugepages ? advise_transparent(*map) : HugePages::none;
  return Mapping{std::move(*map), Fd(), huge};
}

Result<Fd> create_memfd(const std::string& name, std::uint64_t size, unsigned int flags) {
  Fd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING | flags));
  if (!fd) {
    return sys_error("memfd_create", errno, name);
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return sys_error("ftruncate", errno, fmt::format("memfd {} to {:#x} bytes", name, size));
  }
  // Once the memfd is shared (stage07 hands it to a vhost-user backend), the size is a promise to whoever maps it:
  // a file that shrank under a mapping raises SIGBUS in every process touching the lost pages. Sealing makes the size
  // final, as QEMU's memory-backend-memfd does by default (seal=on).
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return sys_error("fcntl(F_ADD_SEALS)", errno, fmt::format("memfd {}", name));
  }
  return fd;
}

Result<Mapping> map_memfd(std::uint64_t size, const RegionOptions& options, int populate) {
  if (options.hugepages && size % kHugePageSize == 0) {
    // For a file, MAP_HUGETLB means nothing: the file itself must live on hugetlbfs, which MFD_HUGETLB arranges.
    // The reservation is made at mmap time, so that is where a host without reserved huge pages says ENOMEM.
    if (auto fd = create_memfd(options.memfd_name, size, MFD_HUGETLB)) {
      if (auto map = Mmap::map(*fd, size, PROT_READ | PROT_WRITE, MAP_SHARED | populate)) {
        return Mapping{std::move(*map), std::move(*fd), HugePages::hugetlb};
      }
    }
  }
  auto fd = create_memfd(options.memfd_name, size, 0);
  if (!fd) {
    return std::unexpected(std::move(fd).error());
  }
  auto map = Mmap::map(*fd, size, PROT_READ | PROT_WRITE, MAP_SHARED | populate);
  if (!map) {
    return std::unexpected(std::move(map).error());
  }
  const auto huge = options.hugepages ? advise_transparent(*map) : HugePages::none;
  return Mapping{std::move(*map), std::move(*fd), huge};
}

}  // namespace

Result<GuestMemoryRegion> GuestMemoryRegion::create(GuestAddress start, std::uint64_t size,
                                                    const RegionOptions& options) {
  constexpr std::string_view op = "GuestMemoryRegion::create";
  const auto page = host_page_size();
  if (size == 0 || size % page != 0) {
    return logic_error(op, fmt::format("{}: the size must be a non-zero multiple of the page size {:#x}",
                                       describe_access(start, size), page));
  }
  if (start.raw() % page != 0) {
    return logic_error(op, fmt::format("{}: the start must be page-aligned", describe_access(start, size)));
  }
  if (!start.checked_add(size)) {
    return logic_error(op, fmt::format("{}: the region would run past the end of the 64-bit address space",
                                       describe_access(start, size)));
  }
  const int populate = options.prefault ? MAP_POPULATE : 0;
  auto mapping =
      options.backing == Backing::memfd ? map_memfd(size, options, populate) : map_anonymous(size, options, populate);
  if (!mapping) {
    return std::unexpected(
        std::move(mapping).error().with_context(fmt::format("guest memory {}", describe_access(start, size))));
  }
  return GuestMemoryRegion(GuestRange{start, size}, std::move(mapping->map), std::move(mapping->fd), options.backing,
                           mapping->huge_pages, options.prefault);
}

Result<GuestMemoryRegion> GuestMemoryRegion::map_file(GuestAddress start, std::uint64_t size, Fd fd,
                                                      std::uint64_t file_offset) {
  constexpr std::string_view op = "GuestMemoryRegion::map_file";
  const auto page = host_page_size();
  const auto where = describe_access(start, size);
  if (size == 0 || size % page != 0 || start.raw() % page != 0 || file_offset % page != 0) {
    return logic_error(op, fmt::format("{} at file offset {:#x}: start, size and offset must be page-aligned ({:#x}) "
                                       "and the size non-zero",
                                       where, file_offset, page));
  }
  if (!start.checked_add(size) || file_offset > UINT64_MAX - size ||
      file_offset + size > static_cast<std::uint64_t>(INT64_MAX)) {
    return logic_error(op, fmt::format("{} at file offset {:#x}: the range overflows", where, file_offset));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return sys_error("fstat", errno, fmt::format("fd {} for guest memory {}", fd.get(), where));
  }
  if (static_cast<std::uint64_t>(st.st_size) < file_offset + size) {
    return logic_error(op, fmt::format("{}: the file is {:#x} bytes, shorter than offset {:#x} + size {:#x}", where,
                                       st.st_size, file_offset, size));
  }
  auto map = Mmap::map(fd, size, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<off_t>(file_offset));
  if (!map) {
    return std::unexpected(std::move(map).error().with_context(fmt::format("guest memory {}", where)));
  }
  return GuestMemoryRegion(GuestRange{start, size}, std::move(*map), std::move(fd), Backing::shared_file,
                           HugePages::none, false, file_offset);
}

}  // namespace vmm::memory
