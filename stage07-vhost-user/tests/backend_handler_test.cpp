// BackendHandler, message by message: a scripted frontend plays the startup sequences of QEMU and DPDK (and random
// orders) against stage05's real RngDevice, puts requests in the rings with the MockDriver and checks what the device
// did through guest memory and the eventfds; every class of invalid request is refused and changes nothing.
#include "vmm/vhost/backend/backend_handler.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "scripted_frontend.hpp"
#include "vmm/virtio/blk/blk_device.hpp"
#include "vmm/virtio/rng/rng_device.hpp"

namespace {

// What the backend offers for the rng: the defaults without CONFIG (the rng has no configuration space).
const std::uint64_t kRngProtocolFeatures =
    vmm::vhost::BackendOptions{}.protocol_features & ~vmm::vhost::bit(vmm::vhost::ProtocolFeature::Config);

using namespace vmm;
using namespace vmm::vhost;
namespace vt = vmm::testing;
using vmm::testing::FrontendOptions;
using vmm::testing::make_message;
using vmm::testing::ScriptedFrontend;
using vmm::testing::state_message;
using vmm::testing::u64_message;
using vmm::testing::wait_until;

constexpr std::uint64_t kProtocolBit = 1ull << kProtocolFeaturesBit;

std::uint64_t virtio_features(bool event_idx, bool protocol = true) {
  std::uint64_t f = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC);
  if (event_idx) {
    f |= 1ull << VIRTIO_RING_F_EVENT_IDX;
  }
  if (protocol) {
    f |= kProtocolBit;
  }
  return f;
}

// Everything a refused request must leave as it was.
std::string state_of(const BackendHandler& handler) {
  std::string out = fmt::format("features={:#x} set={} protocol={:#x} owned={} running={} activations={}\n",
                                handler.acked_features(), handler.features_set(), handler.protocol_features(),
                                handler.owned(), handler.running(), handler.activations());
  for (const auto& r : handler.memory_regions()) {
    out += fmt::format("region {}\n", describe_region(r));
  }
  for (const auto& ring : handler.rings()) {
    out += fmt::format("ring {} num={} avail={} used={} enabled={} kick={} call={} err={} running={}", ring.index,
                       ring.num, ring.next_avail, ring.next_used, ring.enabled, ring.has_kick, ring.has_call,
                       ring.has_err, ring.running);
    if (ring.addr) {
      out += fmt::format(" addr={:#x}/{:#x}/{:#x}", ring.addr->desc_user_addr, ring.addr->avail_user_addr,
                         ring.addr->used_user_addr);
    }
    out += '\n';
  }
  return out;
}

class RngBackendTest : public ::testing::Test {
 protected:
  void SetUp() override { make(); }

  void make(FrontendOptions frontend_options = {}, BackendOptions options = {}) {
    handler_.reset();
    auto device = virtio::rng::RngDevice::create(vt::counting_rng_config());
    ASSERT_TRUE(device) << device.error().message();
    rng_ = *device;
    next_byte_ = 0;
    served_ = 0;
    auto handler = BackendHandler::create(rng_, std::move(options));
    ASSERT_TRUE(handler) << handler.error().message();
    handler_ = std::move(*handler);
    frontend_ = std::make_unique<ScriptedFrontend>(frontend_options);
  }

  // A request that must succeed; returns its reply.
  std::optional<Message> ok(Message message) {
    const std::string what = describe(message);
    auto result = handler_->handle(std::move(message));
    EXPECT_TRUE(result) << what << ": " << result.error().message();
    return result ? std::move(*result) : std::nullopt;
  }
  // A request that must be refused; returns the error's message.
  std::string refused(Message message) {
    const std::string what = describe(message);
    auto result = handler_->handle(std::move(message));
    EXPECT_FALSE(result) << what << " was accepted";
    return result ? std::string() : result.error().message();
  }
  void play(std::vector<Message> messages) {
    for (auto& message : messages) {
      ok(std::move(message));
    }
  }
  void start_qemu(bool event_idx = false) {
    play(frontend_->qemu_start(virtio_features(event_idx), kRngProtocolFeatures));
    ASSERT_TRUE(handler_->running()) << state_of(*handler_);
  }

  void wait_used(std::uint16_t q, std::uint16_t index) {
    ASSERT_TRUE(wait_until([&] { return frontend_->driver(q).used_index() == index; }))
        << "used index stuck at " << frontend_->driver(q).used_index() << ", waiting for " << index << "\n"
        << state_of(*handler_);
  }
  // Waits until the device has decided `n` times whether to interrupt (sent or suppressed): the call eventfd has been
  // written by then, if it was going to be.
  void wait_decisions(std::uint16_t q, std::uint64_t n) {
    ASSERT_TRUE(wait_until([&] {
      const auto c = handler_->ring(q).counters;
      return c.interrupts + c.interrupts_suppressed + handler_->ring(q).interrupts_dropped >= n;
    })) << state_of(*handler_);
  }
  // The used entries since the last call, each checked against the counting source's bytes.
  void expect_served(std::uint16_t q, std::size_t count) {
    const auto used = frontend_->driver(q).collect_used();
    ASSERT_EQ(used.size(), count);
    for (const auto& element : used) {
      ASSERT_LT(served_, frontend_->rng_buffers().size());
      const auto& buffer = frontend_->rng_buffers()[served_++];
      EXPECT_EQ(element.len, buffer.length);
      const auto bytes = frontend_->driver(q).read_bytes(buffer.address, buffer.length);
      for (std::size_t i = 0; i < bytes.size(); ++i) {
        ASSERT_EQ(bytes[i], static_cast<std::uint8_t>(next_byte_ + i)) << "byte " << i << " of request " << served_;
      }
      next_byte_ = static_cast<std::uint8_t>(next_byte_ + buffer.length);
    }
  }

