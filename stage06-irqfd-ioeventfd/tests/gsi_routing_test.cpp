// The GSI routing table without KVM: the default irqchip routes KVM_SET_GSI_ROUTING must keep, MSI GSI allocation,
// and MsixRoutes following a real MsixTable through every MSI-X programming sequence, with the tables that would go
// to KVM recorded and the irqfd registrations faked (the eventfds are real: a signal is a readable counter).
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <linux/pci_regs.h>

#include <array>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/pci/msix.hpp"

namespace vmm::irq {
namespace {

// Expected entries are built here field by field, not with the code under test.
kvm_irq_routing_entry chip(std::uint32_t gsi, std::uint32_t irqchip, std::uint32_t pin) {
  kvm_irq_routing_entry e;
  std::memset(&e, 0, sizeof e);
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_IRQCHIP;
  e.u.irqchip.irqchip = irqchip;
  e.u.irqchip.pin = pin;
  return e;
}
kvm_irq_routing_entry msi(std::uint32_t gsi, std::uint32_t address_lo, std::uint32_t address_hi, std::uint32_t data) {
  kvm_irq_routing_entry e;
  std::memset(&e, 0, sizeof e);
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_MSI;
  e.u.msi.address_lo = address_lo;
  e.u.msi.address_hi = address_hi;
  e.u.msi.data = data;
  return e;
}

// The kernel's default table (arch/x86/kvm/irq_comm.c default_routing[]), written out the long way.
std::vector<kvm_irq_routing_entry> kernel_defaults() {
  std::vector<kvm_irq_routing_entry> out;
  for (std::uint32_t gsi = 0; gsi < 8; ++gsi) {
    out.push_back(chip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    out.push_back(chip(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
  }
  for (std::uint32_t gsi = 8; gsi < 16; ++gsi) {
    out.push_back(chip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    out.push_back(chip(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
  }
  for (std::uint32_t gsi = 16; gsi < 24; ++gsi) {
    out.push_back(chip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
  }
  return out;
}

std::vector<kvm_irq_routing_entry> defaults_plus(std::vector<kvm_irq_routing_entry> msi_routes) {
  auto out = kernel_defaults();
  out.insert(out.end(), msi_routes.begin(), msi_routes.end());
  return out;
}

std::vector<std::string> described(const std::vector<kvm_irq_routing_entry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) {
    out.push_back(describe(e));
  }
  return out;
}

// Same entries, same order, same bytes (pads and the unused part of the union included).
void expect_table(const std::vector<kvm_irq_routing_entry>& actual, const std::vector<kvm_irq_routing_entry>& expected,
                  const std::string& where) {
  EXPECT_EQ(described(actual), described(expected)) << where;
  ASSERT_EQ(actual.size(), expected.size()) << where;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    EXPECT_EQ(std::memcmp(&actual[i], &expected[i], sizeof actual[i]), 0)
        << where << ": entry " << i << " (" << describe(actual[i]) << ") differs in its bytes";
  }
}

// Records every table "applied"; can be told to fail.
struct Recorder {
  std::vector<std::vector<kvm_irq_routing_entry>> tables;
  bool fail = false;
  ApplyRoutes apply() {
    return [this](std::span<const kvm_irq_routing_entry> entries) -> Result<void> {
      if (fail) {
        return sys_error("KVM_SET_GSI_ROUTING", EINVAL, "told to fail");
      }
      tables.emplace_back(entries.begin(), entries.end());
      return {};
    };
  }
};

// Records irqfd registrations instead of KVM_IRQFD.
class FakeBinder final : public IrqfdBinder {
 public:
  struct Binding {
    int fd;
    std::uint32_t gsi;
    bool operator==(const Binding&) const = default;
  };
  Result<void> bind(const event::EventFd& event, std::uint32_t gsi) override {
    if (fail_after == bound.size()) {
      return sys_error("KVM_IRQFD", EBUSY, "told to fail");
    }
    bound.push_back({event.fd(), gsi});
    return {};
  }
  Result<void> unbind(const event::EventFd& event, std::uint32_t gsi) override {
    unbound.push_back({event.fd(), gsi});
    return {};
  }
  std::vector<Binding> bound;
  std::vector<Binding> unbound;
  std::size_t fail_after = ~std::size_t{0};
};

// A sink for building tables in the pure-model tests (MsixRoutes is the sink in the others).
class NullSink final : public pci::MsiSink {
 public:
  Result<void> signal(const pci::MsiMessage&, std::uint16_t) override { return {}; }
};

void write32(pci::MsixTable& t, std::uint16_t vector, std::uint64_t field, std::uint32_t value) {
  const std::array<std::uint8_t, 4> b{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                      static_cast<std::uint8_t>(value >> 16), static_cast<std::uint8_t>(value >> 24)};
  t.write_table(vector * PCI_MSIX_ENTRY_SIZE + field, b);
}
void program(pci::MsixTable& t, std::uint16_t v, std::uint64_t address, std::uint32_t data) {
  write32(t, v, PCI_MSIX_ENTRY_LOWER_ADDR, static_cast<std::uint32_t>(address));
  write32(t, v, PCI_MSIX_ENTRY_UPPER_ADDR, static_cast<std::uint32_t>(address >> 32));
  write32(t, v, PCI_MSIX_ENTRY_DATA, data);
}
void mask(pci::MsixTable& t, std::uint16_t v, bool masked) {
  write32(t, v, PCI_MSIX_ENTRY_VECTOR_CTRL, masked ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0);
}

// What the vector's irqfd counter holds (and resets it): the signals KVM would have consumed.
std::uint64_t take_signals(const MsixRoutes& routes, std::uint16_t v) {
  auto value = routes.irqfd(v)->read();
  EXPECT_TRUE(value) << value.error().message();
  return value && *value ? **value : 0;
}

TEST(DefaultIrqchipRoutes, AreTheKernelsDefaultTable) {
  expect_table(default_irqchip_routes(), kernel_defaults(), "default_irqchip_routes");
  EXPECT_EQ(default_irqchip_routes().size(), 40u) << "16 GSIs on two chips, 8 on the IOAPIC only";
  EXPECT_EQ(describe(default_irqchip_routes()[8]), "GSI 4 -> IOAPIC pin 4") << "COM1";
  EXPECT_EQ(describe(default_irqchip_routes()[9]), "GSI 4 -> PIC master pin 4") << "COM1";
  EXPECT_EQ(describe(default_irqchip_routes()[5]), "GSI 2 -> PIC master pin 2") << "the kernel keeps the cascade";
  EXPECT_EQ(describe(default_irqchip_routes()[21]), "GSI 10 -> PIC slave pin 2");
  EXPECT_EQ(describe(default_irqchip_routes()[39]), "GSI 23 -> IOAPIC pin 23");
  expect_table(GsiRoutingTable().entries(), kernel_defaults(), "a new table");
}

TEST(GsiRoutingTable, AllocatesMsiGsisAboveTheIoapicLowestFirst) {
  GsiRoutingTable table(28);
  for (std::uint32_t expected = 24; expected < 28; ++expected) {
    auto gsi = table.allocate_msi_gsi();
    ASSERT_TRUE(gsi) << gsi.error().message();
    EXPECT_EQ(*gsi, expected);
  }
  auto none = table.allocate_msi_gsi();
  ASSERT_FALSE(none) << "the limit is exclusive";
  EXPECT_NE(none.error().message().find("24..27"), std::string::npos) << none.error().message();
  EXPECT_TRUE(table.release(25));
  EXPECT_FALSE(table.release(25));
  EXPECT_FALSE(table.allocated(25));
  EXPECT_EQ(table.allocate_msi_gsi(), 25u) << "a released GSI is reused";
  EXPECT_FALSE(table.release(4)) << "irqchip GSIs are never allocated";
}

TEST(GsiRoutingTable, MsiRoutesFollowTheDefaultsInGsiOrder) {
  GsiRoutingTable table;
  const auto a = *table.allocate_msi_gsi();
  const auto b = *table.allocate_msi_gsi();
  ASSERT_EQ(a, 24u);
  ASSERT_EQ(b, 25u);
  EXPECT_FALSE(table.set_msi(30, {.address = 0xfee0'0000, .data = 1})) << "30 was not allocated";
  EXPECT_FALSE(table.set_msi(4, {.address = 0xfee0'0000, .data = 1})) << "an irqchip GSI";
  ASSERT_TRUE(table.set_msi(b, {.address = 0x1'fee0'1000, .data = 0x4041}));
  ASSERT_TRUE(table.set_msi(a, {.address = 0xfee0'0000, .data = 0x30}));
  expect_table(table.entries(), defaults_plus({msi(24, 0xfee0'0000, 0, 0x30), msi(25, 0xfee0'1000, 1, 0x4041)}),
               "two routes");
  EXPECT_EQ(describe(table.entries().back()), "GSI 25 -> MSI 0x1fee01000/0x4041");

  ASSERT_TRUE(table.set_msi(a, {.address = 0xfee0'2000, .data = 0x31}));
  EXPECT_EQ(table.msi(a), (pci::MsiMessage{.address = 0xfee0'2000, .data = 0x31})) << "replaced, not added";
  EXPECT_TRUE(table.remove(a));
  EXPECT_FALSE(table.remove(a));
  EXPECT_TRUE(table.allocated(a)) << "remove keeps the GSI";
  EXPECT_EQ(table.msi(a), std::nullopt);
  expect_table(table.entries(), defaults_plus({msi(25, 0xfee0'1000, 1, 0x4041)}), "after remove");
  EXPECT_TRUE(table.release(b));
  expect_table(table.entries(), kernel_defaults(), "after release");
}

TEST(GsiRouting, AppliesTheWholeTableOnlyWhenItChanges) {
  Recorder recorder;
  GsiRouting routing(recorder.apply());
  const auto gsi = routing.allocate_msi_gsi();
  ASSERT_TRUE(gsi);
  EXPECT_TRUE(recorder.tables.empty()) << "an allocation alone changes no route";
  ASSERT_TRUE(routing.set_msi(*gsi, {.address = 0xfee0'0000, .data = 0x40}));
  ASSERT_EQ(recorder.tables.size(), 1u);
  expect_table(recorder.tables[0], defaults_plus({msi(24, 0xfee0'0000, 0, 0x40)}), "first route");
  ASSERT_TRUE(routing.set_msi(*gsi, {.address = 0xfee0'0000, .data = 0x40}));
  ASSERT_TRUE(routing.remove(25));
  EXPECT_EQ(recorder.tables.size(), 1u) << "no change, no KVM_SET_GSI_ROUTING";
  ASSERT_TRUE(routing.remove(*gsi));
  ASSERT_EQ(recorder.tables.size(), 2u);
  expect_table(recorder.tables[1], kernel_defaults(), "route removed: the defaults stay");
  ASSERT_TRUE(routing.apply());
  EXPECT_EQ(recorder.tables.size(), 3u);
  EXPECT_EQ(routing.applied(), 3u);
}

TEST(GsiRouting, AFailedApplyKeepsTheInstalledTable) {
  Recorder recorder;
  GsiRouting routing(recorder.apply());
  const auto gsi = *routing.allocate_msi_gsi();
  ASSERT_TRUE(routing.set_msi(gsi, {.address = 0xfee0'0000, .data = 0x40}));
  recorder.fail = true;
  auto rc = routing.set_msi(gsi, {.address = 0xfee0'0000, .data = 0x41});
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().operation, "KVM_SET_GSI_ROUTING");
  EXPECT_EQ(routing.msi(gsi), (pci::MsiMessage{.address = 0xfee0'0000, .data = 0x40}));
  EXPECT_FALSE(routing.remove(gsi));
  EXPECT_TRUE(routing.msi(gsi)) << "still what KVM holds";
  expect_table(routing.entries(), defaults_plus({msi(24, 0xfee0'0000, 0, 0x40)}), "unchanged");
  EXPECT_EQ(routing.applied(), 1u);
}

// MsixRoutes on a real MsixTable. Each test starts from: 4 vectors, GSIs 24-27, no routes, MSI-X disabled.
class MsixRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto created = MsixRoutes::create(4, routing, binder);
    ASSERT_TRUE(created) << created.error().message();
    routes = std::move(*created);
    auto t = pci::MsixTable::create(4, *routes);
    ASSERT_TRUE(t) << t.error().message();
    table = std::move(*t);
    ASSERT_TRUE(routes->attach(*table));
  }
  void TearDown() override {
    table.reset();  // the table holds the routes as its sink: it goes first
    routes.reset();
  }
  // The table KVM would hold now.
  [[nodiscard]] std::vector<kvm_irq_routing_entry> installed() const {
    return recorder.tables.empty() ? kernel_defaults() : recorder.tables.back();
  }

  Recorder recorder;
  GsiRouting routing{recorder.apply()};
  FakeBinder binder;
  std::unique_ptr<MsixRoutes> routes;
  std::unique_ptr<pci::MsixTable> table;
};

TEST_F(MsixRoutesTest, CreatesOneGsiAndOneBoundIrqfdPerVectorAndNoRoute) {
  ASSERT_EQ(binder.bound.size(), 4u);
  for (std::uint16_t v = 0; v < 4; ++v) {
    EXPECT_EQ(routes->gsi(v), 24u + v);
    EXPECT_EQ(binder.bound[v], (FakeBinder::Binding{routes->irqfd(v)->fd(), 24u + v})) << v;
    EXPECT_EQ(routes->route(v), (VectorRoute{.vector = v, .gsi = 24u + v, .message = std::nullopt, .signals = 0}));
  }
  EXPECT_EQ(routes->gsi(4), std::nullopt);
  EXPECT_EQ(routes->irqfd(4), nullptr);
  EXPECT_TRUE(recorder.tables.empty()) << "masked at reset: nothing to route";
}

TEST_F(MsixRoutesTest, ProgramUnmaskEnableRoutesTheVectorAndTriggerWritesItsIrqfd) {
  program(*table, 1, 0xfee0'1000, 0x4041);
  mask(*table, 1, false);
  EXPECT_TRUE(recorder.tables.empty()) << "MSI-X still disabled";
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  ASSERT_EQ(recorder.tables.size(), 1u);
  expect_table(installed(), defaults_plus({msi(25, 0xfee0'1000, 0, 0x4041)}), "vector 1 routed");

  EXPECT_EQ(table->trigger(1), pci::MsixTrigger::Delivered);
  EXPECT_EQ(take_signals(*routes, 1), 1u) << "the irqfd was written once";
  EXPECT_EQ(routes->route(1)->signals, 1u);
  EXPECT_EQ(routes->signals(), 1u);
  EXPECT_EQ(recorder.tables.size(), 1u) << "the route was already right: signal applied nothing";
  EXPECT_EQ(take_signals(*routes, 0), 0u);
}

TEST_F(MsixRoutesTest, MaskRemovesTheRouteAndUnmaskRestoresItAndReleasesThePendingVector) {
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  program(*table, 0, 0xfee0'0000, 0x30);
  EXPECT_TRUE(recorder.tables.empty()) << "programmed but masked";
  mask(*table, 0, false);
  expect_table(installed(), defaults_plus({msi(24, 0xfee0'0000, 0, 0x30)}), "unmasked");

  mask(*table, 0, true);
  expect_table(installed(), kernel_defaults(), "masked: route removed");
  EXPECT_EQ(table->trigger(0), pci::MsixTrigger::Pending);
  EXPECT_TRUE(table->pending(0)) << "the table keeps the PBA bit";
  EXPECT_EQ(take_signals(*routes, 0), 0u) << "a masked vector's irqfd is not written";

  mask(*table, 0, false);
  expect_table(installed(), defaults_plus({msi(24, 0xfee0'0000, 0, 0x30)}), "unmasked again: route back");
  EXPECT_FALSE(table->pending(0));
  EXPECT_EQ(take_signals(*routes, 0), 1u) << "the pending interrupt went out through the irqfd";
  EXPECT_EQ(recorder.tables.size(), 3u);
}

TEST_F(MsixRoutesTest, TheListenerHearsEachChangeAfterTheRouteFollowedIt) {
  // What each call saw: the vector, and whether its route was already in place (stage07 re-points a vhost-user
  // backend's call fd from here, so it must see the new state).
  std::vector<std::pair<std::uint16_t, bool>> heard;
  routes->set_listener(
      [&](std::uint16_t vector) { heard.emplace_back(vector, routes->route(vector)->message.has_value()); });
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(heard.size(), 4u) << "Enable changed: every vector";
  heard.clear();
  program(*table, 2, 0xfee0'0000, 0x30);
  mask(*table, 2, false);
  ASSERT_FALSE(heard.empty());
  EXPECT_EQ(heard.back(), std::pair(std::uint16_t{2}, true)) << "unmasked: routed before the listener runs";
  mask(*table, 2, true);
  EXPECT_EQ(heard.back(), std::pair(std::uint16_t{2}, false)) << "masked: the route is gone when it runs";
  routes->set_listener(nullptr);
  const auto before = heard.size();
  mask(*table, 2, false);
  EXPECT_EQ(heard.size(), before) << "removed: not called any more";
}

TEST_F(MsixRoutesTest, ReprogrammingAVectorReplacesItsRoute) {
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  program(*table, 2, 0xfee0'0000, 0x30);
  mask(*table, 2, false);
  expect_table(installed(), defaults_plus({msi(26, 0xfee0'0000, 0, 0x30)}), "first use");
  // The guest moves the vector to another CPU and vector number without masking it first (Linux masks; others
  // may not): every dword write updates the route.
  write32(*table, 2, PCI_MSIX_ENTRY_LOWER_ADDR, 0xfee0'3000);
  expect_table(installed(), defaults_plus({msi(26, 0xfee0'3000, 0, 0x30)}), "address changed");
  write32(*table, 2, PCI_MSIX_ENTRY_DATA, 0x51);
  expect_table(installed(), defaults_plus({msi(26, 0xfee0'3000, 0, 0x51)}), "data changed");
  EXPECT_EQ(routes->route(2)->message, (pci::MsiMessage{.address = 0xfee0'3000, .data = 0x51}));
  EXPECT_EQ(table->trigger(2), pci::MsixTrigger::Delivered);
  EXPECT_EQ(take_signals(*routes, 2), 1u);
  EXPECT_EQ(recorder.tables.size(), 3u);
}

TEST_F(MsixRoutesTest, FunctionMaskAndDisableRemoveEveryRouteAndRestoreThem) {
  program(*table, 0, 0xfee0'0000, 0x30);
  program(*table, 3, 0xfee0'1000, 0x33);
  mask(*table, 0, false);
  mask(*table, 3, false);
  program(*table, 1, 0xfee0'0000, 0x31);  // stays masked
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  const auto both = defaults_plus({msi(24, 0xfee0'0000, 0, 0x30), msi(27, 0xfee0'1000, 0, 0x33)});
  expect_table(installed(), both, "enabled: the two unmasked vectors");

  table->set_control(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  expect_table(installed(), kernel_defaults(), "function masked");
  EXPECT_EQ(table->trigger(3), pci::MsixTrigger::Pending);
  EXPECT_EQ(take_signals(*routes, 3), 0u);
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  expect_table(installed(), both, "function unmasked");
  EXPECT_EQ(take_signals(*routes, 3), 1u) << "released through its irqfd";

  table->set_control(0);
  expect_table(installed(), kernel_defaults(), "MSI-X disabled");
  EXPECT_EQ(table->trigger(0), pci::MsixTrigger::Disabled);
  EXPECT_EQ(take_signals(*routes, 0), 0u);
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  expect_table(installed(), both, "enabled again");
  EXPECT_EQ(routes->route(1)->message, std::nullopt) << "vector 1 is still masked";
}

TEST_F(MsixRoutesTest, SeveralVectorsEachSignalTheirOwnIrqfd) {
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  for (std::uint16_t v = 0; v < 4; ++v) {
    program(*table, v, 0xfee0'0000 | (v << 12), 0x40 + v);
    mask(*table, v, false);
  }
  expect_table(installed(),
               defaults_plus({msi(24, 0xfee0'0000, 0, 0x40), msi(25, 0xfee0'1000, 0, 0x41),
                              msi(26, 0xfee0'2000, 0, 0x42), msi(27, 0xfee0'3000, 0, 0x43)}),
               "four routes");
  EXPECT_EQ(table->trigger(3), pci::MsixTrigger::Delivered);
  EXPECT_EQ(table->trigger(3), pci::MsixTrigger::Delivered);
  EXPECT_EQ(table->trigger(1), pci::MsixTrigger::Delivered);
  EXPECT_EQ(take_signals(*routes, 0), 0u);
  EXPECT_EQ(take_signals(*routes, 1), 1u);
  EXPECT_EQ(take_signals(*routes, 2), 0u);
  EXPECT_EQ(take_signals(*routes, 3), 2u) << "eventfd writes add up";
  const auto all = routes->routes();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[3], (VectorRoute{.vector = 3, .gsi = 27, .message = pci::MsiMessage{0xfee0'3000, 0x43}, .signals = 2}));
}

TEST_F(MsixRoutesTest, SignalInstallsTheMessageItCarriesWhenTheObserverHasNotRunYet) {
  // As when another thread's release reaches the sink before the observer of the change that allowed it.
  ASSERT_TRUE(routes->signal({.address = 0xfee0'5000, .data = 0x60}, 2));
  expect_table(installed(), defaults_plus({msi(26, 0xfee0'5000, 0, 0x60)}), "route installed by signal");
  EXPECT_EQ(take_signals(*routes, 2), 1u);
  EXPECT_FALSE(routes->signal({.address = 0xfee0'0000, .data = 0x60}, 4)) << "no vector 4";
  // The observer's next run brings the route back in step with the (still masked) table.
  ASSERT_TRUE(routes->sync(2));
  expect_table(installed(), kernel_defaults(), "in step with the table again");
}

TEST_F(MsixRoutesTest, AFailedRouteUpdateIsKeptAndTheNextChangeRetries) {
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  program(*table, 0, 0xfee0'0000, 0x30);
  recorder.fail = true;
  mask(*table, 0, false);  // a guest write: cannot fail, the error is kept
  ASSERT_TRUE(routes->last_error());
  EXPECT_EQ(routes->last_error()->operation, "KVM_SET_GSI_ROUTING");
  EXPECT_NE(routes->last_error()->message().find("vector 0 (GSI 24)"), std::string::npos);
  EXPECT_EQ(routes->route(0)->message, std::nullopt) << "the model matches what KVM holds";
  EXPECT_FALSE(table->trigger(0)) << "signal fails rather than write an irqfd with the wrong route";
  recorder.fail = false;
  write32(*table, 0, PCI_MSIX_ENTRY_DATA, 0x31);
  expect_table(installed(), defaults_plus({msi(24, 0xfee0'0000, 0, 0x31)}), "retried");
}

TEST_F(MsixRoutesTest, DestructionUnbindsTheIrqfdsAndReleasesTheGsis) {
  table->set_control(PCI_MSIX_FLAGS_ENABLE);
  program(*table, 0, 0xfee0'0000, 0x30);
  mask(*table, 0, false);
  const auto bound = binder.bound;
  table.reset();
  routes.reset();
  EXPECT_EQ(binder.unbound, bound);
  expect_table(installed(), kernel_defaults(), "routes removed");
  EXPECT_EQ(routing.allocate_msi_gsi(), 24u) << "GSIs free again";
}

TEST(MsixRoutes, RefusesAMismatchedTableAndUndoesAFailedCreate) {
  Recorder recorder;
  GsiRouting routing(recorder.apply());
  FakeBinder binder;
  binder.fail_after = 2;
  auto failed = MsixRoutes::create(4, routing, binder);
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message().find("irqfd of MSI-X vector 2"), std::string::npos) << failed.error().message();
  EXPECT_EQ(binder.unbound, binder.bound) << "the two bound irqfds were unbound";
  EXPECT_EQ(routing.allocate_msi_gsi(), 24u) << "and their GSIs released";
  EXPECT_FALSE(MsixRoutes::create(0, routing, binder));

  binder.fail_after = ~std::size_t{0};
  auto routes = MsixRoutes::create(2, routing, binder);
  ASSERT_TRUE(routes) << routes.error().message();
  NullSink sink;
  auto other = pci::MsixTable::create(3, sink);
  ASSERT_TRUE(other);
  EXPECT_FALSE((*routes)->attach(**other));
}

}  // namespace
}  // namespace vmm::irq
