// Figure 5 of the benchmark report: notification suppression, counted.
//
// Two threads share a split virtqueue in ordinary memory, as a guest driver and a device thread would:
//
//   driver   (MockDriver) produces requests in batches of B: each request published, then "kick if needed" (Linux's
//            virtqueue_kick_prepare, reading the device's hint); after a batch it waits on the call eventfd until
//            the whole batch is used. With EVENT_IDX it first sets used_event to the batch's last entry (Linux's
//            virtqueue_enable_cb_delayed): one interrupt for the batch. In flags mode interrupts stay enabled.
//   device   (SplitQueue, stage05) waits on the kick eventfd, then drains the ring with notifications disabled,
//            signals the call eventfd when needs_notification() says so, and re-enables notifications, going round
//            again if enable_notification() reports work that arrived meanwhile (whose kick was suppressed).
//
// The theoretical minimum is one kick and one interrupt per batch, 1/B each per request. Each run prints one line,
// "SUPPRESSION-RUN {json}"; tools/bench-report reports the medians against that minimum.
#include <fmt/format.h>
#include <poll.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <thread>
#include <vector>

#include "vmm/event/event_fd.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/virtio/split_queue.hpp"

namespace {

using namespace vmm;

constexpr std::uint16_t kQueueSize = 256;

/// @brief What one run counted.
struct SuppressionRun {
  std::uint64_t requests = 0;
  std::uint64_t kicks = 0;       // kick eventfd writes by the driver
  std::uint64_t interrupts = 0;  // call eventfd writes by the device
  std::uint64_t drains = 0;      // times the device emptied the ring
};

/// @brief Blocks until `event` has a count (or `stop` is set after a wake-up), then takes it.
bool wait(const event::EventFd& event) {
  pollfd p{event.fd(), POLLIN, 0};
  while (poll(&p, 1, -1) < 0) {
    if (errno != EINTR) {
      return false;
    }
  }
  return event.read().has_value();
}

Result<SuppressionRun> run_once(bool event_idx, std::uint16_t batch, std::uint32_t batches) {
  auto memory = testing::make_test_memory(8ull << 20);
  testing::MockDriver driver(memory, testing::MockLayout{.size = kQueueSize}, event_idx);
  auto queue = virtio::SplitQueue::create(memory, driver.queue_layout(), kQueueSize, driver.features(false));
  auto kick = event::EventFd::create();
  auto call = event::EventFd::create();
  if (!queue || !kick || !call) {
    return logic_error("suppression benchmark", "set-up failed");
  }
  // The buffers are reused: each request is one 64-byte writable descriptor at a fixed place.
  std::vector<testing::MockBuffer> buffers;
  for (std::uint16_t i = 0; i < batch; ++i) {
    buffers.push_back(driver.allocate(64, true));
  }

  SuppressionRun run;
  std::atomic<bool> stop{false};
  std::atomic<bool> device_failed{false};
  std::thread device([&] {
    while (wait(*kick) && !stop.load(std::memory_order_acquire)) {
      for (;;) {
        bool ok = static_cast<bool>(queue->disable_notification());
        for (;;) {
          auto chain = queue->pop();
          if (!chain) {
            ok = false;
            break;
          }
          if (!*chain) {
            break;
          }
          ok = ok && queue->add_used((*chain)->head_index, 64).has_value();
        }
        ++run.drains;
        auto notify = queue->needs_notification();
        if (notify && *notify) {
          ++run.interrupts;
          ok = ok && call->write(1).has_value();
        }
        auto more = queue->enable_notification();
        if (!ok || !notify || !more) {
          device_failed = true;
          return;
        }
        if (!*more) {
          break;
        }
      }
    }
  });

  std::uint16_t used_index = 0;  // the driver's count of used entries collected, mod 2^16
  for (std::uint32_t b = 0; b < batches && !device_failed; ++b) {
    for (const auto& buffer : buffers) {
      driver.add_chain(std::span(&buffer, 1));
      if (driver.kick_if_needed()) {
        (void)kick->write(1);
      }
    }
    const std::uint16_t batch_end = static_cast<std::uint16_t>(used_index + batch);
    if (event_idx) {
      driver.set_used_event(static_cast<std::uint16_t>(batch_end - 1));
    }
    std::uint16_t collected = 0;
    while (collected < batch && !device_failed) {
      collected = static_cast<std::uint16_t>(collected + driver.collect_used().size());
      if (collected < batch) {
        wait(*call);
      }
    }
    used_index = batch_end;
    run.requests += batch;
  }
  stop = true;
  (void)kick->write(1);
  device.join();
  if (device_failed) {
    return logic_error("suppression benchmark", "the device thread failed");
  }
  run.kicks = driver.kicks();
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stage06-bench-suppression: kicks and interrupts per request, EVENT_IDX on and off"};
  int repetitions = 5;
  std::uint32_t requests = 8192;
  std::vector<std::uint16_t> batch_sizes{1, 4, 16, 64};
  app.add_option("--repetitions", repetitions, "Runs of each configuration")->check(CLI::PositiveNumber);
  app.add_option("--requests", requests, "Requests per run (rounded down to whole batches)")
      ->check(CLI::Range(64, 1 << 24));
  app.add_option("--batch", batch_sizes, "Batch sizes to sweep")->check(CLI::Range(1, 128));
  CLI11_PARSE(app, argc, argv);

  for (int r = 0; r < repetitions; ++r) {
    for (const std::uint16_t batch : batch_sizes) {
      for (const bool event_idx : {true, false}) {
        auto run = run_once(event_idx, batch, requests / batch);
        if (!run) {
          fmt::print(stderr, "stage06-bench-suppression: {}\n", run.error());
          return 1;
        }
        fmt::print(
            "SUPPRESSION-RUN {{\"event_idx\": {}, \"batch\": {}, \"requests\": {}, \"kicks\": {}, "
            "\"interrupts\": {}, \"drains\": {}}}\n",
            event_idx, batch, run->requests, run->kicks, run->interrupts, run->drains);
      }
    }
  }
  return 0;
}