  std::shared_ptr<virtio::rng::RngDevice> rng_;
  std::unique_ptr<BackendHandler> handler_;
  std::unique_ptr<ScriptedFrontend> frontend_;
  std::uint8_t next_byte_ = 0;
  std::size_t served_ = 0;
};

TEST_F(RngBackendTest, QemuOrderServesWaitingAndKickedRequests) {
  // Requests published before the ring starts: served when it starts (their kick went nowhere).
  frontend_->add_rng_request(0, 64);
  frontend_->add_rng_request(0, 100);

  auto messages = frontend_->qemu_start(virtio_features(false), kRngProtocolFeatures);
  std::size_t i = 0;
  for (auto& message : messages) {
    const Request request = message.request;
    auto reply = ok(std::move(message));
    if (request == Request::GetFeatures) {
      ASSERT_TRUE(reply);
      EXPECT_TRUE(reply->is_reply());
      EXPECT_EQ(reply->u64(), rng_->features() | kProtocolBit);
    } else if (request == Request::GetProtocolFeatures) {
      ASSERT_TRUE(reply);
      EXPECT_EQ(reply->u64(), kRngProtocolFeatures);
    } else if (request == Request::GetQueueNum) {
      ASSERT_TRUE(reply);
      EXPECT_EQ(reply->u64(), 1u);
    } else {
      EXPECT_FALSE(reply) << request_name(static_cast<std::uint32_t>(request));
    }
    // Protocol features negotiated: nothing runs before SET_VRING_ENABLE, the very last message.
    if (++i < messages.size()) {
      EXPECT_FALSE(handler_->running()) << "after " << request_name(static_cast<std::uint32_t>(request));
    }
  }
  ASSERT_TRUE(handler_->running());
  EXPECT_EQ(handler_->activations(), 1u);
  wait_used(0, 2);
  expect_served(0, 2);
  wait_decisions(0, 1);
  EXPECT_GE(frontend_->take_calls(0), 1u);

  // Then the ordinary path: publish, kick, served, interrupt.
  frontend_->add_rng_request(0, 32);
  frontend_->kick(0);
  wait_used(0, 3);
  expect_served(0, 1);
  const auto ring = handler_->ring(0);
  EXPECT_TRUE(ring.running);
  EXPECT_EQ(ring.next_avail, 3);
  EXPECT_EQ(ring.counters.chains, 3u);
  EXPECT_EQ(ring.counters.used, 3u);
  ASSERT_TRUE(ring.layout);
  EXPECT_EQ(*ring.layout, frontend_->driver(0).queue_layout());  // frontend addresses translated back to GPAs
  EXPECT_TRUE(wait_until([&] { return handler_->ring(0).counters.notifications >= 1; }));
  EXPECT_EQ(rng_->bytes_served(), 196u);
}

TEST_F(RngBackendTest, DpdkOrderMemoryLastEnableBeforeKick) {
  frontend_->add_rng_request(0, 48);
  auto messages = frontend_->dpdk_start(virtio_features(false), kRngProtocolFeatures);
  const std::size_t count = messages.size();
  for (std::size_t i = 0; i < count; ++i) {
    ok(std::move(messages[i]));
    if (i + 1 < count) {
      EXPECT_FALSE(handler_->running()) << "running before the memory table arrived";
    }
  }
  ASSERT_TRUE(handler_->running());
  wait_used(0, 1);
  expect_served(0, 1);
  frontend_->add_rng_request(0, 16);
  frontend_->kick(0);
  wait_used(0, 2);
  expect_served(0, 1);
}

TEST_F(RngBackendTest, AnyOrderOfTheSetupMessagesWorks) {
  std::mt19937 random(7);
  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE(fmt::format("round {}", round));
    make();
    served_ = 0;
    std::vector<Message> messages;
    messages.push_back(u64_message(Request::SetProtocolFeatures, kRngProtocolFeatures));
    messages.push_back(u64_message(Request::SetFeatures, virtio_features(round % 2 == 0)));
    messages.push_back(frontend_->set_mem_table({0}));
    messages.push_back(frontend_->vring_num(0));
    messages.push_back(ScriptedFrontend::vring_base(0, 0));
    messages.push_back(frontend_->vring_addr(0));
    messages.push_back(frontend_->vring_kick(0));
    messages.push_back(frontend_->vring_call(0));
    messages.push_back(ScriptedFrontend::vring_enable(0, true));
    std::shuffle(messages.begin(), messages.end(), random);
    std::string order;
    for (const auto& m : messages) {
      order += request_name(static_cast<std::uint32_t>(m.request)) + " ";
    }
    SCOPED_TRACE(order);
    play(std::move(messages));
    ASSERT_TRUE(handler_->running()) << state_of(*handler_);
    frontend_->add_rng_request(0, 8);
    frontend_->kick(0);
    wait_used(0, 1);
    expect_served(0, 1);
  }
}

TEST_F(RngBackendTest, WithoutProtocolFeaturesRingsStartEnabled) {
  // VHOST_USER_F_PROTOCOL_FEATURES not acked: the ring runs as soon as it is complete, no SET_VRING_ENABLE.
  ok(u64_message(Request::SetFeatures, virtio_features(false, false)));
  ok(frontend_->set_mem_table({0}));
  ok(frontend_->vring_num(0));
  ok(frontend_->vring_addr(0));
  ok(frontend_->vring_call(0));
  EXPECT_FALSE(handler_->running());
  ok(frontend_->vring_kick(0));
  EXPECT_TRUE(handler_->running());
  EXPECT_TRUE(handler_->ring(0).enabled);
  // ...and SET_VRING_ENABLE 0 still stops it.
  ok(ScriptedFrontend::vring_enable(0, false));
  EXPECT_FALSE(handler_->running());
}

