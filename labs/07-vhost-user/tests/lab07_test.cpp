// Lab 07's checks. Built twice: against your code in exercises/ (lab07_tests_exercises) and against the reference in
// solutions/ (lab07_tests_solutions). See labs/07-vhost-user/README.md.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <guest/virtio_rng.hpp>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "lab07.hpp"
#include "rng_on_msix_routes.hpp"  // stage06-irqfd-ioeventfd/tests
#include "vhost_user_vm.hpp"       // stage07-vhost-user/demo
#include "vmm/event/event_fd.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/region.hpp"
#include "vmm/testing/guest_console.hpp"
#include "vmm/testing/kvm.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/testing/virtio_pci_driver.hpp"
#include "vmm/vhost/backend/backend_handler.hpp"
#include "vmm/vhost/backend/daemon.hpp"
#include "vmm/vhost/connection.hpp"
#include "vmm/vhost/protocol.hpp"
#include "vmm/virtio/rng/rng_device.hpp"
#include "vmm/virtio/uapi.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace lab07 {
// How gtest shows a Negotiated in a failure message.
void PrintTo(const Negotiated& n, std::ostream* os) {
  *os << "{features 0x" << std::hex << n.features << ", protocol_features 0x" << n.protocol_features << std::dec
      << ", queue_num ";
  if (n.queue_num) {
    *os << *n.queue_num;
  } else {
    *os << "(none)";
  }
  *os << "}";
}
}  // namespace lab07

