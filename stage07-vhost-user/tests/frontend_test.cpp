// VhostUserFrontend behind stage05's virtio-pci transport, without KVM. The backend is first a scripted fake on a
// thread (frontend_fake_backend.hpp) that records every message and fd: the exact startup sequence, the features the
// driver is offered, configuration through the cache and SET_CONFIG, the activation's memory table (same memfd,
// right uaddr/offset) and ring addresses (host VAs), kick/call/err fds (the same eventfds as the frontend's or the
// call source's), relayed interrupts, backend errors and hangups ending in DEVICE_NEEDS_RESET, refused acks, timeouts,
// and what connect refuses. Then the real backend library (Daemon) serves stage05's rng and the blk device end to end.
// No test measures time; waits are bounded polls on things that happen.
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstring>
#include <span>
#include <thread>
#include <vector>

#include "frontend_test_support.hpp"
#include "vmm/virtio/blk/blk_device.hpp"
#include "vmm/virtio/rng/rng_device.hpp"

namespace vmm::vhost {
namespace {

using testing::FakeBackend;
using testing::FakeBackendScript;
using testing::Received;
using VhostUserFrontendTest = testing::FrontendFixture;

// ---- Connecting ----------------------------------------------------------------------------------------------------

TEST_F(VhostUserFrontendTest, StartupSequenceNegotiatesProtocolFeaturesThenOwnsThenFetchesConfig) {
  FakeBackendScript script;
  script.queue_num = 2;
  script.config = {1, 2, 3, 4, 5, 6, 7, 8};
  auto frontend = connect_to(script, [](FrontendConfig& c) { c.config_size = 8; });
  ASSERT_TRUE(frontend);

  EXPECT_EQ(backend().requests(),
            (std::vector<Request>{Request::GetFeatures, Request::GetProtocolFeatures, Request::SetProtocolFeatures,
                                  Request::GetQueueNum, Request::SetOwner, Request::GetConfig}));
  // Ours (MQ, REPLY_ACK, CONFIG) ∩ theirs (qemu-storage-daemon's set): never CONFIGURE_MEM_SLOTS, LOG_SHMFD...
  const std::uint64_t expected =
      bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck) | bit(ProtocolFeature::Config);
  const Received& set_protocol = backend().at(Request::SetProtocolFeatures);
  EXPECT_EQ(std::get<std::uint64_t>(set_protocol.payload), expected);
  EXPECT_EQ(set_protocol.flags & kNeedReply, 0u) << "REPLY_ACK is not in force before this very message";
  EXPECT_NE(backend().at(Request::SetOwner).flags & kNeedReply, 0u) << "with REPLY_ACK, SET_* ask for an ack";
  const auto& get_config = std::get<DeviceConfig>(backend().at(Request::GetConfig).payload);
  EXPECT_EQ(get_config.offset, 0u);
  EXPECT_EQ(get_config.bytes.size(), 8u);

  EXPECT_TRUE(frontend->connected());
  EXPECT_EQ(frontend->protocol_features(), expected);
  EXPECT_EQ(frontend->backend_features(), script.features);
  EXPECT_EQ(frontend->backend_queue_num(), 2u);
  EXPECT_TRUE(frontend->event_thread_tid().has_value());
  const FrontendStats stats = frontend->stats();
  EXPECT_EQ(stats.messages_sent, 6u);
  EXPECT_EQ(stats.messages_received, 5u);  // four GET replies and SET_OWNER's ack
  EXPECT_EQ(frontend->name(), "vhost-user-rng");
}

TEST_F(VhostUserFrontendTest, BackendWithoutProtocolFeaturesGetsPlainMessagesAndRingsStartEnabled) {
  FakeBackendScript script;
  script.features &= ~(1ull << kProtocolFeaturesBit);
  auto frontend = connect_to(script);
  ASSERT_TRUE(frontend);
  // Without REPLY_ACK nothing answers SET_OWNER: connect may return before the backend has read it.
  ASSERT_TRUE(backend().wait_for(Request::SetOwner));
  EXPECT_EQ(backend().requests(), (std::vector<Request>{Request::GetFeatures, Request::SetOwner}));
  EXPECT_EQ(backend().at(Request::SetOwner).flags & kNeedReply, 0u);
  EXPECT_EQ(frontend->protocol_features(), 0u);
  EXPECT_FALSE(frontend->backend_queue_num().has_value());

  ASSERT_TRUE(make_transport(memfd_memory()));
  ASSERT_TRUE(start_driver());
  ASSERT_TRUE(backend().wait_for(Request::SetVringErr));
  // Without bit 30 there is no SET_VRING_ENABLE: the ring runs from its kick on. SET_FEATURES has no bit 30 either.
  EXPECT_EQ(backend().count(Request::SetVringEnable), 0u);
  EXPECT_EQ(std::get<std::uint64_t>(backend().at(Request::SetFeatures).payload), 1ull << VIRTIO_F_VERSION_1);
  EXPECT_EQ(backend().at(Request::SetMemTable).flags & kNeedReply, 0u);
}

TEST_F(VhostUserFrontendTest, FeaturesOfferedToTheDriverAreMasked) {
  FakeBackendScript script;
  const std::uint64_t wanted = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
                               (1ull << VIRTIO_RING_F_INDIRECT_DESC) | (1ull << 0) | (1ull << 5) | (1ull << 23);
  const std::uint64_t never = (1ull << kProtocolFeaturesBit) | (1ull << VIRTIO_F_NOTIFY_ON_EMPTY) |
                              (1ull << 26) /* VHOST_F_LOG_ALL */ | (1ull << VIRTIO_F_RING_PACKED) |
                              (1ull << VIRTIO_F_ACCESS_PLATFORM) | (1ull << 35) | (1ull << 63);
  script.features = wanted | never;
  auto frontend = connect_to(script);
  ASSERT_TRUE(frontend);
  EXPECT_EQ(frontend->features(), wanted);
  EXPECT_EQ(frontend->backend_features(), wanted | never);

  ASSERT_TRUE(make_transport(memfd_memory()));
  EXPECT_EQ(driver().device_features(), wanted) << "what the guest reads through the common configuration";
}

TEST_F(VhostUserFrontendTest, BackendWithoutVersion1IsRefused) {
  FakeBackendScript script;
  script.features &= ~(1ull << VIRTIO_F_VERSION_1);
  auto frontend = connect_to(script);
  ASSERT_FALSE(frontend);
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr("VERSION_1"));
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr(socket_path()));
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr("GET_FEATURES"));
}

