#pragma once
/// @file
/// @brief `GuestMemoryRegion`: one contiguous range of guest-physical memory and the host mapping behind it.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/memory/guest_address.hpp"
#include "vmm/mmap.hpp"

namespace vmm::memory {

/// @brief Where a region's memory comes from.
enum class Backing {
  /// Private anonymous memory: only this process (and, through KVM, the guest) sees it.
  anonymous,
  /// A memfd mapped MAP_SHARED: another process can map the same pages (a vhost-user backend does, later).
  memfd,
  /// Another process's file mapped MAP_SHARED (`GuestMemoryRegion::map_file`): how a vhost-user backend sees the
  /// guest memory its frontend shares.
  shared_file,
};

/// @brief Which kind of huge page a region ended up with. Asking for huge pages is a hint: hugetlbfs pages must be
///        reserved by the administrator, so when there are none the region falls back and records what it got.
enum class HugePages {
  none,         ///< Ordinary pages (not requested, or transparent huge pages could not even be requested).
  hugetlb,      ///< Reserved hugetlbfs pages (MAP_HUGETLB, or MFD_HUGETLB for a memfd).
  transparent,  ///< madvise(MADV_HUGEPAGE): the kernel may back the region with huge pages when it can.
};

/// @brief How to create a region.
struct RegionOptions {
  Backing backing = Backing::anonymous;         ///< Anonymous private, or a shareable memfd.
  bool hugepages = false;                       ///< Try hugetlbfs pages, then transparent huge pages.
  bool prefault = false;                        ///< MAP_POPULATE: fault every page in now rather than on first touch.
  std::string memfd_name = "vmmlab-guest-ram";  ///< Name shown in /proc/PID/fd and /proc/PID/maps (memfd backing only).
};

/// @brief The huge page size tried for hugetlb backings (x86's default, 2 MiB). Regions whose size is not a multiple
///        of it go straight to transparent huge pages.
inline constexpr std::uint64_t kHugePageSize = 2ULL << 20;

/// @brief The host's base page size (sysconf(_SC_PAGESIZE), 4 KiB on x86).
[[nodiscard]] std::uint64_t host_page_size();

/// @brief A range of guest-physical memory [start, start + size) and the host mapping that backs it. Move-only: it
///        owns the mapping (a `vmm::Mmap`) and, for memfd backing, the memfd (a `vmm::Fd`).
class GuestMemoryRegion {
 public:
  /// @brief Maps `size` bytes for guest-physical `start`. Both must be page-aligned, `size` non-zero, and the end
  ///        must fit in 64 bits.
  [[nodiscard]] static Result<GuestMemoryRegion> create(GuestAddress start, std::uint64_t size,
                                                        const RegionOptions& options = {});

  /// @brief Maps `size` bytes of `fd` at `file_offset` MAP_SHARED, read-write, as guest-physical `start`: a region
  ///        whose memory belongs to someone else (a vhost-user frontend's memfd). `start`, `size` and `file_offset`
  ///        must be page-aligned, `size` non-zero, neither end may overflow, and the file must be at least
  ///        `file_offset + size` bytes long (fstat): touching a page past the end of a file raises SIGBUS, so a file
  ///        shorter than the region it claims is refused here rather than crashing the process later. Takes
  ///        ownership of `fd`.
  [[nodiscard]] static Result<GuestMemoryRegion> map_file(GuestAddress start, std::uint64_t size, Fd fd,
                                                          std::uint64_t file_offset);

  /// @brief First guest-physical byte.
  [[nodiscard]] GuestAddress start() const noexcept { return range_.start; }
  /// @brief Length in bytes.
  [[nodiscard]] std::uint64_t size() const noexcept { return range_.size; }
  /// @brief One past the last guest-physical byte (always representable; `create` checks).
  [[nodiscard]] GuestAddress end() const noexcept { return range_.end(); }
  /// @brief The guest-physical range.
  [[nodiscard]] const GuestRange& range() const noexcept { return range_; }
  /// @brief True when `address` lies inside the region.
  [[nodiscard]] bool contains(GuestAddress address) const noexcept { return range_.contains(address); }

  /// @brief Where the first byte is mapped in this process.
  [[nodiscard]] std::byte* host_address() const noexcept { return map_.data(); }
  /// @brief The whole region as host bytes.
  [[nodiscard]] std::span<std::byte> bytes() const noexcept { return map_.bytes(); }

  /// @brief The backing asked for.
  [[nodiscard]] Backing backing() const noexcept { return backing_; }
  /// @brief The huge pages actually in use.
  [[nodiscard]] HugePages huge_pages() const noexcept { return huge_pages_; }
  /// @brief True when the mapping was created with MAP_POPULATE.
  [[nodiscard]] bool prefaulted() const noexcept { return prefaulted_; }

  /// @brief The file behind a memfd or shared-file region (empty for anonymous memory). Another process maps
  ///        `file_offset()`..`file_offset() + size()` of it to see the same pages.
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }
  /// @brief Offset of the region's first byte in `fd()`.
  [[nodiscard]] std::uint64_t file_offset() const noexcept { return file_offset_; }

 private:
  GuestMemoryRegion(GuestRange range, Mmap map, Fd fd, Backing backing, HugePages huge_pages, bool prefaulted,
                    std::uint64_t file_offset = 0)
      : range_(range),
        map_(std::move(map)),
        fd_(std::move(fd)),
        file_offset_(file_offset),
        backing_(backing),
        huge_pages_(huge_pages),
        prefaulted_(prefaulted) {}

  GuestRange range_;
  Mmap map_;
  Fd fd_;
  std::uint64_t file_offset_ = 0;  // 0 for the memfds created here (one per region); map_file's may be anything
  Backing backing_ = Backing::anonymous;
  HugePages huge_pages_ = HugePages::none;
  bool prefaulted_ = false;
};

}  // namespace vmm::memory