namespace {

using ::testing::HasSubstr;
using vmm::vhost::bit;
using vmm::vhost::Connection;
using vmm::vhost::Direction;
using vmm::vhost::MemoryRegion;
using vmm::vhost::Message;
using vmm::vhost::Payload;
using vmm::vhost::ProtocolFeature;
using vmm::vhost::Request;
using vmm::virtio::VirtioPciDevice;

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kProtocolFeaturesMask = 1ull << vmm::vhost::kProtocolFeaturesBit;

std::string hex(std::uint64_t value) {
  return fmt::format("{:#x}", value);
}

// An error's message, or a note that there was none (the call succeeded when it should not have).
template <typename T>
std::string error_of(const vmm::Result<T>& result) {
  if (result) {
    return "(no error: the call succeeded)";
  }
  return result.error().message();
}

// ---- Exercise 1: the three address spaces -------------------------------------------------------------------------

// Three regions, as a frontend could describe them. The first two are neighbours in guest-physical memory
// ([0, 1 MiB) and [1 MiB, 3 MiB)) but not in the frontend's address space, where the second lies *below* the first;
// the third is RAM above 4 GiB. Each has its own file offset.
const std::array<MemoryRegion, 3> kRegions = {
    MemoryRegion{.guest_phys_addr = 0x0, .memory_size = kMiB, .userspace_addr = 0x7f00'0040'0000, .mmap_offset = 0x0},
    MemoryRegion{
        .guest_phys_addr = kMiB, .memory_size = 2 * kMiB, .userspace_addr = 0x7f00'0000'0000, .mmap_offset = 0x10'0000},
    MemoryRegion{.guest_phys_addr = 0x1'0000'0000,
                 .memory_size = 4 * kMiB,
                 .userspace_addr = 0x7e00'0000'0000,
                 .mmap_offset = 0x8000'0000},
};

TEST(Exercise1, FrontendVaForTranslatesThroughTheRegionThatHoldsTheRange) {
  struct Case {
    std::uint64_t gpa, length, expected;
  };
  for (const Case& c : {
           Case{0x0, 16, 0x7f00'0040'0000},                         // the first byte of region 0
           Case{0x1000, 0x100, 0x7f00'0040'1000},                   // a descriptor table in region 0
           Case{kMiB - 8, 8, 0x7f00'0040'0000 + kMiB - 8},          // region 0's last 8 bytes
           Case{kMiB, 1, 0x7f00'0000'0000},                         // region 1 starts where region 0 ends
           Case{kMiB + 0x2345, 0x106, 0x7f00'0000'2345},            // an odd address, an available ring's size
           Case{3 * kMiB - 1, 1, 0x7f00'0000'0000 + 2 * kMiB - 1},  // region 1's last byte
           Case{0x1'0000'0000 + 0x3000, 0x806, 0x7e00'0000'3000},   // above 4 GiB
           Case{0x1'0000'0000 + 4 * kMiB - 1, 0, 0x7e00'0000'0000 + 4 * kMiB - 1},  // length 0: the address alone
       }) {
    auto va = lab07::frontend_va_for(kRegions, c.gpa, c.length);
    ASSERT_TRUE(va) << "frontend_va_for(regions, " << hex(c.gpa) << ", " << hex(c.length) << "): " << error_of(va);
    EXPECT_EQ(*va, c.expected) << "frontend_va_for(regions, " << hex(c.gpa) << ", " << hex(c.length)
                               << ") = " << hex(*va) << ", expected " << hex(c.expected);
  }
}

TEST(Exercise1, FrontendVaForRefusesRangesThatAreNotInsideOneRegion) {
  // A range entirely in region 0 first, so that a function refusing everything does not pass.
  auto inside = lab07::frontend_va_for(kRegions, kMiB - 0x100, 0x100);
  ASSERT_TRUE(inside) << "frontend_va_for(regions, " << hex(kMiB - 0x100) << ", 0x100): " << error_of(inside);
  EXPECT_EQ(*inside, 0x7f00'0040'0000 + kMiB - 0x100);

  struct Case {
    std::uint64_t gpa, length;
    const char* why;
  };
  for (const Case& c : {
           Case{kMiB - 0x80, 0x100, "straddles regions 0 and 1: neighbours for the guest, not for the frontend"},
           Case{kMiB - 1, 2, "its last byte is in region 1"},
           Case{3 * kMiB - 0x10, 0x11, "runs one byte past the end of region 1"},
           Case{3 * kMiB, 1, "starts in the hole between 3 MiB and 4 GiB"},
           Case{0x8000'0000, 0x1000, "lies in the hole"},
           Case{0x1'0000'0000 + 4 * kMiB, 0, "starts right after region 2 (length 0)"},
           Case{0x1'0000'0000 - 1, 2, "starts in the hole and ends in region 2"},
       }) {
    auto va = lab07::frontend_va_for(kRegions, c.gpa, c.length);
    EXPECT_FALSE(va) << "frontend_va_for(regions, " << hex(c.gpa) << ", " << hex(c.length) << ") = " << hex(*va)
                     << ", but the range " << c.why;
    if (!va) {
      EXPECT_THAT(va.error().message(), HasSubstr(hex(c.gpa)))
          << "the error for a range that " << c.why << " should name its start, " << hex(c.gpa);
    }
  }
}

TEST(Exercise1, FrontendVaForRefusesRangesThatWrapAround2To64) {
  // A region at the very top of guest-physical space (its last byte is 2^64 - 0x1001).
  const std::array<MemoryRegion, 1> top = {MemoryRegion{.guest_phys_addr = 0xffff'ffff'ffff'0000,
                                                        .memory_size = 0xf000,
                                                        .userspace_addr = 0x7f00'0000'0000,
                                                        .mmap_offset = 0}};
  auto last = lab07::frontend_va_for(top, 0xffff'ffff'ffff'e000, 0x1000);
  ASSERT_TRUE(last) << "frontend_va_for(top, 0xffffffffffffe000, 0x1000), the region's last page: " << error_of(last);
  EXPECT_EQ(*last, 0x7f00'0000'e000u);

  // gpa + length wraps to a small number: an end computed that way looks inside the region.
  for (const std::uint64_t length : {kMax, kMax - 0x7fff, std::uint64_t{0xffff'0000'0000'0000}}) {
    auto va = lab07::frontend_va_for(top, 0xffff'ffff'ffff'8000, length);
    EXPECT_FALSE(va) << "frontend_va_for(top, 0xffffffffffff8000, " << hex(length) << ") = " << hex(*va)
                     << ": gpa + length overflows 64 bits";
    if (!va) {
      EXPECT_THAT(va.error().message(), HasSubstr("0xffffffffffff8000")) << "the error should name the start";
    }
  }
  // And a range that ends at exactly 2^64, past the region.
  auto end = lab07::frontend_va_for(top, 0xffff'ffff'ffff'f000, 0x1000);
  EXPECT_FALSE(end) << "frontend_va_for(top, 0xfffffffffffff000, 0x1000): the range ends at 2^64, past the region";
}

TEST(Exercise1, GpaForIsTheInverseOfFrontendVaFor) {
  for (const MemoryRegion& r : kRegions) {
    for (const std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{0x1234}, r.memory_size - 0x10}) {
      auto gpa = lab07::gpa_for(kRegions, r.userspace_addr + offset, 0x10);
      ASSERT_TRUE(gpa) << "gpa_for(regions, " << hex(r.userspace_addr + offset) << ", 0x10): " << error_of(gpa);
      EXPECT_EQ(*gpa, r.guest_phys_addr + offset) << "gpa_for(regions, " << hex(r.userspace_addr + offset) << ", 0x10)";
      auto back = lab07::frontend_va_for(kRegions, *gpa, 0x10);
      ASSERT_TRUE(back) << error_of(back);
      EXPECT_EQ(*back, r.userspace_addr + offset) << "frontend_va_for(gpa_for(x)) != x";
    }
  }
}

TEST(Exercise1, GpaForRefusesRangesThatAreNotInsideOneRegion) {
  // In the frontend's space region 1 ([0x7f0000000000, +2 MiB)) and region 0 ([0x7f0000400000, +1 MiB)) have a
  // 2 MiB hole between them; region 2 is far below.
  auto inside = lab07::gpa_for(kRegions, 0x7f00'001f'ff00, 0x100);
  ASSERT_TRUE(inside) << "gpa_for(regions, 0x7f00001fff00, 0x100), the end of region 1: " << error_of(inside);
  EXPECT_EQ(*inside, 3 * kMiB - 0x100);

  struct Case {
    std::uint64_t uaddr, length;
    const char* why;
  };
  for (const Case& c : {
           Case{0x7f00'001f'ff00, 0x101, "runs one byte past the end of region 1"},
           Case{0x7f00'0020'0000, 8, "is in the hole between regions 1 and 0"},
           Case{0x7f00'003f'fff8, 16, "starts in the hole and ends in region 0"},
           Case{0x1000, 0x100, "is no frontend address at all (a guest-physical one?)"},
           Case{0x7f00'0040'0000 + 0x1000, kMax, "wraps around 2^64"},
       }) {
    auto gpa = lab07::gpa_for(kRegions, c.uaddr, c.length);
    EXPECT_FALSE(gpa) << "gpa_for(regions, " << hex(c.uaddr) << ", " << hex(c.length) << ") = " << hex(*gpa)
                      << ", but the range " << c.why;
    if (!gpa) {
      EXPECT_THAT(gpa.error().message(), HasSubstr(hex(c.uaddr)))
          << "the error for a range that " << c.why << " should name its start, " << hex(c.uaddr);
    }
  }
}

TEST(Exercise1, BackendOffsetForIsTheMmapOffsetPlusTheDistanceIntoTheRegion) {
  struct Case {
    std::size_t region;
    std::uint64_t gpa, expected;
  };
  for (const Case& c : {
           Case{0, 0x0, 0x0},
           Case{0, 0xabcd, 0xabcd},
           Case{1, kMiB, 0x10'0000},
           Case{1, kMiB + 0x1234, 0x10'1234},
           Case{1, 3 * kMiB - 1, 0x10'0000 + 2 * kMiB - 1},
           Case{2, 0x1'0000'0000 + 0x5000, 0x8000'5000},
       }) {
    auto offset = lab07::backend_offset_for(kRegions[c.region], c.gpa);
    ASSERT_TRUE(offset) << "backend_offset_for(region " << c.region << ", " << hex(c.gpa) << "): " << error_of(offset);
    EXPECT_EQ(*offset, c.expected) << "backend_offset_for(region " << c.region << ", " << hex(c.gpa) << ")";
  }
  // Outside the region (below it, at its end, far away), and a file offset that does not fit in 64 bits.
  const MemoryRegion wraps{
      .guest_phys_addr = 0x10'0000, .memory_size = 0x2000, .userspace_addr = 0, .mmap_offset = kMax - 0xfff};
  for (const auto& [region, gpa] :
       {std::pair{kRegions[1], kMiB - 1}, std::pair{kRegions[1], 3 * kMiB},
        std::pair{kRegions[0], std::uint64_t{0x1'0000'0000}}, std::pair{wraps, std::uint64_t{0x10'1000}}}) {
    auto offset = lab07::backend_offset_for(region, gpa);
    EXPECT_FALSE(offset) << "backend_offset_for(gpa [" << hex(region.guest_phys_addr) << ", +"
                         << hex(region.memory_size) << ") off " << hex(region.mmap_offset) << ", " << hex(gpa)
                         << ") = " << hex(*offset);
    if (!offset) {
      EXPECT_THAT(offset.error().message(), HasSubstr(hex(gpa))) << "the error should name the address, " << hex(gpa);
    }
  }
}

// One memfd holding two regions that are neighbours in guest-physical memory, in the other order in the file:
// region A is gpa [0, 1 MiB) at file offset 3 MiB, region B gpa [1 MiB, 3 MiB) at file offset 0. This process maps
// each region on its own (as a VMM may), so the frontend addresses in the table are real and unrelated.
struct SharedMemory {
  vmm::Fd memfd;
  vmm::memory::GuestMemory memory;
  std::vector<MemoryRegion> regions;  // the memory table a frontend would send

  static std::unique_ptr<SharedMemory> create() {
    auto shared = std::make_unique<SharedMemory>();
    shared->memfd = vmm::Fd(::memfd_create("lab07-guest-ram", MFD_CLOEXEC));
    EXPECT_TRUE(shared->memfd) << "memfd_create";
    EXPECT_EQ(::ftruncate(shared->memfd.get(), 4 * kMiB), 0);
    std::vector<vmm::memory::GuestMemoryRegion> mapped;
    for (const auto& [gpa, size, offset] :
         {std::tuple{std::uint64_t{0}, kMiB, 3 * kMiB}, std::tuple{kMiB, 2 * kMiB, std::uint64_t{0}}}) {
      auto fd = shared->memfd.duplicate();
      EXPECT_TRUE(fd) << fd.error().message();
      auto region =
          vmm::memory::GuestMemoryRegion::map_file(vmm::memory::GuestAddress(gpa), size, std::move(*fd), offset);
      EXPECT_TRUE(region) << region.error().message();
      if (!fd || !region) {
        return nullptr;
      }
      shared->regions.push_back(MemoryRegion{.guest_phys_addr = gpa,
                                             .memory_size = size,
                                             .userspace_addr = reinterpret_cast<std::uint64_t>(region->host_address()),
                                             .mmap_offset = offset});
      mapped.push_back(std::move(*region));
    }
    auto memory = vmm::memory::GuestMemory::from_regions(std::move(mapped));
    EXPECT_TRUE(memory) << memory.error().message();
    if (!memory) {
      return nullptr;
    }
    shared->memory = std::move(*memory);
    return shared;
  }

  // SET_MEM_TABLE with a descriptor of the memfd for each region.
  [[nodiscard]] Message mem_table() const {
    Message m;
    m.request = Request::SetMemTable;
    m.payload = vmm::vhost::MemoryTable{.regions = regions};
    for (std::size_t i = 0; i < regions.size(); ++i) {
      auto fd = memfd.duplicate();
      EXPECT_TRUE(fd);
      m.fds.push_back(std::move(*fd));
    }
    return m;
  }
};

TEST(Exercise1, BackendOffsetForFindsTheGuestsBytesInTheMemfd) {
  auto shared = SharedMemory::create();
  ASSERT_TRUE(shared);
  // The guest writes a different pattern at a few addresses of both regions (through this process's mappings).
  for (const std::uint64_t gpa :
       {std::uint64_t{0}, std::uint64_t{0x1234}, kMiB - 4, kMiB, kMiB + 0x5678, 3 * kMiB - 4}) {
    const std::array<std::uint8_t, 4> bytes = {0xa0, static_cast<std::uint8_t>(gpa >> 12),
                                               static_cast<std::uint8_t>(gpa), 0x5a};
    ASSERT_TRUE(shared->memory.write(vmm::memory::GuestAddress(gpa), std::as_bytes(std::span(bytes))));
    const MemoryRegion& region = gpa < kMiB ? shared->regions[0] : shared->regions[1];
    auto offset = lab07::backend_offset_for(region, gpa);
    ASSERT_TRUE(offset) << "backend_offset_for(region at " << hex(region.guest_phys_addr) << ", " << hex(gpa)
                        << "): " << error_of(offset);
    // What a backend reads from the fd it was given, at the offset you computed.
    std::array<std::uint8_t, 4> read{};
    ASSERT_EQ(::pread(shared->memfd.get(), read.data(), read.size(), static_cast<off_t>(*offset)), 4);
    EXPECT_EQ(read, bytes) << "the memfd at offset " << hex(*offset) << " does not hold the guest's bytes at "
                           << hex(gpa);
  }
}

// A source of entropy whose bytes are known: 0, 1, 2, ...
vmm::virtio::rng::EntropySource counting_source() {
  auto next = std::make_shared<std::uint8_t>(0);
  return [next](std::span<std::uint8_t> out) -> vmm::Result<void> {
    for (auto& byte : out) {
      byte = (*next)++;
    }
    return {};
  };
}

// vmmlab's backend library hosting stage05's virtio-rng, in this process.
std::unique_ptr<vmm::vhost::BackendHandler> rng_handler(vmm::vhost::BackendOptions options = {}) {
  vmm::virtio::rng::RngConfig config;
  config.source = counting_source();
  auto rng = vmm::virtio::rng::RngDevice::create(std::move(config));
  EXPECT_TRUE(rng) << rng.error().message();
  if (!rng) {
    return nullptr;
  }
  auto handler = vmm::vhost::BackendHandler::create(*rng, std::move(options));
  EXPECT_TRUE(handler) << handler.error().message();
  return handler ? std::move(*handler) : nullptr;
}

Message make(Request request, Payload payload = std::monostate{}, std::vector<vmm::Fd> fds = {}) {
  Message m;
  m.request = request;
  m.payload = std::move(payload);
  m.fds = std::move(fds);
  return m;
}

std::vector<vmm::Fd> one_fd(const vmm::event::EventFd& event) {
  std::vector<vmm::Fd> fds;
  auto fd = vmm::Fd(::fcntl(event.fd(), F_DUPFD_CLOEXEC, 0));
  EXPECT_TRUE(fd);
  fds.push_back(std::move(fd));
  return fds;
}

bool eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST(Exercise1, TheRealBackendServesARingAtTheAddressesYouComputed) {
  auto shared = SharedMemory::create();
  ASSERT_TRUE(shared);
  ASSERT_NE(shared->regions[0].userspace_addr + kMiB, shared->regions[1].userspace_addr)
      << "the two regions happen to be mapped back to back in this process; the test needs them apart";
  auto handler = rng_handler();
  ASSERT_TRUE(handler);

  // The driver's queue: rings at 0x1000 (region A), buffers from 1 MiB (region B).
  vmm::testing::MockDriver driver(shared->memory, vmm::testing::MockLayout{.size = 16});
  const vmm::virtio::QueueLayout layout = driver.queue_layout();
  auto desc = lab07::frontend_va_for(shared->regions, layout.descriptor_table.raw(),
                                     vmm::virtio::QueueLayout::descriptor_table_bytes(16));
  auto avail = lab07::frontend_va_for(shared->regions, layout.available_ring.raw(),
                                      vmm::virtio::QueueLayout::available_ring_bytes(16));
  auto used =
      lab07::frontend_va_for(shared->regions, layout.used_ring.raw(), vmm::virtio::QueueLayout::used_ring_bytes(16));
  ASSERT_TRUE(desc && avail && used) << "frontend_va_for on the ring areas: " << error_of(desc) << " / "
                                     << error_of(avail) << " / " << error_of(used);

  // What a frontend sends at DRIVER_OK (no protocol features: the ring is enabled from the start).
  auto kick = vmm::event::EventFd::create();
  auto call = vmm::event::EventFd::create();
  ASSERT_TRUE(kick && call);
  ASSERT_TRUE(handler->handle(make(Request::SetFeatures, std::uint64_t{1} << VIRTIO_F_VERSION_1)));
  auto table = handler->handle(shared->mem_table());
  ASSERT_TRUE(table) << table.error().message();
  ASSERT_TRUE(handler->handle(make(Request::SetVringNum, vhost_vring_state{.index = 0, .num = 16})));
  ASSERT_TRUE(handler->handle(make(Request::SetVringBase, vhost_vring_state{.index = 0, .num = 0})));
  const vhost_vring_addr addr{.index = 0,
                              .flags = 0,
                              .desc_user_addr = *desc,
                              .used_user_addr = *used,
                              .avail_user_addr = *avail,
                              .log_guest_addr = 0};
  auto accepted = handler->handle(make(Request::SetVringAddr, addr));
  ASSERT_TRUE(accepted) << "the backend refused the ring addresses frontend_va_for computed: "
                        << accepted.error().message();
  ASSERT_TRUE(handler->handle(make(Request::SetVringKick, std::uint64_t{0}, one_fd(*kick))));
  ASSERT_TRUE(handler->handle(make(Request::SetVringCall, std::uint64_t{0}, one_fd(*call))));
  ASSERT_TRUE(handler->running()) << "the backend did not start the ring";
  EXPECT_EQ(handler->ring(0).layout, std::optional(layout))
      << "the backend translated your addresses back to another guest-physical layout";

  // Your gpa_for does what the backend did with them.
  auto desc_gpa = lab07::gpa_for(shared->regions, *desc, vmm::virtio::QueueLayout::descriptor_table_bytes(16));
  ASSERT_TRUE(desc_gpa) << "gpa_for(regions, " << hex(*desc) << ", 0x100): " << error_of(desc_gpa);
  EXPECT_EQ(*desc_gpa, layout.descriptor_table.raw());

  // And the backend really uses the guest's memory: a request in region B comes back filled with 0, 1, 2...
  const auto buffer = driver.allocate(32, true);
  driver.add_chain(std::array{buffer});
  ASSERT_TRUE(kick->write(1));
  ASSERT_TRUE(eventually([&] { return driver.used_index() == 1; })) << "the backend never used the buffer";
  const auto bytes = driver.read_bytes(buffer.address, 32);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    ASSERT_EQ(std::size_t{bytes[i]}, i) << "byte " << i << " of the buffer";
  }
  EXPECT_TRUE(eventually([&] { return call->read().value_or(std::nullopt).has_value(); }))
      << "the backend did not write the call eventfd";
}

TEST(Exercise1, TheRealBackendRefusesWhatFrontendVaForRefuses) {
  auto shared = SharedMemory::create();
  ASSERT_TRUE(shared);
  ASSERT_NE(shared->regions[0].userspace_addr + kMiB, shared->regions[1].userspace_addr)
      << "the two regions happen to be mapped back to back in this process; the test needs them apart";
  auto handler = rng_handler();
  ASSERT_TRUE(handler);
  ASSERT_TRUE(handler->handle(make(Request::SetFeatures, std::uint64_t{1} << VIRTIO_F_VERSION_1)));
  ASSERT_TRUE(handler->handle(shared->mem_table()));
  ASSERT_TRUE(handler->handle(make(Request::SetVringNum, vhost_vring_state{.index = 0, .num = 16})));

  // A descriptor table across the boundary of A and B: contiguous for the guest, two unrelated mappings for the
  // frontend and the backend. Your function must refuse it...
  const std::uint64_t straddling = kMiB - 0x80;
  auto va = lab07::frontend_va_for(shared->regions, straddling, vmm::virtio::QueueLayout::descriptor_table_bytes(16));
  EXPECT_FALSE(va) << "frontend_va_for(regions, " << hex(straddling) << ", 0x100) = " << hex(*va)
                   << ", but the table straddles regions A and B";
  // ...and the naive translation (A's frontend address plus the offset) is what the real backend refuses.
  auto legal = lab07::frontend_va_for(shared->regions, 0x2000, vmm::virtio::QueueLayout::available_ring_bytes(16));
  ASSERT_TRUE(legal) << "frontend_va_for(regions, 0x2000, 0x26): " << error_of(legal);
  auto used = lab07::frontend_va_for(shared->regions, 0x3000, vmm::virtio::QueueLayout::used_ring_bytes(16));
  ASSERT_TRUE(used) << "frontend_va_for(regions, 0x3000, 0x86): " << error_of(used);
  const vhost_vring_addr naive{.index = 0,
                               .flags = 0,
                               .desc_user_addr = shared->regions[0].userspace_addr + straddling,
                               .used_user_addr = *used,
                               .avail_user_addr = *legal,
                               .log_guest_addr = 0};
  auto refused = handler->handle(make(Request::SetVringAddr, naive));
  EXPECT_FALSE(refused) << "the backend accepted a descriptor table that runs past the end of region A";
  // Nor does it take guest-physical addresses where frontend addresses belong (the classic mistake).
  const vhost_vring_addr physical{.index = 0,
                                  .flags = 0,
                                  .desc_user_addr = 0x1000,
                                  .used_user_addr = 0x3000,
                                  .avail_user_addr = 0x2000,
                                  .log_guest_addr = 0};
  EXPECT_FALSE(handler->handle(make(Request::SetVringAddr, physical)))
      << "the backend accepted guest-physical ring addresses";
  EXPECT_EQ(handler->refused(), 2u);
}

// ---- Exercise 2: the handshake --------------------------------------------------------------------------------------

// One message the peer received.
struct Seen {
  Request request = Request::GetFeatures;
  std::uint32_t flags = 0;
  Payload payload;
};

// The backend's end of the socket, on a thread: each message received is recorded and answered by `answer`.
class Peer {
 public:
  using Answer = std::function<std::optional<Message>(Message)>;
  Peer(Connection connection, Answer answer) : connection_(std::move(connection)), answer_(std::move(answer)) {
    thread_ = std::thread([this] { run(); });
  }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer() { finish(); }

  // Waits until the peer has read everything the frontend sent before it shut its end down (or 30 s).
  void finish() {
    stop_after_ = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  [[nodiscard]] std::vector<Seen> seen() const {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  // The names of the requests received, in order.
  [[nodiscard]] std::vector<std::string> requests() const {
    std::vector<std::string> names;
    for (const Seen& s : seen()) {
      names.push_back(vmm::vhost::request_name(static_cast<std::uint32_t>(s.request)));
    }
    return names;
  }
  // The first message of this request, if any.
  [[nodiscard]] std::optional<Seen> find(Request request) const {
    for (const Seen& s : seen()) {
      if (s.request == request) {
        return s;
      }
    }
    return std::nullopt;
  }

 private:
  void run() {
    for (;;) {
      if (stop_after_.load() != std::chrono::steady_clock::time_point{} &&
          std::chrono::steady_clock::now() > stop_after_.load()) {
        return;
      }
      pollfd pfd{.fd = connection_.socket().get(), .events = POLLIN, .revents = 0};
      if (::poll(&pfd, 1, 20) <= 0) {
        continue;
      }
      auto message = connection_.receive(Direction::ToBackend, std::chrono::seconds(5));
      if (!message) {
        return;  // the frontend shut its end down (or sent garbage: the test's expectations will say)
      }
      {
        std::lock_guard lock(mutex_);
        seen_.push_back(Seen{message->request, message->flags, message->payload});
      }
      if (auto reply = answer_(std::move(*message)); reply && !connection_.send(*reply)) {
        return;
      }
    }
  }

  Connection connection_;
  Answer answer_;
  mutable std::mutex mutex_;
  std::vector<Seen> seen_;
  std::atomic<std::chrono::steady_clock::time_point> stop_after_{};
  std::thread thread_;
};

Message reply(Request request, std::uint64_t value) {
  Message m;
  m.request = request;
  m.flags = vmm::vhost::kVersion | vmm::vhost::kReplyFlag;
  m.payload = value;
  return m;
}

// A backend that answers from fixed values, as an older or a different implementation would.
struct ScriptedBackend {
  std::uint64_t features = 0;
  std::uint64_t protocol_features = 0;
  std::uint64_t queue_num = 1;
  std::uint64_t owner_ack = 0;  // the REPLY_ACK status for SET_OWNER (when asked for one)

  [[nodiscard]] std::optional<Message> answer(const Message& m) const {
    switch (m.request) {
      case Request::GetFeatures:
        return reply(m.request, features);
      case Request::GetProtocolFeatures:
        return reply(m.request, protocol_features);  // answered even when not offered, so nobody hangs
      case Request::GetQueueNum:
        return reply(m.request, queue_num);
      case Request::SetOwner:
        return m.needs_reply() ? std::optional(reply(m.request, owner_ack)) : std::nullopt;
      default:
        return m.needs_reply() ? std::optional(reply(m.request, 0)) : std::nullopt;
    }
  }
};

// A handshake against `answer`: the frontend's result and what the backend saw, once it has read everything.
struct Handshake {
  vmm::Result<lab07::Negotiated> result = vmm::logic_error("test", "not run");
  std::vector<std::string> requests;
  std::vector<Seen> seen;
  [[nodiscard]] std::optional<Seen> find(Request request) const {
    for (const Seen& s : seen) {
      if (s.request == request) {
        return s;
      }
    }
    return std::nullopt;
  }
};

Handshake run_handshake(const Peer::Answer& answer, std::uint64_t wanted) {
  Handshake out;
  auto pair = Connection::pair();
  EXPECT_TRUE(pair) << pair.error().message();
  if (!pair) {
    return out;
  }
  Connection frontend = std::move(pair->first);
  Peer backend(std::move(pair->second), answer);
  out.result = lab07::negotiate(frontend, wanted);
  frontend.shutdown();  // the peer reads what is left, then sees the end of the stream
  backend.finish();
  out.requests = backend.requests();
  out.seen = backend.seen();
  return out;
}

std::string requests_text(const std::vector<std::string>& names) {
  std::string text;
  for (const auto& name : names) {
    text += (text.empty() ? "" : ", ") + name;
  }
  return "[" + text + "]";
}

TEST(Exercise2, TheRealBackendSeesTheWholeHandshake) {
  // Offers MQ, REPLY_ACK and CONFIGURE_MEM_SLOTS (and CONFIG only for a device with configuration space).
  auto handler = rng_handler();
  ASSERT_TRUE(handler);
  const std::uint64_t wanted = bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck);
  const auto h = run_handshake([&](Message m) { return handler->serve(std::move(m)); }, wanted);

  const std::vector<std::string> expected = {"GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES",
                                             "GET_QUEUE_NUM", "SET_OWNER"};
  EXPECT_EQ(h.requests, expected) << "the backend received " << requests_text(h.requests);
  ASSERT_TRUE(h.result) << h.result.error().message();
  EXPECT_EQ(*h.result,
            (lab07::Negotiated{.features = handler->offered_features(), .protocol_features = wanted, .queue_num = 1}));
  // The backend's own record of the session.
  EXPECT_EQ(handler->protocol_features(), wanted) << "the protocol features the backend recorded";
  EXPECT_TRUE(handler->owned()) << "the backend has no owner: SET_OWNER never arrived";
  EXPECT_EQ(handler->refused(), 0u) << "the backend refused a request: " << handler->last_error()->message();
  const auto owner = h.find(Request::SetOwner);
  ASSERT_TRUE(owner);
  EXPECT_NE(owner->flags & vmm::vhost::kNeedReply, 0u) << "SET_OWNER without kNeedReply although REPLY_ACK is on";
  const auto set = h.find(Request::SetProtocolFeatures);
  ASSERT_TRUE(set);
  EXPECT_EQ(set->flags & vmm::vhost::kNeedReply, 0u) << "SET_PROTOCOL_FEATURES must not ask for an ack";
}

TEST(Exercise2, OnlyProtocolFeaturesBothSidesSupportAreNegotiated) {
  vmm::vhost::BackendOptions options;
  options.protocol_features = bit(ProtocolFeature::ReplyAck) | bit(ProtocolFeature::ConfigureMemSlots) |
                              bit(ProtocolFeature::ResetDevice);  // no MQ
  auto handler = rng_handler(std::move(options));
  ASSERT_TRUE(handler);
  const std::uint64_t wanted = bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck) |
                               bit(ProtocolFeature::Config) | bit(ProtocolFeature::ResetDevice) |
                               bit(ProtocolFeature::InbandNotifications);
  const auto h = run_handshake([&](Message m) { return handler->serve(std::move(m)); }, wanted);

  const std::uint64_t both = bit(ProtocolFeature::ReplyAck) | bit(ProtocolFeature::ResetDevice);
  const std::vector<std::string> expected = {"GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES",
                                             "SET_OWNER"};
  EXPECT_EQ(h.requests, expected) << "without MQ there is no GET_QUEUE_NUM; the backend received "
                                  << requests_text(h.requests);
  ASSERT_TRUE(h.result) << h.result.error().message();
  EXPECT_EQ(*h.result,
            (lab07::Negotiated{
                .features = handler->offered_features(), .protocol_features = both, .queue_num = std::nullopt}));
  const auto set = h.find(Request::SetProtocolFeatures);
  ASSERT_TRUE(set);
  EXPECT_EQ(std::get<std::uint64_t>(set->payload), both)
      << "SET_PROTOCOL_FEATURES must carry what both sides support, and nothing the backend did not offer";
  EXPECT_EQ(handler->protocol_features(), both);
  EXPECT_TRUE(handler->owned());
}

TEST(Exercise2, WithoutReplyAckSetOwnerAsksForNothing) {
  auto handler = rng_handler();
  ASSERT_TRUE(handler);
  const auto h = run_handshake([&](Message m) { return handler->serve(std::move(m)); }, bit(ProtocolFeature::Mq));

  const std::vector<std::string> expected = {"GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES",
                                             "GET_QUEUE_NUM", "SET_OWNER"};
  EXPECT_EQ(h.requests, expected) << "the backend received " << requests_text(h.requests);
  ASSERT_TRUE(h.result) << h.result.error().message();
  EXPECT_EQ(h.result->protocol_features, bit(ProtocolFeature::Mq));
  EXPECT_EQ(h.result->queue_num, std::optional<std::uint64_t>(1));
  const auto owner = h.find(Request::SetOwner);
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->flags & vmm::vhost::kNeedReply, 0u)
      << "SET_OWNER asked for an ack, but REPLY_ACK was not negotiated: no ack will ever come";
  EXPECT_TRUE(handler->owned());
}

TEST(Exercise2, ABackendWithoutProtocolFeaturesIsNeverAskedForThem) {
  // An old backend: GET_FEATURES without bit 30.
  const ScriptedBackend script{.features = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX),
                               .protocol_features = bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck)};
  const std::uint64_t wanted = bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck);
  const auto h = run_handshake([&](Message m) { return script.answer(m); }, wanted);

  const std::vector<std::string> expected = {"GET_FEATURES", "SET_OWNER"};
  EXPECT_EQ(h.requests, expected)
      << "GET_FEATURES did not offer bit 30, so GET/SET_PROTOCOL_FEATURES (and GET_QUEUE_NUM, which needs MQ) must "
         "not be sent; the backend received "
      << requests_text(h.requests);
  ASSERT_TRUE(h.result) << h.result.error().message();
  EXPECT_EQ(*h.result, (lab07::Negotiated{.features = script.features, .protocol_features = 0, .queue_num = {}}));
  const auto owner = h.find(Request::SetOwner);
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->flags & vmm::vhost::kNeedReply, 0u) << "SET_OWNER asked for an ack without REPLY_ACK";
}

TEST(Exercise2, AQemuStorageDaemonLikeBackendGivesItsQueueCount) {
  // What qemu-storage-daemon offers: MQ, LOG_SHMFD, REPLY_ACK, BACKEND_REQ, PAGEFAULT, CONFIG, BACKEND_SEND_FD,
  // HOST_NOTIFIER, CONFIGURE_MEM_SLOTS; and 4 queues.
  const ScriptedBackend script{
      .features = (1ull << VIRTIO_F_VERSION_1) | kProtocolFeaturesMask, .protocol_features = 0x8f2b, .queue_num = 4};
  const std::uint64_t wanted = bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck) |
                               bit(ProtocolFeature::Config) | bit(ProtocolFeature::Status);
  const auto h = run_handshake([&](Message m) { return script.answer(m); }, wanted);

  ASSERT_TRUE(h.result) << h.result.error().message();
  const std::uint64_t both = bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck) | bit(ProtocolFeature::Config);
  EXPECT_EQ(*h.result, (lab07::Negotiated{.features = script.features, .protocol_features = both, .queue_num = 4}));
  const auto set = h.find(Request::SetProtocolFeatures);
  ASSERT_TRUE(set) << "no SET_PROTOCOL_FEATURES; the backend received " << requests_text(h.requests);
  EXPECT_EQ(std::get<std::uint64_t>(set->payload), both) << "SET_PROTOCOL_FEATURES' value";
}

TEST(Exercise2, ARefusedSetOwnerFailsTheHandshake) {
  const ScriptedBackend script{.features = (1ull << VIRTIO_F_VERSION_1) | kProtocolFeaturesMask,
                               .protocol_features = bit(ProtocolFeature::ReplyAck),
                               .owner_ack = 1};
  const auto h = run_handshake([&](Message m) { return script.answer(m); }, bit(ProtocolFeature::ReplyAck));

  const std::vector<std::string> expected = {"GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES",
                                             "SET_OWNER"};
  EXPECT_EQ(h.requests, expected) << "the backend received " << requests_text(h.requests);
  const auto owner = h.find(Request::SetOwner);
  ASSERT_TRUE(owner);
  EXPECT_NE(owner->flags & vmm::vhost::kNeedReply, 0u) << "SET_OWNER without kNeedReply although REPLY_ACK is on";
  EXPECT_FALSE(h.result) << "the backend acked SET_OWNER with status 1 (refused), yet negotiate succeeded";
}

// ---- Exercise 3: where the call eventfd goes -------------------------------------------------------------------

constexpr std::uint16_t kConfigVector = 0;  // MSI-X table entries, as Linux and stage05's guest assign them
constexpr std::uint16_t kQueueVector = 1;

// stage06's interrupt path without a VM (RngOnMsixRoutes, as in lab 06, exercise 2): a virtio-rng transport whose
// MSI-X messages go to MsixRoutes, one GSI and one irqfd per vector, with routes that follow the guest's table.
class Exercise3 : public vmm::stage06::testing::RngOnMsixRoutes {
 protected:
  // What guest/virtio_rng.c does, up to MSI-X: features, both vectors programmed and unmasked, queue 0's vector.
  void program(bool enable_msix, std::uint16_t queue_vector = kQueueVector) {
    ASSERT_TRUE(pci_->negotiate()) << "FEATURES_OK refused";
    pci_->program_vector(kConfigVector, 0xfee0'0000, 0x51);
    pci_->program_vector(kQueueVector, 0xfee0'0000, 0x50);
    if (enable_msix) {
      pci_->enable_msix();
    }
    ASSERT_EQ(pci_->set_config_vector(kConfigVector), kConfigVector);
    ASSERT_EQ(pci_->set_queue_vector(0, queue_vector), queue_vector);
  }
  // ... and the rest: queue 0 enabled, DRIVER_OK (the moment a vhost-user frontend sends SET_VRING_CALL).
  void start() {
    pci_->enable_queue(0, driver_.queue_layout());
    pci_->add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    ASSERT_NE(pci_->status() & VIRTIO_CONFIG_S_DRIVER_OK, 0);
  }

  void set_mask(std::uint16_t vector, bool masked) {
    pci_->write(
        VirtioPciDevice::kMsixTableOffset + std::uint64_t{PCI_MSIX_ENTRY_SIZE} * vector + PCI_MSIX_ENTRY_VECTOR_CTRL,
        masked ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0, 4, VirtioPciDevice::kMsixBar);
  }
  void set_function_mask(bool masked) {
    const auto control = static_cast<std::uint16_t>(transport_->msix_capability() + PCI_MSIX_FLAGS);
    const auto value = pci_->config_read(control, 2);
    pci_->config_write(control, masked ? (value | PCI_MSIX_FLAGS_MASKALL) : (value & ~PCI_MSIX_FLAGS_MASKALL), 2);
  }

  [[nodiscard]] const vmm::event::EventFd* call_fd(std::uint16_t queue = 0) {
    return lab07::call_fd_for(*transport_, *routes_, queue);
  }
  // For failure messages: which eventfd a pointer is.
  [[nodiscard]] std::string which(const vmm::event::EventFd* fd) const {
    if (fd == nullptr) {
      return "nullptr (the VMM relays)";
    }
    for (std::uint16_t v = 0; v < routes_->vectors(); ++v) {
      if (fd == routes_->irqfd(v)) {
        return fmt::format("vector {}'s irqfd", v);
      }
    }
    return "an eventfd that is no vector's irqfd";
  }

  vmm::testing::MockDriver driver_{memory_};
};

TEST_F(Exercise3, TheQueuesVectorsIrqfdOnceMsixIsOn) {
  program(/*enable_msix=*/false);
  EXPECT_EQ(call_fd(), nullptr) << "call_fd_for(queue 0) with MSI-X disabled is " << which(call_fd());
  pci_->enable_msix();
  start();
  EXPECT_EQ(call_fd(), routes_->irqfd(kQueueVector))
      << "call_fd_for(queue 0) is " << which(call_fd()) << "; the driver chose vector 1 for queue 0";
  EXPECT_TRUE(routes_->route(kQueueVector)->message) << "vector 1 has no GSI route: the test's setup is broken";
}

TEST_F(Exercise3, TheVectorTheDriverChoseNotAFixedOne) {
  // The driver may give the queue any vector, the configuration vector included (Linux does, when it is short of
  // vectors). It chooses before it enables the queue: the transport freezes the choice then.
  program(true, kConfigVector);
  EXPECT_EQ(call_fd(), routes_->irqfd(kConfigVector))
      << "call_fd_for(queue 0) is " << which(call_fd()) << "; the driver chose vector 0 for queue 0";
  ASSERT_EQ(pci_->set_queue_vector(0, VIRTIO_MSI_NO_VECTOR), VIRTIO_MSI_NO_VECTOR);
  EXPECT_EQ(call_fd(), nullptr) << "call_fd_for(queue 0) is " << which(call_fd())
                                << "; queue 0 has no vector (VIRTIO_MSI_NO_VECTOR)";
  ASSERT_EQ(pci_->set_queue_vector(0, kQueueVector), kQueueVector);
  start();
  EXPECT_EQ(call_fd(), routes_->irqfd(kQueueVector)) << "call_fd_for(queue 0) is " << which(call_fd());
  EXPECT_EQ(call_fd(1), nullptr) << "call_fd_for(queue 1) is " << which(call_fd(1)) << "; virtio-rng has one queue";
}

TEST_F(Exercise3, AMaskedVectorHasNoRouteSoTheVmmRelays) {
  program(true);
  start();
  ASSERT_EQ(call_fd(), routes_->irqfd(kQueueVector)) << "call_fd_for(queue 0) is " << which(call_fd());

  set_mask(kQueueVector, true);
  ASSERT_FALSE(routes_->route(kQueueVector)->message) << "vector 1 is masked but still routed: the setup is broken";
  EXPECT_EQ(call_fd(), nullptr) << "call_fd_for(queue 0) is " << which(call_fd())
                                << " while vector 1 is masked: KVM would drop the backend's write";
  set_mask(kConfigVector, true);
  set_mask(kQueueVector, false);
  EXPECT_EQ(call_fd(), routes_->irqfd(kQueueVector))
      << "call_fd_for(queue 0) is " << which(call_fd()) << " after vector 1 was unmasked (vector 0 is masked)";

  set_function_mask(true);
  EXPECT_EQ(call_fd(), nullptr) << "call_fd_for(queue 0) is " << which(call_fd())
                                << " while the whole function is masked";
  set_function_mask(false);
  EXPECT_EQ(call_fd(), routes_->irqfd(kQueueVector)) << "call_fd_for(queue 0) is " << which(call_fd());
}

// vmmlab's backend library serving stage05's virtio-rng on a unix socket, on a thread of this process: the
// vhost-user-rng daemon's code without the process. Stopped, and its socket directory removed, at the end of the test.
struct InProcessDaemon {
  std::string directory;
  std::string socket;
  std::unique_ptr<vmm::vhost::Daemon> daemon;
  std::thread serving;

  void start() {
    char pattern[] = "/tmp/vmmlab-lab07-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    directory = pattern;
    socket = directory + "/rng.sock";
    auto rng = vmm::virtio::rng::RngDevice::create(vmm::virtio::rng::RngConfig{});
    ASSERT_TRUE(rng) << rng.error().message();
    auto created = vmm::vhost::Daemon::create(socket, *rng, vmm::vhost::BackendOptions{});
    ASSERT_TRUE(created) << created.error().message();
    daemon = std::move(*created);
    serving = std::thread([this] {
      if (auto ran = daemon->run(); !ran) {
        ADD_FAILURE() << "daemon: " << ran.error().message();
      }
    });
  }
  ~InProcessDaemon() {
    if (serving.joinable()) {
      daemon->request_stop();
      serving.join();
    }
    daemon.reset();
    if (!directory.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(directory, ignored);
    }
  }
};

// The whole machine: stage05's guest on stage07's VhostUserVm, the rng served by vmmlab's backend library on a
// thread of this process (the daemon's code without the process), the call fd chosen by your call_fd_for.
TEST(Exercise3Guest, WithYourCallFdsNoInterruptPassesThroughTheVmm) {
  VMMLAB_REQUIRE_KVM();
  InProcessDaemon daemon;
  ASSERT_NO_FATAL_FAILURE(daemon.start());

  vmm::stage07::VhostUserVmConfig config;
  config.options = vmm::stage05::default_rng_options();
  config.options->flags |= VMMLAB_RNG_QUIET;
  config.frontend.socket_path = daemon.socket;
  config.frontend.device_type = VIRTIO_ID_RNG;
  config.frontend.queues = 1;
  config.frontend.queue_size = 256;
  config.irqfd = false;  // the machine's own choice off: yours instead
  std::uint32_t exit_status = 0xffff'ffff;
  std::string output;
  std::uint64_t interrupts = 0;
  vmm::vhost::FrontendStats stats;
  std::uint64_t vmm_irqfd_writes = 0;
  {
    vmm::testing::GuestConsole console;
    auto vm = vmm::stage07::VhostUserVm::create(
        vmm::guest::virtio_rng(), console.sink(), [&console](std::uint32_t s) { console.exited(s); }, config);
    ASSERT_TRUE(vm) << vm.error().message();
    auto& machine = **vm;
    machine.frontend().set_call_source([&machine](std::uint16_t queue) {
      return lab07::call_fd_for(machine.transport(), machine.msix_routes(), queue);
    });
    ASSERT_TRUE(machine.start([](const vmm::Result<vmm::machine::VcpuOutcome>&) {}));
    EXPECT_TRUE(console.wait_for_exit()) << "no exit; output so far:\n" << console.text();
    machine.stop();
    exit_status = console.exit_status.value_or(0xffff'ffff);
    output = console.text();
    const auto reports = machine.pci().serial().report().values();  // four per phase
    for (std::size_t i = 0; i + 3 < reports.size(); i += 4) {
      interrupts += reports[i + 3];
    }
    stats = machine.frontend().stats();
    vmm_irqfd_writes = machine.msix_routes().signals();
  }
  ASSERT_EQ(exit_status, 0u) << output;
  EXPECT_GT(interrupts, 0u) << "the guest took no queue interrupt";
  EXPECT_EQ(stats.relayed_interrupts, 0u)
      << "the backend's calls went to the frontend's relay: call_fd_for returned nullptr for a routed vector";
  EXPECT_EQ(vmm_irqfd_writes, 0u) << "the VMM itself wrote an irqfd (MsixRoutes::signal)";
}

}  // namespace