TEST_F(VhostUserFrontendTest, TooFewBackendQueuesAreRefused) {
  FakeBackendScript script;
  script.queue_num = 1;
  auto frontend = connect_to(script, [](FrontendConfig& c) { c.queues = 2; });
  ASSERT_FALSE(frontend);
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr("GET_QUEUE_NUM"));
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr("at most 1 queues"));
}

TEST_F(VhostUserFrontendTest, ConfigurationWithoutTheConfigProtocolFeatureIsRefused) {
  FakeBackendScript script;
  script.protocol_features &= ~bit(ProtocolFeature::Config);
  auto frontend = connect_to(script, [](FrontendConfig& c) { c.config_size = 8; });
  ASSERT_FALSE(frontend);
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr("CONFIG"));
  EXPECT_EQ(backend().count(Request::GetConfig), 0u);
}

TEST_F(VhostUserFrontendTest, ConnectToAMissingSocketFailsClearlyAfterTheTimeout) {
  FrontendConfig config = base_config();
  config.connect_timeout = std::chrono::milliseconds(200);
  const auto start = std::chrono::steady_clock::now();
  auto frontend = connect_with(config);
  ASSERT_FALSE(frontend);
  // It kept trying until the timeout (the daemon might have been starting): a lower bound, never flaky.
  EXPECT_GE(std::chrono::steady_clock::now() - start, config.connect_timeout);
  EXPECT_EQ(connect_error().errno_value, ENOENT);
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr(socket_path()));
}

TEST_F(VhostUserFrontendTest, ABackendThatDoesNotAnswerTimesOutAtConnect) {
  FakeBackendScript script;
  script.swallow = Request::GetFeatures;
  auto frontend = connect_to(script, [](FrontendConfig& c) { c.reply_timeout = std::chrono::milliseconds(300); });
  ASSERT_FALSE(frontend);
  EXPECT_EQ(connect_error().errno_value, ETIMEDOUT);
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr("GET_FEATURES"));
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr(socket_path()));
}

TEST_F(VhostUserFrontendTest, AConfigurationAnswerOfTheWrongSizeIsRefused) {
  FakeBackendScript script;
  script.config_reply_size = 2;
  ASSERT_FALSE(connect_to(script, [](FrontendConfig& c) { c.config_size = 8; }));
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr("GET_CONFIG"));
  EXPECT_THAT(connect_error().message(), ::testing::HasSubstr("answered 2 bytes"));
}

TEST_F(VhostUserFrontendTest, BadConfigurationsAreRefusedBeforeConnecting) {
  for (auto change : std::vector<std::function<void(FrontendConfig&)>>{
           [](FrontendConfig& c) { c.queues = 0; }, [](FrontendConfig& c) { c.queue_size = 100; },
           [](FrontendConfig& c) { c.config_size = kMaxConfigSize + 1; },
           [](FrontendConfig& c) { c.socket_path.clear(); }}) {
    FrontendConfig config = base_config();
    change(config);
    EXPECT_FALSE(connect_with(config));
  }
}

// ---- Configuration -------------------------------------------------------------------------------------------------

TEST_F(VhostUserFrontendTest, ConfigurationReadsComeFromTheCache) {
  FakeBackendScript script;
  script.config = {0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x02, 0x03, 0x04};
  auto frontend = connect_to(script, [](FrontendConfig& c) {
    c.config_size = 12;
    c.device_type = VIRTIO_ID_BLOCK;
  });
  ASSERT_TRUE(frontend);
  EXPECT_EQ(frontend->name(), "vhost-user-blk");
  ASSERT_TRUE(make_transport(memfd_memory()));
  const std::size_t messages = backend().requests().size();

  using virtio::VirtioPciDevice;
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset, 4), 0x76543210u);
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset + 4, 2), 0xba98u);
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset + 7, 1), 0xfeu);
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset + 8, 4), 0x04030201u);
  EXPECT_EQ(backend().requests().size(), messages) << "no GET_CONFIG per read";
}