TEST_F(RngBackendTest, GetVringBaseStopsTheRingAndARestartContinues) {
  start_qemu();
  for (int i = 0; i < 3; ++i) {
    frontend_->add_rng_request(0, 20);
  }
  frontend_->kick(0);
  wait_used(0, 3);
  expect_served(0, 3);
  wait_decisions(0, 1);
  // The kick must have been read before the ring stops (the worker's first look may have served the requests).
  ASSERT_TRUE(wait_until([&] { return handler_->ring(0).counters.notifications == 1; }));

  auto reply = ok(ScriptedFrontend::get_vring_base(0));
  ASSERT_TRUE(reply);
  const auto state = std::get<vhost_vring_state>(reply->payload);
  EXPECT_EQ(state.index, 0u);
  EXPECT_EQ(state.num, 3u);
  EXPECT_FALSE(handler_->running());
  EXPECT_TRUE(handler_->worker_tids().empty());
  EXPECT_FALSE(handler_->ring(0).has_kick);

  // Stopped: a request and a kick now reach nobody (no worker exists; the backend closed its kick fd).
  frontend_->add_rng_request(0, 20);
  frontend_->kick(0);
  EXPECT_EQ(frontend_->driver(0).used_index(), 3);
  EXPECT_GE(frontend_->take_calls(0), 1u);  // the three earlier requests' interrupt
  EXPECT_EQ(*ScriptedFrontend::must(frontend_->kick_fd(0).read()), 1u) << "someone consumed the kick";

  // Restarted from where it stopped: the waiting request is served, the earlier ones are not served twice.
  ok(ScriptedFrontend::vring_base(0, state.num));
  ok(frontend_->vring_kick(0));
  ASSERT_TRUE(handler_->running());
  EXPECT_EQ(handler_->activations(), 2u);
  wait_used(0, 4);
  expect_served(0, 1);
  EXPECT_EQ(handler_->ring(0).counters.chains, 4u);
  EXPECT_EQ(handler_->ring(0).next_avail, 4);
}

TEST_F(RngBackendTest, BaseNearTheWrapContinuesModulo65536) {
  frontend_->driver(0).start_at(65534, 65534);
  ok(u64_message(Request::SetProtocolFeatures, kRngProtocolFeatures));
  ok(u64_message(Request::SetFeatures, virtio_features(false)));
  ok(frontend_->set_mem_table({0}));
  ok(frontend_->vring_num(0));
  ok(ScriptedFrontend::vring_base(0, 65534));
  ok(frontend_->vring_addr(0));
  ok(frontend_->vring_kick(0));
  ok(frontend_->vring_call(0));
  ok(ScriptedFrontend::vring_enable(0, true));
  for (int i = 0; i < 3; ++i) {
    frontend_->add_rng_request(0, 4);
  }
  frontend_->kick(0);
  wait_used(0, 1);  // 65534 + 3
  expect_served(0, 3);
  auto reply = ok(ScriptedFrontend::get_vring_base(0));
  ASSERT_TRUE(reply);
  EXPECT_EQ(std::get<vhost_vring_state>(reply->payload).num, 1u);
}

TEST_F(RngBackendTest, EventIdxSuppressesInterruptsTheDriverDidNotAskFor) {
  make(vt::frontend_options(1, true));
  start_qemu(/*event_idx=*/true);
  // "Interrupt me once the used index passes 10": one request does not get there.
  frontend_->driver(0).set_used_event(10);
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 1);
  wait_decisions(0, 1);
  EXPECT_EQ(frontend_->take_calls(0), 0u);
  EXPECT_EQ(handler_->ring(0).counters.interrupts_suppressed, 1u);

  // "Interrupt me after entry 1": the next request crosses it.
  frontend_->driver(0).set_used_event(1);
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 2);
  wait_decisions(0, 2);
  EXPECT_EQ(frontend_->take_calls(0), 1u);
  EXPECT_EQ(handler_->ring(0).counters.interrupts, 1u);
  expect_served(0, 2);
}

TEST_F(RngBackendTest, WithoutEventIdxEveryBatchInterrupts) {
  start_qemu(/*event_idx=*/false);
  frontend_->driver(0).set_used_event(10);  // ignored in flags mode
  for (std::uint16_t n = 1; n <= 2; ++n) {
    frontend_->add_rng_request(0, 8);
    frontend_->kick(0);
    wait_used(0, n);
    wait_decisions(0, n);
    EXPECT_EQ(frontend_->take_calls(0), 1u) << "request " << n;
  }
  EXPECT_EQ(handler_->ring(0).counters.interrupts_suppressed, 0u);
  expect_served(0, 2);
}

TEST_F(RngBackendTest, CallFdMayChangeWhileRunningWithoutARestart) {
  start_qemu();
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 1);
  wait_decisions(0, 1);
  auto old_call = ScriptedFrontend::must(frontend_->call_fd(0).try_clone());
  EXPECT_EQ(ScriptedFrontend::must(old_call.read()).value_or(0), 1u);

  frontend_->replace_call_fd(0);
  ok(frontend_->vring_call(0));
  EXPECT_TRUE(handler_->running());
  EXPECT_EQ(handler_->activations(), 1u);
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 2);
  wait_decisions(0, 2);
  EXPECT_EQ(frontend_->take_calls(0), 1u);
  EXPECT_EQ(ScriptedFrontend::must(old_call.read()).value_or(0), 0u);

  // No call fd at all: interrupts are dropped and counted.
  ok(ScriptedFrontend::vring_no_fd(Request::SetVringCall, 0));
  EXPECT_FALSE(handler_->ring(0).has_call);
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 3);
  EXPECT_TRUE(wait_until([&] { return handler_->ring(0).interrupts_dropped == 1; }));
  expect_served(0, 3);
}

