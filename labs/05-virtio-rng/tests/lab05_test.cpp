// Lab 05's checks. Built twice: against your code in exercises/ (lab05_tests_exercises) and against the reference in
// solutions/ (lab05_tests_solutions). See labs/05-virtio-rng/README.md.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <guest/virtio_rng.hpp>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fake_msi_sink.hpp"  // stage04-pci/tests
#include "lab05.hpp"
#include "rng_guest_run.hpp"  // stage05-virtio-rng/tests
#include "virtio_rng_vm.hpp"
#include "vmm/testing/guest_console.hpp"
#include "vmm/testing/kvm.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/testing/virtio_pci_driver.hpp"
#include "vmm/virtio/rng/rng_device.hpp"
#include "vmm/virtio/uapi.hpp"

namespace lab05 {
// How gtest shows a Prediction in a failure message.
void PrintTo(const Prediction& p, std::ostream* os) {
  *os << "{kicks " << p.kicks << ", interrupts " << p.interrupts << ", suppressed " << p.suppressed << "}";
}
}  // namespace lab05

namespace {

using ::testing::HasSubstr;
using vmm::memory::GuestAddress;
using vmm::testing::MockBuffer;
using vmm::testing::MockDriver;
using vmm::testing::MockLayout;
using vmm::virtio::VirtioPciDevice;

// ---- Exercise 1: EVENT_IDX off, and the counts explained ----------------------------------------------------------

using vmm::stage05::testing::GuestRun;  // stage05-virtio-rng/tests/rng_guest_run.hpp

GuestRun run_guest(const vmmlab_rng_options& options) {
  vmm::stage05::VirtioRngVmConfig config;
  config.options = options;
  return vmm::stage05::testing::run_guest(config);
}

std::uint64_t requests_of(const vmmlab_rng_options& options) {
  return std::uint64_t{options.batches} * options.per_batch;
}

// Phase `phase` of `run`, as the guest counted it (kicks, interrupts) and as the device did (notifications,
// interrupts sent, interrupts suppressed), each compared with the prediction.
void expect_phase(const GuestRun& run, std::size_t phase, const vmmlab_rng_options& options, bool event_idx,
                  const lab05::Prediction& predicted) {
  SCOPED_TRACE(event_idx ? "the EVENT_IDX phase" : "the flags phase");
  ASSERT_GE(run.reports.size(), 4 * (phase + 1)) << run.output;
  ASSERT_GT(run.history.size(), phase) << run.output;
  const auto* guest = &run.reports[4 * phase];
  EXPECT_EQ(guest[0], event_idx ? 1u : 0u) << "EVENT_IDX negotiated, as the guest reports it";
  EXPECT_EQ(guest[1], requests_of(options)) << "requests";
  const auto& record = run.history[phase];
  EXPECT_EQ(vmm::virtio::has_feature(record.features, VIRTIO_RING_F_EVENT_IDX), event_idx);
  ASSERT_EQ(record.queues.size(), 1u);
  const auto& device = record.queues[0];
  EXPECT_EQ(device.chains, requests_of(options));
  EXPECT_EQ(device.errors, 0u);
  // The device has no idea what the guest counted and vice versa: they must still agree.
  const lab05::Prediction guest_view{
      .kicks = guest[2], .interrupts = guest[3], .suppressed = device.interrupts_suppressed};
  const lab05::Prediction device_view{
      .kicks = device.notifications, .interrupts = device.interrupts, .suppressed = device.interrupts_suppressed};
  EXPECT_EQ(guest_view, predicted) << "the guest's counts against predict(options, " << event_idx << ")";
  EXPECT_EQ(device_view, predicted) << "the device's counts against predict(options, " << event_idx << ")";
}

// flags_only_options(), or nothing (each reason reported as a failure) if the guest would not run them as asked.
std::optional<vmmlab_rng_options> checked_flags_only_options() {
  const vmmlab_rng_options options = lab05::flags_only_options();
  if (options.magic != VMMLAB_RNG_OPTIONS_MAGIC) {
    ADD_FAILURE() << "flags_only_options(): the guest ignores options without VMMLAB_RNG_OPTIONS_MAGIC (magic is 0x"
                  << std::hex << options.magic << ")";
    return std::nullopt;
  }
  bool ok = true;
  const auto check = [&ok](bool rule, std::string_view what) {
    if (!rule) {
      ADD_FAILURE() << "flags_only_options(): " << what;
      ok = false;
    }
  };
  check((options.flags & (VMMLAB_RNG_PHASE_FLAGS | VMMLAB_RNG_PHASE_EVENT_IDX)) == VMMLAB_RNG_PHASE_FLAGS,
        "the flags phase only");
  check(options.batches >= 2, "at least 2 batches");
  check(options.per_batch >= 2, "at least 2 requests per batch");
  return ok ? std::optional(options) : std::nullopt;
}

TEST(Exercise1, FlagsOnlyOptionsRunOnePhaseWithoutEventIdx) {
  VMMLAB_REQUIRE_KVM();
  const auto options = checked_flags_only_options();
  if (!options) {
    return;
  }
  const GuestRun run = run_guest(*options);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  ASSERT_EQ(run.reports.size(), 4u) << "one phase: four reports\n" << run.output;
  EXPECT_EQ(run.reports[0], 0u) << "the guest negotiated EVENT_IDX";
  EXPECT_EQ(run.reports[1], requests_of(*options));
  ASSERT_EQ(run.history.size(), 1u) << "one activation";
  EXPECT_FALSE(vmm::virtio::has_feature(run.history[0].features, VIRTIO_RING_F_EVENT_IDX));
  EXPECT_TRUE(vmm::virtio::has_feature(run.history[0].features, VIRTIO_F_VERSION_1));
}

TEST(Exercise1, ThePredictionMatchesTheFlagsPhase) {
  VMMLAB_REQUIRE_KVM();
  const auto options = checked_flags_only_options();
  if (!options) {
    return;
  }
  const GuestRun run = run_guest(*options);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  expect_phase(run, 0, *options, false, lab05::predict(*options, false));
}

TEST(Exercise1, ThePredictionMatchesAnEventIdxPhaseOfTheSameShape) {
  VMMLAB_REQUIRE_KVM();
  auto checked = checked_flags_only_options();
  if (!checked) {
    return;
  }
  vmmlab_rng_options options = *checked;
  options.flags = (options.flags & ~VMMLAB_RNG_PHASE_FLAGS) | VMMLAB_RNG_PHASE_EVENT_IDX;
  const GuestRun run = run_guest(options);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  ASSERT_EQ(run.history.size(), 1u) << run.output;
  expect_phase(run, 0, options, true, lab05::predict(options, true));
}

TEST(Exercise1, ThePredictionHoldsForAnotherShapeInBothModes) {
  VMMLAB_REQUIRE_KVM();
  auto options = vmm::stage05::default_rng_options();  // both phases: EVENT_IDX first
  options.flags |= VMMLAB_RNG_QUIET;
  options.batches = 3;
  options.per_batch = 5;
  options.request_bytes = 8;
  options.queue_size = 8;
  const GuestRun run = run_guest(options);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  ASSERT_EQ(run.history.size(), 2u) << run.output;
  expect_phase(run, 0, options, true, lab05::predict(options, true));
  expect_phase(run, 1, options, false, lab05::predict(options, false));
}

// ---- Exercises 2 and 3: the device without a guest ----------------------------------------------------------------

// Deterministic "entropy": 0, 1, 2, ... wrapping at 256, continuing from one request to the next.
vmm::virtio::rng::EntropySource counting_source(std::shared_ptr<std::uint8_t> next) {
  return [next](std::span<std::uint8_t> out) -> vmm::Result<void> {
    for (auto& byte : out) {
      byte = (*next)++;
    }
    return {};
  };
}

std::vector<std::uint8_t> counting(std::uint8_t first, std::size_t count) {
  std::vector<std::uint8_t> bytes(count);
  for (auto& byte : bytes) {
    byte = first++;
  }
  return bytes;
}

// The device's notifications, recorded.
class RecordingInterrupt final : public vmm::virtio::VirtioInterrupt {
 public:
  vmm::Result<void> signal_queue(std::uint16_t queue_index) override {
    std::lock_guard lock(mutex_);
    queues_.push_back(queue_index);
    return {};
  }
  vmm::Result<void> signal_config() override { return {}; }
  [[nodiscard]] std::size_t queue_signals() const {
    std::lock_guard lock(mutex_);
    return queues_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::uint16_t> queues_;
};

// ---- Exercise 2: a chained request, by hand -------------------------------------------------------------------

constexpr std::uint16_t kSmallQueue = 8;

class Exercise2 : public ::testing::Test {
 protected:
  // An RngDevice with queue 0 at the driver's layout, activated as the transport would at DRIVER_OK (no
  // EVENT_IDX, no INDIRECT_DESC). `driver_` only laid out and zeroed the rings; the test reads them with it.
  void start(vmm::virtio::rng::EntropySource source) {
    vmm::virtio::rng::RngConfig config;
    config.queue_size = kSmallQueue;
    config.source = std::move(source);
    auto device = vmm::virtio::rng::RngDevice::create(std::move(config));
    ASSERT_TRUE(device) << device.error().message();
    device_ = *device;
    auto queue = vmm::virtio::SplitQueue::create(memory_, driver_.queue_layout(), kSmallQueue, {}, counters_);
    ASSERT_TRUE(queue) << queue.error().message();
    vmm::virtio::Activation activation{.memory = &memory_,
                                       .features = 1ull << VIRTIO_F_VERSION_1,
                                       .queues = {},
                                       .interrupt = interrupt_,
                                       .needs_reset = [this](const vmm::Error& error) {
                                         std::lock_guard lock(mutex_);
                                         driver_errors_.push_back(error.message());
                                       }};
    activation.queues.emplace_back(std::move(*queue));
    auto ok = device_->activate(std::move(activation));
    ASSERT_TRUE(ok) << ok.error().message();
  }