TEST_F(VhostUserFrontendTest, ConfigurationWritesGoToTheBackendAndIntoTheCache) {
  FakeBackendScript script;
  script.config = std::vector<std::uint8_t>(16, 0);
  script.refuse_once = Request::SetConfig;
  auto frontend = connect_to(script, [](FrontendConfig& c) { c.config_size = 16; });
  ASSERT_TRUE(frontend);
  ASSERT_TRUE(make_transport(memfd_memory()));
  using virtio::VirtioPciDevice;

  // The first write is refused by the backend (REPLY_ACK status 1): the cache keeps the old value.
  driver().write(VirtioPciDevice::kDeviceConfigOffset + 4, 0x5a, 1);
  ASSERT_EQ(backend().count(Request::SetConfig), 1u);
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset + 4, 1), 0u);
  ASSERT_TRUE(frontend->last_error());
  EXPECT_THAT(frontend->last_error()->message(), ::testing::HasSubstr("refused"));

  driver().write(VirtioPciDevice::kDeviceConfigOffset + 8, 0xa1b2c3d4, 4);
  ASSERT_EQ(backend().count(Request::SetConfig), 2u);
  const Received& set = backend().at(Request::SetConfig, 1);
  const auto& config = std::get<DeviceConfig>(set.payload);
  EXPECT_EQ(config.offset, 8u);
  EXPECT_EQ(config.flags, 0u);
  EXPECT_EQ(config.bytes, (std::vector<std::uint8_t>{0xd4, 0xc3, 0xb2, 0xa1}));
  EXPECT_NE(set.flags & kNeedReply, 0u);
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset + 8, 4), 0xa1b2c3d4u);
  EXPECT_TRUE(frontend->connected()) << "a refusal is an answer, not a broken connection";
}

// ---- Activation ----------------------------------------------------------------------------------------------------

TEST_F(VhostUserFrontendTest, ActivationSendsTheMemoryTableAndTheRingsAsHostAddresses) {
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  // Two regions with a hole between them; the rings live in the second, so a GPA is not its own host address.
  ASSERT_TRUE(make_transport(memfd_memory({{0x0, 0x200000}, {0x400000, 0x400000}})));
  const std::size_t before = backend().requests().size();
  ASSERT_TRUE(
      start_driver({.size = 16, .rings = memory::GuestAddress(0x401000), .buffers = memory::GuestAddress(0x500000)}));
  EXPECT_NE(driver().status() & VIRTIO_CONFIG_S_DRIVER_OK, 0);
  EXPECT_TRUE(frontend->active());

  auto requests = backend().requests();
  requests.erase(requests.begin(), requests.begin() + static_cast<std::ptrdiff_t>(before));
  EXPECT_EQ(requests, (std::vector<Request>{Request::SetFeatures, Request::SetMemTable, Request::SetVringNum,
                                            Request::SetVringBase, Request::SetVringAddr, Request::SetVringKick,
                                            Request::SetVringCall, Request::SetVringErr, Request::SetVringEnable}));
  // SET_FEATURES: the driver's features plus bit 30 (protocol features are in use).
  EXPECT_EQ(std::get<std::uint64_t>(backend().at(Request::SetFeatures).payload),
            (1ull << VIRTIO_F_VERSION_1) | (1ull << kProtocolFeaturesBit));

  // The memory table: each region with its host address and file offset, and its own memfd (same inode).
  const Received& table_message = backend().at(Request::SetMemTable);
  EXPECT_NE(table_message.flags & kNeedReply, 0u);
  const auto& table = std::get<MemoryTable>(table_message.payload);
  const auto regions = memory().regions();
  ASSERT_EQ(table.regions.size(), regions.size());
  ASSERT_EQ(table_message.fds.size(), regions.size());
  for (std::size_t i = 0; i < regions.size(); ++i) {
    EXPECT_EQ(table.regions[i].guest_phys_addr, regions[i].start().raw());
    EXPECT_EQ(table.regions[i].memory_size, regions[i].size());
    EXPECT_EQ(table.regions[i].userspace_addr, reinterpret_cast<std::uint64_t>(regions[i].host_address()));
    EXPECT_EQ(table.regions[i].mmap_offset, regions[i].file_offset());
    EXPECT_TRUE(testing::same_file(table_message.fds[i].get(), regions[i].fd().get())) << "region " << i;
  }

  const auto& num = std::get<vhost_vring_state>(backend().at(Request::SetVringNum).payload);
  EXPECT_EQ(num.index, 0u);
  EXPECT_EQ(num.num, 16u);
  const auto& base = std::get<vhost_vring_state>(backend().at(Request::SetVringBase).payload);
  EXPECT_EQ(base.index, 0u);
  EXPECT_EQ(base.num, 0u);
  const auto& addr = std::get<vhost_vring_addr>(backend().at(Request::SetVringAddr).payload);
  const virtio::QueueLayout layout = mock().queue_layout();
  EXPECT_EQ(addr.index, 0u);
  EXPECT_EQ(addr.flags, 0u);
  EXPECT_EQ(addr.desc_user_addr, testing::host_address(memory(), layout.descriptor_table));
  EXPECT_EQ(addr.avail_user_addr, testing::host_address(memory(), layout.available_ring));
  EXPECT_EQ(addr.used_user_addr, testing::host_address(memory(), layout.used_ring));
  EXPECT_NE(addr.desc_user_addr, layout.descriptor_table.raw());
  const auto& enable = std::get<vhost_vring_state>(backend().at(Request::SetVringEnable).payload);
  EXPECT_EQ(enable.index, 0u);
  EXPECT_EQ(enable.num, 1u);
  for (const Request r : {Request::SetVringKick, Request::SetVringCall, Request::SetVringErr}) {
    const Received& m = backend().at(r);
    EXPECT_EQ(std::get<std::uint64_t>(m.payload), 0u) << request_name(static_cast<std::uint32_t>(r));
    EXPECT_EQ(m.fds.size(), 1u);
    EXPECT_NE(m.flags & kNeedReply, 0u);
  }
}

