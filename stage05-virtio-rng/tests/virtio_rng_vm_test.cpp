// The stage05 machine on a real KVM: the bare-metal virtio driver gets random bytes from virtio-rng through a split
// virtqueue, and the counts on both sides follow from how notification suppression works.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <guest/virtio_rng.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "rng_guest_run.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::stage05 {
namespace {

using testing::GuestRun;
using testing::run_guest;

// The hex strings of the guest's "rng NN: <hex>" lines, in order.
std::vector<std::string> random_lines(const std::string& output) {
  static const std::regex line(R"(^\s*rng [0-9a-f]+: ([0-9a-f]+)\s*$)");
  std::vector<std::string> lines;
  std::istringstream in(output);
  std::string text;
  std::smatch match;
  while (std::getline(in, text)) {
    if (std::regex_match(text, match, line)) {
      lines.push_back(match[1]);
    }
  }
  return lines;
}

bool all_zero(const std::string& hex) {
  return std::ranges::all_of(hex, [](char c) { return c == '0'; });
}

VirtioRngVmConfig with_options(vmmlab_rng_options options) {
  VirtioRngVmConfig config;
  config.options = options;
  return config;
}

TEST(VirtioRngGuest, GetsRandomBytesThatAreNotAllZeroAndDifferBetweenRuns) {
  VMMLAB_REQUIRE_KVM();
  const auto options = default_rng_options();
  const std::size_t per_phase = std::size_t{options.batches} * options.per_batch;
  const GuestRun first = run_guest(with_options(options));
  const GuestRun second = run_guest(with_options(options));
  ASSERT_EQ(first.exit_status, 0u) << first.output;
  ASSERT_EQ(second.exit_status, 0u) << second.output;

  const auto a = random_lines(first.output);
  const auto b = random_lines(second.output);
  ASSERT_EQ(a.size(), 2 * per_phase) << first.output;  // both phases print every request
  ASSERT_EQ(b.size(), a.size());
  for (const auto& hex : a) {
    EXPECT_EQ(hex.size(), 2u * options.request_bytes) << hex;
    EXPECT_FALSE(all_zero(hex)) << "a request came back all zero: " << hex;
  }
  EXPECT_NE(a, b) << "two runs got the same bytes";
  // Within a run, requests differ from each other too (the device does not repeat a buffer).
  auto sorted = a;
  std::ranges::sort(sorted);
  EXPECT_EQ(std::ranges::adjacent_find(sorted), sorted.end());
  EXPECT_EQ(first.bytes_served, 2 * per_phase * options.request_bytes);
}

// The theory, for a device that serves each request inside the kick's MMIO exit (stage05):
// - kicks: the device has always caught up when the driver adds a buffer, so it always wants a kick: one per
//   request, with or without EVENT_IDX;
// - interrupts: without EVENT_IDX the driver can only turn them all on or off, so every kick ends in one; with
//   EVENT_IDX it sets used_event to its batch's last request and gets one per batch. The device counts the others as
//   suppressed.
void expect_theory(const GuestRun& run, const vmmlab_rng_options& options) {
  const std::uint64_t requests = std::uint64_t{options.batches} * options.per_batch;
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  ASSERT_EQ(run.reports.size(), 8u) << "four values per phase";
  ASSERT_EQ(run.history.size(), 2u) << "the guest resets the device after each phase";
  for (std::size_t phase = 0; phase < 2; ++phase) {
    SCOPED_TRACE(phase == 0 ? "EVENT_IDX phase" : "flags phase");
    const bool event_idx = phase == 0;
    const std::uint64_t interrupts = event_idx ? options.batches : requests;
    const auto* guest = &run.reports[phase * 4];
    EXPECT_EQ(guest[0], event_idx ? 1u : 0u);
    EXPECT_EQ(guest[1], requests);
    EXPECT_EQ(guest[2], requests) << "kicks";
    EXPECT_EQ(guest[3], interrupts) << "interrupts the guest took";

    const auto& record = run.history[phase];
    EXPECT_EQ(virtio::has_feature(record.features, VIRTIO_RING_F_EVENT_IDX), event_idx);
    EXPECT_TRUE(virtio::has_feature(record.features, VIRTIO_F_VERSION_1));
    ASSERT_EQ(record.queues.size(), 1u);
    const auto& queue = record.queues[0];
    EXPECT_EQ(queue.notifications, requests);
    EXPECT_EQ(queue.chains, requests);
    EXPECT_EQ(queue.used, requests);
    EXPECT_EQ(queue.interrupts, interrupts);
    EXPECT_EQ(queue.interrupts_suppressed, requests - interrupts);
    EXPECT_EQ(queue.errors, 0u);
  }
  EXPECT_FALSE(run.transport_error) << run.transport_error->message();
}

TEST(VirtioRngGuest, KicksAndInterruptsFollowTheTheoryInBothModes) {
  VMMLAB_REQUIRE_KVM();
  auto options = default_rng_options();
  options.flags |= VMMLAB_RNG_QUIET;
  expect_theory(run_guest(with_options(options)), options);

  options.batches = 3;
  options.per_batch = 5;
  options.request_bytes = 8;
  options.queue_size = 8;
  expect_theory(run_guest(with_options(options)), options);
}

TEST(VirtioRngGuest, ChainedRequestsAreFilledAcrossBothDescriptors) {
  VMMLAB_REQUIRE_KVM();
  auto options = default_rng_options();
  options.flags = VMMLAB_RNG_PHASE_EVENT_IDX | VMMLAB_RNG_CHAINED;
  options.request_bytes = 32;
  const GuestRun run = run_guest(with_options(options));
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  const auto lines = random_lines(run.output);
  ASSERT_EQ(lines.size(), std::size_t{options.batches} * options.per_batch);
  for (const auto& hex : lines) {
    // Both halves of each request were written: neither half is all zero.
    EXPECT_FALSE(all_zero(hex.substr(0, hex.size() / 2))) << hex;
    EXPECT_FALSE(all_zero(hex.substr(hex.size() / 2))) << hex;
  }
  ASSERT_EQ(run.history.size(), 1u);
  EXPECT_EQ(run.history[0].queues[0].chains, lines.size());
}

TEST(VirtioRngGuest, ARateLimitDelaysRequestsButServesThemAll) {
  VMMLAB_REQUIRE_KVM();
  auto options = default_rng_options();
  options.flags = VMMLAB_RNG_PHASE_FLAGS | VMMLAB_RNG_QUIET;
  VirtioRngVmConfig config = with_options(options);
  // A 32-byte bucket refilled at 2 KiB/s. Whether a given request finds the bucket empty (and waits) or partly full
  // (and gets a short answer the driver re-posts) depends on how fast the guest runs, so the test checks what does
  // not: every byte arrives, and no faster than the bucket allows. That bound holds on any machine, however slow.
  config.bytes_per_second = 2048;
  config.burst_bytes = 32;
  const std::uint64_t total = std::uint64_t{options.batches} * options.per_batch * options.request_bytes;
  const auto started = std::chrono::steady_clock::now();
  const GuestRun run = run_guest(config);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  EXPECT_EQ(run.bytes_served, total);
  const auto floor = std::chrono::milliseconds((total - config.burst_bytes) * 1000 / *config.bytes_per_second);
  EXPECT_GE(elapsed, floor) << "served " << total << " bytes faster than " << *config.bytes_per_second
                            << " bytes per second allows (throttled " << run.throttled << " times)";
}

}  // namespace
}  // namespace vmm::stage05