  // Room for the parts, inside guest memory, zeroed.
  std::vector<vmm::virtio::Descriptor> parts(std::initializer_list<std::uint32_t> lengths) {
    std::vector<vmm::virtio::Descriptor> out;
    for (const std::uint32_t length : lengths) {
      const MockBuffer buffer = driver_.allocate(length, true);
      out.push_back({.address = buffer.address, .length = length});
    }
    return out;
  }
  std::vector<std::string> driver_errors() {
    std::lock_guard lock(mutex_);
    return driver_errors_;
  }
  std::uint16_t avail_idx() {
    auto idx = memory_.load<std::uint16_t>(
        GuestAddress(driver_.queue_layout().available_ring.raw() + offsetof(vring_avail, idx)));
    EXPECT_TRUE(idx);
    return idx ? *idx : 0;
  }
  vring_desc descriptor(std::uint16_t index) {
    auto d = memory_.read_obj<vring_desc>(
        GuestAddress(driver_.queue_layout().descriptor_table.raw() + sizeof(vring_desc) * index));
    EXPECT_TRUE(d);
    return d ? *d : vring_desc{};
  }
  // Fills every entry of the available ring with 0xbeef: a head written to the wrong slot leaves the right one so.
  void scribble_available_ring() {
    for (std::uint16_t slot = 0; slot < kSmallQueue; ++slot) {
      ASSERT_TRUE(memory_.write_obj(
          GuestAddress(driver_.queue_layout().available_ring.raw() + offsetof(vring_avail, ring) + 2 * slot),
          std::uint16_t{0xbeef}));
    }
  }
  std::uint16_t avail_entry(std::uint16_t slot) {
    auto e = memory_.read_obj<std::uint16_t>(
        GuestAddress(driver_.queue_layout().available_ring.raw() + offsetof(vring_avail, ring) + 2 * slot));
    EXPECT_TRUE(e);
    return e ? *e : 0xffff;
  }