TEST_F(VhostUserFrontendTest, TheKickFdIsTheFrontendsKickEventAndTheMmioFallbackWritesIt) {
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  ASSERT_TRUE(make_transport(memfd_memory()));
  ASSERT_TRUE(start_driver());
  const Received& kick = backend().at(Request::SetVringKick);
  ASSERT_EQ(kick.fds.size(), 1u);

  // What KVM would do through the ioeventfd (and the backend sees): the same counter as kick_event(0).
  ASSERT_TRUE(testing::write_eventfd(kick.fds[0].get(), 3));
  auto read = frontend->kick_event(0).read();
  ASSERT_TRUE(read);
  EXPECT_EQ(*read, std::optional<std::uint64_t>(3));

  // An MMIO notify (no ioeventfd registered) reaches the backend's fd through queue_notify.
  driver().notify(0);
  EXPECT_EQ(testing::read_eventfd(kick.fds[0].get()), std::optional<std::uint64_t>(1));
  EXPECT_EQ(frontend->stats().fallback_kicks, 1u);
}

TEST_F(VhostUserFrontendTest, TheCallFdIsTheCallSourcesEventfdWhenOneIsSet) {
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  auto irqfd = event::EventFd::create();
  ASSERT_TRUE(irqfd);
  std::vector<std::uint16_t> asked;
  frontend->set_call_source([&](std::uint16_t q) -> const event::EventFd* {
    asked.push_back(q);
    return &*irqfd;
  });
  ASSERT_TRUE(make_transport(memfd_memory()));
  ASSERT_TRUE(start_driver());
  EXPECT_EQ(asked, std::vector<std::uint16_t>{0});

  const Received& call = backend().at(Request::SetVringCall);
  ASSERT_EQ(call.fds.size(), 1u);
  ASSERT_TRUE(testing::write_eventfd(call.fds[0].get(), 1));
  auto read = irqfd->read();
  ASSERT_TRUE(read);
  EXPECT_EQ(*read, std::optional<std::uint64_t>(1)) << "the backend interrupts through the irqfd, not the VMM";
  EXPECT_EQ(frontend->stats().relayed_interrupts, 0u);
  EXPECT_EQ(driver().read_isr(), 0u);
}

TEST_F(VhostUserFrontendTest, UpdateCallFollowsTheCallSourceAndRaisesOneInterruptWhenItFallsBackToTheRelay) {
  // What VhostUserVm does when the guest masks the queue's vector: the irqfd loses its route, so the backend must
  // write the relay instead (the transport then keeps the interrupt pending), and get the irqfd back on unmask.
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  auto irqfd = event::EventFd::create();
  ASSERT_TRUE(irqfd);
  bool routed = true;
  frontend->set_call_source([&](std::uint16_t) -> const event::EventFd* { return routed ? &*irqfd : nullptr; });
  ASSERT_TRUE(make_transport(memfd_memory()));
  driver().program_vector(1, 0xfee01000, 0x41);
  driver().enable_msix();
  ASSERT_TRUE(start_driver({}, [&] { EXPECT_EQ(driver().set_queue_vector(0, 1), 1); }));
  ASSERT_EQ(backend().count(Request::SetVringCall), 1u);

  ASSERT_TRUE(frontend->update_call(0));
  EXPECT_EQ(backend().count(Request::SetVringCall), 1u) << "same answer: nothing sent";

  routed = false;  // masked
  ASSERT_TRUE(frontend->update_call(0));
  ASSERT_TRUE(backend().wait_for(Request::SetVringCall, 2));
  EXPECT_EQ(frontend->stats().call_switches, 1u);
  // The stand-in interrupt for whatever reached the dead irqfd: one relayed signal, as the MSI-X message.
  ASSERT_TRUE(testing::eventually([&] { return frontend->stats().relayed_interrupts == 1; }));
  ASSERT_TRUE(testing::eventually([&] { return sink().signals().size() == 1; }));
  // And the new call fd is the relay: a backend write is relayed too.
  const Received& relay = backend().at(Request::SetVringCall, 1);
  ASSERT_EQ(relay.fds.size(), 1u);
  ASSERT_TRUE(testing::write_eventfd(relay.fds[0].get(), 1));
  ASSERT_TRUE(testing::eventually([&] { return frontend->stats().relayed_interrupts == 2; }));

  routed = true;  // unmasked
  ASSERT_TRUE(frontend->update_call(0));
  ASSERT_TRUE(backend().wait_for(Request::SetVringCall, 3));
  const Received& back = backend().at(Request::SetVringCall, 2);
  ASSERT_EQ(back.fds.size(), 1u);
  ASSERT_TRUE(testing::write_eventfd(back.fds[0].get(), 1));
  auto read = irqfd->read();
  ASSERT_TRUE(read);
  EXPECT_EQ(*read, std::optional<std::uint64_t>(1)) << "the irqfd again";
  EXPECT_EQ(frontend->stats().call_switches, 2u);
  EXPECT_EQ(frontend->stats().relayed_interrupts, 2u);
}

TEST_F(VhostUserFrontendTest, UpdateCallDoesNothingWhileIdle) {
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  ASSERT_TRUE(frontend->update_call(0));
  ASSERT_TRUE(frontend->update_call(7)) << "no such queue: nothing to do";
  EXPECT_EQ(backend().count(Request::SetVringCall), 0u);
  EXPECT_EQ(frontend->stats().call_switches, 0u);
}

