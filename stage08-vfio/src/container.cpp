#include "vmm/vfio/container.hpp"

#include <fcntl.h>

#include <cstring>
#include <memory>

namespace vmm::vfio {

namespace {

constexpr const char* kNoVfio = "this host has no VFIO: load vfio-pci, see stage08-vfio/README.md";

}  // namespace

Result<Container> Container::open(const char* path) {
  auto fd = Fd::open(path, O_RDWR);
  if (!fd) {
    const int err = fd.error().errno_value;
    if (err == ENOENT || err == ENODEV || err == ENXIO) {
      return sys_error(fmt::format("open {}", path), err, kNoVfio);
    }
    return sys_error(fmt::format("open {}", path), err,
                     err == EACCES || err == EPERM ? "VFIO needs root or access to /dev/vfio" : "");
  }
  Container container(std::move(*fd));
  auto version = container.api_version();
  if (!version) {
    return std::unexpected(version.error().with_context(fmt::format("{} is not a VFIO container", path)));
  }
  if (*version != VFIO_API_VERSION) {
    return logic_error("VFIO_GET_API_VERSION", fmt::format("the kernel speaks VFIO API {}, this VMM was built for {}",
                                                           *version, VFIO_API_VERSION));
  }
  return container;
}

Result<int> Container::api_version() const {
  return VMM_IOCTL(fd_, VFIO_GET_API_VERSION);
}

Result<bool> Container::has_extension(unsigned long extension) const {
  auto rc = VMM_IOCTL(fd_, VFIO_CHECK_EXTENSION, extension);
  if (!rc) {
    return std::unexpected(rc.error().with_context(fmt::format("extension {}", extension)));
  }
  return *rc > 0;
}

Result<void> Container::set_iommu(unsigned long type) {
  if (groups_attached_ == 0) {
    return logic_error("VFIO_SET_IOMMU", "no group is attached to the container yet: call Group::set_container first");
  }
  if (auto rc = VMM_IOCTL(fd_, VFIO_SET_IOMMU, type); !rc) {
    // EPERM from type1 on x86: the IOMMU does not remap interrupts, so a device could forge MSIs.
    return std::unexpected(rc.error().with_context(
        rc.error().errno_value == EPERM
            ? fmt::format("IOMMU type {}: no interrupt remapping (intel-iommu intremap=on, or vfio_iommu_type1 "
                          "allow_unsafe_interrupts=1)",
                          type)
            : fmt::format("IOMMU type {}", type)));
  }
  iommu_type_ = type;
  // Map at the IOMMU's granularity from now on (on x86 this stays 4 KiB).
  if (auto info = iommu_info(); info && info->min_page_size() != 0) {
    mappings_.set_alignment(info->min_page_size());
  }
  return {};
}

Result<IommuInfo> Container::iommu_info() const {
  if (iommu_type_ == 0) {
    return logic_error("VFIO_IOMMU_GET_INFO", "no IOMMU type set: call set_iommu first");
  }
  // First ask with the fixed struct only; the kernel writes back in argsz how much the whole answer (with its
  // capability chain) needs, and we ask again with that much. 8-byte elements keep the buffer aligned.
  std::size_t argsz = sizeof(vfio_iommu_type1_info);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto buffer = std::make_unique<std::uint64_t[]>((argsz + 7) / 8);
    vfio_iommu_type1_info fixed{};
    fixed.argsz = static_cast<std::uint32_t>(argsz);
    std::memcpy(buffer.get(), &fixed, sizeof(fixed));
    if (auto rc = VMM_IOCTL(fd_, VFIO_IOMMU_GET_INFO, buffer.get()); !rc) {
      return std::unexpected(rc.error());
    }
    std::memcpy(&fixed, buffer.get(), sizeof(fixed));
    if (fixed.argsz <= argsz) {
      return parse_iommu_info(std::span(reinterpret_cast<const std::byte*>(buffer.get()), argsz));
    }
    argsz = fixed.argsz;
  }
  return logic_error("VFIO_IOMMU_GET_INFO",
                     fmt::format("the kernel keeps asking for a bigger buffer ({} bytes)", argsz));
}

Result<void> Container::map_dma(std::uint64_t iova, std::uint64_t size, const void* host_va, bool readable,
                                bool writable) {
  const DmaMapping mapping{iova, size, reinterpret_cast<std::uintptr_t>(host_va), readable, writable};
  if (iommu_type_ == 0) {
    return logic_error("VFIO_IOMMU_MAP_DMA", "no IOMMU type set: call set_iommu first");
  }
  if (auto ok = mappings_.check_add(mapping); !ok) {
    return ok;
  }
  vfio_iommu_type1_dma_map map{};
  map.argsz = sizeof(map);
  map.flags = (readable ? VFIO_DMA_MAP_FLAG_READ : 0U) | (writable ? VFIO_DMA_MAP_FLAG_WRITE : 0U);
  map.vaddr = mapping.host_va;
  map.iova = iova;
  map.size = size;
  if (auto rc = VMM_IOCTL(fd_, VFIO_IOMMU_MAP_DMA, &map); !rc) {
    return std::unexpected(rc.error().with_context(
        fmt::format("IOVA [0x{:x}, 0x{:x}) -> host 0x{:x}", iova, iova + size, mapping.host_va)));
  }
  return mappings_.add(mapping);
}

Result<void> Container::unmap_dma(std::uint64_t iova, std::uint64_t size) {
  if (auto found = mappings_.find_exact(iova, size); !found) {
    return std::unexpected(found.error());
  }
  vfio_iommu_type1_dma_unmap unmap{};
  unmap.argsz = sizeof(unmap);
  unmap.iova = iova;
  unmap.size = size;
  if (auto rc = VMM_IOCTL(fd_, VFIO_IOMMU_UNMAP_DMA, &unmap); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("IOVA [0x{:x}, 0x{:x})", iova, iova + size)));
  }
  if (unmap.size != size) {
    return logic_error(
        "VFIO_IOMMU_UNMAP_DMA",
        fmt::format("the kernel unmapped 0x{:x} bytes at IOVA 0x{:x}, not 0x{:x}", unmap.size, iova, size));
  }
  if (auto removed = mappings_.remove(iova, size); !removed) {
    return std::unexpected(removed.error());
  }
  return {};
}

}  // namespace vmm::vfio