  vmm::memory::GuestMemory memory_ = vmm::testing::make_test_memory();
  MockDriver driver_{memory_, MockLayout{.size = kSmallQueue}};
  std::shared_ptr<vmm::virtio::QueueCounters> counters_ = std::make_shared<vmm::virtio::QueueCounters>();
  std::shared_ptr<RecordingInterrupt> interrupt_ = std::make_shared<RecordingInterrupt>();
  std::shared_ptr<vmm::virtio::rng::RngDevice> device_;
  std::mutex mutex_;
  std::vector<std::string> driver_errors_;
};

TEST_F(Exercise2, TwoAndThreePartChainsComeBackWhole) {
  auto next = std::make_shared<std::uint8_t>(0);
  ASSERT_NO_FATAL_FAILURE(start(counting_source(next)));
  const auto layout = driver_.queue_layout();

  const auto two = parts({24, 40});
  const auto idx = lab05::publish_chained_request(memory_, layout, 0, two);
  ASSERT_TRUE(idx) << idx.error().message();
  EXPECT_EQ(*idx, 1u) << "the new avail->idx";
  device_->queue_notify(0);
  auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u) << "used entries after the 2-part chain";
  EXPECT_EQ(used[0].id, 0u) << "the head";
  EXPECT_EQ(used[0].len, 64u) << "bytes written: 24 + 40";
  EXPECT_EQ(driver_.read_bytes(two[0].address, 24), counting(0, 24)) << "part 1 of 2";
  EXPECT_EQ(driver_.read_bytes(two[1].address, 40), counting(24, 40)) << "part 2 of 2";