TEST_F(VhostUserFrontendTest, TheRelayCallFdRaisesTheTransportsInterrupt) {
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  frontend->set_call_source([](std::uint16_t) -> const event::EventFd* { return nullptr; });  // no irqfd: relay
  ASSERT_TRUE(make_transport(memfd_memory()));
  // MSI-X on, vector 1 for the queue: the relayed interrupt must come out as that message.
  driver().program_vector(1, 0xfee01000, 0x41);
  driver().enable_msix();
  ASSERT_TRUE(start_driver({}, [&] { EXPECT_EQ(driver().set_queue_vector(0, 1), 1); }));

  const Received& call = backend().at(Request::SetVringCall);
  ASSERT_EQ(call.fds.size(), 1u);
  ASSERT_TRUE(testing::write_eventfd(call.fds[0].get(), 1));
  ASSERT_TRUE(testing::eventually([&] { return !sink().signals().empty(); }));
  const auto signals = sink().signals();
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].vector, 1);
  EXPECT_EQ(signals[0].message, (pci::MsiMessage{.address = 0xfee01000, .data = 0x41}));
  EXPECT_EQ(driver().read_isr() & 1, 1) << "the ISR's queue bit";
  EXPECT_EQ(frontend->stats().relayed_interrupts, 1u);
  // The transport counts the interrupt once the MSI-X message went out.
  EXPECT_TRUE(testing::eventually([&] { return transport().counters()[0].interrupts == 1; }));
}

TEST_F(VhostUserFrontendTest, AWriteToTheErrorFdSetsDeviceNeedsReset) {
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  ASSERT_TRUE(make_transport(memfd_memory()));
  ASSERT_TRUE(start_driver());
  const Received& err = backend().at(Request::SetVringErr);
  ASSERT_EQ(err.fds.size(), 1u);
  ASSERT_TRUE(testing::write_eventfd(err.fds[0].get(), 1));
  ASSERT_TRUE(testing::eventually([&] { return (driver().status() & VIRTIO_CONFIG_S_NEEDS_RESET) != 0; }));
  EXPECT_EQ(driver().read_isr() & 2, 2) << "the ISR's configuration bit";
  ASSERT_TRUE(transport().last_error());
  EXPECT_THAT(transport().last_error()->message(), ::testing::HasSubstr("queue 0"));
  EXPECT_EQ(frontend->stats().backend_errors, 1u);
  EXPECT_TRUE(frontend->connected());
  // The driver resets; the frontend stops the ring and the device works again.
  EXPECT_TRUE(driver().reset());
  EXPECT_FALSE(frontend->active());
  ASSERT_TRUE(start_driver());
  EXPECT_NE(driver().status() & VIRTIO_CONFIG_S_DRIVER_OK, 0);
}

TEST_F(VhostUserFrontendTest, ResetDisablesAndStopsEachStartedRing) {
  FakeBackendScript script;
  script.vring_base = 7;
  script.queue_num = 2;
  auto frontend = connect_to(script, [](FrontendConfig& c) { c.queues = 2; });
  ASSERT_TRUE(frontend);
  ASSERT_TRUE(make_transport(memfd_memory()));
  ASSERT_TRUE(start_driver());  // only queue 0 is enabled
  EXPECT_EQ(backend().count(Request::SetVringKick), 1u);
  const std::size_t before = backend().requests().size();
  EXPECT_FALSE(frontend->stopped_vring_base(0));

  EXPECT_TRUE(driver().reset());
  auto requests = backend().requests();
  requests.erase(requests.begin(), requests.begin() + static_cast<std::ptrdiff_t>(before));
  EXPECT_EQ(requests, (std::vector<Request>{Request::SetVringEnable, Request::GetVringBase}));
  const auto& disable = std::get<vhost_vring_state>(backend().at(Request::SetVringEnable, 1).payload);
  EXPECT_EQ(disable.index, 0u);
  EXPECT_EQ(disable.num, 0u);
  EXPECT_EQ(frontend->stopped_vring_base(0), 7u);
  EXPECT_FALSE(frontend->stopped_vring_base(1));
  EXPECT_FALSE(frontend->active());

  // After the reset, a call from the backend reaches nobody.
  const Received& call = backend().at(Request::SetVringCall);
  ASSERT_TRUE(testing::write_eventfd(call.fds[0].get(), 1));
  // Wait for the event thread to have seen it: a backend error afterwards is processed after it (one thread, one
  // epoll batch or the next), and with no activation it is only counted.
  const Received& err = backend().at(Request::SetVringErr);
  ASSERT_TRUE(testing::write_eventfd(err.fds[0].get(), 1));
  ASSERT_TRUE(testing::eventually([&] { return frontend->stats().backend_errors == 1; }));
  EXPECT_EQ(frontend->stats().relayed_interrupts, 0u);
  EXPECT_EQ(driver().read_isr(), 0u);
  EXPECT_EQ(driver().status(), 0u);
}

