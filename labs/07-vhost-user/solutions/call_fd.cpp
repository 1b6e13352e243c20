// Lab 07, exercise 3: where the call eventfd goes (reference). See labs/07-vhost-user/README.md.
#include "lab07.hpp"

namespace lab07 {

const vmm::event::EventFd* call_fd_for(vmm::virtio::VirtioPciDevice& transport, const vmm::irq::MsixRoutes& routes,
                                       std::uint16_t queue) {
  // The vector the driver wrote to queue_msix_vector; none (or NO_VECTOR) means the queue interrupts through INTx
  // and the ISR, which only the transport can do.
  const auto vector = transport.queue_msix_vector(queue);
  if (!vector || *vector == VIRTIO_MSI_NO_VECTOR) {
    return nullptr;
  }
  // An irqfd interrupts the guest only while its GSI has a route: MSI-X enabled, the function and the vector
  // unmasked (MsixRoutes keeps the routes in step with the table). Without a route KVM drops the backend's write,
  // and the Pending Bit Array, which lives in the VMM's MsixTable, never hears of it. Through the relay the write
  // becomes MsixTable::trigger, which sets the pending bit and delivers it at the unmask.
  const auto route = routes.route(*vector);
  if (!route || !route->message) {
    return nullptr;
  }
  return routes.irqfd(*vector);
}

}  // namespace lab07