TEST_F(RngBackendTest, ADriverErrorWritesTheErrFdAndIsKept) {
  start_qemu();
  frontend_->driver(0).publish(999);  // a head index outside the 16-entry table
  frontend_->kick(0);
  ASSERT_TRUE(wait_until([&] { return handler_->needs_reset_reports() == 1; }));
  EXPECT_EQ(frontend_->take_errs(0), 1u);
  ASSERT_TRUE(handler_->last_error());
  EXPECT_NE(handler_->last_error()->message().find("999"), std::string::npos) << handler_->last_error()->message();
  // The invalid chain was consumed (counted), so a stop reports the index past it.
  auto reply = ok(ScriptedFrontend::get_vring_base(0));
  ASSERT_TRUE(reply);
  EXPECT_EQ(std::get<vhost_vring_state>(reply->payload).num, 1u);
}

TEST_F(RngBackendTest, AKickFdThatBreaksStopsOnlyThatRing) {
  start_qemu();
  // A pipe as the kick "eventfd", its write end closed at once: the worker reads end-of-file. It must not spin on
  // the forever-readable fd: it reports the error (err fd, last_error) and stops watching.
  int ends[2];
  ASSERT_EQ(::pipe2(ends, O_CLOEXEC), 0);
  Fd read_end(ends[0]);
  Fd write_end(ends[1]);
  std::vector<Fd> fds;
  fds.push_back(std::move(read_end));
  write_end.reset();
  ok(make_message(Request::SetVringKick, std::uint64_t{0}, std::move(fds)));
  ASSERT_TRUE(wait_until([&] {
    auto error = handler_->last_error();
    return error && error->message().find("no more kicks") != std::string::npos;
  }));
  EXPECT_EQ(frontend_->take_errs(0), 1u);
  EXPECT_TRUE(handler_->running());

  // A proper kick fd brings the ring back.
  ok(frontend_->vring_kick(0));
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 1);
  expect_served(0, 1);
}

TEST_F(RngBackendTest, TheWorkerThreadIsNamedAfterDeviceAndQueue) {
  start_qemu();
  const auto tids = handler_->worker_tids();
  ASSERT_EQ(tids.size(), 1u);
  EXPECT_EQ(vt::thread_name(tids[0]), "vu-rng-q0");
  EXPECT_EQ(vring_worker_name("virtio-something-long", 12), "vu-something-lo");
}

