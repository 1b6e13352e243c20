#pragma once
// Test support: stage06's interrupt path without a VM. A virtio-rng transport whose MSI-X messages go to MsixRoutes
// (one GSI and one irqfd per vector, routes that follow the guest's table), with the routing table recorded instead of
// installed and every irqfd registration accepted. The eventfds are real: a test reads what was written to them.
// Labs 06 and 07 build their MSI-X exercises on it.

#include <gtest/gtest.h>
#include <linux/kvm.h>

#include <memory>
#include <span>
#include <vector>

#include "vmm/event/event_fd.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/testing/virtio_pci_driver.hpp"
#include "vmm/virtio/rng/rng_device.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace vmm::stage06::testing {

/// Plays KVM_SET_GSI_ROUTING: keeps every table "installed", the last one being what KVM holds.
struct RoutingRecorder {
  std::vector<std::vector<kvm_irq_routing_entry>> tables;
  irq::ApplyRoutes apply() {
    return [this](std::span<const kvm_irq_routing_entry> entries) -> Result<void> {
      tables.emplace_back(entries.begin(), entries.end());
      return {};
    };
  }
  // What KVM holds now: the defaults KVM_CREATE_IRQCHIP installed until the first KVM_SET_GSI_ROUTING.
  [[nodiscard]] std::vector<kvm_irq_routing_entry> installed() const {
    return tables.empty() ? irq::default_irqchip_routes() : tables.back();
  }
};

/// Plays KVM_IRQFD: accepts every registration.
class AcceptingBinder final : public irq::IrqfdBinder {
 public:
  Result<void> bind(const event::EventFd&, std::uint32_t) override { return {}; }
  Result<void> unbind(const event::EventFd&, std::uint32_t) override { return {}; }
};

/// A fixture with the transport, its two MSI-X vectors' routes and a driver for its registers, set up as a VMM
/// would before the guest runs.
class RngOnMsixRoutes : public ::testing::Test {
 protected:
  void SetUp() override {
    auto routes = irq::MsixRoutes::create(2, routing_, binder_);
    ASSERT_TRUE(routes) << routes.error().message();
    routes_ = std::move(*routes);
    auto rng = virtio::rng::RngDevice::create(virtio::rng::RngConfig{});
    ASSERT_TRUE(rng) << rng.error().message();
    auto transport = virtio::VirtioPciDevice::create(*rng, memory_, *routes_);
    ASSERT_TRUE(transport) << transport.error().message();
    transport_ = *transport;
    ASSERT_TRUE(routes_->attach(transport_->msix()));
    pci_ = std::make_unique<vmm::testing::VirtioPciDriver>(*transport_);
  }

  memory::GuestMemory memory_ = vmm::testing::make_test_memory();
  RoutingRecorder recorder_;
  irq::GsiRouting routing_{recorder_.apply()};
  AcceptingBinder binder_;
  std::unique_ptr<irq::MsixRoutes> routes_;  // the transport's sink: declared before it, destroyed after it
  std::shared_ptr<virtio::VirtioPciDevice> transport_;
  std::unique_ptr<vmm::testing::VirtioPciDriver> pci_;  // the driver's register accesses
};

}  // namespace vmm::stage06::testing
