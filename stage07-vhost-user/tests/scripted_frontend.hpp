#pragma once
/// @file
/// @brief `ScriptedFrontend`: a minimal vhost-user frontend for the backend's tests. It owns shareable guest memory
/// (two memfd regions), a `MockDriver` per ring to put requests in, the kick/call/err eventfds, and builds the
/// messages a real frontend would send, in QEMU's or DPDK's order. Messages go to a `BackendHandler` directly or
/// over a socket (`exchange`).

#include <dirent.h>
#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "vmm/event/event_fd.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/region.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/vhost/connection.hpp"
#include "vmm/vhost/protocol.hpp"
#include "vmm/virtio/rng/rng_device.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::testing {

/// @brief Region 0: rings and buffers (guest-physical [0, 2 MiB)).
inline constexpr std::uint64_t kRegion0Gpa = 0;
/// @brief Region 0's size.
inline constexpr std::uint64_t kRegion0Size = 2ull << 20;
/// @brief Region 1: spare memory for ADD/REM_MEM_REG tests ([4 MiB, 5 MiB)).
inline constexpr std::uint64_t kRegion1Gpa = 4ull << 20;
/// @brief Region 1's size.
inline constexpr std::uint64_t kRegion1Size = 1ull << 20;

/// @brief What the scripted frontend sets up.
struct FrontendOptions {
  std::uint16_t queues = 1;       ///< Rings.
  std::uint16_t queue_size = 16;  ///< Entries per ring (SET_VRING_NUM).
  bool event_idx = false;         ///< The drivers use EVENT_IDX (negotiate VIRTIO_RING_F_EVENT_IDX to match).
};

/// @brief Polls `done` every millisecond until it is true or `timeout` passes: true if it became true.
inline bool wait_until(const std::function<bool()>& done,
                       std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

/// @brief Entries in a /proc directory (open fds, threads).
inline std::size_t count_entries(const char* path) {
  std::size_t n = 0;
  if (DIR* dir = ::opendir(path)) {
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] != '.') {
        ++n;
      }
    }
    ::closedir(dir);
  }
  return n;
}

/// @brief Open fds of this process (the opendir's own fd is counted each time, so differences are exact).
inline std::size_t open_fd_count() {
  return count_entries("/proc/self/fd");
}

/// @brief Threads of this process.
inline std::size_t thread_count() {
  return count_entries("/proc/self/task");
}

/// @brief A thread's name (/proc/self/task/TID/comm), without the newline.
inline std::string thread_name(pid_t tid) {
  std::ifstream comm(fmt::format("/proc/self/task/{}/comm", tid));
  std::string name;
  std::getline(comm, name);
  return name;
}

/// @brief An entropy source that yields 0, 1, 2, ... 255, 0, 1... across calls: what the device wrote is known.
/// (The device calls it with its own lock held, so the counter needs no lock of its own.)
inline virtio::rng::EntropySource counting_source() {
  auto next = std::make_shared<std::uint8_t>(0);
  return [next](std::span<std::uint8_t> out) -> Result<void> {
    for (auto& byte : out) {
      byte = (*next)++;
    }
    return {};
  };
}

/// @brief A virtio-rng configuration with `counting_source` as its entropy.
inline virtio::rng::RngConfig counting_rng_config() {
  virtio::rng::RngConfig config;
  config.source = counting_source();
  return config;
}

/// @brief Frontend options with `queues` rings and EVENT_IDX as given.
inline FrontendOptions frontend_options(std::uint16_t queues, bool event_idx = false) {
  FrontendOptions options;
  options.queues = queues;
  options.event_idx = event_idx;
  return options;
}

/// @brief Builds a request message.
inline vhost::Message make_message(vhost::Request request, vhost::Payload payload = {}, std::vector<Fd> fds = {},
                                   std::uint32_t flags = vhost::kVersion) {
  vhost::Message m;
  m.request = request;
  m.flags = flags;
  m.payload = std::move(payload);
  m.fds = std::move(fds);
  return m;
}

/// @brief A u64 request.
inline vhost::Message u64_message(vhost::Request request, std::uint64_t value) {
  return make_message(request, value);
}

/// @brief A vring-state request (SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE).
inline vhost::Message state_message(vhost::Request request, unsigned index, unsigned num) {
  return make_message(request, vhost_vring_state{.index = index, .num = num});
}

/// @brief True when the backend answers `message` (its own reply, or a REPLY_ACK if negotiated and asked for).
inline bool expects_reply(const vhost::Message& message, bool reply_ack_negotiated) {
  using vhost::Request;
  switch (message.request) {
    case Request::GetFeatures:
    case Request::GetProtocolFeatures:
    case Request::GetQueueNum:
    case Request::GetMaxMemSlots:
    case Request::GetVringBase:
    case Request::GetConfig:
      return true;
    default:
      return reply_ack_negotiated && message.needs_reply();
  }
}