TEST_F(RngBackendTest, InvalidRequestsAreRefusedWithAClearErrorAndChangeNothing) {
  start_qemu();
  const auto r0 = frontend_->region(0);
  const auto r1 = frontend_->region(1);
  const auto table = [&](std::vector<MemoryRegion> regions) {
    MemoryTable t;
    std::vector<Fd> fds;
    for (const auto& region : regions) {
      t.regions.push_back(region);
      fds.push_back(frontend_->region_fd(0));
    }
    return make_message(Request::SetMemTable, std::move(t), std::move(fds));
  };
  const auto addr = [&](unsigned index, std::uint64_t desc, std::uint32_t flags = 0) {
    auto a = frontend_->ring_addr(0);
    a.index = index;
    a.flags = flags;
    a.desc_user_addr = desc;
    return make_message(Request::SetVringAddr, a);
  };
  // A memfd of one page, claiming to back a 2 MiB region: mapping it would SIGBUS on the first touch past 4 KiB.
  const auto short_memfd_table = [&] {
    Fd memfd(::memfd_create("short", MFD_CLOEXEC));
    EXPECT_TRUE(memfd.valid());
    EXPECT_EQ(::ftruncate(memfd.get(), 4096), 0);
    MemoryTable t;
    t.regions.push_back(r0);
    std::vector<Fd> fds;
    fds.push_back(std::move(memfd));
    return make_message(Request::SetMemTable, std::move(t), std::move(fds));
  };

  struct Case {
    std::string name;
    std::function<Message()> message;
    std::string expected;  // in the error message
  };
  const std::vector<Case> cases = {
      {"SET_VRING_NUM index", [] { return state_message(Request::SetVringNum, 1, 16); }, "queue index 1 out of range"},
      {"SET_VRING_ADDR index", [&] { return addr(1, frontend_->ring_addr(0).desc_user_addr); },
       "queue index 1 out of range"},
      {"SET_VRING_BASE index", [] { return state_message(Request::SetVringBase, 2, 0); }, "queue index 2 out of range"},
      {"GET_VRING_BASE index", [] { return state_message(Request::GetVringBase, 1, 0); }, "queue index 1 out of range"},
      {"SET_VRING_KICK index",
       [&] { return ScriptedFrontend::vring_fd(Request::SetVringKick, 1, frontend_->kick_fd(0)); },
       "queue index 1 out of range"},
      {"SET_VRING_CALL index",
       [&] { return ScriptedFrontend::vring_fd(Request::SetVringCall, 7, frontend_->call_fd(0)); },
       "queue index 7 out of range"},
      {"SET_VRING_ERR index",
       [&] { return ScriptedFrontend::vring_fd(Request::SetVringErr, 255, frontend_->err_fd(0)); },
       "queue index 255 out of range"},
      {"SET_VRING_ENABLE index", [] { return state_message(Request::SetVringEnable, 1, 1); },
       "queue index 1 out of range"},
      {"num 0", [] { return state_message(Request::SetVringNum, 0, 0); }, "power of two from 1 to 256"},
      {"num 24", [] { return state_message(Request::SetVringNum, 0, 24); }, "size 24 must be a power of two"},
      {"num 512", [] { return state_message(Request::SetVringNum, 0, 512); }, "size 512 must be a power of two"},
      {"ring outside memory", [&] { return addr(0, 0x1000); }, "is in none of the 1 memory regions"},
      {"ring straddling the region's end", [&] { return addr(0, r0.userspace_addr + r0.memory_size - 16); },
       "runs past the end of region"},
      {"ring in a hole", [&] { return addr(0, r1.userspace_addr); }, "in none of"},
      {"dirty log flag", [&] { return addr(0, frontend_->ring_addr(0).desc_user_addr, 1u << VHOST_VRING_F_LOG); },
       "VHOST_VRING_F_LOG"},
      {"base above 16 bits", [] { return state_message(Request::SetVringBase, 0, 0x10000); }, "16-bit"},
      {"enable 2", [] { return state_message(Request::SetVringEnable, 0, 2); }, "neither 0"},
      {"kick without fd", [] { return ScriptedFrontend::vring_no_fd(Request::SetVringKick, 0); }, "polling"},
      {"kick fd that is a file",
       [&] {
         std::vector<Fd> fds;
         fds.push_back(frontend_->region_fd(0));
         return make_message(Request::SetVringKick, std::uint64_t{0}, std::move(fds));
       },
       "not an eventfd"},
      {"unoffered features", [] { return u64_message(Request::SetFeatures, virtio_features(false) | 1); },
       "never offered"},
      {"unoffered protocol features",
       [] { return u64_message(Request::SetProtocolFeatures, bit(ProtocolFeature::LogShmfd)); }, "never offered"},
      {"GET_CONFIG out of range",
       [] {
         return make_message(Request::GetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = {0, 0, 0, 0}});
       },
       "outside virtio-rng's 0-byte configuration"},
      {"SET_CONFIG out of range",
       [] { return make_message(Request::SetConfig, DeviceConfig{.offset = 8, .flags = 0, .bytes = {1}}); }, "outside"},
      {"REM_MEM_REG unknown region", [&] { return frontend_->rem_mem_reg(1); }, "no region matches"},
      {"ADD_MEM_REG overlapping", [&] { return frontend_->add_mem_reg(0); }, "overlaps"},
      {"regions overlapping in guest-physical memory",
       [&] {
         auto other = r1;
         other.guest_phys_addr = r0.guest_phys_addr + 0x1000;
         return table({r0, other});
       },
       "in guest-physical memory"},
      {"regions overlapping in the frontend's address space",
       [&] {
         auto other = r1;
         other.userspace_addr = r0.userspace_addr + 0x1000;
         return table({r0, other});
       },
       "frontend's address space"},
      {"region end overflows",
       [&] {
         auto huge = r0;
         huge.guest_phys_addr = 0xffff'ffff'ffff'f000;
         huge.memory_size = 0x2000;
         return table({huge});
       },
       "guest-physical end overflows"},
      {"frontend address overflows",
       [&] {
         auto huge = r0;
         huge.userspace_addr = 0xffff'ffff'ffff'f000;
         return table({huge});
       },
       "frontend address end overflows"},
      {"file offset overflows",
       [&] {
         auto huge = r0;
         huge.mmap_offset = 0xffff'ffff'ffff'f000;
         return table({huge});
       },
       "file offset end overflows"},
      {"region of size 0",
       [&] {
         auto empty = r0;
         empty.memory_size = 0;
         return table({empty});
       },
       "size 0"},
      {"unaligned region",
       [&] {
         auto odd = r0;
         odd.guest_phys_addr = 0x800;
         return table({odd});
       },
       "page-aligned"},
      {"region file shorter than the region", short_memfd_table, "shorter than"},
      {"unsupported request", [] { return u64_message(Request::SetLogBase, 0); }, "not supported"},
  };

  const std::string before = state_of(*handler_);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string error = refused(c.message());
    EXPECT_NE(error.find(c.expected), std::string::npos) << "error: " << error;
    EXPECT_EQ(state_of(*handler_), before);
  }
  EXPECT_EQ(handler_->refused(), cases.size());

  // And the session still works.
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 1);
  expect_served(0, 1);
}

TEST_F(RngBackendTest, MemorySlotsNeedTheProtocolFeatureAndRespectTheLimit) {
  BackendOptions one_slot;
  one_slot.max_mem_slots = 1;
  make({}, one_slot);
  ok(u64_message(Request::SetProtocolFeatures, bit(ProtocolFeature::ReplyAck)));
  EXPECT_NE(refused(frontend_->add_mem_reg(0)).find("CONFIGURE_MEM_SLOTS"), std::string::npos);
  EXPECT_NE(refused(frontend_->set_mem_table({0, 1})).find("at most 1"), std::string::npos);

  ok(u64_message(Request::SetProtocolFeatures, kRngProtocolFeatures));
  auto slots = ok(make_message(Request::GetMaxMemSlots));
  ASSERT_TRUE(slots);
  EXPECT_EQ(slots->u64(), 1u);
  ok(frontend_->add_mem_reg(0));
  EXPECT_NE(refused(frontend_->add_mem_reg(1)).find("at most 1"), std::string::npos);
  EXPECT_EQ(handler_->memory_regions().size(), 1u);
}