TEST_F(VhostUserFrontendTest, ARefusedAckFailsTheActivationAndTheNextOneWorks) {
  FakeBackendScript script;
  script.refuse_once = Request::SetVringAddr;
  auto frontend = connect_to(script);
  ASSERT_TRUE(frontend);
  ASSERT_TRUE(make_transport(memfd_memory()));
  EXPECT_FALSE(start_driver());
  const std::uint8_t status = driver().status();
  EXPECT_EQ(status & VIRTIO_CONFIG_S_DRIVER_OK, 0) << "DRIVER_OK refused";
  EXPECT_NE(status & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
  ASSERT_TRUE(transport().last_error());
  EXPECT_THAT(transport().last_error()->message(), ::testing::HasSubstr("SET_VRING_ADDR"));
  EXPECT_THAT(transport().last_error()->message(), ::testing::HasSubstr("refused"));
  EXPECT_FALSE(frontend->active());
  EXPECT_TRUE(frontend->connected());
  EXPECT_EQ(backend().count(Request::SetVringKick), 0u) << "nothing after the refused step";

  EXPECT_TRUE(driver().reset());
  ASSERT_TRUE(start_driver());
  EXPECT_NE(driver().status() & VIRTIO_CONFIG_S_DRIVER_OK, 0);
  EXPECT_EQ(backend().count(Request::SetVringAddr), 2u);
}

TEST_F(VhostUserFrontendTest, AnonymousGuestMemoryIsRefusedAtActivation) {
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  auto region = memory::GuestMemoryRegion::create(memory::GuestAddress(0), 4ull << 20);
  ASSERT_TRUE(region);
  std::vector<memory::GuestMemoryRegion> regions;
  regions.push_back(std::move(*region));
  auto anonymous = memory::GuestMemory::from_regions(std::move(regions));
  ASSERT_TRUE(anonymous);
  ASSERT_TRUE(make_transport(std::move(*anonymous)));
  const std::size_t before = backend().requests().size();
  EXPECT_FALSE(start_driver());
  EXPECT_NE(driver().status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
  ASSERT_TRUE(transport().last_error());
  EXPECT_THAT(transport().last_error()->message(), ::testing::HasSubstr("memfd"));
  EXPECT_EQ(backend().requests().size(), before) << "the backend is not touched";
  EXPECT_FALSE(frontend->active());
}

TEST_F(VhostUserFrontendTest, ABackendThatHangsUpWhileActiveEndsInNeedsResetAndTheVmmGoesOn) {
  FakeBackendScript script;
  script.config = {0xaa, 0xbb, 0xcc, 0xdd};
  auto frontend = connect_to(script, [](FrontendConfig& c) { c.config_size = 4; });
  ASSERT_TRUE(frontend);
  ASSERT_TRUE(make_transport(memfd_memory()));
  ASSERT_TRUE(start_driver());

  backend().hang_up();
  ASSERT_TRUE(testing::eventually([&] { return (driver().status() & VIRTIO_CONFIG_S_NEEDS_RESET) != 0; }));
  EXPECT_FALSE(frontend->connected());
  ASSERT_TRUE(frontend->last_error());
  EXPECT_THAT(frontend->last_error()->message(), ::testing::HasSubstr("backend disconnected"));
  EXPECT_EQ(frontend->stats().disconnects, 1u);
  EXPECT_EQ(driver().read_isr() & 2, 2);

  // The VMM goes on: configuration reads come from the cache, a reset works locally, a new activation fails cleanly.
  using virtio::VirtioPciDevice;
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset, 4), 0xddccbbaau);
  driver().write(VirtioPciDevice::kDeviceConfigOffset, 0x11, 1);  // dropped, no crash
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset, 1), 0xaau);
  EXPECT_TRUE(driver().reset());
  EXPECT_FALSE(frontend->active());
  EXPECT_FALSE(start_driver());
  EXPECT_NE(driver().status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
  ASSERT_TRUE(transport().last_error());
  EXPECT_THAT(transport().last_error()->message(), ::testing::HasSubstr("disconnected"));
  driver().notify(0);  // a kick into the void: nothing happens
  EXPECT_EQ(frontend->stats().disconnects, 1u);
}

