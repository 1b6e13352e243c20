// Lab 06's checks. Built twice: against your code in exercises/ (lab06_tests_exercises) and against the reference in
// solutions/ (lab06_tests_solutions). See labs/06-irqfd-ioeventfd/README.md.
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <linux/pci_regs.h>

#include <cstdint>
#include <cstring>
#include <guest/virtio_rng.hpp>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "eventfd_guest_run.hpp"  // stage06-irqfd-ioeventfd/tests
#include "eventfd_rng_vm.hpp"
#include "lab06.hpp"
#include "rng_on_msix_routes.hpp"  // stage06-irqfd-ioeventfd/tests
#include "vmm/event/event_fd.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/testing/guest_console.hpp"
#include "vmm/testing/kvm.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/testing/virtio_pci_driver.hpp"
#include "vmm/virtio/rng/rng_device.hpp"
#include "vmm/virtio/uapi.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace lab06 {
// How gtest shows a KickPrediction in a failure message.
void PrintTo(const KickPrediction& p, std::ostream* os) {
  *os << "{notify_exits " << p.notify_exits << ", ioeventfd_kicks " << p.ioeventfd_kicks << "}";
}
}  // namespace lab06

namespace vmm::pci {
// How gtest shows an MsiMessage in a failure message.
void PrintTo(const MsiMessage& m, std::ostream* os) {
  *os << "{address 0x" << std::hex << m.address << ", data 0x" << m.data << std::dec << "}";
}
}  // namespace vmm::pci