/// @brief Sends `message` over `connection` and, if one is expected, waits for the reply.
inline Result<std::optional<vhost::Message>> exchange(vhost::Connection& connection, const vhost::Message& message,
                                                      bool reply_ack_negotiated) {
  if (auto sent = connection.send(message); !sent) {
    return std::unexpected(sent.error());
  }
  if (!expects_reply(message, reply_ack_negotiated)) {
    return std::nullopt;
  }
  const bool ack = message.needs_reply() && reply_ack_negotiated &&
                   vhost::payload_kind(message.request, vhost::Direction::ToFrontend) == vhost::PayloadKind::None;
  auto reply = connection.receive(vhost::Direction::ToFrontend, std::chrono::seconds(10), message.request, ack);
  if (!reply) {
    return std::unexpected(reply.error());
  }
  return std::optional<vhost::Message>(std::move(*reply));
}

/// @brief The frontend: its guest memory, drivers, eventfds and message builders.
class ScriptedFrontend {
 public:
  /// @brief Two memfd regions (see kRegion*), one `MockDriver` per ring (rings at 0x1000 + 64 KiB * q, buffers at
  /// 1 MiB + 128 KiB * q), and a kick, call and err eventfd per ring.
  explicit ScriptedFrontend(FrontendOptions options = {}) : options_(options) {
    std::vector<memory::GuestMemoryRegion> regions;
    const memory::RegionOptions shared{.backing = memory::Backing::memfd, .memfd_name = "scripted-frontend"};
    regions.push_back(must(memory::GuestMemoryRegion::create(memory::GuestAddress(kRegion0Gpa), kRegion0Size, shared)));
    regions.push_back(must(memory::GuestMemoryRegion::create(memory::GuestAddress(kRegion1Gpa), kRegion1Size, shared)));
    memory_ = std::make_unique<memory::GuestMemory>(must(memory::GuestMemory::from_regions(std::move(regions))));
    for (std::uint16_t q = 0; q < options_.queues; ++q) {
      drivers_.push_back(
          std::make_unique<MockDriver>(*memory_,
                                       MockLayout{.size = options_.queue_size,
                                                  .rings = memory::GuestAddress(0x1000 + 0x1'0000ull * q),
                                                  .buffers = memory::GuestAddress(0x10'0000 + 0x2'0000ull * q)},
                                       options_.event_idx));
      kicks_.push_back(must(event::EventFd::create()));
      calls_.push_back(must(event::EventFd::create()));
      errs_.push_back(must(event::EventFd::create()));
    }
  }

  /// @brief The frontend's view of guest memory.
  [[nodiscard]] const memory::GuestMemory& memory() const { return *memory_; }
  /// @brief The ring driver of queue `q`.
  [[nodiscard]] MockDriver& driver(std::uint16_t q) { return *drivers_.at(q); }
  /// @brief Queue `q`'s kick eventfd (the test writes it to notify).
  [[nodiscard]] const event::EventFd& kick_fd(std::uint16_t q) const { return kicks_.at(q); }
  /// @brief Queue `q`'s call eventfd (the backend writes it to interrupt).
  [[nodiscard]] const event::EventFd& call_fd(std::uint16_t q) const { return calls_.at(q); }
  /// @brief Queue `q`'s err eventfd.
  [[nodiscard]] const event::EventFd& err_fd(std::uint16_t q) const { return errs_.at(q); }
  /// @brief Replaces queue `q`'s call eventfd with a fresh one (QEMU does on MSI-X mask/unmask).
  void replace_call_fd(std::uint16_t q) { calls_.at(q) = must(event::EventFd::create()); }

  /// @brief Notifies queue `q`.
  void kick(std::uint16_t q) { ASSERT_TRUE(kicks_.at(q).write(1).has_value()); }
  /// @brief Takes the call eventfd's counter (0: no interrupt since the last call).
  [[nodiscard]] std::uint64_t take_calls(std::uint16_t q) const { return must(calls_.at(q).read()).value_or(0); }
  /// @brief Takes the err eventfd's counter.
  [[nodiscard]] std::uint64_t take_errs(std::uint16_t q) const { return must(errs_.at(q).read()).value_or(0); }

  /// @brief Region `i` as SET_MEM_TABLE / ADD_MEM_REG describe it (the frontend address is our real mapping).
  [[nodiscard]] vhost::MemoryRegion region(std::size_t i) const {
    const auto& r = memory_->regions()[i];
    return {.guest_phys_addr = r.start().raw(),
            .memory_size = r.size(),
            .userspace_addr = reinterpret_cast<std::uint64_t>(r.host_address()),
            .mmap_offset = 0};
  }
  /// @brief A duplicate of region `i`'s memfd (what SCM_RIGHTS would deliver).
  [[nodiscard]] Fd region_fd(std::size_t i) const { return must(memory_->regions()[i].fd().duplicate()); }
  /// @brief The frontend virtual address of guest-physical `gpa`.
  [[nodiscard]] std::uint64_t uaddr(memory::GuestAddress gpa) const {
    const auto* r = memory_->find_region(gpa);
    EXPECT_NE(r, nullptr);
    return reinterpret_cast<std::uint64_t>(r->host_address()) + (gpa.raw() - r->start().raw());
  }
  /// @brief Queue `q`'s ring addresses as SET_VRING_ADDR carries them.
  [[nodiscard]] vhost_vring_addr ring_addr(std::uint16_t q) const {
    const auto layout = drivers_.at(q)->queue_layout();
    return vhost_vring_addr{.index = q,
                            .flags = 0,
                            .desc_user_addr = uaddr(layout.descriptor_table),
                            .used_user_addr = uaddr(layout.used_ring),
                            .avail_user_addr = uaddr(layout.available_ring),
                            .log_guest_addr = 0};
  }

  // ---- messages ----

  /// @brief SET_MEM_TABLE with the given regions.
  [[nodiscard]] vhost::Message set_mem_table(const std::vector<std::size_t>& which = {0, 1}) const {
    vhost::MemoryTable table;
    std::vector<Fd> fds;
    for (const std::size_t i : which) {
      table.regions.push_back(region(i));
      fds.push_back(region_fd(i));
    }
    return make_message(vhost::Request::SetMemTable, std::move(table), std::move(fds));
  }
  /// @brief ADD_MEM_REG of region `i`.
  [[nodiscard]] vhost::Message add_mem_reg(std::size_t i) const {
    std::vector<Fd> fds;
    fds.push_back(region_fd(i));
    return make_message(vhost::Request::AddMemReg, vhost::SingleMemoryRegion{region(i)}, std::move(fds));
  }
  /// @brief REM_MEM_REG of region `i`.
  [[nodiscard]] vhost::Message rem_mem_reg(std::size_t i) const {
    return make_message(vhost::Request::RemMemReg, vhost::SingleMemoryRegion{region(i)});
  }
  /// @brief SET_VRING_NUM with the configured size.
  [[nodiscard]] vhost::Message vring_num(std::uint16_t q) const {
    return state_message(vhost::Request::SetVringNum, q, options_.queue_size);
  }
  /// @brief SET_VRING_BASE.
  [[nodiscard]] static vhost::Message vring_base(std::uint16_t q, unsigned base) {
    return state_message(vhost::Request::SetVringBase, q, base);
  }
  /// @brief GET_VRING_BASE.
  [[nodiscard]] static vhost::Message get_vring_base(std::uint16_t q) {
    return state_message(vhost::Request::GetVringBase, q, 0);
  }
  /// @brief SET_VRING_ADDR with the driver's layout.
  [[nodiscard]] vhost::Message vring_addr(std::uint16_t q) const {
    return make_message(vhost::Request::SetVringAddr, ring_addr(q));
  }
  /// @brief SET_VRING_KICK with (a duplicate of) queue `q`'s kick eventfd.
  [[nodiscard]] vhost::Message vring_kick(std::uint16_t q) const {
    return vring_fd(vhost::Request::SetVringKick, q, kicks_.at(q));
  }
  /// @brief SET_VRING_CALL with queue `q`'s call eventfd.
  [[nodiscard]] vhost::Message vring_call(std::uint16_t q) const {
    return vring_fd(vhost::Request::SetVringCall, q, calls_.at(q));
  }
  /// @brief SET_VRING_ERR with queue `q`'s err eventfd.
  [[nodiscard]] vhost::Message vring_err(std::uint16_t q) const {
    return vring_fd(vhost::Request::SetVringErr, q, errs_.at(q));
  }
  /// @brief SET_VRING_ENABLE.
  [[nodiscard]] static vhost::Message vring_enable(std::uint16_t q, bool enable) {
    return state_message(vhost::Request::SetVringEnable, q, enable ? 1 : 0);
  }
  /// @brief SET_VRING_KICK/CALL/ERR with `fd` duplicated.
  [[nodiscard]] static vhost::Message vring_fd(vhost::Request request, std::uint16_t q, const event::EventFd& fd) {
    std::vector<Fd> fds;
    Fd copy(::fcntl(fd.fd(), F_DUPFD_CLOEXEC, 0));
    EXPECT_TRUE(copy.valid()) << "dup of eventfd " << fd.fd();
    fds.push_back(std::move(copy));
    return make_message(request, std::uint64_t{q}, std::move(fds));
  }
  /// @brief SET_VRING_KICK/CALL/ERR with the "no fd" flag.
  [[nodiscard]] static vhost::Message vring_no_fd(vhost::Request request, std::uint16_t q) {
    return make_message(request, std::uint64_t{q} | vhost::kVringNoFdMask);
  }

  /// @brief QEMU 7.2's order (vhost_user_backend_init, vhost_dev_init, vhost_dev_start, then the enables):
  /// features and protocol features, SET_OWNER, SET_FEATURES, SET_MEM_TABLE, then per ring NUM, BASE, ADDR, KICK,
  /// CALL (and ERR), then SET_VRING_ENABLE 1 for every ring.
  [[nodiscard]] std::vector<vhost::Message> qemu_start(std::uint64_t features, std::uint64_t protocol_features) const {
    std::vector<vhost::Message> out;
    out.push_back(make_message(vhost::Request::GetFeatures));
    out.push_back(make_message(vhost::Request::GetProtocolFeatures));
    out.push_back(u64_message(vhost::Request::SetProtocolFeatures, protocol_features));
    out.push_back(make_message(vhost::Request::GetQueueNum));
    out.push_back(make_message(vhost::Request::SetOwner));
    out.push_back(u64_message(vhost::Request::SetFeatures, features));
    out.push_back(set_mem_table({0}));
    for (std::uint16_t q = 0; q < options_.queues; ++q) {
      out.push_back(vring_num(q));
      out.push_back(vring_base(q, 0));
      out.push_back(vring_addr(q));
      out.push_back(vring_kick(q));
      out.push_back(vring_call(q));
      out.push_back(vring_err(q));
    }
    for (std::uint16_t q = 0; q < options_.queues; ++q) {
      out.push_back(vring_enable(q, true));
    }
    return out;
  }

  /// @brief An order in DPDK's spirit, as unlike QEMU's as the spec allows: SET_OWNER, features, then per ring CALL
  /// first, ENABLE before KICK, and the memory table last of all.
  [[nodiscard]] std::vector<vhost::Message> dpdk_start(std::uint64_t features, std::uint64_t protocol_features) const {
    std::vector<vhost::Message> out;
    out.push_back(make_message(vhost::Request::SetOwner));
    out.push_back(make_message(vhost::Request::GetFeatures));
    out.push_back(make_message(vhost::Request::GetProtocolFeatures));
    out.push_back(u64_message(vhost::Request::SetProtocolFeatures, protocol_features));
    out.push_back(u64_message(vhost::Request::SetFeatures, features));
    for (std::uint16_t q = 0; q < options_.queues; ++q) {
      out.push_back(vring_call(q));
      out.push_back(vring_num(q));
      out.push_back(vring_base(q, 0));
      out.push_back(vring_addr(q));
      out.push_back(vring_enable(q, true));
      out.push_back(vring_kick(q));
    }
    out.push_back(set_mem_table({0}));
    return out;
  }

  /// @brief Publishes one rng request: a writable buffer of `length` bytes (filled with 0xee) on queue `q`.
  std::uint16_t add_rng_request(std::uint16_t q, std::uint32_t length = 64) {
    const MockBuffer buffer = driver(q).allocate(length, true, 0xee);
    const std::uint16_t head = driver(q).add_chain(std::span(&buffer, 1));
    buffers_.push_back(buffer);
    return head;
  }
  /// @brief The buffers `add_rng_request` handed out, in order.
  [[nodiscard]] const std::vector<MockBuffer>& rng_buffers() const { return buffers_; }

  /// @brief The value of a `Result` the test's setup needs (a failure is a bug in the test: abort it).
  template <typename T>
  static T must(Result<T> result) {
    if (!result) {
      ADD_FAILURE() << "ScriptedFrontend setup: " << result.error().message();
      std::abort();
    }
    return std::move(*result);
  }

 private:
  FrontendOptions options_;
  std::unique_ptr<memory::GuestMemory> memory_;
  std::vector<std::unique_ptr<MockDriver>> drivers_;
  std::vector<event::EventFd> kicks_;
  std::vector<event::EventFd> calls_;
  std::vector<event::EventFd> errs_;
  std::vector<MockBuffer> buffers_;
};

}  // namespace vmm::testing
