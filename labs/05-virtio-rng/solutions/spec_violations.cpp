// Lab 05, exercise 3: a driver that breaks the rules, and the reset that recovers (reference). See
// labs/05-virtio-rng/README.md.
#include <array>
#include <cstddef>

#include "lab05.hpp"
#include "vmm/virtio/uapi.hpp"

namespace lab05 {

namespace {

constexpr auto kWrite = static_cast<std::uint16_t>(VRING_DESC_F_WRITE);
constexpr auto kNext = static_cast<std::uint16_t>(VRING_DESC_F_NEXT);

vring_desc descriptor(const vmm::testing::MockBuffer& buffer, std::uint16_t flags, std::uint16_t next = 0) {
  return {.addr = buffer.address.raw(), .len = buffer.length, .flags = flags, .next = next};
}

}  // namespace

void publish_violation(vmm::testing::MockDriver& driver, Violation violation) {
  switch (violation) {
    case Violation::DescriptorLoop: {
      // 0 -> 1 -> 0 -> ...: a walk that never ends unless the device counts its steps.
      const auto a = driver.allocate(16, true);
      const auto b = driver.allocate(16, true);
      driver.write_descriptor(0, descriptor(a, kWrite | kNext, 1));
      driver.write_descriptor(1, descriptor(b, kWrite | kNext, 0));
      driver.publish(0);
      return;
    }
    case Violation::ReadableAfterWritable: {
      // virtio 1.2, 2.7.4.2: every device-readable descriptor comes before every device-writable one.
      const auto answer = driver.allocate(16, true);
      const auto request = driver.allocate(16, false);
      driver.write_descriptor(0, descriptor(answer, kWrite | kNext, 1));
      driver.write_descriptor(1, descriptor(request, 0));
      driver.publish(0);
      return;
    }
    case Violation::BufferOutsideMemory: {
      // 1 TiB: far past the test's few MiB of guest memory. A device that trusted it would write to whatever the
      // host has mapped there, or crash the VMM.
      const vmm::testing::MockBuffer outside{
          .address = vmm::memory::GuestAddress(1ull << 40), .length = 16, .writable = true};
      driver.write_descriptor(0, descriptor(outside, kWrite));
      driver.publish(0);
      return;
    }
    case Violation::IndexJump: {
      // More chains "published" than the queue has descriptors: the ring's entries would overwrite each other.
      const auto size = driver.queue_layout().size;
      driver.set_avail_index(static_cast<std::uint16_t>(driver.avail_index() + size + 1));
      return;
    }
  }
}

void reset_after_needs_reset(vmm::virtio::VirtioPciDevice& transport) {
  constexpr std::uint64_t kStatus =
      vmm::virtio::VirtioPciDevice::kCommonOffset + offsetof(virtio_pci_common_cfg, device_status);
  const std::array<std::uint8_t, 1> zero{0};
  transport.bar_write(vmm::virtio::VirtioPciDevice::kRegionsBar, kStatus, zero);
  // virtio 1.2, 4.1.4.3.2: the driver must not reinitialize before device_status reads 0 (a device may take time).
  std::array<std::uint8_t, 1> status{0xff};
  for (int tries = 0; tries < 1000; ++tries) {
    transport.bar_read(vmm::virtio::VirtioPciDevice::kRegionsBar, kStatus, status);
    if (status[0] == 0) {
      return;
    }
  }
}

}  // namespace lab05