namespace {

using vmm::pci::MsiMessage;
using vmm::testing::MockBuffer;
using vmm::testing::MockDriver;
using vmm::testing::MockLayout;
using vmm::virtio::VirtioPciDevice;

// ---- Exercise 1: take the ioeventfd away and count the exits ------------------------------------------------------

using vmm::machine::AccessCount;
using vmm::machine::ExitCountersSnapshot;
using vmm::pci::BarMapping;
using vmm::pci::BarSpace;

using vmm::stage06::testing::EventfdRun;  // stage06-irqfd-ioeventfd/tests/eventfd_guest_run.hpp
using vmm::stage06::testing::run_guest;

// Both phases, 4 batches of 4 requests, without printing the bytes.
vmmlab_rng_options quiet_options() {
  auto options = vmm::stage05::default_rng_options();
  options.flags |= VMMLAB_RNG_QUIET;
  return options;
}

// The test's own count of notify writes (so that the prediction test checks predict() alone).
std::uint64_t count_notify_writes(const EventfdRun& run) {
  for (const auto& m : run.mappings) {
    if (m.device_number == vmm::stage05::kRngSlot && m.bar_index == VirtioPciDevice::kRegionsBar) {
      std::uint64_t n = 0;
      for (const auto& [address, count] : run.exits.mmio) {
        if (address >= m.base + VirtioPciDevice::kNotifyOffset &&
            address < m.base + VirtioPciDevice::kNotifyOffset + VirtioPciDevice::kRegionSize) {
          n += count.writes;
        }
      }
      return n;
    }
  }
  ADD_FAILURE() << "the rng's BAR0 is not mapped after the run";
  return 0;
}

TEST(Exercise1, WithoutIoeventfdsKeepsTheGuestOptionsAndTheRestOfStage06) {
  auto options = quiet_options();
  options.batches = 3;
  options.per_batch = 5;
  const auto config = lab06::without_ioeventfds(options);
  EXPECT_FALSE(config.ioeventfd) << "without_ioeventfds(): ioeventfd is still on";
  EXPECT_TRUE(config.irqfd_uart) << "without_ioeventfds(): only the ioeventfds go, the UART's irqfd stays";
  ASSERT_TRUE(config.rng.options.has_value()) << "without_ioeventfds(): the guest gets no options";
  EXPECT_EQ(std::memcmp(&*config.rng.options, &options, sizeof options), 0)
      << "without_ioeventfds(): the guest gets other options than the ones passed";
}

TEST(Exercise1, NotifyExitsCountsWritesToTheRngNotifyRegionOnly) {
  constexpr std::uint64_t kBar0 = 0xc000'4000;  // where a guest might put the rng's BAR0
  const std::vector<BarMapping> mappings{
      {.device_number = 3, .bar_index = 0, .space = BarSpace::Memory, .base = 0xc000'0000, .size = 0x1000},
      {.device_number = vmm::stage05::kRngSlot,
       .bar_index = 0,
       .space = BarSpace::Memory,
       .base = kBar0,
       .size = VirtioPciDevice::kRegionsBarSize},
      {.device_number = vmm::stage05::kRngSlot,
       .bar_index = 2,
       .space = BarSpace::Memory,
       .base = 0xc000'8000,
       .size = VirtioPciDevice::kMsixBarSize},
  };
  ExitCountersSnapshot exits;
  exits.mmio[kBar0 + 0x3000] = {.reads = 1, .writes = 3};  // queue 0's notify address: 3 kicks (the read is none)
  exits.mmio[kBar0 + 0x3004] = {.reads = 0, .writes = 2};  // queue 1's, if there were one: still the notify region
  exits.mmio[kBar0 + 0x3ffe] = {.reads = 0, .writes = 1};  // the region's last 16-bit slot
  exits.mmio[kBar0 + 0x2ffe] = {.reads = 0, .writes = 7};  // device configuration, just below
  exits.mmio[kBar0 + 0x0016] = {.reads = 4, .writes = 4};  // common configuration
  exits.mmio[0xc000'8000] = {.reads = 0, .writes = 9};     // the MSI-X table, right after BAR0 (+0x4000)
  exits.mmio[0xc000'3000] = {.reads = 0, .writes = 5};     // 0x3000 into the *other* device's window, not the rng's
  exits.pio[0xc000] = {.reads = 0, .writes = 6};           // an I/O port with the same low bits
  EXPECT_EQ(lab06::notify_exits(exits, mappings), 6u) << "3 + 2 + 1 writes inside [BAR0 + 0x3000, BAR0 + 0x4000)";
  EXPECT_EQ(lab06::notify_exits(exits, std::span(mappings).first(1)), 0u) << "the rng's BAR0 is not mapped";
  EXPECT_EQ(lab06::notify_exits(ExitCountersSnapshot{}, mappings), 0u) << "no exits at all";
}

TEST(Exercise1, WithoutIoeventfdsEveryKickIsAUserspaceExit) {
  VMMLAB_REQUIRE_KVM();
  const auto run = run_guest(lab06::without_ioeventfds(quiet_options()));
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  EXPECT_FALSE(run.ioeventfds) << "the machine was built with ioeventfds";
  ASSERT_GT(run.guest_kicks, 0u) << run.output;
  EXPECT_EQ(run.requests, 32u) << "both phases of 4 batches of 4 requests";
  EXPECT_EQ(lab06::notify_exits(run.exits, run.mappings), run.guest_kicks)
      << "notify_exits(...) after a run without ioeventfds, against the guest's kicks";
  EXPECT_EQ(run.ioeventfd_kicks, 0u) << "nothing should signal the queue eventfd";
  EXPECT_EQ(run.notifications, run.guest_kicks) << "the transport counts every kick it is handed";
}

TEST(Exercise1, WithIoeventfdsNoKickReachesUserspace) {
  VMMLAB_REQUIRE_KVM();
  vmm::stage06::EventfdRngVmConfig config;
  config.rng.options = quiet_options();
  auto run = run_guest(config);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  ASSERT_TRUE(run.ioeventfds);
  ASSERT_GT(run.guest_kicks, 0u) << run.output;
  EXPECT_EQ(lab06::notify_exits(run.exits, run.mappings), 0u) << "notify_exits(...) after a run with ioeventfds";
  EXPECT_GT(run.ioeventfd_kicks, 0u) << "the worker read no kick from its queue eventfd";
  // And to be sure notify_exits would have seen one: the same exits plus one 16-bit write at queue 0's notify address.
  for (const auto& m : run.mappings) {
    if (m.device_number == vmm::stage05::kRngSlot && m.bar_index == VirtioPciDevice::kRegionsBar) {
      ++run.exits.mmio[m.base + VirtioPciDevice::kNotifyOffset].writes;
    }
  }
  EXPECT_EQ(lab06::notify_exits(run.exits, run.mappings), 1u) << "notify_exits(...) with one notify write added";
}

TEST(Exercise1, ThePredictionMatchesBothRuns) {
  VMMLAB_REQUIRE_KVM();
  vmm::stage06::EventfdRngVmConfig config;
  config.rng.options = quiet_options();
  config.ioeventfd = false;
  const auto without = run_guest(config);
  ASSERT_EQ(without.exit_status, 0u) << without.output;
  EXPECT_EQ(
      lab06::predict(without.guest_kicks, false),
      (lab06::KickPrediction{.notify_exits = count_notify_writes(without), .ioeventfd_kicks = without.ioeventfd_kicks}))
      << "predict(" << without.guest_kicks << ", false) against the run without ioeventfds";

  config.ioeventfd = true;
  const auto with = run_guest(config);
  ASSERT_EQ(with.exit_status, 0u) << with.output;
  const auto predicted = lab06::predict(with.guest_kicks, true);
  EXPECT_EQ(predicted.notify_exits, count_notify_writes(with))
      << "predict(" << with.guest_kicks << ", true).notify_exits against the run with ioeventfds";
  // Exact: a kick that lands after the worker's last read of a phase is drained by the reset at the end of the phase,
  // and ThreadedDevice::reset counts what it drains (README.md, exercise 1).
  EXPECT_EQ(predicted.ioeventfd_kicks, with.ioeventfd_kicks)
      << "predict(" << with.guest_kicks << ", true).ioeventfd_kicks against the kicks the worker received";
}

// ---- Exercise 2: a masked vector, its pending bit and its GSI route -------------------------------------------------

constexpr std::uint16_t kConfigVector = 0;  // MSI-X table entries, as Linux and stage05's guest assign them
constexpr std::uint16_t kQueueVector = 1;
const MsiMessage kConfigMessage{0xfee0'0000, 0x51};
const MsiMessage kQueueMessage{0xfee0'0000, 0x50};

// stage06's interrupt path without a VM (RngOnMsixRoutes, shared with lab 07): a virtio-rng transport whose MSI-X
// messages go to MsixRoutes (one GSI and one irqfd per vector, routes that follow the table), with a recorded routing
// table and real eventfds.
class Exercise2 : public vmm::stage06::testing::RngOnMsixRoutes {
 protected:
  // What guest/virtio_rng.c does: features, both vectors programmed and unmasked, MSI-X on, queue 0, DRIVER_OK.
  void bring_up() {
    ASSERT_TRUE(pci_->negotiate()) << "FEATURES_OK refused";
    pci_->program_vector(kConfigVector, kConfigMessage.address, kConfigMessage.data);
    pci_->program_vector(kQueueVector, kQueueMessage.address, kQueueMessage.data);
    pci_->enable_msix();
    ASSERT_EQ(pci_->set_config_vector(kConfigVector), kConfigVector);
    ASSERT_EQ(pci_->set_queue_vector(0, kQueueVector), kQueueVector);
    pci_->enable_queue(0, driver_.queue_layout());
    pci_->add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    ASSERT_TRUE(transport_->active()) << "DRIVER_OK refused";
    // The reference view, to make sure the setup is what the tests assume: both vectors routed.
    ASSERT_EQ(routes_->route(kQueueVector)->message, kQueueMessage);
    ASSERT_EQ(routes_->route(kConfigVector)->message, kConfigMessage);
  }

  // One 16-byte request and its kick: the device serves it at once and signals the queue vector.
  void request() {
    const MockBuffer buffer = driver_.allocate(16, true);
    driver_.add_chain(std::vector<MockBuffer>{buffer});
    ASSERT_TRUE(driver_.kick_if_needed());
    pci_->notify(0);
    ASSERT_EQ(driver_.collect_used().size(), 1u) << "the device did not serve the request";
  }

  // Writes to vector's irqfd since the last call: what KVM would have turned into interrupts.
  std::uint64_t take_irqfd(std::uint16_t vector) {
    auto value = routes_->irqfd(vector)->read();
    EXPECT_TRUE(value) << value.error().message();
    return value ? value->value_or(0) : 0;
  }

  [[nodiscard]] bool masked_in_table(std::uint16_t vector) const {
    return (transport_->msix().entry(vector)->control & PCI_MSIX_ENTRY_CTRL_MASKBIT) != 0;
  }
  [[nodiscard]] std::uint32_t gsi(std::uint16_t vector) const { return *routes_->gsi(vector); }
  // lab06::routed_message on what KVM holds now.
  [[nodiscard]] std::optional<MsiMessage> routed(std::uint16_t vector) const {
    const auto table = recorder_.installed();
    return lab06::routed_message(table, gsi(vector));
  }

  MockDriver driver_{memory_, MockLayout{.size = 16}};
};

TEST_F(Exercise2, RoutedMessageFindsOnlyMsiRoutes) {
  vmm::irq::GsiRoutingTable table;
  const auto first = table.allocate_msi_gsi();
  const auto second = table.allocate_msi_gsi();
  ASSERT_TRUE(first && second);
  const MsiMessage message{0x1'fee0'2000, 0x4062};  // address_hi non-zero: both halves must be used
  ASSERT_TRUE(table.set_msi(*first, message));
  const auto entries = table.entries();
  EXPECT_EQ(lab06::routed_message(entries, *first), message) << "GSI " << *first << " has an MSI route";
  EXPECT_EQ(lab06::routed_message(entries, *second), std::nullopt) << "GSI " << *second << " is allocated, not routed";
  EXPECT_EQ(lab06::routed_message(entries, 4), std::nullopt) << "GSI 4 has irqchip routes (IOAPIC and PIC), no MSI";
  EXPECT_EQ(lab06::routed_message(entries, 1000), std::nullopt) << "GSI 1000 is not in the table";
  EXPECT_EQ(lab06::routed_message({}, *first), std::nullopt) << "an empty table";
}

TEST_F(Exercise2, MaskingAVectorRemovesItsRouteAndOnlyItsRoute) {
  ASSERT_NO_FATAL_FAILURE(bring_up());
  EXPECT_EQ(routed(kQueueVector), kQueueMessage) << "routed_message on the table KVM holds, before masking";
  EXPECT_EQ(routed(kConfigVector), kConfigMessage);

  lab06::mask_vector(*pci_, kQueueVector);
  EXPECT_TRUE(masked_in_table(kQueueVector)) << "mask bit of entry 1 after mask_vector";
  EXPECT_EQ(routes_->route(kQueueVector)->message, std::nullopt) << "MsixRoutes still routes the masked vector";
  EXPECT_EQ(routed(kQueueVector), std::nullopt) << "GSI " << gsi(kQueueVector) << " after mask_vector";
  EXPECT_EQ(routed(kConfigVector), kConfigMessage) << "the configuration vector lost its route";

  lab06::unmask_vector(*pci_, kQueueVector);
  EXPECT_FALSE(masked_in_table(kQueueVector)) << "mask bit of entry 1 after unmask_vector";
  EXPECT_EQ(routed(kQueueVector), kQueueMessage) << "GSI " << gsi(kQueueVector) << " after unmask_vector";
}

TEST_F(Exercise2, AMaskedVectorSignalsIntoThePbaNotTheIrqfd) {
  ASSERT_NO_FATAL_FAILURE(bring_up());
  ASSERT_NO_FATAL_FAILURE(request());
  EXPECT_EQ(take_irqfd(kQueueVector), 1u) << "unmasked: the request's interrupt went to the irqfd";
  EXPECT_FALSE(lab06::pending(*pci_, kQueueVector)) << "PBA bit of vector 1 with nothing pending";

  lab06::mask_vector(*pci_, kQueueVector);
  ASSERT_NO_FATAL_FAILURE(request());
  EXPECT_TRUE(transport_->msix().pending(kQueueVector))
      << "the PBA bit of vector 1 as the table holds it: was the vector masked?";
  EXPECT_TRUE(lab06::pending(*pci_, kQueueVector)) << "PBA bit of vector 1 after a request while masked";
  EXPECT_FALSE(lab06::pending(*pci_, kConfigVector)) << "PBA bit of vector 0";
  EXPECT_EQ(take_irqfd(kQueueVector), 0u) << "a masked vector's irqfd was written";
}

TEST_F(Exercise2, UnmaskingDeliversThePendingInterruptOnceThroughTheRestoredRoute) {
  ASSERT_NO_FATAL_FAILURE(bring_up());
  lab06::mask_vector(*pci_, kQueueVector);
  ASSERT_NO_FATAL_FAILURE(request());
  ASSERT_NO_FATAL_FAILURE(request());
  EXPECT_TRUE(lab06::pending(*pci_, kQueueVector)) << "PBA bit of vector 1 after two requests while masked";

  lab06::unmask_vector(*pci_, kQueueVector);
  EXPECT_EQ(take_irqfd(kQueueVector), 1u) << "two interrupts while masked are one pending bit: one delivery";
  EXPECT_FALSE(lab06::pending(*pci_, kQueueVector)) << "PBA bit of vector 1 after unmask_vector";
  EXPECT_EQ(routed(kQueueVector), kQueueMessage) << "the delivery must have gone out on the programmed message";

  lab06::unmask_vector(*pci_, kQueueVector);
  EXPECT_EQ(take_irqfd(kQueueVector), 0u) << "unmasking again delivered something";
  ASSERT_NO_FATAL_FAILURE(request());
  EXPECT_EQ(take_irqfd(kQueueVector), 1u) << "unmasked again: one request, one interrupt";
}

}  // namespace
