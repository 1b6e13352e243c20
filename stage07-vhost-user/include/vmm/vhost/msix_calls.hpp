#pragma once
/// @file
/// @brief `follow_msix_routes`: a vhost-user backend's call fds pointed at the irqfds of the MSI-X vectors the
///        guest chose, and re-pointed when it masks or unmasks them.

#include <functional>

#include "vmm/error.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/vhost/frontend.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace vmm::vhost {

/// @brief Wires `frontend`'s call fds to `routes` (the MSI-X routes of `transport`, the device `frontend` sits
///        behind). All three must outlive the wiring; undo it with `frontend.set_call_source(nullptr)` and
///        `routes.set_listener(nullptr)` before any of them goes.
///
/// The backend's call fd for queue q is the irqfd of the vector the driver chose for q, while that vector has a
/// route (MSI-X on, neither the function nor the vector masked): the backend's write becomes an MSI inside KVM.
/// Otherwise there is none, and the frontend relays through the transport, which sets a masked vector's PBA bit
/// instead of losing the interrupt. The guest may mask or unmask a vector while the backend holds its irqfd: the
/// routes' listener re-points it (`update_call`), as QEMU does, on the vCPU thread that wrote the table, before the
/// table delivers what an unmask released. `on_error` hears an `update_call` that failed.
void follow_msix_routes(VhostUserFrontend& frontend, const virtio::VirtioPciDevice& transport, irq::MsixRoutes& routes,
                        std::function<void(const Error&)> on_error);

}  // namespace vmm::vhost