  // Descriptors 0..2 are free again (the device returned head 0): the next request reuses them.
  const auto three = parts({8, 16, 32});
  const auto idx2 = lab05::publish_chained_request(memory_, layout, *idx, three);
  ASSERT_TRUE(idx2) << idx2.error().message();
  EXPECT_EQ(*idx2, 2u);
  device_->queue_notify(0);
  used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u) << "used entries after the 3-part chain";
  EXPECT_EQ(used[0].id, 0u);
  EXPECT_EQ(used[0].len, 56u) << "bytes written: 8 + 16 + 32";
  EXPECT_EQ(driver_.read_bytes(three[0].address, 8), counting(64, 8)) << "part 1 of 3";
  EXPECT_EQ(driver_.read_bytes(three[1].address, 16), counting(72, 16)) << "part 2 of 3";
  EXPECT_EQ(driver_.read_bytes(three[2].address, 32), counting(88, 32)) << "part 3 of 3";

  const auto counters = counters_->snapshot();
  EXPECT_EQ(counters.chains, 2u);
  EXPECT_EQ(counters.used, 2u);
  EXPECT_EQ(counters.errors, 0u) << "the device refused a chain";
  EXPECT_EQ(interrupt_->queue_signals(), 2u) << "one interrupt per request (flags mode, NO_INTERRUPT clear)";
  EXPECT_TRUE(driver_errors().empty()) << driver_errors().front();
  EXPECT_EQ(device_->bytes_served(), 120u);
}

TEST_F(Exercise2, EveryPartGetsRealRandomBytes) {
  ASSERT_NO_FATAL_FAILURE(start(vmm::virtio::rng::getrandom_source));
  const auto three = parts({64, 64, 64});
  const auto idx = lab05::publish_chained_request(memory_, driver_.queue_layout(), 0, three);
  ASSERT_TRUE(idx) << idx.error().message();
  device_->queue_notify(0);
  const auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 192u);
  std::vector<std::vector<std::uint8_t>> filled;
  for (const auto& part : three) {
    filled.push_back(driver_.read_bytes(part.address, 64));
    // 2^-512 chance of a false failure.
    EXPECT_NE(filled.back(), std::vector<std::uint8_t>(64, 0)) << "a part was left zero";
  }
  EXPECT_NE(filled[0], filled[1]);
  EXPECT_NE(filled[1], filled[2]);
  EXPECT_FALSE(device_->last_error());
}

TEST_F(Exercise2, DescriptorsAreLinkedWritableAndIndicesFreeRunning) {
  const auto layout = driver_.queue_layout();
  const auto three = parts({8, 16, 32});
  ASSERT_NO_FATAL_FAILURE(scribble_available_ring());
  // avail->idx 13 in a queue of 8: the entry goes to slot 5.
  const auto idx = lab05::publish_chained_request(memory_, layout, 13, three);
  ASSERT_TRUE(idx) << idx.error().message();
  EXPECT_EQ(*idx, 14u);
  EXPECT_EQ(avail_idx(), 14u) << "avail->idx in guest memory";
  EXPECT_EQ(avail_entry(5), 0u) << "avail->ring[13 % 8]: the head";
  for (std::uint16_t slot = 0; slot < kSmallQueue; ++slot) {
    if (slot != 5) {
      EXPECT_EQ(avail_entry(slot), 0xbeefu) << "avail->ring[" << slot << "] changed";
    }
  }
  for (std::uint16_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(testing::Message() << "descriptor " << i);
    const vring_desc d = descriptor(i);
    EXPECT_EQ(d.addr, three[i].address.raw());
    EXPECT_EQ(d.len, three[i].length);
    const bool last = i == 2;
    EXPECT_EQ(d.flags, last ? VRING_DESC_F_WRITE : (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT)) << "flags";
    if (!last) {
      EXPECT_EQ(d.next, i + 1) << "next";
    }
  }

  // Across the wrap: idx 65535 becomes 0, the entry goes to slot 65535 % 8 = 7.
  const auto wrapped = lab05::publish_chained_request(memory_, layout, 65535, three);
  ASSERT_TRUE(wrapped) << wrapped.error().message();
  EXPECT_EQ(*wrapped, 0u);
  EXPECT_EQ(avail_idx(), 0u);
  EXPECT_EQ(avail_entry(7), 0u) << "avail->ring[65535 % 8]";

  // The device's own reader agrees: a queue that resumes at 65535 pops exactly that chain.
  auto queue = vmm::virtio::SplitQueue::create(memory_, layout, kSmallQueue, {});
  ASSERT_TRUE(queue) << queue.error().message();
  queue->set_next_avail(65535);
  auto popped = queue->pop();
  ASSERT_TRUE(popped) << popped.error().message();
  ASSERT_TRUE(*popped) << "nothing to pop";
  EXPECT_EQ((*popped)->head_index, 0u);
  EXPECT_TRUE((*popped)->readable.empty());
  EXPECT_EQ((*popped)->writable, three);
}

