#include "vmm/vhost/msix_calls.hpp"

#include <utility>

namespace vmm::vhost {

void follow_msix_routes(VhostUserFrontend& frontend, const virtio::VirtioPciDevice& transport, irq::MsixRoutes& routes,
                        std::function<void(const Error&)> on_error) {
  frontend.set_call_source([&transport, &routes](std::uint16_t queue) -> const event::EventFd* {
    const auto vector = transport.queue_msix_vector(queue);
    if (!vector || *vector == VIRTIO_MSI_NO_VECTOR) {
      return nullptr;
    }
    const auto route = routes.route(*vector);
    return route && route->message ? routes.irqfd(*vector) : nullptr;
  });
  routes.set_listener([&frontend, &transport, on_error = std::move(on_error)](std::uint16_t vector) {
    for (std::uint16_t q = 0; q < frontend.queue_count(); ++q) {
      if (transport.queue_msix_vector(q) == vector) {
        if (auto rc = frontend.update_call(q); !rc && on_error) {
          on_error(rc.error());
        }
      }
    }
  });
}

}  // namespace vmm::vhost
