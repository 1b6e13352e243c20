// Lab 05, exercise 3: a driver that breaks the rules, and the reset that recovers. See labs/05-virtio-rng/README.md.
#include <fmt/format.h>

#include "lab05.hpp"
#include "vmm/virtio/uapi.hpp"

namespace lab05 {

void publish_violation(vmm::testing::MockDriver& driver, Violation violation) {
  // TODO: one mistake per case, built with the driver's raw calls:
  //  - driver.allocate(length, /*writable=*/true) hands out a buffer inside guest memory;
  //  - driver.write_descriptor(index, vring_desc{...}) writes a descriptor as given;
  //  - driver.publish(head) puts a head in the available ring and bumps avail->idx by one;
  //  - driver.set_avail_index(index) stores avail->idx directly; driver.queue_layout().size is the queue size.
  // Which check in read_descriptor_chain or SplitQueue::pop catches each one? Then delete the print.
  fmt::print("publish_violation: not implemented yet (lab 05, exercise 3)\n");
  (void)driver;
  (void)violation;
}

void reset_after_needs_reset(vmm::virtio::VirtioPciDevice& transport) {
  // TODO: write one byte, 0, at offsetof(virtio_pci_common_cfg, device_status) in BAR0
  // (vmm::virtio::VirtioPciDevice::kRegionsBar, kCommonOffset) with transport.bar_write, then read that byte back
  // with transport.bar_read until it is 0, at most a few hundred times. Then delete the print.
  fmt::print("reset_after_needs_reset: not implemented yet (lab 05, exercise 3)\n");
  (void)transport;
}

}  // namespace lab05