TEST_F(Exercise2, EmptyAndOversizedChainsAreRefused) {
  const auto layout = driver_.queue_layout();
  const auto one = parts({16});
  const auto idx = lab05::publish_chained_request(memory_, layout, 0, one);
  ASSERT_TRUE(idx) << idx.error().message();
  const vring_desc before = descriptor(0);

  EXPECT_FALSE(lab05::publish_chained_request(memory_, layout, 1, {})) << "an empty chain was accepted";
  std::vector<vmm::virtio::Descriptor> too_many(kSmallQueue + 1, one[0]);
  EXPECT_FALSE(lab05::publish_chained_request(memory_, layout, 1, too_many))
      << "a chain longer than the queue was accepted";
  EXPECT_EQ(avail_idx(), 1u) << "a refused chain was published";
  EXPECT_EQ(descriptor(0).flags, before.flags) << "a refused chain was written";
  EXPECT_EQ(descriptor(0).len, before.len) << "a refused chain was written";
}

// ---- Exercise 3: a driver that breaks the rules ---------------------------------------------------------------

constexpr std::uint8_t kNeedsReset = VIRTIO_CONFIG_S_NEEDS_RESET;
constexpr std::uint16_t kConfigVector = 0;  // MSI-X table entries, as Linux and stage05's guest assign them
constexpr std::uint16_t kQueueVector = 1;
const vmm::pci::MsiMessage kConfigMessage{0xfee0'0000, 0x51};
const vmm::pci::MsiMessage kQueueMessage{0xfee0'0000, 0x50};

class Exercise3 : public ::testing::Test {
 protected:
  void SetUp() override {
    auto rng = vmm::virtio::rng::RngDevice::create(vmm::virtio::rng::RngConfig{});
    ASSERT_TRUE(rng) << rng.error().message();
    auto transport = VirtioPciDevice::create(*rng, memory_, sink_);
    ASSERT_TRUE(transport) << transport.error().message();
    transport_ = *transport;
    pci_ = std::make_unique<vmm::testing::VirtioPciDriver>(*transport_);
  }

  std::uint8_t status() { return pci_->status(); }

  // A small driver: the initialization sequence of virtio 1.2, 3.1.1 through the common configuration, with queue 0
  // at `driver`'s layout and MSI-X vectors for configuration changes and the queue (what guest/virtio_rng.c does).
  void bring_up(MockDriver& driver) {
    ASSERT_TRUE(pci_->negotiate()) << "FEATURES_OK refused";
    pci_->program_vector(kConfigVector, kConfigMessage.address, kConfigMessage.data);
    pci_->program_vector(kQueueVector, kQueueMessage.address, kQueueMessage.data);
    pci_->enable_msix();
    ASSERT_TRUE(transport_->msix().enabled());
    ASSERT_EQ(pci_->set_config_vector(kConfigVector), kConfigVector);
    ASSERT_EQ(pci_->set_queue_vector(0, kQueueVector), kQueueVector);
    pci_->enable_queue(0, driver.queue_layout());
    pci_->add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    ASSERT_TRUE(transport_->active()) << "DRIVER_OK refused: "
                                      << (transport_->last_error() ? transport_->last_error()->message() : "");
  }
  // The notify write: the queue index, 16 bits, at queue 0's notify address.
  void kick() { pci_->notify(0); }

  std::size_t signals_on(std::uint16_t vector) {
    const auto all = sink_.signals();
    return static_cast<std::size_t>(std::ranges::count_if(all, [&](const auto& s) { return s.vector == vector; }));
  }

  // After a reset: the device takes a fresh driver (rings zeroed at the same place) and serves a good request.
  void expect_serves_again() {
    MockDriver fresh(memory_, MockLayout{.size = 16});
    ASSERT_NO_FATAL_FAILURE(bring_up(fresh));
    const MockBuffer buffer = fresh.allocate(32, true);
    fresh.add_chain(std::vector<MockBuffer>{buffer});
    ASSERT_TRUE(fresh.kick_if_needed());
    const auto queue_signals = signals_on(kQueueVector);
    kick();
    const auto used = fresh.collect_used();
    ASSERT_EQ(used.size(), 1u) << "a good request after the reset";
    EXPECT_EQ(used[0].len, 32u);
    EXPECT_NE(fresh.read_bytes(buffer.address, 32), std::vector<std::uint8_t>(32, 0));
    EXPECT_FALSE(status() & kNeedsReset) << "DEVICE_NEEDS_RESET after a good request";
    EXPECT_EQ(signals_on(kQueueVector), queue_signals + 1) << "the queue's interrupt";
  }

  // The whole story for one violation: the kick ends in DEVICE_NEEDS_RESET, the error names `rule`, nothing was
  // used, the driver resets and the device works again.
  void expect_needs_reset_for(lab05::Violation violation, std::string_view rule) {
    MockDriver driver(memory_, MockLayout{.size = 16});
    ASSERT_NO_FATAL_FAILURE(bring_up(driver));
    lab05::publish_violation(driver, violation);
    kick();
    EXPECT_TRUE(status() & kNeedsReset) << "device_status after the kick: 0x" << std::hex << int{status()}
                                        << " (DEVICE_NEEDS_RESET is 0x40)";
    EXPECT_EQ(signals_on(kConfigVector), 1u) << "the configuration vector tells the driver";
    EXPECT_EQ(signals_on(kQueueVector), 0u) << "a queue interrupt for a request that was refused";
    const auto error = transport_->last_error();
    ASSERT_TRUE(error) << "no driver error recorded";
    EXPECT_THAT(error->message(), HasSubstr(std::string(rule)));
    EXPECT_EQ(driver.used_index(), 0u) << "the used ring moved";
    EXPECT_EQ(transport_->counters()[0].errors, 1u) << "driver errors the queue counted";

    lab05::reset_after_needs_reset(*transport_);
    ASSERT_EQ(status(), 0u) << "device_status after reset_after_needs_reset";
    ASSERT_NO_FATAL_FAILURE(expect_serves_again());
  }

  vmm::memory::GuestMemory memory_ = vmm::testing::make_test_memory();
  vmm::pci::testing::FakeMsiSink sink_;
  std::shared_ptr<VirtioPciDevice> transport_;
  std::unique_ptr<vmm::testing::VirtioPciDriver> pci_;  // the driver's register accesses
};

TEST_F(Exercise3, ADescriptorLoopNeedsReset) {
  expect_needs_reset_for(lab05::Violation::DescriptorLoop, "a loop?");
}

TEST_F(Exercise3, AReadableBufferAfterAWritableOneNeedsReset) {
  expect_needs_reset_for(lab05::Violation::ReadableAfterWritable,
                         "a device-readable buffer after a device-writable one");
}

TEST_F(Exercise3, ABufferOutsideGuestMemoryNeedsReset) {
  expect_needs_reset_for(lab05::Violation::BufferOutsideMemory, "is not inside guest memory");
}

TEST_F(Exercise3, AnAvailableIndexJumpNeedsReset) {
  expect_needs_reset_for(lab05::Violation::IndexJump, "available index moved from");
}

TEST_F(Exercise3, ResetAfterNeedsResetBringsTheDeviceBack) {
  // DEVICE_NEEDS_RESET without your publish_violation: an index 100 ahead in a queue of 16.
  MockDriver driver(memory_, MockLayout{.size = 16});
  ASSERT_NO_FATAL_FAILURE(bring_up(driver));
  driver.set_avail_index(100);
  kick();
  ASSERT_TRUE(status() & kNeedsReset);
  lab05::reset_after_needs_reset(*transport_);
  ASSERT_EQ(status(), 0u) << "device_status after reset_after_needs_reset";
  EXPECT_FALSE(transport_->active()) << "still active after reset_after_needs_reset";
  EXPECT_EQ(transport_->history().size(), 1u) << "the reset ends the activation (and records it)";
  ASSERT_NO_FATAL_FAILURE(expect_serves_again());
}

}  // namespace