TEST_F(RngBackendTest, AddAndRemoveMemoryRegionsWhileRunning) {
  // QEMU 7.2 with CONFIGURE_MEM_SLOTS: ADD_MEM_REG instead of SET_MEM_TABLE, before any ring exists.
  ok(u64_message(Request::SetProtocolFeatures, kRngProtocolFeatures));
  ok(u64_message(Request::SetFeatures, virtio_features(false)));
  ok(frontend_->add_mem_reg(0));
  ok(frontend_->vring_num(0));
  ok(ScriptedFrontend::vring_base(0, 0));
  ok(frontend_->vring_addr(0));
  ok(frontend_->vring_kick(0));
  ok(frontend_->vring_call(0));
  ok(ScriptedFrontend::vring_enable(0, true));
  ASSERT_TRUE(handler_->running());
  frontend_->add_rng_request(0, 16);
  frontend_->kick(0);
  wait_used(0, 1);
  expect_served(0, 1);

  // A region appears while the ring runs: the device is stopped, the memory swapped, the device restarted.
  ok(frontend_->add_mem_reg(1));
  EXPECT_TRUE(handler_->running());
  EXPECT_EQ(handler_->activations(), 2u);
  ASSERT_EQ(handler_->memory_regions().size(), 2u);
  EXPECT_EQ(handler_->memory_regions()[1], frontend_->region(1));
  // A request whose buffer lives in the new region is served.
  const vt::MockBuffer far{.address = memory::GuestAddress(vt::kRegion1Gpa + 0x100), .length = 32, .writable = true};
  frontend_->driver(0).add_chain(std::span(&far, 1));
  frontend_->kick(0);
  wait_used(0, 2);
  auto used = frontend_->driver(0).collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 32u);
  const auto bytes = frontend_->driver(0).read_bytes(far.address, 32);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    EXPECT_EQ(bytes[i], static_cast<std::uint8_t>(next_byte_ + i));
  }
  next_byte_ = static_cast<std::uint8_t>(next_byte_ + 32);

  // It goes away again: still running on the rest.
  ok(frontend_->rem_mem_reg(1));
  EXPECT_TRUE(handler_->running());
  EXPECT_EQ(handler_->activations(), 3u);
  frontend_->add_rng_request(0, 16);
  frontend_->kick(0);
  wait_used(0, 3);
  expect_served(0, 1);

  // The region holding the rings goes: nothing can run; it comes back: the ring resumes where it stopped.
  ok(frontend_->rem_mem_reg(0));
  EXPECT_FALSE(handler_->running());
  EXPECT_TRUE(handler_->memory_regions().empty());
  frontend_->add_rng_request(0, 16);
  ok(frontend_->add_mem_reg(0));
  EXPECT_TRUE(handler_->running());
  wait_used(0, 4);
  expect_served(0, 1);
  EXPECT_EQ(handler_->ring(0).counters.chains, 4u);
}

TEST_F(RngBackendTest, ReplyAckAnswersZeroOnSuccessAndOneOnFailure) {
  start_qemu();  // REPLY_ACK negotiated
  auto ack = handler_->serve(
      make_message(Request::SetVringNum, vhost_vring_state{.index = 0, .num = 16}, {}, kVersion | kNeedReply));
  ASSERT_TRUE(ack);
  EXPECT_TRUE(ack->is_reply());
  EXPECT_EQ(ack->request, Request::SetVringNum);
  EXPECT_EQ(ack->u64(), 0u);

  auto nack = handler_->serve(
      make_message(Request::SetVringNum, vhost_vring_state{.index = 0, .num = 3}, {}, kVersion | kNeedReply));
  ASSERT_TRUE(nack);
  EXPECT_EQ(nack->u64(), 1u);
  ASSERT_TRUE(handler_->last_error());
  EXPECT_NE(handler_->last_error()->message().find("size 3"), std::string::npos);

  // No kNeedReply: no answer either way.
  EXPECT_FALSE(handler_->serve(state_message(Request::SetVringNum, 0, 16)));
  EXPECT_FALSE(handler_->serve(state_message(Request::SetVringNum, 0, 3)));

  // A request with its own reply is acknowledged by that reply only.
  auto features = handler_->serve(make_message(Request::GetFeatures, {}, {}, kVersion | kNeedReply));
  ASSERT_TRUE(features);
  EXPECT_EQ(features->u64(), handler_->offered_features());

  // REPLY_ACK not negotiated: kNeedReply is ignored.
  ok(u64_message(Request::SetProtocolFeatures, bit(ProtocolFeature::Mq)));
  EXPECT_FALSE(handler_->serve(
      make_message(Request::SetVringNum, vhost_vring_state{.index = 0, .num = 16}, {}, kVersion | kNeedReply)));
}

TEST_F(RngBackendTest, RefusedRequestsWithTheirOwnReplyStillGetOne) {
  start_qemu();
  auto base = handler_->serve(state_message(Request::GetVringBase, 9, 0));
  ASSERT_TRUE(base);
  EXPECT_EQ(base->request, Request::GetVringBase);
  EXPECT_EQ(std::get<vhost_vring_state>(base->payload).index, 9u);
  EXPECT_EQ(std::get<vhost_vring_state>(base->payload).num, 0u);

  auto config = handler_->serve(
      make_message(Request::GetConfig, DeviceConfig{.offset = 4, .flags = 0, .bytes = std::vector<std::uint8_t>(8)}));
  ASSERT_TRUE(config);
  EXPECT_EQ(config->request, Request::GetConfig);
  EXPECT_TRUE(std::get<DeviceConfig>(config->payload).bytes.empty());
  EXPECT_EQ(std::get<DeviceConfig>(config->payload).offset, 4u);
  EXPECT_EQ(handler_->refused(), 2u);
  EXPECT_TRUE(handler_->running());
}