TEST_F(VhostUserFrontendTest, ABackendThatStopsAnsweringTimesOutWithoutHanging) {
  FakeBackendScript script;
  script.swallow = Request::SetMemTable;
  auto frontend = connect_to(script, [](FrontendConfig& c) { c.reply_timeout = std::chrono::milliseconds(300); });
  ASSERT_TRUE(frontend);
  ASSERT_TRUE(make_transport(memfd_memory()));
  EXPECT_FALSE(start_driver());  // returns: the wait for the ack is bounded
  EXPECT_NE(driver().status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
  ASSERT_TRUE(transport().last_error());
  EXPECT_THAT(transport().last_error()->message(), ::testing::HasSubstr("ETIMEDOUT"));
  EXPECT_THAT(transport().last_error()->message(), ::testing::HasSubstr("SET_MEM_TABLE"));
  // A late answer could be taken for the next one: the connection is dropped.
  EXPECT_FALSE(frontend->connected());
  EXPECT_TRUE(backend().wait_closed());
  EXPECT_TRUE(driver().reset());
}

// For TSan as much as for the result: activations and resets on one thread while another plays the backend writing
// the relay call fd and others play vCPUs kicking and reading the configuration.
TEST_F(VhostUserFrontendTest, ActivationCyclesRaceRelayedCallsKicksAndConfigReads) {
  FakeBackendScript script;
  script.config = {1, 2, 3, 4};
  auto frontend = connect_to(script, [](FrontendConfig& c) { c.config_size = 4; });
  ASSERT_TRUE(frontend);
  ASSERT_TRUE(make_transport(memfd_memory()));
  ASSERT_TRUE(start_driver());
  const Received& call = backend().at(Request::SetVringCall);
  const int call_fd = call.fds[0].get();  // a dup of the relay eventfd: every activation hands the same counter

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls{0};
  std::thread backend_side([&] {
    while (!stop.load()) {
      if (testing::write_eventfd(call_fd, 1)) {
        calls.fetch_add(1);
      }
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> vcpus;
  std::atomic<bool> bad_config{false};
  for (int i = 0; i < 2; ++i) {
    vcpus.emplace_back([&] {
      while (!stop.load()) {
        frontend->queue_notify(0);
        std::array<std::uint8_t, 4> bytes{};
        frontend->read_config(0, bytes);
        if (bytes != std::array<std::uint8_t, 4>{1, 2, 3, 4}) {
          bad_config.store(true);
        }
        std::this_thread::yield();
      }
    });
  }
  constexpr int kCycles = 20;
  int started = 1;
  for (int i = 0; i < kCycles; ++i) {
    EXPECT_TRUE(driver().reset());
    started += start_driver() ? 1 : 0;
  }
  stop.store(true);
  backend_side.join();
  for (auto& t : vcpus) {
    t.join();
  }
  EXPECT_EQ(started, kCycles + 1);
  EXPECT_FALSE(bad_config.load());
  EXPECT_TRUE(frontend->connected());
  EXPECT_EQ(backend().count(Request::GetVringBase), static_cast<std::size_t>(kCycles));
  EXPECT_LE(frontend->stats().relayed_interrupts, calls.load());
  EXPECT_GT(frontend->stats().fallback_kicks, 0u);
  EXPECT_FALSE(backend().error());
}

TEST_F(VhostUserFrontendTest, TheActivationObserverBracketsTheActivation) {
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  std::vector<bool> calls;
  frontend->set_activation_observer([&](bool active) { calls.push_back(active); });
  ASSERT_TRUE(make_transport(memfd_memory()));
  ASSERT_TRUE(start_driver());
  EXPECT_EQ(calls, std::vector<bool>{true});
  EXPECT_TRUE(driver().reset());
  EXPECT_EQ(calls, (std::vector<bool>{true, false}));
}

TEST_F(VhostUserFrontendTest, DestroyingAnActiveFrontendStopsItsRings) {
  auto frontend = connect_to(FakeBackendScript{});
  ASSERT_TRUE(frontend);
  // Activated directly (no transport, which would reset it before letting go): the destructor has to stop the ring.
  auto memory = memfd_memory();
  vmm::testing::MockDriver mock(memory);
  auto queue = virtio::SplitQueue::create(memory, mock.queue_layout(), 256, mock.features());
  ASSERT_TRUE(queue) << queue.error().message();
  virtio::Activation activation{.memory = &memory,
                                .features = 1ull << VIRTIO_F_VERSION_1,
                                .queues = {},
                                .interrupt = nullptr,
                                .needs_reset = nullptr};
  activation.queues.emplace_back(std::move(*queue));
  ASSERT_TRUE(frontend->activate(std::move(activation)));
  EXPECT_TRUE(frontend->active());
  frontend = {};
  release_frontend();
  EXPECT_TRUE(backend().wait_closed());
  EXPECT_EQ(backend().count(Request::GetVringBase), 1u);
  EXPECT_EQ(backend().requests().back(), Request::GetVringBase);
  EXPECT_FALSE(backend().error()) << backend().error()->message();
}

// ---- End to end: the real backend library ---------------------------------------------------------------------------

// The rng's entropy in these tests: byte i of every request is i * 7 + 3, so the guest's buffer can be checked.
Result<void> pattern_source(std::span<std::uint8_t> out) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::uint8_t>(i * 7 + 3);
  }
  return {};
}

TEST_F(VhostUserFrontendTest, EndToEndRngFillsTheDriversBuffersThroughTheRealBackend) {
  virtio::rng::RngConfig rng_config;
  rng_config.source = pattern_source;
  auto rng = virtio::rng::RngDevice::create(std::move(rng_config));
  ASSERT_TRUE(rng) << rng.error().message();
  auto frontend = connect_to_daemon(*rng);
  ASSERT_TRUE(frontend) << connect_error().message();
  ASSERT_TRUE(make_transport(memfd_memory()));
  driver().program_vector(1, 0xfee02000, 0x51);
  driver().enable_msix();
  ASSERT_TRUE(start_driver({}, [&] { EXPECT_EQ(driver().set_queue_vector(0, 1), 1); }));

  // A request, kicked the MMIO way (queue_notify writes the kick eventfd the backend watches).
  const auto first = mock().allocate(64, true);
  mock().add_chain(std::array{first});
  driver().notify(0);
  ASSERT_TRUE(testing::eventually([&] { return mock().used_index() == 1; }));
  auto used = mock().collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 64u);
  auto bytes = mock().read_bytes(first.address, 64);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    ASSERT_EQ(bytes[i], static_cast<std::uint8_t>(i * 7 + 3)) << "byte " << i;
  }
  // The backend's call went to the relay, which the transport turned into the queue's MSI-X message.
  ASSERT_TRUE(testing::eventually([&] { return !sink().signals().empty(); }));
  EXPECT_EQ(sink().signals()[0].vector, 1);
  EXPECT_EQ(sink().signals()[0].message, (pci::MsiMessage{.address = 0xfee02000, .data = 0x51}));
  EXPECT_GE(frontend->stats().relayed_interrupts, 1u);

  // A second one kicked the ioeventfd way: KVM writes the kick eventfd, the VMM sees nothing.
  const auto second = mock().allocate(16, true);
  mock().add_chain(std::array{second});
  ASSERT_TRUE(frontend->kick_event(0).write(1));
  ASSERT_TRUE(testing::eventually([&] { return mock().used_index() == 2; }));
  EXPECT_EQ(mock().read_bytes(second.address, 2), (std::vector<std::uint8_t>{3, 10}));
  EXPECT_EQ(frontend->stats().fallback_kicks, 1u);
  EXPECT_EQ((*rng)->bytes_served(), 80u);

  // Reset: the backend stops the ring where it got to.
  EXPECT_TRUE(driver().reset());
  EXPECT_EQ(frontend->stopped_vring_base(0), 2u);
  EXPECT_TRUE(frontend->connected());
  EXPECT_FALSE(frontend->last_error()) << frontend->last_error()->message();
}

