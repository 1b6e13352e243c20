#include "vmm/virtio/virtio_device.hpp"

#include <algorithm>

namespace vmm::virtio {

// A device without configuration (config_size() == 0) never sees these: the transport only forwards accesses within
// config_size(). A device that declares a configuration overrides read_config; bytes it does not define read 0.
void VirtioDevice::read_config(std::uint64_t offset, std::span<std::uint8_t> data) const {
  static_cast<void>(offset);
  std::ranges::fill(data, std::uint8_t{0});
}

// Read-only configuration: the driver's writes change nothing (virtio 1.2, 2.5: most fields are read-only).
void VirtioDevice::write_config(std::uint64_t offset, std::span<const std::uint8_t> data) {
  static_cast<void>(offset);
  static_cast<void>(data);
}

}  // namespace vmm::virtio
