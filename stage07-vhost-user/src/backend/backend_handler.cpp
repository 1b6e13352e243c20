#include "vmm/vhost/backend/backend_handler.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace vmm::vhost {

namespace {

constexpr std::uint64_t kProtocolFeaturesMask = 1ull << kProtocolFeaturesBit;

// What this handler implements: offering anything else would promise messages it refuses.
constexpr std::uint64_t kImplementedProtocolFeatures =
    bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck) | bit(ProtocolFeature::Config) |
    bit(ProtocolFeature::ConfigureMemSlots) | bit(ProtocolFeature::ResetDevice);

// VHOST_VRING_F_LOG in vhost_vring_addr.flags: the frontend wants used-ring writes logged for migration.
constexpr std::uint32_t kVringFlagLog = 1u << VHOST_VRING_F_LOG;

std::string name_of(Request request) {
  return request_name(static_cast<std::uint32_t>(request));
}

Message reply(Request request, Payload payload) {
  Message m;
  m.request = request;
  m.flags = kVersion | kReplyFlag;
  m.payload = std::move(payload);
  return m;
}

template <typename T>
Result<const T*> payload_as(const Message& request, std::string_view what) {
  if (const T* payload = std::get_if<T>(&request.payload)) {
    return payload;
  }
  return logic_error(name_of(request.request), fmt::format("the payload is not {}", what));
}

// Sets O_NONBLOCK on an fd the frontend gave us. The open file is shared with the frontend, but every frontend
// creates its eventfds non-blocking anyway (QEMU, DPDK). It matters for a hostile one: a blocking "eventfd" that is
// really a pipe nobody drains would hang a worker in write(2), and a stop could never join it.
Result<void> make_nonblocking(const Fd& fd, std::string_view op) {
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) {
    return sys_error(op, errno, fmt::format("fcntl(F_GETFL) on fd {}", fd.get()));
  }
  if ((flags & O_NONBLOCK) == 0 && ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return sys_error(op, errno, fmt::format("fcntl(F_SETFL, O_NONBLOCK) on fd {}", fd.get()));
  }
  return {};
}

// A kick/call/err fd must be something epoll can watch and write(2) signals: an eventfd (anonymous inode, no file
// type), or at a pinch a pipe or socket. A regular file (a memfd, say) is always "readable" and epoll refuses it: a
// worker could not start. Refused here, where the error can name the request.
Result<void> check_notification_fd(const Fd& fd, std::string_view op) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return sys_error(op, errno, fmt::format("fstat on fd {}", fd.get()));
  }
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode)) {
    return logic_error(op, fmt::format("fd {} is a file, not an eventfd", fd.get()));
  }
  return {};
}

// The requests whose reply is their own (not a REPLY_ACK).
bool has_own_reply(Request request) {
  switch (request) {
    case Request::GetFeatures:
    case Request::GetProtocolFeatures:
    case Request::GetQueueNum:
    case Request::GetMaxMemSlots:
    case Request::GetVringBase:
    case Request::GetConfig:
      return true;
    default:
      return false;
  }
}

}  // namespace

// ---- what the workers and the interrupt share with the handler -----------------------------------------------------

struct BackendHandler::Shared {
  std::vector<std::unique_ptr<Vring>> rings;  // one per queue, fixed for the handler's life
  Tracer tracer;
  TraceSink warn;

  std::mutex error_mutex;  // a leaf lock
  std::optional<Error> last_error;
  std::atomic<std::uint64_t> config_signals{0};
  std::atomic<std::uint64_t> needs_reset{0};

  // Something went wrong: keep it, trace it, warn about it. Any thread.
  void report(const Error& error, std::string_view what) {
    {
      std::lock_guard lock(error_mutex);
      last_error = error;
    }
    const std::string line = fmt::format("{}: {}", what, error);
    tracer.note(line);
    if (warn) {
      warn(line);
    }
  }

  // The device cannot go on (the driver broke a ring rule): tell the frontend on every err fd.
  void device_needs_reset(const Error& error) {
    needs_reset.fetch_add(1, std::memory_order_relaxed);
    report(error, "device needs reset");
    for (const auto& ring : rings) {
      (void)ring->signal_err();
    }
  }
};

