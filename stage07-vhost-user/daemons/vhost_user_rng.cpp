// vhost-user-rng: stage05's virtio-rng device model served to a vhost-user frontend from its own process. The VMM
// (or QEMU's vhost-user-rng-pci) shares guest memory and the rings' eventfds over the socket; this process then reads
// requests from the rings, fills them with entropy and interrupts the guest, and the VMM is not involved at all.
//
//   vhost-user-rng --socket /tmp/rng.sock                     entropy from /dev/urandom, frontends until SIGINT/TERM
//   vhost-user-rng --socket S --once --trace-vhost-user       one frontend, every message on stderr
//   vhost-user-rng --socket S --rate 1024 --burst 4096        rate-limited, as stage05's --rate
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <fmt/format.h>

#include "vmm/fd.hpp"
#include "vmm/vhost/backend/daemon.hpp"
#include "vmm/virtio/retry_timer.hpp"
#include "vmm/virtio/rng/rng_device.hpp"

namespace {

using namespace vmm;

constexpr const char* kProgram = "vhost-user-rng";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vhost-user-rng: a virtio-rng device (stage05's RngDevice) in its own process, served over vhost-user"};
  std::string socket;
  std::string source = "/dev/urandom";
  std::optional<std::uint64_t> rate;
  std::uint64_t burst = 0;
  std::uint16_t queue_size = 256;
  bool trace = false;
  bool once = false;
  app.add_option("--socket", socket, "The unix socket to listen on (the frontend connects to it)")->required();
  app.add_option("--source", source, "Where entropy comes from (a regular file is read again from its start)")
      ->capture_default_str();
  app.add_option("--rate", rate, "Rate limit in bytes per second (default: none)")->check(CLI::PositiveNumber);
  app.add_option("--burst", burst, "Bucket size in bytes with --rate (default: one second's worth)");
  app.add_option("--queue-size", queue_size, "Maximum size of the request queue (a power of two)")
      ->capture_default_str()
      ->check(CLI::Range(1, 32768));
  app.add_flag("--trace-vhost-user", trace, "Print every vhost-user message and the backend's notes on stderr");
  app.add_flag("--once", once, "Serve one frontend, then exit");
  CLI11_PARSE(app, argc, argv);

  auto entropy = virtio::rng::file_source(source);
  if (!entropy) {
    fmt::print(stderr, "{}: {}\n", kProgram, entropy.error());
    return 1;
  }
  virtio::rng::RngConfig config;
  config.queue_size = queue_size;
  config.bytes_per_second = rate;
  config.burst_bytes = burst;
  config.source = std::move(*entropy);
  std::shared_ptr<virtio::RetryTimer> timer;
  if (rate) {
    timer = std::make_shared<virtio::ThreadRetryTimer>();
  }
  auto device = virtio::rng::RngDevice::create(std::move(config), timer);
  if (!device) {
    fmt::print(stderr, "{}: {}\n", kProgram, device.error());
    return 1;
  }

  const int status = vhost::serve_device_main(kProgram, socket, *device, trace, once);
  if ((*device)->last_error()) {
    fmt::print(stderr, "{}: last device error: {}\n", kProgram, *(*device)->last_error());
  }
  fmt::print("{}: {} bytes served\n", kProgram, (*device)->bytes_served());
  return status;
}