TEST_F(RngBackendTest, ResetOwnerForgetsTheSession) {
  const std::size_t fds_before = vt::open_fd_count();
  start_qemu();
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 1);
  expect_served(0, 1);

  ok(make_message(Request::ResetOwner));
  EXPECT_FALSE(handler_->running());
  EXPECT_FALSE(handler_->owned());
  EXPECT_FALSE(handler_->features_set());
  EXPECT_TRUE(handler_->memory_regions().empty());
  EXPECT_TRUE(handler_->worker_tids().empty());
  const auto ring = handler_->ring(0);
  EXPECT_EQ(ring.num, 0);
  EXPECT_FALSE(ring.addr);
  EXPECT_FALSE(ring.has_kick || ring.has_call || ring.has_err);
  EXPECT_EQ(ring.counters.chains, 1u) << "cumulative counters are kept";
  EXPECT_EQ(vt::open_fd_count(), fds_before) << "ring fds or memory fds left open";

  // A new frontend starts from scratch.
  frontend_ = std::make_unique<ScriptedFrontend>();
  served_ = 0;
  start_qemu();
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 1);
  expect_served(0, 1);
}

TEST_F(RngBackendTest, DisconnectJoinsWorkersClosesFdsAndASecondSessionWorks) {
  const std::size_t fds_before = vt::open_fd_count();
  const std::size_t threads_before = vt::thread_count();
  start_qemu();
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 1);
  expect_served(0, 1);
  EXPECT_GT(vt::open_fd_count(), fds_before);
  EXPECT_EQ(vt::thread_count(), threads_before + 1);

  handler_->disconnect();
  EXPECT_FALSE(handler_->running());
  EXPECT_FALSE(rng_->active());
  EXPECT_EQ(handler_->protocol_features(), 0u);
  EXPECT_EQ(vt::thread_count(), threads_before);
  EXPECT_EQ(vt::open_fd_count(), fds_before);

  frontend_ = std::make_unique<ScriptedFrontend>();
  served_ = 0;
  start_qemu();
  frontend_->add_rng_request(0, 8);
  frontend_->kick(0);
  wait_used(0, 1);
  expect_served(0, 1);
  EXPECT_EQ(handler_->activations(), 2u);
}

TEST(BackendHandlerCreate, RefusesWhatItCannotDo) {
  auto device = virtio::rng::RngDevice::create({});
  ASSERT_TRUE(device);
  auto no_device = BackendHandler::create(nullptr, {});
  ASSERT_FALSE(no_device);
  EXPECT_NE(no_device.error().message().find("no device"), std::string::npos);
  BackendOptions log_options;
  log_options.protocol_features = bit(ProtocolFeature::LogShmfd);
  auto log = BackendHandler::create(*device, log_options);
  ASSERT_FALSE(log);
  EXPECT_NE(log.error().message().find("LOG_SHMFD"), std::string::npos) << log.error().message();
  BackendOptions no_slots;
  no_slots.max_mem_slots = 0;
  auto slots = BackendHandler::create(*device, no_slots);
  ASSERT_FALSE(slots);
  EXPECT_NE(slots.error().message().find("max_mem_slots"), std::string::npos);
}

// ---- a device with two queues and a configuration: what activations the handler makes ----

class TwoQueueDevice final : public virtio::VirtioDevice {
 public:
  [[nodiscard]] std::uint16_t device_type() const override { return 42; }
  [[nodiscard]] std::uint64_t features() const override { return virtio::kCommonFeatures; }
  [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override { return {64, 64}; }
  [[nodiscard]] std::size_t config_size() const override { return 16; }
  void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override {
    std::lock_guard lock(mutex_);
    std::copy_n(config_.begin() + static_cast<std::ptrdiff_t>(offset), data.size(), data.begin());
  }
  void write_config(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    std::lock_guard lock(mutex_);
    std::copy(data.begin(), data.end(), config_.begin() + static_cast<std::ptrdiff_t>(offset));
  }
  Result<void> activate(virtio::Activation activation) override {
    std::lock_guard lock(mutex_);
    std::vector<std::uint16_t> enabled;
    for (std::size_t q = 0; q < activation.queues.size(); ++q) {
      if (activation.queues[q]) {
        enabled.push_back(static_cast<std::uint16_t>(q));
      }
    }
    activations_.push_back(enabled);
    features_ = activation.features;
    (void)activation.interrupt->signal_config();
    return {};
  }
  void reset() override {
    std::lock_guard lock(mutex_);
    ++resets_;
  }
  void queue_notify(std::uint16_t queue_index) override { notifies_[queue_index].fetch_add(1); }
  [[nodiscard]] std::string name() const override { return "virtio-two"; }

  std::vector<std::vector<std::uint16_t>> activations() const {
    std::lock_guard lock(mutex_);
    return activations_;
  }
  int resets() const {
    std::lock_guard lock(mutex_);
    return resets_;
  }
  std::uint64_t features_seen() const {
    std::lock_guard lock(mutex_);
    return features_;
  }
  std::atomic<int> notifies_[2]{};

 private:
  mutable std::mutex mutex_;
  std::array<std::uint8_t, 16> config_{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  std::vector<std::vector<std::uint16_t>> activations_;
  std::uint64_t features_ = 0;
  int resets_ = 0;
};

TEST(TwoQueueBackend, TheActivationFollowsTheSetOfReadyRings) {
  auto device = std::make_shared<TwoQueueDevice>();
  auto handler = BackendHandler::create(device, {});
  ASSERT_TRUE(handler);
  auto& h = **handler;
  ScriptedFrontend frontend(vt::frontend_options(2));
  const auto ok = [&](Message m) {
    auto r = h.handle(std::move(m));
    EXPECT_TRUE(r) << r.error().message();
    return r ? std::move(*r) : std::nullopt;
  };
  auto queues = ok(make_message(Request::GetQueueNum));
  ASSERT_TRUE(queues);
  EXPECT_EQ(queues->u64(), 2u);

  ok(u64_message(Request::SetFeatures, virtio_features(true)));
  ok(frontend.set_mem_table({0}));
  for (std::uint16_t q = 0; q < 2; ++q) {
    ok(frontend.vring_num(q));
    ok(frontend.vring_addr(q));
    ok(frontend.vring_kick(q));
  }
  EXPECT_TRUE(device->activations().empty()) << "rings are disabled until SET_VRING_ENABLE";
  ok(ScriptedFrontend::vring_enable(0, true));
  ok(ScriptedFrontend::vring_enable(1, true));
  ok(ScriptedFrontend::vring_enable(1, false));
  ok(ScriptedFrontend::vring_enable(1, false));  // no change: no restart
  using V = std::vector<std::uint16_t>;
  EXPECT_EQ(device->activations(), (std::vector<V>{{0}, {0, 1}, {0}}));
  EXPECT_EQ(device->resets(), 2);
  EXPECT_EQ(device->features_seen(), virtio_features(true) & ~kProtocolBit) << "bit 30 is not a virtio feature";
  EXPECT_EQ(h.config_signals(), 3u);
  // Each started ring was looked at once without a kick (requests may have been waiting).
  EXPECT_TRUE(wait_until([&] { return device->notifies_[1].load() >= 1; }));
  frontend.kick(0);
  EXPECT_TRUE(wait_until([&] { return h.ring(0).counters.notifications == 1; }));

  // Configuration: within the 16 bytes only.
  auto config = ok(
      make_message(Request::GetConfig, DeviceConfig{.offset = 4, .flags = 0, .bytes = std::vector<std::uint8_t>(8)}));
  ASSERT_TRUE(config);
  EXPECT_EQ(std::get<DeviceConfig>(config->payload).bytes, (std::vector<std::uint8_t>{5, 6, 7, 8, 9, 10, 11, 12}));
  ok(make_message(Request::SetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = {0xaa, 0xbb}}));
  config = ok(
      make_message(Request::GetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = std::vector<std::uint8_t>(2)}));
  ASSERT_TRUE(config);
  EXPECT_EQ(std::get<DeviceConfig>(config->payload).bytes, (std::vector<std::uint8_t>{0xaa, 0xbb}));
  auto beyond = h.handle(
      make_message(Request::GetConfig, DeviceConfig{.offset = 12, .flags = 0, .bytes = std::vector<std::uint8_t>(8)}));
  ASSERT_FALSE(beyond);
  EXPECT_NE(beyond.error().message().find("16-byte configuration"), std::string::npos);