/// The interrupt the device gets: a used-buffer notification is a write to the ring's call eventfd, which the
/// frontend handed us (QEMU gives KVM the same eventfd as an irqfd, so the guest gets its interrupt without QEMU
/// running at all).
class BackendHandler::Interrupt final : public virtio::VirtioInterrupt {
 public:
  explicit Interrupt(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

  Result<void> signal_queue(std::uint16_t queue_index) override {
    if (queue_index >= shared_->rings.size()) {
      return logic_error("vhost-user interrupt", fmt::format("queue {} does not exist", queue_index));
    }
    Vring& ring = *shared_->rings[queue_index];
    auto written = ring.signal_call();
    if (!written) {
      return std::unexpected(std::move(written).error());
    }
    if (*written) {
      ring.counters()->interrupts.fetch_add(1, std::memory_order_relaxed);
    }
    return {};
  }

  Result<void> signal_config() override {
    // vmmlab offers no BACKEND_REQ channel, the only way a backend can send VHOST_USER_BACKEND_CONFIG_CHANGE_MSG.
    shared_->config_signals.fetch_add(1, std::memory_order_relaxed);
    shared_->tracer.note("configuration change notification dropped (no backend channel)");
    return {};
  }

 private:
  std::shared_ptr<Shared> shared_;
};

// ---- creation -------------------------------------------------------------------------------------------------------

Result<std::unique_ptr<BackendHandler>> BackendHandler::create(std::shared_ptr<virtio::VirtioDevice> device,
                                                               BackendOptions options) {
  const std::string op = "vhost-user backend";
  if (!device) {
    return logic_error(op, "no device");
  }
  if (const std::uint64_t extra = options.protocol_features & ~kImplementedProtocolFeatures; extra != 0) {
    return logic_error(
        op, fmt::format("protocol features {:#x} ({}) are not implemented", extra, describe_protocol_features(extra)));
  }
  if (options.max_mem_slots == 0) {
    return logic_error(op, "max_mem_slots must be at least 1");
  }
  // A device without configuration space does not offer CONFIG: QEMU warns about a backend that claims it for a
  // device type whose QEMU side has no configuration (vhost-user-rng-pci does).
  if (device->config_size() == 0) {
    options.protocol_features &= ~bit(ProtocolFeature::Config);
  }
  auto max_sizes = device->queue_max_sizes();
  if (max_sizes.empty() || max_sizes.size() > kVringIndexMask + 1) {
    return logic_error(op, fmt::format("{} has {} queues; vhost-user can address 1 to {}", device->name(),
                                       max_sizes.size(), kVringIndexMask + 1));
  }
  return std::unique_ptr<BackendHandler>(
      new BackendHandler(std::move(device), std::move(options), std::move(max_sizes)));
}

BackendHandler::BackendHandler(std::shared_ptr<virtio::VirtioDevice> device, BackendOptions options,
                               std::vector<std::uint16_t> max_sizes)
    : device_(std::move(device)),
      options_(std::move(options)),
      max_sizes_(std::move(max_sizes)),
      shared_(std::make_shared<Shared>()) {
  shared_->tracer = options_.tracer;
  shared_->warn = options_.warn;
  for (std::size_t q = 0; q < max_sizes_.size(); ++q) {
    shared_->rings.push_back(std::make_unique<Vring>(static_cast<std::uint16_t>(q), max_sizes_[q]));
  }
}

BackendHandler::~BackendHandler() {
  std::lock_guard lock(mutex_);
  // Workers use the device and the rings: they must be gone, and the device idle, before anything goes away.
  stop_locked();
}

// ---- handle / serve -------------------------------------------------------------------------------------------------

Result<std::optional<Message>> BackendHandler::handle(Message request) {
  std::lock_guard lock(mutex_);
  const Request code = request.request;
  const bool wants_ack = request.needs_reply();
  auto result = dispatch_locked(request);
  if (!result) {
    ++refused_;
    shared_->report(result.error(), fmt::format("refused {}", name_of(code)));
    return std::unexpected(std::move(result).error());
  }
  if (*result) {
    return result;
  }
  // REPLY_ACK: "the backend must reply ... with a u64 payload of 0 for success", unless the request has a reply of
  // its own (then that reply is the acknowledgement). Checked after the request, so SET_PROTOCOL_FEATURES counts.
  if (wants_ack && !has_own_reply(code) && negotiated_locked(ProtocolFeature::ReplyAck)) {
    return reply(code, std::uint64_t{0});
  }
  return std::nullopt;
}

std::optional<Message> BackendHandler::serve(Message request) {
  const Request code = request.request;
  const bool wants_ack = request.needs_reply();
  // What the failed form of a reply needs from the request (the message itself is consumed by handle).
  std::uint32_t ring_index = 0;
  if (const auto* state = std::get_if<vhost_vring_state>(&request.payload)) {
    ring_index = state->index;
  }
  DeviceConfig config_header;
  if (const auto* config = std::get_if<DeviceConfig>(&request.payload)) {
    config_header.offset = config->offset;
    config_header.flags = config->flags;
  }

  auto result = handle(std::move(request));
  if (result) {
    return std::move(*result);
  }

  // A frontend waiting for a reply must get one, or it hangs until its own timeout.
  switch (code) {
    case Request::GetFeatures:
    case Request::GetProtocolFeatures:
    case Request::GetQueueNum:
    case Request::GetMaxMemSlots:
      return reply(code, std::uint64_t{0});
    case Request::GetVringBase:
      return reply(code, vhost_vring_state{.index = ring_index, .num = 0});
    case Request::GetConfig:
      return reply(code, config_header);  // no bytes: QEMU checks the size and fails the read
    default:
      break;
  }
  bool ack = false;
  {
    std::lock_guard lock(mutex_);
    ack = wants_ack && negotiated_locked(ProtocolFeature::ReplyAck);
  }
  if (ack) {
    return reply(code, std::uint64_t{1});
  }
  return std::nullopt;
}

Result<std::optional<Message>> BackendHandler::dispatch_locked(Message& request) {
  const std::string op = name_of(request.request);
  if (request.is_reply()) {
    return logic_error(op, "a reply flag on a request");
  }
  switch (request.request) {
    case Request::GetFeatures:
      return reply(request.request, device_->features() | kProtocolFeaturesMask);

    case Request::SetFeatures: {
      auto features = payload_as<std::uint64_t>(request, "a u64");
      if (!features) {
        return std::unexpected(std::move(features).error());
      }
      return set_features_locked(**features);
    }

    case Request::GetProtocolFeatures:
      return reply(request.request, options_.protocol_features);

    case Request::SetProtocolFeatures: {
      auto features = payload_as<std::uint64_t>(request, "a u64");
      if (!features) {
        return std::unexpected(std::move(features).error());
      }
      return set_protocol_features_locked(**features);
    }

    case Request::SetOwner:
      // QEMU sends one per connection; a second is harmless, and refusing it would only make a frontend give up.
      if (owned_) {
        shared_->tracer.note("SET_OWNER again: the session already has its owner");
      }
      owned_ = true;
      return std::nullopt;

    case Request::ResetOwner:
    case Request::ResetDevice:
      reset_session_locked(false);
      if (request.request == Request::ResetOwner) {
        owned_ = false;
      }
      return std::nullopt;

    case Request::GetQueueNum:
      return reply(request.request, static_cast<std::uint64_t>(max_sizes_.size()));

    case Request::GetMaxMemSlots:
      return reply(request.request, static_cast<std::uint64_t>(options_.max_mem_slots));

    case Request::SetMemTable:
      return set_mem_table_locked(request);
    case Request::AddMemReg:
      return add_mem_reg_locked(request);
    case Request::RemMemReg:
      return rem_mem_reg_locked(request);

    case Request::SetVringNum:
      return set_vring_num_locked(request);
    case Request::SetVringAddr:
      return set_vring_addr_locked(request);
    case Request::SetVringBase:
      return set_vring_base_locked(request);
    case Request::GetVringBase:
      return get_vring_base_locked(request);
    case Request::SetVringKick:
    case Request::SetVringCall:
    case Request::SetVringErr:
      return set_vring_fd_locked(request);
    case Request::SetVringEnable:
      return set_vring_enable_locked(request);

    case Request::GetConfig:
      return get_config_locked(request);
    case Request::SetConfig:
      return set_config_locked(request);

    default:
      return logic_error(op, "not supported by vmmlab's backend");
  }
}

// ---- features -------------------------------------------------------------------------------------------------------

Result<std::optional<Message>> BackendHandler::set_features_locked(std::uint64_t features) {
  const std::uint64_t offered = device_->features() | kProtocolFeaturesMask;
  if (const std::uint64_t extra = features & ~offered; extra != 0) {
    return logic_error("SET_FEATURES", fmt::format("{:#x} includes {:#x} ({}), never offered (offered {:#x})", features,
                                                   extra, describe_features(extra), offered));
  }
  if (features_set_ && features == acked_features_) {
    return std::nullopt;  // QEMU sends it again at every start: nothing changes, nothing restarts
  }
  restart_locked([&] {
    acked_features_ = features;
    features_set_ = true;
  });
  return std::nullopt;
}

Result<std::optional<Message>> BackendHandler::set_protocol_features_locked(std::uint64_t features) {
  if (const std::uint64_t extra = features & ~options_.protocol_features; extra != 0) {
    return logic_error("SET_PROTOCOL_FEATURES",
                       fmt::format("{:#x} includes {:#x} ({}), never offered (offered {:#x})", features, extra,
                                   describe_protocol_features(extra), options_.protocol_features));
  }
  protocol_features_ = features;
  return std::nullopt;
}

bool BackendHandler::negotiated_locked(ProtocolFeature feature) const noexcept {
  return (protocol_features_ & bit(feature)) != 0;
}

bool BackendHandler::enabled_by_default_locked() const noexcept {
  // The spec: "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts directly in the enabled
  // state. If [it] has been negotiated, the ring is initialized in a disabled state."
  return (acked_features_ & kProtocolFeaturesMask) == 0;
}

// ---- memory ---------------------------------------------------------------------------------------------------------

Result<std::optional<Message>> BackendHandler::set_mem_table_locked(Message& request) {
  auto table = payload_as<MemoryTable>(request, "a memory table");
  if (!table) {
    return std::unexpected(std::move(table).error());
  }
  auto memory =
      BackendMemoryTable::create((*table)->regions, std::move(request.fds), options_.max_mem_slots, "SET_MEM_TABLE");
  if (!memory) {
    return std::unexpected(std::move(memory).error());
  }
  restart_locked([&] { memory_ = std::move(*memory); });
  return std::nullopt;
}

Result<std::optional<Message>> BackendHandler::add_mem_reg_locked(Message& request) {
  if (!negotiated_locked(ProtocolFeature::ConfigureMemSlots)) {
    return logic_error("ADD_MEM_REG", "needs protocol feature CONFIGURE_MEM_SLOTS, which was not negotiated");
  }
  auto single = payload_as<SingleMemoryRegion>(request, "one memory region");
  if (!single) {
    return std::unexpected(std::move(single).error());
  }
  if (request.fds.size() != 1) {
    return logic_error("ADD_MEM_REG", fmt::format("{} fds instead of 1", request.fds.size()));
  }
  auto memory =
      memory_.with_region((*single)->region, std::move(request.fds[0]), options_.max_mem_slots, "ADD_MEM_REG");
  if (!memory) {
    return std::unexpected(std::move(memory).error());
  }
  restart_locked([&] { memory_ = std::move(*memory); });
  return std::nullopt;
}

Result<std::optional<Message>> BackendHandler::rem_mem_reg_locked(const Message& request) {
  if (!negotiated_locked(ProtocolFeature::ConfigureMemSlots)) {
    return logic_error("REM_MEM_REG", "needs protocol feature CONFIGURE_MEM_SLOTS, which was not negotiated");
  }
  auto single = payload_as<SingleMemoryRegion>(request, "one memory region");
  if (!single) {
    return std::unexpected(std::move(single).error());
  }
  auto memory = memory_.without_region((*single)->region, "REM_MEM_REG");
  if (!memory) {
    return std::unexpected(std::move(memory).error());
  }
  restart_locked([&] { memory_ = std::move(*memory); });
  return std::nullopt;
}

// ---- rings ----------------------------------------------------------------------------------------------------------

Result<Vring*> BackendHandler::ring_locked(std::uint64_t index, Request request) {
  if (index >= shared_->rings.size()) {
    return logic_error(name_of(request),
                       fmt::format("queue index {} out of range: {} has {} queue{}", index, device_->name(),
                                   shared_->rings.size(), shared_->rings.size() == 1 ? "" : "s"));
  }
  return shared_->rings[index].get();
}

bool BackendHandler::ready_locked(const Vring& ring) const noexcept {
  const VringConfig& c = ring.config();
  return c.num != 0 && c.addr.has_value() && c.kick.valid() && c.enabled.value_or(enabled_by_default_locked());
}

Result<virtio::QueueLayout> BackendHandler::translate_locked(const Vring& ring, std::uint16_t num,
                                                             const vhost_vring_addr& addr) const {
  using L = virtio::QueueLayout;
  const auto area = [&](std::uint64_t uaddr, std::uint64_t bytes,
                        std::string_view what) -> Result<memory::GuestAddress> {
    auto gpa = memory_.translate(uaddr, bytes);
    if (!gpa) {
      return std::unexpected(std::move(gpa).error().with_context(
          fmt::format("vring {} {} ({} entries: {:#x} bytes)", ring.index(), what, num, bytes)));
    }
    return gpa;
  };
  auto desc = area(addr.desc_user_addr, L::descriptor_table_bytes(num), "descriptor table");
  if (!desc) {
    return std::unexpected(std::move(desc).error());
  }
  auto avail = area(addr.avail_user_addr, L::available_ring_bytes(num), "available ring");
  if (!avail) {
    return std::unexpected(std::move(avail).error());
  }
  auto used = area(addr.used_user_addr, L::used_ring_bytes(num), "used ring");
  if (!used) {
    return std::unexpected(std::move(used).error());
  }
  return L{.size = num, .descriptor_table = *desc, .available_ring = *avail, .used_ring = *used};
}

template <typename Apply>
void BackendHandler::update_ring_locked(Vring& ring, Apply apply) {
  if (ring.running_layout) {
    // The running activation uses this ring: stop first, so where it stopped is recorded before the change.
    stop_locked();
    apply();
    start_locked();
    return;
  }
  apply();
  if (running_ && ready_locked(ring)) {
    // Another ring joins the set: the activation is all-or-nothing, so start over with every ready ring.
    stop_locked();
  }
  start_locked();
}

template <typename Apply>
void BackendHandler::restart_locked(Apply apply) {
  stop_locked();
  apply();
  start_locked();
}

// A per-ring request's vring state and the ring it names (SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE).
Result<std::pair<const vhost_vring_state*, Vring*>> BackendHandler::vring_state_locked(const Message& request) {
  auto state = payload_as<vhost_vring_state>(request, "a vring state");
  if (!state) {
    return std::unexpected(std::move(state).error());
  }
  auto ring = ring_locked((*state)->index, request.request);
  if (!ring) {
    return std::unexpected(std::move(ring).error());
  }
  return std::pair{*state, *ring};
}

Result<std::optional<Message>> BackendHandler::set_vring_num_locked(const Message& request) {
  auto target = vring_state_locked(request);
  if (!target) {
    return std::unexpected(std::move(target).error());
  }
  const auto [state, ring] = *target;
  const unsigned num = state->num;
  const std::uint16_t max = ring->max_size();
  if (num == 0 || num > max || !std::has_single_bit(num)) {
    return logic_error("SET_VRING_NUM",
                       fmt::format("vring {}: size {} must be a power of two from 1 to {}", ring->index(), num, max));
  }
  if (ring->config().num != num) {
    update_ring_locked(*ring, [&] { ring->config().num = static_cast<std::uint16_t>(num); });
  }
  return std::nullopt;
}

Result<std::optional<Message>> BackendHandler::set_vring_addr_locked(const Message& request) {
  auto addr = payload_as<vhost_vring_addr>(request, "vring addresses");
  if (!addr) {
    return std::unexpected(std::move(addr).error());
  }
  auto ring = ring_locked((*addr)->index, request.request);
  if (!ring) {
    return std::unexpected(std::move(ring).error());
  }
  const vhost_vring_addr& a = **addr;
  if ((a.flags & kVringFlagLog) != 0) {
    return logic_error("SET_VRING_ADDR", fmt::format("vring {}: VHOST_VRING_F_LOG asks for dirty logging, which "
                                                     "this backend does not offer (no VHOST_F_LOG_ALL)",
                                                     a.index));
  }
  // With memory and a size known, check now; otherwise (DPDK sends memory after the rings) when the ring starts.
  if (!memory_.empty() && (*ring)->config().num != 0) {
    if (auto layout = translate_locked(**ring, (*ring)->config().num, a); !layout) {
      return std::unexpected(std::move(layout).error());
    }
  }
  const auto& old = (*ring)->config().addr;
  const bool same = old && old->desc_user_addr == a.desc_user_addr && old->avail_user_addr == a.avail_user_addr &&
                    old->used_user_addr == a.used_user_addr && old->flags == a.flags;
  if (!same) {
    update_ring_locked(**ring, [&] { (*ring)->config().addr = a; });
  }
  return std::nullopt;
}

Result<std::optional<Message>> BackendHandler::set_vring_base_locked(const Message& request) {
  auto target = vring_state_locked(request);
  if (!target) {
    return std::unexpected(std::move(target).error());
  }
  const auto [state, ring] = *target;
  const unsigned base = state->num;
  if (base > 0xffff) {
    return logic_error("SET_VRING_BASE", fmt::format("vring {}: base {:#x} does not fit a split ring's 16-bit index",
                                                     ring->index(), base));
  }
  // Both indices: whatever was popped was also returned when the frontend stopped the ring (rust-vmm and DPDK do the
  // same; the kernel's vhost reads used->idx instead).
  update_ring_locked(*ring, [&] {
    ring->config().next_avail = static_cast<std::uint16_t>(base);
    ring->config().next_used = static_cast<std::uint16_t>(base);
  });
  return std::nullopt;
}

Result<std::optional<Message>> BackendHandler::get_vring_base_locked(const Message& request) {
  auto target = vring_state_locked(request);
  if (!target) {
    return std::unexpected(std::move(target).error());
  }
  const auto [state, ring] = *target;
  // "Stop ring upon receiving VHOST_USER_GET_VRING_BASE": stopping records where the device got to; dropping the kick
  // fd keeps the ring stopped until the frontend starts it again with SET_VRING_KICK (as rust-vmm and DPDK do).
  update_ring_locked(*ring, [&] { ring->config().kick = Fd(); });
  return reply(request.request, vhost_vring_state{.index = state->index, .num = ring->config().next_avail});
}

Result<std::optional<Message>> BackendHandler::set_vring_fd_locked(Message& request) {
  const Request code = request.request;
  const std::string op = name_of(code);
  if (!std::holds_alternative<std::uint64_t>(request.payload)) {
    return logic_error(op, "the payload is not a u64");
  }
  const VringFd which = request.vring_fd();
  auto ring = ring_locked(which.index, code);
  if (!ring) {
    return std::unexpected(std::move(ring).error());
  }
  Fd fd;
  if (!which.no_fd) {
    if (request.fds.size() != 1) {
      return logic_error(op, fmt::format("vring {}: {} fds instead of 1", which.index, request.fds.size()));
    }
    if (auto ok = check_notification_fd(request.fds[0], op); !ok) {
      return std::unexpected(std::move(ok).error());
    }
    if (auto ok = make_nonblocking(request.fds[0], op); !ok) {
      return std::unexpected(std::move(ok).error());
    }
    fd = std::move(request.fds[0]);
  }
  switch (code) {
    case Request::SetVringKick:
      if (!fd) {
        return logic_error(op, fmt::format("vring {}: no kick fd (polling mode) is not supported: a worker waits on "
                                           "the kick eventfd",
                                           which.index));
      }
      update_ring_locked(**ring, [&] { (*ring)->config().kick = std::move(fd); });
      break;
    case Request::SetVringCall:
      // No restart: the device keeps running and its next interrupt goes to the new fd (QEMU swaps it whenever the
      // guest masks or unmasks the queue's MSI-X vector).
      (*ring)->set_call(std::move(fd));
      break;
    default:
      (*ring)->set_err(std::move(fd));
      break;
  }
  return std::nullopt;
}

Result<std::optional<Message>> BackendHandler::set_vring_enable_locked(const Message& request) {
  auto target = vring_state_locked(request);
  if (!target) {
    return std::unexpected(std::move(target).error());
  }
  const auto [state, ring] = *target;
  const unsigned num = state->num;
  if (num > 1) {
    return logic_error("SET_VRING_ENABLE",
                       fmt::format("vring {}: {} is neither 0 (disable) nor 1 (enable)", ring->index(), num));
  }
  const bool enable = num == 1;
  const bool now = ring->config().enabled.value_or(enabled_by_default_locked());
  if (now == enable) {
    ring->config().enabled = enable;  // explicit from now on; readiness is unchanged, so nothing restarts
  } else {
    update_ring_locked(*ring, [&] { ring->config().enabled = enable; });
  }
  return std::nullopt;
}

// ---- device configuration -------------------------------------------------------------------------------------------

Result<std::optional<Message>> BackendHandler::get_config_locked(const Message& request) {
  auto config = payload_as<DeviceConfig>(request, "a device configuration");
  if (!config) {
    return std::unexpected(std::move(config).error());
  }
  const std::uint64_t size = (*config)->bytes.size();
  const std::uint64_t offset = (*config)->offset;
  if (offset + size > device_->config_size()) {
    return logic_error("GET_CONFIG", fmt::format("bytes [{:#x}, +{:#x}) lie outside {}'s {}-byte configuration", offset,
                                                 size, device_->name(), device_->config_size()));
  }
  DeviceConfig out{.offset = (*config)->offset, .flags = (*config)->flags, .bytes = std::vector<std::uint8_t>(size)};
  device_->read_config(offset, out.bytes);
  return reply(request.request, std::move(out));
}

Result<std::optional<Message>> BackendHandler::set_config_locked(const Message& request) {
  auto config = payload_as<DeviceConfig>(request, "a device configuration");
  if (!config) {
    return std::unexpected(std::move(config).error());
  }
  const std::uint64_t size = (*config)->bytes.size();
  const std::uint64_t offset = (*config)->offset;
  if (offset + size > device_->config_size()) {
    return logic_error("SET_CONFIG", fmt::format("bytes [{:#x}, +{:#x}) lie outside {}'s {}-byte configuration", offset,
                                                 size, device_->name(), device_->config_size()));
  }
  device_->write_config(offset, (*config)->bytes);
  return std::nullopt;
}

// ---- activation -----------------------------------------------------------------------------------------------------

void BackendHandler::start_locked() {
  if (running_ || !features_set_ || memory_.empty()) {
    return;
  }
  const std::uint64_t features = acked_features_ & ~kProtocolFeaturesMask;
  const virtio::QueueFeatures queue_features{.event_idx = virtio::has_feature(features, VIRTIO_RING_F_EVENT_IDX),
                                             .indirect = virtio::has_feature(features, VIRTIO_RING_F_INDIRECT_DESC)};

  virtio::Activation activation;
  activation.memory = &memory_.memory();
  activation.features = features;
  activation.queues.resize(shared_->rings.size());
  std::vector<std::pair<std::uint16_t, virtio::QueueLayout>> started;
  for (auto& ring : shared_->rings) {
    if (!ready_locked(*ring)) {
      continue;
    }
    const VringConfig& c = ring->config();
    auto layout = translate_locked(*ring, c.num, *c.addr);
    if (!layout) {
      shared_->report(layout.error(), fmt::format("vring {} not started", ring->index()));
      continue;
    }
    auto queue =
        virtio::SplitQueue::create(memory_.memory(), *layout, ring->max_size(), queue_features, ring->counters());
    if (!queue) {
      shared_->report(queue.error(), fmt::format("vring {} not started", ring->index()));
      continue;
    }
    queue->set_next_avail(c.next_avail);
    queue->set_next_used(c.next_used);
    activation.queues[ring->index()] = std::move(*queue);
    started.emplace_back(ring->index(), *layout);
  }
  if (started.empty()) {
    return;
  }
  activation.interrupt = std::make_shared<Interrupt>(shared_);
  activation.needs_reset = [shared = shared_](const Error& error) { shared->device_needs_reset(error); };

  if (auto ok = device_->activate(std::move(activation)); !ok) {
    shared_->report(ok.error(), fmt::format("{} refused the activation", device_->name()));
    return;
  }
  running_ = true;
  ++activations_;
  for (const auto& [q, layout] : started) {
    shared_->rings[q]->running_layout = layout;
  }
  for (const auto& [q, layout] : started) {
    Vring& ring = *shared_->rings[q];
    auto worker = VringWorker::start(VringWorkerParams{
        .thread_name = vring_worker_name(device_->name(), q),
        .queue = q,
        .kick_fd = ring.config().kick.get(),
        .counters = ring.counters(),
        .device = device_,
        .on_error =
            [shared = shared_, q](const Error& error) {
              shared->report(error, fmt::format("vring {}", q));
              (void)shared->rings[q]->signal_err();
            },
    });
    if (!worker) {
      shared_->report(worker.error(), fmt::format("vring {} worker", q));
      stop_locked();
      return;
    }
    workers_.push_back(std::move(*worker));
  }
  if (shared_->tracer.enabled()) {
    std::string queues;
    for (const auto& [q, layout] : started) {
      const VringConfig& c = shared_->rings[q]->config();
      queues += fmt::format(" q{}(num={} base={})", q, c.num, c.next_avail);
    }
    shared_->tracer.note(
        fmt::format("{} activated (#{}) with features {:#x}:{}", device_->name(), activations_, features, queues));
  }
}

void BackendHandler::stop_locked() {
  if (!running_) {
    return;
  }
  // Workers first: after this nothing calls queue_notify. They hold none of our locks, so joining cannot deadlock.
  for (auto& worker : workers_) {
    worker->stop();
  }
  workers_.clear();
  // Then the device: when reset returns it has let go of the queues, the memory and the interrupt (and any deferred
  // work of its own, such as the rng's retry timer, is cancelled).
  device_->reset();
  running_ = false;

  // Where did the device stop? Not by asking it (VirtioDevice has no such call, and the device must not need one):
  // every chain SplitQueue::pop took from the available ring, valid or not, was counted in `chains`, and undo_pop
  // (a rate-limited device putting one back) uncounted it. So the next available index is the base plus the chains
  // consumed in this activation, modulo 2^16; likewise the used index and `used`. The counters are then folded into
  // the ring's cumulative totals and cleared for the next activation.
  std::string where;
  for (auto& ring : shared_->rings) {
    if (!ring->running_layout) {
      continue;
    }
    const auto live = ring->fold_counters();
    VringConfig& c = ring->config();
    c.next_avail = static_cast<std::uint16_t>(c.next_avail + live.chains);
    c.next_used = static_cast<std::uint16_t>(c.next_used + live.used);
    ring->running_layout.reset();
    if (shared_->tracer.enabled()) {
      where += fmt::format(" q{}(next_avail={} next_used={})", ring->index(), c.next_avail, c.next_used);
    }
  }
  if (shared_->tracer.enabled()) {
    shared_->tracer.note(fmt::format("{} stopped:{}", device_->name(), where));
  }
}

void BackendHandler::reset_session_locked(bool all) {
  stop_locked();
  for (auto& ring : shared_->rings) {
    ring->forget();
  }
  memory_ = BackendMemoryTable();
  acked_features_ = 0;
  features_set_ = false;
  if (all) {
    protocol_features_ = 0;
    owned_ = false;
  }
}

void BackendHandler::disconnect() {
  std::lock_guard lock(mutex_);
  reset_session_locked(true);
}

// ---- observability --------------------------------------------------------------------------------------------------

std::uint64_t BackendHandler::offered_features() const {
  return device_->features() | kProtocolFeaturesMask;
}

std::uint64_t BackendHandler::acked_features() const {
  std::lock_guard lock(mutex_);
  return acked_features_;
}

bool BackendHandler::features_set() const {
  std::lock_guard lock(mutex_);
  return features_set_;
}

std::uint64_t BackendHandler::protocol_features() const {
  std::lock_guard lock(mutex_);
  return protocol_features_;
}

bool BackendHandler::owned() const {
  std::lock_guard lock(mutex_);
  return owned_;
}

bool BackendHandler::running() const {
  std::lock_guard lock(mutex_);
  return running_;
}

std::vector<VringSnapshot> BackendHandler::rings() const {
  std::lock_guard lock(mutex_);
  std::vector<VringSnapshot> out;
  for (const auto& ring : shared_->rings) {
    out.push_back(ring->snapshot(enabled_by_default_locked()));
  }
  return out;
}

VringSnapshot BackendHandler::ring(std::uint16_t index) const {
  std::lock_guard lock(mutex_);
  return shared_->rings.at(index)->snapshot(enabled_by_default_locked());
}

std::vector<MemoryRegion> BackendHandler::memory_regions() const {
  std::lock_guard lock(mutex_);
  const auto regions = memory_.regions();
  return {regions.begin(), regions.end()};
}

std::vector<virtio::QueueCountersSnapshot> BackendHandler::queue_counters() const {
  std::lock_guard lock(mutex_);
  std::vector<virtio::QueueCountersSnapshot> out;
  for (const auto& ring : shared_->rings) {
    out.push_back(ring->total_counters());
  }
  return out;
}

std::optional<Error> BackendHandler::last_error() const {
  std::lock_guard lock(shared_->error_mutex);
  return shared_->last_error;
}

std::uint64_t BackendHandler::activations() const {
  std::lock_guard lock(mutex_);
  return activations_;
}

std::uint64_t BackendHandler::refused() const {
  std::lock_guard lock(mutex_);
  return refused_;
}

std::uint64_t BackendHandler::config_signals() const {
  return shared_->config_signals.load(std::memory_order_relaxed);
}

std::uint64_t BackendHandler::needs_reset_reports() const {
  return shared_->needs_reset.load(std::memory_order_relaxed);
}

std::vector<pid_t> BackendHandler::worker_tids() const {
  std::lock_guard lock(mutex_);
  std::vector<pid_t> out;
  for (const auto& worker : workers_) {
    if (auto tid = worker->tid()) {
      out.push_back(*tid);
    }
  }
  return out;
}

}  // namespace vmm::vhost
