// vhost-user-blk: this stage's virtio-blk device model (a raw image file) served to a vhost-user frontend from its
// own process: vmmlab's VMM, QEMU's vhost-user-blk-pci (SeaBIOS boots from it), or any other frontend.
//
//   vhost-user-blk --socket /tmp/blk.sock --image disk.img             read-write, frontends until SIGINT/SIGTERM
//   vhost-user-blk --socket S --image disk.img --readonly --once       one frontend, writes refused
//   vhost-user-blk --socket S --image disk.img --queues 2 --trace-vhost-user
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "vmm/vhost/backend/daemon.hpp"
#include "vmm/virtio/blk/blk_device.hpp"

namespace {

constexpr const char* kProgram = "vhost-user-blk";

}  // namespace

int main(int argc, char** argv) {
  using namespace vmm;
  CLI::App app{"vhost-user-blk: a virtio-blk device backed by a raw image, in its own process, served over vhost-user"};
  virtio::blk::BlkConfig config;
  std::string socket;
  bool trace = false;
  bool once = false;
  app.add_option("--socket", socket, "The unix socket to listen on (the frontend connects to it)")->required();
  app.add_option("--image", config.path, "The raw disk image (or block device)")->required();
  app.add_flag("--readonly", config.read_only, "Open the image read-only and offer VIRTIO_BLK_F_RO");
  app.add_option("--serial", config.serial, "The GET_ID answer (at most 20 bytes)")->capture_default_str();
  app.add_option("--queue-size", config.queue_size, "Maximum size of each request queue (a power of two, >= 4)")
      ->capture_default_str()
      ->check(CLI::Range(4, 32768));
  app.add_option("--queues", config.queues, "Request queues (more than one offers VIRTIO_BLK_F_MQ)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_flag("--trace-vhost-user", trace, "Print every vhost-user message and the backend's notes on stderr");
  app.add_flag("--once", once, "Serve one frontend, then exit");
  CLI11_PARSE(app, argc, argv);

  auto device = virtio::blk::BlkDevice::open(config);
  if (!device) {
    fmt::print(stderr, "{}: {}\n", kProgram, device.error());
    return 1;
  }
  fmt::print("{}: {}: {} sectors of 512 bytes{}, {} queue{} of {}\n", kProgram, config.path,
             (*device)->capacity_sectors(), config.read_only ? " (read-only)" : "", config.queues,
             config.queues == 1 ? "" : "s", config.queue_size);

  // CONFIG is what QEMU's vhost-user-blk insists on (it reads the capacity with GET_CONFIG); MQ lets it ask for the
  // number of queues. Both are in the defaults, with REPLY_ACK and CONFIGURE_MEM_SLOTS.
  const int status = vhost::serve_device_main(kProgram, socket, *device, trace, once);
  const auto stats = (*device)->stats();
  fmt::print("{}: {} reads ({} bytes), {} writes ({} bytes), {} flushes, {} errors\n", kProgram, stats.reads,
             stats.bytes_read, stats.writes, stats.bytes_written, stats.flushes, stats.io_errors);
  if ((*device)->last_error()) {
    fmt::print(stderr, "{}: last device error: {}\n", kProgram, *(*device)->last_error());
  }
  return status;
}