  // Stopping ring 0 leaves nothing ready (ring 1 disabled).
  auto base = ok(ScriptedFrontend::get_vring_base(0));
  ASSERT_TRUE(base);
  EXPECT_FALSE(h.running());
  EXPECT_EQ(device->resets(), 3);
}

// ---- the block device: the same handler, another device model ----

TEST(BlkBackend, ServesReadsOnBothQueuesAndAnswersGetConfig) {
  const std::string image = fmt::format("/tmp/vmmlab-blk-handler-{}.img", ::getpid());
  {
    Fd file(::open(image.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600));
    ASSERT_TRUE(file.valid());
    for (int sector = 0; sector < 8; ++sector) {
      const std::vector<std::uint8_t> bytes(512, static_cast<std::uint8_t>(sector + 1));
      ASSERT_EQ(::write(file.get(), bytes.data(), bytes.size()), 512);
    }
  }
  virtio::blk::BlkConfig config;
  config.path = image;
  config.queues = 2;
  config.queue_size = 64;
  auto device = virtio::blk::BlkDevice::open(config);
  ::unlink(image.c_str());  // the device keeps it open
  ASSERT_TRUE(device) << device.error().message();
  auto handler = BackendHandler::create(*device, {});
  ASSERT_TRUE(handler) << handler.error().message();
  auto& h = **handler;
  ScriptedFrontend frontend(vt::frontend_options(2));
  for (auto& message : frontend.qemu_start(virtio_features(false), BackendOptions{}.protocol_features)) {
    const std::string what = describe(message);
    auto reply = h.handle(std::move(message));
    ASSERT_TRUE(reply) << what << ": " << reply.error().message();
  }
  ASSERT_TRUE(h.running());
  EXPECT_EQ(h.ring(1).running, true);

  // virtio_blk_config starts with the capacity in sectors (le64).
  auto config_reply = h.handle(
      make_message(Request::GetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = std::vector<std::uint8_t>(8)}));
  ASSERT_TRUE(config_reply && *config_reply);
  const auto& bytes = std::get<DeviceConfig>((*config_reply)->payload).bytes;
  std::uint64_t capacity = 0;
  std::memcpy(&capacity, bytes.data(), sizeof capacity);
  EXPECT_EQ(capacity, 8u);

  for (std::uint16_t q = 0; q < 2; ++q) {
    SCOPED_TRACE(fmt::format("queue {}", q));
    auto& driver = frontend.driver(q);
    const auto header = driver.allocate(sizeof(virtio_blk_outhdr), false);
    const virtio_blk_outhdr request{.type = VIRTIO_BLK_T_IN, .ioprio = 0, .sector = 3u + q};
    ASSERT_TRUE(frontend.memory().write_obj(header.address, request));
    const vt::MockBuffer buffers[] = {header, driver.allocate(512, true), driver.allocate(1, true, 0xff)};
    driver.add_chain(buffers);
    frontend.kick(q);
    ASSERT_TRUE(wait_until([&] { return driver.used_index() == 1; }));
    const auto used = driver.collect_used();
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].len, 513u);
    EXPECT_EQ(driver.read_bytes(buffers[2].address, 1)[0], VIRTIO_BLK_S_OK);
    EXPECT_EQ(driver.read_bytes(buffers[1].address, 512),
              std::vector<std::uint8_t>(512, static_cast<std::uint8_t>(4 + q)));
  }
  EXPECT_EQ((*device)->stats().reads, 2u);
  h.disconnect();
  EXPECT_FALSE((*device)->active());
}

}  // namespace