// A raw image of `sectors` sectors, sector n filled with byte n.
std::filesystem::path make_image(const std::filesystem::path& dir, std::size_t sectors) {
  const auto path = dir / "disk.img";
  std::vector<std::uint8_t> bytes(sectors * virtio::blk::kSectorBytes);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::uint8_t>(i / virtio::blk::kSectorBytes);
  }
  Fd fd(::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600));
  EXPECT_TRUE(fd);
  EXPECT_EQ(::write(fd.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  return path;
}

std::vector<std::uint8_t> read_file(const std::filesystem::path& path, std::uint64_t offset, std::size_t length) {
  std::vector<std::uint8_t> bytes(length);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(fd);
  EXPECT_EQ(::pread(fd.get(), bytes.data(), length, static_cast<off_t>(offset)), static_cast<ssize_t>(length));
  return bytes;
}

TEST_F(VhostUserFrontendTest, EndToEndBlkReadsAndWritesTheImageThroughTheRealBackend) {
  constexpr std::size_t kSectors = 128;
  const auto image = make_image(dir(), kSectors);
  auto blk = virtio::blk::BlkDevice::open(virtio::blk::BlkConfig{.path = image.string()});
  ASSERT_TRUE(blk) << blk.error().message();
  auto frontend = connect_to_daemon(*blk);
  ASSERT_TRUE(frontend) << connect_error().message();
  EXPECT_EQ(frontend->name(), "vhost-user-blk");
  ASSERT_TRUE(make_transport(memfd_memory()));

  // The configuration came from the backend at connect: capacity in sectors, blk_size.
  using virtio::VirtioPciDevice;
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset + offsetof(virtio_blk_config, capacity), 4), kSectors);
  EXPECT_EQ(driver().read(VirtioPciDevice::kDeviceConfigOffset + offsetof(virtio_blk_config, blk_size), 4), 512u);
  ASSERT_TRUE(start_driver());

  // A request: header (readable), data, status byte (writable).
  auto request = [&](std::uint32_t type, std::uint64_t sector, vmm::testing::MockBuffer data) -> std::uint8_t {
    const auto header = mock().allocate(sizeof(virtio_blk_outhdr), false);
    const virtio_blk_outhdr out{.type = type, .ioprio = 0, .sector = sector};
    EXPECT_TRUE(memory().write_obj(header.address, out));
    const auto status = mock().allocate(1, true, 0xff);
    const std::uint16_t before = mock().used_index();
    mock().add_chain(std::array{header, data, status});
    driver().notify(0);
    EXPECT_TRUE(testing::eventually([&] { return mock().used_index() != before; }));
    (void)mock().collect_used();
    return mock().read_bytes(status.address, 1)[0];
  };

  // Read sector 3: the guest's buffer holds what the file holds.
  const auto in = mock().allocate(512, true);
  EXPECT_EQ(request(VIRTIO_BLK_T_IN, 3, in), VIRTIO_BLK_S_OK);
  EXPECT_EQ(mock().read_bytes(in.address, 512), read_file(image, 3 * 512, 512));
  EXPECT_EQ(mock().read_bytes(in.address, 1)[0], 3);

  // Write sector 5: the file holds what the guest wrote.
  const auto out = mock().allocate(512, false, 0xab);
  EXPECT_EQ(request(VIRTIO_BLK_T_OUT, 5, out), VIRTIO_BLK_S_OK);
  EXPECT_EQ(read_file(image, 5 * 512, 512), std::vector<std::uint8_t>(512, 0xab));
  EXPECT_EQ(read_file(image, 6 * 512, 1), std::vector<std::uint8_t>{6}) << "the next sector is untouched";

  // Past the end: an error answer, not a crash.
  const auto beyond = mock().allocate(512, true);
  EXPECT_EQ(request(VIRTIO_BLK_T_IN, kSectors, beyond), VIRTIO_BLK_S_IOERR);

  EXPECT_EQ((*blk)->stats().reads, 1u);
  EXPECT_EQ((*blk)->stats().writes, 1u);
  // The backend writes the call fd after publishing the used entry: the relay follows, asynchronously.
  EXPECT_TRUE(testing::eventually([&] { return frontend->stats().relayed_interrupts >= 1; }));
  EXPECT_TRUE(testing::eventually([&] { return transport().counters()[0].interrupts >= 1; }));
  EXPECT_TRUE(driver().reset());
  EXPECT_TRUE(frontend->connected());
}

}  // namespace
}  // namespace vmm::vhost
