#include "vmm/vhost/frontend.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string_view>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "vmm/event/event_manager.hpp"
#include "vmm/virtio/uapi.hpp"

namespace vmm::vhost {

namespace {

// The protocol features this frontend knows how to use. CONFIGURE_MEM_SLOTS is left out on purpose: guest memory is
// fixed for the VM's life and fits one SET_MEM_TABLE (at most 8 regions).
constexpr std::uint64_t kOurProtocolFeatures =
    bit(ProtocolFeature::Mq) | bit(ProtocolFeature::ReplyAck) | bit(ProtocolFeature::Config);

// The virtio features a driver may see: the device-specific bits 0..23 and the ring/transport features the transport
// and `SplitQueue` implement. Everything else (bit 30, LOG_ALL, NOTIFY_ON_EMPTY, RING_PACKED, ACCESS_PLATFORM...)
// promises something vmmlab's transport does not do.
constexpr std::uint64_t kDeviceFeatureBits = (1ull << 24) - 1;
constexpr std::uint64_t kOfferable = kDeviceFeatureBits | virtio::kCommonFeatures;

// VringFd's index is 8 bits wide.
constexpr std::uint32_t kMaxQueues = 256;
constexpr std::uint32_t kMaxQueueSize = 32768;

// pthread_setname_np's limit is 15 characters; this fits.
constexpr const char* kThreadName = "vu-frontend";

// The requests that come back with an answer of their own (a SET_* only answers when asked for an ack).
bool has_reply(Request request) noexcept {
  switch (request) {
    case Request::GetFeatures:
    case Request::GetProtocolFeatures:
    case Request::GetQueueNum:
    case Request::GetVringBase:
    case Request::GetConfig:
    case Request::GetMaxMemSlots:
      return true;
    default:
      return false;
  }
}

// A second descriptor for an fd we keep (a message owns the fds it carries).
Result<Fd> duplicate_fd(int fd, std::string_view what) {
  Fd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!copy) {
    return sys_error("fcntl(F_DUPFD_CLOEXEC)", errno, std::string(what));
  }
  return copy;
}

// A message to send (aggregate initialisation would have to spell every field).
Message make_message(Request request, Payload payload = std::monostate{}, std::uint32_t flags = kVersion,
                     std::vector<Fd> fds = {}) {
  Message message;
  message.request = request;
  message.flags = flags;
  message.payload = std::move(payload);
  message.fds = std::move(fds);
  return message;
}

std::string device_name(std::uint16_t type) {
  switch (type) {
    case VIRTIO_ID_BLOCK:
      return "vhost-user-blk";
    case VIRTIO_ID_RNG:
      return "vhost-user-rng";
    default:
      return fmt::format("vhost-user-{}", type);
  }
}

}  // namespace

/// The event thread's view of the frontend's fds. Lives in the thread's EventManager for the frontend's life.
class VhostUserFrontend::Subscriber final : public event::EventSubscriber {
 public:
  explicit Subscriber(VhostUserFrontend& frontend) : frontend_(frontend) {}

  // A failed `ops.add` makes EventManager::add_subscriber fail, and with it `connect`.
  void init(event::EventOps& ops) override {
    // Not EPOLLIN: replies are read by the thread that sent the request. A hangup is all this thread wants to know.
    (void)ops.add(frontend_.connection_.socket().get(), EPOLLRDHUP);
    for (const QueueFds& fds : frontend_.queue_fds_) {
      (void)ops.add(fds.relay.fd(), EPOLLIN);
      (void)ops.add(fds.err.fd(), EPOLLIN);
    }
    (void)ops.add(frontend_.stop_event_.fd(), EPOLLIN);
  }

  void process(int fd, std::uint32_t /*events*/, event::EventOps& ops) override {
    if (fd == frontend_.stop_event_.fd()) {
      stop_.store(true, std::memory_order_release);
      return;  // the destructor drains nothing: the eventfd goes with the frontend
    }
    if (fd == frontend_.connection_.socket().get()) {
      // Level-triggered: a hung-up socket stays ready for ever. It is of no further use to this thread.
      (void)ops.remove(fd);
      frontend_.on_hangup();
      return;
    }
    for (std::size_t q = 0; q < frontend_.queue_fds_.size(); ++q) {
      if (fd == frontend_.queue_fds_[q].relay.fd()) {
        frontend_.on_relay(static_cast<std::uint16_t>(q));
        return;
      }
      if (fd == frontend_.queue_fds_[q].err.fd()) {
        frontend_.on_backend_error(static_cast<std::uint16_t>(q));
        return;
      }
    }
  }

  [[nodiscard]] const std::atomic<bool>& stop_flag() const noexcept { return stop_; }

 private:
  VhostUserFrontend& frontend_;
  std::atomic<bool> stop_{false};
};

// ---- Connecting ----------------------------------------------------------------------------------------------------

Result<std::shared_ptr<VhostUserFrontend>> VhostUserFrontend::connect(FrontendConfig config) {
  const std::string op = "vhost-user frontend";
  if (config.socket_path.empty()) {
    return logic_error(op, "no socket path");
  }
  if (config.queues == 0 || config.queues > kMaxQueues) {
    return logic_error(
        op, fmt::format("{}: {} queues (1 to {} can be addressed)", config.socket_path, config.queues, kMaxQueues));
  }
  if (!std::has_single_bit(config.queue_size) || config.queue_size > kMaxQueueSize) {
    return logic_error(op, fmt::format("{}: queue size {} is not a power of two in [1, {}]", config.socket_path,
                                       config.queue_size, kMaxQueueSize));
  }
  if (config.config_size > kMaxConfigSize) {
    return logic_error(op, fmt::format("{}: {} bytes of device configuration (GET_CONFIG carries at most {})",
                                       config.socket_path, config.config_size, kMaxConfigSize));
  }

  // The eventfds first: they are kept for the frontend's life, so the VMM can register the kicks as ioeventfds once.
  std::vector<QueueFds> queue_fds;
  queue_fds.reserve(config.queues);
  for (std::uint16_t q = 0; q < config.queues; ++q) {
    std::vector<event::EventFd> events;
    for (const char* role : {"kick", "relay call", "error"}) {
      auto event = event::EventFd::create(event::EventFd::Mode::Counter);
      if (!event) {
        return std::unexpected(std::move(event).error().with_context(
            fmt::format("{} {}: queue {} {} eventfd", op, config.socket_path, q, role)));
      }
      events.push_back(std::move(*event));
    }
    queue_fds.push_back(QueueFds{std::move(events[0]), std::move(events[1]), std::move(events[2])});
  }
  auto stop = event::EventFd::create(event::EventFd::Mode::Counter);
  if (!stop) {
    return std::unexpected(std::move(stop).error().with_context(op + ": stop eventfd"));
  }

  auto connection = Connection::connect(config.socket_path, config.connect_timeout);
  if (!connection) {
    return std::unexpected(std::move(connection)
                               .error()
                               .with_context(fmt::format("{}: connecting to {} (waited up to {} ms)", op,
                                                         config.socket_path, config.connect_timeout.count())));
  }
  connection->set_tracer(config.tracer);

  std::shared_ptr<VhostUserFrontend> frontend(
      new VhostUserFrontend(std::move(config), std::move(*connection), std::move(queue_fds), std::move(*stop)));
  if (auto ok = frontend->handshake(); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  if (auto ok = frontend->start_event_thread(); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  return frontend;
}

VhostUserFrontend::VhostUserFrontend(FrontendConfig config, Connection connection, std::vector<QueueFds> queue_fds,
                                     event::EventFd stop_event)
    : config_(std::move(config)),
      name_(device_name(config_.device_type)),
      queue_fds_(std::move(queue_fds)),
      stop_event_(std::move(stop_event)),
      connection_(std::move(connection)),
      relayed_(queue_fds_.size(), false),
      config_cache_(config_.config_size, 0),
      stopped_bases_(queue_fds_.size()) {}

Result<void> VhostUserFrontend::handshake() {
  // GET_FEATURES: what the device can do, plus bit 30 if the backend speaks protocol features.
  auto features = exchange(make_message(Request::GetFeatures), "GET_FEATURES");
  if (!features) {
    return std::unexpected(std::move(features).error());
  }
  backend_features_ = features->u64();
  if (!virtio::has_feature(backend_features_, VIRTIO_F_VERSION_1)) {
    return logic_error("vhost-user GET_FEATURES",
                       fmt::format("the backend at {} does not offer VIRTIO_F_VERSION_1 (features {:#x}: {}); "
                                   "vmmlab's transport is modern only",
                                   config_.socket_path, backend_features_, describe_features(backend_features_)));
  }
  offered_features_ = backend_features_ & kOfferable;

  protocol_features_negotiated_ = virtio::has_feature(backend_features_, kProtocolFeaturesBit);
  if (protocol_features_negotiated_) {
    auto theirs = exchange(make_message(Request::GetProtocolFeatures), "GET_PROTOCOL_FEATURES");
    if (!theirs) {
      return std::unexpected(std::move(theirs).error());
    }
    const std::uint64_t negotiated = theirs->u64() & kOurProtocolFeatures;
    // No ack asked for: REPLY_ACK is what this very message negotiates.
    if (auto ok = exchange(make_message(Request::SetProtocolFeatures, negotiated), "SET_PROTOCOL_FEATURES"); !ok) {
      return std::unexpected(std::move(ok).error());
    }
    protocol_features_ = negotiated;
  }

  if ((protocol_features_ & bit(ProtocolFeature::Mq)) != 0) {
    auto queue_num = exchange(make_message(Request::GetQueueNum), "GET_QUEUE_NUM");
    if (!queue_num) {
      return std::unexpected(std::move(queue_num).error());
    }
    backend_queue_num_ = queue_num->u64();
    if (*backend_queue_num_ < config_.queues) {
      return logic_error("vhost-user GET_QUEUE_NUM",
                         fmt::format("the backend at {} serves at most {} queues; the device needs {}",
                                     config_.socket_path, *backend_queue_num_, config_.queues));
    }
  }
  // Without MQ the number of queues is the device type's (the VMM's configuration): vhost-user has nothing to say.

  if (auto ok = set(Request::SetOwner, std::monostate{}); !ok) {
    return std::unexpected(std::move(ok).error());
  }

  if (config_.config_size > 0) {
    // A device with configuration but no way to read it would show the driver zeros (a disk of 0 sectors): refuse
    // now, with a clear error, rather than present a device that lies.
    if ((protocol_features_ & bit(ProtocolFeature::Config)) == 0) {
      return logic_error("vhost-user GET_CONFIG",
                         fmt::format("the backend at {} does not offer protocol feature CONFIG (protocol features "
                                     "{:#x}), but the device has {} bytes of configuration",
                                     config_.socket_path, protocol_features_, config_.config_size));
    }
    DeviceConfig request{.offset = 0, .flags = 0, .bytes = std::vector<std::uint8_t>(config_.config_size, 0)};
    auto reply = exchange(make_message(Request::GetConfig, std::move(request)), "GET_CONFIG");
    if (!reply) {
      return std::unexpected(std::move(reply).error());
    }
    const auto* answer = std::get_if<DeviceConfig>(&reply->payload);
    if (answer != nullptr && answer->bytes.empty()) {
      // An empty reply is a refusal (qemu-storage-daemon refuses more bytes than its QEMU version knows: 60 for 7.2).
      return logic_error("vhost-user GET_CONFIG",
                         fmt::format("the backend at {} refused to read {} bytes of device configuration",
                                     config_.socket_path, config_.config_size));
    }
    if (answer == nullptr || answer->offset != 0 || answer->bytes.size() != config_.config_size) {
      return logic_error(
          "vhost-user GET_CONFIG",
          fmt::format("the backend at {} answered {} bytes at offset {}; {} at 0 were asked for", config_.socket_path,
                      answer ? answer->bytes.size() : 0, answer ? answer->offset : 0, config_.config_size));
    }
    std::lock_guard lock(config_mutex_);
    config_cache_ = answer->bytes;
  }
  return {};
}

Result<void> VhostUserFrontend::start_event_thread() {
  const std::string op = fmt::format("vhost-user frontend {}: event thread", config_.socket_path);
  auto manager = event::EventManager::create();
  if (!manager) {
    return std::unexpected(std::move(manager).error().with_context(op));
  }
  auto subscriber = std::make_shared<Subscriber>(*this);
  if (auto added = manager->add_subscriber(subscriber); !added) {
    return std::unexpected(std::move(added).error().with_context(op));
  }
  std::promise<void> started;
  auto started_future = started.get_future();
  try {
    event_thread_ =
        std::thread([this, manager = std::move(*manager), subscriber, started = std::move(started)]() mutable {
          // A name for `info threads`, top -H and /proc/<pid>/task; a failure is only cosmetic.
          ::pthread_setname_np(::pthread_self(), kThreadName);
          event_tid_.store(::gettid(), std::memory_order_release);
          started.set_value();
          if (auto ran = manager.run(subscriber->stop_flag()); !ran) {
            // Nothing watches the backend any more: the device cannot tell hangups or errors. Say so.
            record_error(std::move(ran).error().with_context("vhost-user frontend event thread stopped"));
          }
          event_tid_.store(0, std::memory_order_release);
        });
  } catch (const std::system_error& error) {
    return sys_error("pthread_create", error.code().value(), op);
  }
  started_future.wait();
  return {};
}

VhostUserFrontend::~VhostUserFrontend() {
  std::lock_guard lifecycle(lifecycle_mutex_);
  // The event thread first: it uses `this`, and nothing should reach the transport from a device being destroyed.
  if (event_thread_.joinable()) {
    (void)stop_event_.write(1);  // fails only on counter overflow
    event_thread_.join();
  }
  // Normally the transport has reset the device already; if not, leave the backend with its rings stopped, so it does
  // not go on touching memory that this process is about to unmap (its own mapping stays valid, but the guest is
  // gone). Each exchange is bounded by the reply timeout.
  if (connected() && !started_.empty()) {
    stop_rings_locked();
  }
  connection_.shutdown();
}

// ---- Exchanges -----------------------------------------------------------------------------------------------------

Result<Message> VhostUserFrontend::exchange(Message message, std::string_view step) {
  std::lock_guard lock(channel_mutex_);
  return exchange_locked(std::move(message), step);
}

Result<Message> VhostUserFrontend::exchange_locked(Message message, std::string_view step) {
  const Request request = message.request;
  const std::string where = fmt::format("vhost-user {} on {}", step, config_.socket_path);
  if (!connected()) {
    return std::unexpected(disconnected_error(step));
  }
  // Any failure to send or receive drops the connection: after a timeout a late reply could be taken for the next
  // one, after a malformed message the stream cannot be trusted, and a closed peer is closed. Only a refused ack is a
  // well-formed answer that leaves the session usable.
  if (auto sent = connection_.send(message, config_.reply_timeout); !sent) {
    Error error = std::move(sent).error().with_context(where);
    mark_disconnected(error);
    return std::unexpected(std::move(error));
  }
  messages_sent_.fetch_add(1, std::memory_order_relaxed);

  const bool wants_ack = !has_reply(request) && message.needs_reply();
  if (!has_reply(request) && !wants_ack) {
    return make_message(request);
  }
  auto reply = connection_.receive(Direction::ToFrontend, config_.reply_timeout, request, wants_ack);
  if (!reply) {
    Error error = std::move(reply).error().with_context(
        fmt::format("{}: waiting for the {}", where, wants_ack ? "ack" : "reply"));
    mark_disconnected(error);
    return std::unexpected(std::move(error));
  }
  messages_received_.fetch_add(1, std::memory_order_relaxed);
  if (wants_ack) {
    const std::uint64_t status = reply->u64();
    if (status != 0) {
      Error error{fmt::format("vhost-user {}", step), 0,
                  fmt::format("the backend at {} refused it (REPLY_ACK status {:#x})", config_.socket_path, status)};
      record_error(error);
      return std::unexpected(std::move(error));
    }
  }
  return reply;
}

Result<void> VhostUserFrontend::set(Request request, Payload payload, std::vector<Fd> fds) {
  std::uint32_t flags = kVersion;
  if ((protocol_features_ & bit(ProtocolFeature::ReplyAck)) != 0) {
    flags |= kNeedReply;  // errors surface at the step that caused them, not as a silent dead queue later
  }
  const std::string step = request_name(static_cast<std::uint32_t>(request));
  auto done = exchange(make_message(request, std::move(payload), flags, std::move(fds)), step);
  if (!done) {
    return std::unexpected(std::move(done).error());
  }
  return {};
}

// ---- The device ----------------------------------------------------------------------------------------------------

std::uint16_t VhostUserFrontend::device_type() const {
  return config_.device_type;
}

std::uint64_t VhostUserFrontend::features() const {
  return offered_features_;
}

std::vector<std::uint16_t> VhostUserFrontend::queue_max_sizes() const {
  return std::vector<std::uint16_t>(config_.queues, config_.queue_size);
}

std::size_t VhostUserFrontend::config_size() const {
  return config_.config_size;
}

void VhostUserFrontend::read_config(std::uint64_t offset, std::span<std::uint8_t> data) const {
  std::ranges::fill(data, std::uint8_t{0});
  std::lock_guard lock(config_mutex_);
  if (offset >= config_cache_.size()) {
    return;
  }
  const std::size_t count = std::min<std::uint64_t>(data.size(), config_cache_.size() - offset);
  std::memcpy(data.data(), config_cache_.data() + offset, count);
}

void VhostUserFrontend::write_config(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (data.empty() || offset >= config_.config_size || data.size() > config_.config_size - offset) {
    return;  // the transport clips to config_size; anything else is not ours to forward
  }
  DeviceConfig config{.offset = static_cast<std::uint32_t>(offset),
                      .flags = 0,  // VHOST_SET_CONFIG_TYPE_FRONTEND: the driver wrote it
                      .bytes = std::vector<std::uint8_t>(data.begin(), data.end())};
  std::uint32_t flags = kVersion;
  if ((protocol_features_ & bit(ProtocolFeature::ReplyAck)) != 0) {
    flags |= kNeedReply;
  }
  // The channel lock spans the exchange and the cache update, so concurrent writes land in the cache in the order the
  // backend received them.
  std::lock_guard channel(channel_mutex_);
  if (!connected()) {
    // The cause is in last_error already; a dropped write is only worth a trace line.
    config_.tracer.note(
        fmt::format("{}: driver write of {} bytes at device configuration offset {:#x} dropped "
                    "(disconnected)",
                    name_, data.size(), offset));
    return;
  }
  auto done = exchange_locked(make_message(Request::SetConfig, std::move(config), flags), "SET_CONFIG");
  if (!done) {
    record_error(
        std::move(done).error().with_context(fmt::format("driver write of {} bytes at device configuration "
                                                         "offset {:#x} dropped",
                                                         data.size(), offset)));
    return;
  }
  std::lock_guard lock(config_mutex_);
  std::ranges::copy(data, config_cache_.begin() + static_cast<std::ptrdiff_t>(offset));
}

Result<void> VhostUserFrontend::activate(virtio::Activation activation) {
  const std::string op = fmt::format("{} activate", name_);
  std::lock_guard lifecycle(lifecycle_mutex_);
  if (active_.load(std::memory_order_relaxed)) {
    return logic_error(op, "already active");
  }
  if (!connected()) {
    return std::unexpected(disconnected_error("activate"));
  }
  if (activation.memory == nullptr) {
    return logic_error(op, "no guest memory");
  }
  if (activation.queues.size() > queue_fds_.size()) {
    return logic_error(
        op, fmt::format("{} queues activated, the device has {}", activation.queues.size(), queue_fds_.size()));
  }
  const memory::GuestMemory& memory = *activation.memory;

  // Everything that can fail locally is prepared before the first message: the backend is not touched at all when
  // the memory or a ring is unusable.
  const auto regions = memory.regions();
  if (regions.empty() || regions.size() > kMaxMemTableRegions) {
    return logic_error(op, fmt::format("guest memory has {} regions; SET_MEM_TABLE carries 1 to {}", regions.size(),
                                       kMaxMemTableRegions));
  }
  MemoryTable table;
  std::vector<Fd> region_fds;
  for (const memory::GuestMemoryRegion& region : regions) {
    if (!region.fd()) {
      return logic_error(op, fmt::format("guest memory must be shared (memfd) for vhost-user: region [{:#x}, {:#x}) is "
                                         "anonymous, the backend cannot map it",
                                         region.start().raw(), region.end().raw()));
    }
    auto fd = region.fd().duplicate();
    if (!fd) {
      return std::unexpected(std::move(fd).error().with_context(op));
    }
    region_fds.push_back(std::move(*fd));
    table.regions.push_back(MemoryRegion{
        .guest_phys_addr = region.start().raw(),
        .memory_size = region.size(),
        .userspace_addr = reinterpret_cast<std::uint64_t>(region.host_address()),
        .mmap_offset = region.file_offset(),
    });
  }

  struct QueuePlan {
    std::uint16_t index = 0;
    std::uint16_t size = 0;
    std::uint16_t base = 0;
    vhost_vring_addr addr{};
    Fd kick;
    Fd call;
    Fd err;
    bool relayed = false;
  };
  std::vector<QueuePlan> plans;
  std::vector<bool> relayed(queue_fds_.size(), false);
  std::vector<const event::EventFd*> calls(queue_fds_.size(), nullptr);
  for (std::size_t i = 0; i < activation.queues.size(); ++i) {
    const auto& queue = activation.queues[i];
    if (!queue) {
      continue;  // the driver did not enable it
    }
    const auto q = static_cast<std::uint16_t>(i);
    const virtio::QueueLayout& layout = queue->layout();
    // The spec wants ring addresses in the frontend's address space: the backend finds the region whose
    // userspace_addr range holds each one. So each area must lie inside one region, mapped contiguously here.
    auto host = [&](memory::GuestAddress gpa, std::uint64_t bytes, std::string_view area) -> Result<std::uint64_t> {
      auto span = memory.to_host(gpa, bytes);
      if (!span) {
        return std::unexpected(std::move(span).error().with_context(fmt::format(
            "{}: queue {}'s {} [{:#x}, +{:#x}) is not inside one memory region", op, q, area, gpa.raw(), bytes)));
      }
      return reinterpret_cast<std::uint64_t>(span->data());
    };
    auto desc =
        host(layout.descriptor_table, virtio::QueueLayout::descriptor_table_bytes(layout.size), "descriptor table");
    auto avail =
        desc ? host(layout.available_ring, virtio::QueueLayout::available_ring_bytes(layout.size), "available ring")
             : std::move(desc);
    auto used = avail ? host(layout.used_ring, virtio::QueueLayout::used_ring_bytes(layout.size), "used ring")
                      : std::move(avail);
    if (!used) {
      return std::unexpected(std::move(used).error());
    }
    QueuePlan plan;
    plan.index = q;
    plan.size = layout.size;
    // Where the backend starts in the available ring: the driver starts at 0 after a reset, and so does the queue the
    // transport built (its next_avail is 0 at DRIVER_OK).
    plan.base = queue->next_avail();
    plan.addr = vhost_vring_addr{.index = q,
                                 .flags = 0,  // no dirty logging
                                 .desc_user_addr = *desc,
                                 .used_user_addr = *used,
                                 .avail_user_addr = *avail,
                                 .log_guest_addr = 0};
    const event::EventFd* source = call_source_ ? call_source_(q) : nullptr;
    plan.relayed = source == nullptr;
    relayed[q] = plan.relayed;
    const event::EventFd& call = source != nullptr ? *source : queue_fds_[q].relay;
    calls[q] = &call;
    auto kick = duplicate_fd(queue_fds_[q].kick.fd(), fmt::format("{}: queue {} kick eventfd", op, q));
    auto call_fd = kick ? duplicate_fd(call.fd(), fmt::format("{}: queue {} call eventfd", op, q)) : std::move(kick);
    auto err = call_fd ? duplicate_fd(queue_fds_[q].err.fd(), fmt::format("{}: queue {} error eventfd", op, q))
                       : std::move(call_fd);
    if (!err) {
      return std::unexpected(std::move(err).error());
    }
    plan.kick = std::move(*kick);
    plan.call = std::move(*call_fd);
    plan.err = std::move(*err);
    plans.push_back(std::move(plan));
  }

  // From here on the event thread may relay and report for this activation: a backend may serve (and interrupt) as
  // soon as it has a ring's kick fd, before the last message of the activation went out.
  {
    std::lock_guard lock(activation_mutex_);
    interrupt_ = activation.interrupt;
    needs_reset_ = activation.needs_reset;
    relayed_ = relayed;
    reported_ = false;
  }
  auto fail = [&](Error error) -> Result<void> {
    // Best effort: the rings handed over so far are stopped again (if the backend still listens), so it does not go
    // on serving a device the transport is about to declare broken.
    if (connected() && !started_.empty()) {
      stop_rings_locked();
    }
    started_.clear();
    forget_activation();
    drain_events();
    return std::unexpected(std::move(error).with_context(op));
  };

  const std::uint64_t features =
      activation.features | (protocol_features_negotiated_ ? (1ull << kProtocolFeaturesBit) : 0);
  if (auto ok = set(Request::SetFeatures, features); !ok) {
    return fail(std::move(ok).error());
  }
  if (auto ok = set(Request::SetMemTable, std::move(table), std::move(region_fds)); !ok) {
    return fail(std::move(ok).error());
  }
  for (QueuePlan& plan : plans) {
    const std::uint64_t index = plan.index;
    if (auto ok = set(Request::SetVringNum, vhost_vring_state{.index = plan.index, .num = plan.size}); !ok) {
      return fail(std::move(ok).error());
    }
    if (auto ok = set(Request::SetVringBase, vhost_vring_state{.index = plan.index, .num = plan.base}); !ok) {
      return fail(std::move(ok).error());
    }
    if (auto ok = set(Request::SetVringAddr, plan.addr); !ok) {
      return fail(std::move(ok).error());
    }
    // From the kick on, the backend may run the ring (at once without protocol features): it has to be stopped.
    started_.push_back(plan.index);
    std::vector<Fd> kick;
    kick.push_back(std::move(plan.kick));
    if (auto ok = set(Request::SetVringKick, index, std::move(kick)); !ok) {
      return fail(std::move(ok).error());
    }
    std::vector<Fd> call;
    call.push_back(std::move(plan.call));
    if (auto ok = set(Request::SetVringCall, index, std::move(call)); !ok) {
      return fail(std::move(ok).error());
    }
    std::vector<Fd> err;
    err.push_back(std::move(plan.err));
    if (auto ok = set(Request::SetVringErr, index, std::move(err)); !ok) {
      return fail(std::move(ok).error());
    }
  }
  // With protocol features, rings start disabled: enable them once each is fully described.
  if (protocol_features_negotiated_) {
    for (const QueuePlan& plan : plans) {
      if (auto ok = set(Request::SetVringEnable, vhost_vring_state{.index = plan.index, .num = 1}); !ok) {
        return fail(std::move(ok).error());
      }
    }
  }

  calls_ = std::move(calls);
  active_.store(true, std::memory_order_release);
  if (observer_) {
    observer_(true);
  }
  return {};
}

Result<void> VhostUserFrontend::update_call(std::uint16_t queue) {
  std::lock_guard lifecycle(lifecycle_mutex_);
  if (!active_.load(std::memory_order_relaxed) || !connected() || queue >= calls_.size() || calls_[queue] == nullptr) {
    return {};
  }
  const event::EventFd* source = call_source_ ? call_source_(queue) : nullptr;
  const event::EventFd& call = source != nullptr ? *source : queue_fds_[queue].relay;
  if (calls_[queue] == &call) {
    return {};
  }
  const bool to_relay = source == nullptr;
  if (to_relay) {
    // Honoured from now on: the backend may write the relay as soon as it reads the message.
    std::lock_guard lock(activation_mutex_);
    relayed_[queue] = true;
  }
  const std::string op = fmt::format("{}: re-pointing queue {}'s call fd", name_, queue);
  auto fd = duplicate_fd(call.fd(), op);
  if (!fd) {
    return std::unexpected(std::move(fd).error());
  }
  std::vector<Fd> fds;
  fds.push_back(std::move(*fd));
  if (auto ok = set(Request::SetVringCall, std::uint64_t{queue}, std::move(fds)); !ok) {
    return std::unexpected(std::move(ok).error().with_context(op));
  }
  calls_[queue] = &call;
  call_switches_.fetch_add(1, std::memory_order_relaxed);
  if (to_relay) {
    // Stands in for whatever went to the old eventfd after it stopped being delivered (see the header).
    if (auto ok = queue_fds_[queue].relay.write(1); !ok) {
      return std::unexpected(std::move(ok).error().with_context(op));
    }
  }
  return {};
}

void VhostUserFrontend::reset() {
  std::lock_guard lifecycle(lifecycle_mutex_);
  // First, so KVM stops signalling the kick eventfds (ioeventfds deassigned) while the rings stop.
  if (active_.load(std::memory_order_relaxed) && observer_) {
    observer_(false);
  }
  active_.store(false, std::memory_order_release);
  if (connected() && !started_.empty()) {
    stop_rings_locked();
  }
  started_.clear();
  std::fill(calls_.begin(), calls_.end(), nullptr);
  // After this, the event thread no longer calls the old activation's interrupt or error callback (it holds
  // activation_mutex_ while it does, so a call in progress has finished when forget_activation returns).
  forget_activation();
  drain_events();
}

void VhostUserFrontend::stop_rings_locked() {
  for (const std::uint16_t q : started_) {
    if (!connected()) {
      return;  // each exchange would fail at once; nothing more to stop
    }
    if (protocol_features_negotiated_) {
      if (auto ok = set(Request::SetVringEnable, vhost_vring_state{.index = q, .num = 0}); !ok) {
        record_error(std::move(ok).error().with_context(fmt::format("{}: stopping queue {}", name_, q)));
      }
    }
    // GET_VRING_BASE stops the ring for good; the answer is where the backend would resume.
    auto base =
        exchange(make_message(Request::GetVringBase, vhost_vring_state{.index = q, .num = 0}), "GET_VRING_BASE");
    if (!base) {
      record_error(std::move(base).error().with_context(fmt::format("{}: stopping queue {}", name_, q)));
      continue;
    }
    const auto* state = std::get_if<vhost_vring_state>(&base->payload);
    if (state == nullptr || state->index != q) {
      record_error(Error{
          "vhost-user GET_VRING_BASE", 0,
          fmt::format("{}: the backend answered for queue {} instead of {}", name_, state ? state->index : 0u, q)});
      continue;
    }
    std::lock_guard lock(state_mutex_);
    stopped_bases_[q] = state->num;
  }
}

void VhostUserFrontend::forget_activation() {
  std::lock_guard lock(activation_mutex_);
  interrupt_.reset();
  needs_reset_ = nullptr;
  std::fill(relayed_.begin(), relayed_.end(), false);
  reported_ = false;
}

void VhostUserFrontend::drain_events() {
  // Errors ignored: a read fails only if the fd is broken, and the next read would say so again.
  for (const QueueFds& fds : queue_fds_) {
    (void)fds.relay.read();
    (void)fds.err.read();
    (void)fds.kick.read();
  }
}

void VhostUserFrontend::queue_notify(std::uint16_t queue_index) {
  if (queue_index >= queue_fds_.size()) {
    return;
  }
  fallback_kicks_.fetch_add(1, std::memory_order_relaxed);
  // Only fails on counter overflow (2^64 - 2 unread kicks): the backend is certainly awake already.
  (void)queue_fds_[queue_index].kick.write(1);
}

std::string VhostUserFrontend::name() const {
  return name_;
}

const event::EventFd& VhostUserFrontend::kick_event(std::uint16_t queue) const {
  if (queue >= queue_fds_.size()) {
    // A programming error: fail loudly rather than hand out another queue's fd.
    std::abort();
  }
  return queue_fds_[queue].kick;
}

std::uint16_t VhostUserFrontend::queue_count() const noexcept {
  return static_cast<std::uint16_t>(queue_fds_.size());
}

void VhostUserFrontend::set_call_source(std::function<const event::EventFd*(std::uint16_t queue)> source) {
  std::lock_guard lifecycle(lifecycle_mutex_);
  call_source_ = std::move(source);
}

void VhostUserFrontend::set_activation_observer(std::function<void(bool active)> observer) {
  std::lock_guard lifecycle(lifecycle_mutex_);
  observer_ = std::move(observer);
}

// ---- Observability -------------------------------------------------------------------------------------------------

bool VhostUserFrontend::connected() const noexcept {
  return connected_.load(std::memory_order_acquire);
}

bool VhostUserFrontend::active() const {
  return active_.load(std::memory_order_acquire);
}

std::uint64_t VhostUserFrontend::backend_features() const noexcept {
  return backend_features_;
}

std::uint64_t VhostUserFrontend::protocol_features() const noexcept {
  return protocol_features_;
}

std::optional<std::uint64_t> VhostUserFrontend::backend_queue_num() const noexcept {
  return backend_queue_num_;
}

std::optional<std::uint32_t> VhostUserFrontend::stopped_vring_base(std::uint16_t queue) const {
  std::lock_guard lock(state_mutex_);
  if (queue >= stopped_bases_.size()) {
    return std::nullopt;
  }
  return stopped_bases_[queue];
}

std::optional<Error> VhostUserFrontend::last_error() const {
  std::lock_guard lock(state_mutex_);
  return last_error_;
}

FrontendStats VhostUserFrontend::stats() const noexcept {
  return FrontendStats{
      .messages_sent = messages_sent_.load(std::memory_order_relaxed),
      .messages_received = messages_received_.load(std::memory_order_relaxed),
      .relayed_interrupts = relayed_interrupts_.load(std::memory_order_relaxed),
      .fallback_kicks = fallback_kicks_.load(std::memory_order_relaxed),
      .backend_errors = backend_errors_.load(std::memory_order_relaxed),
      .disconnects = disconnects_.load(std::memory_order_relaxed),
      .call_switches = call_switches_.load(std::memory_order_relaxed),
  };
}

std::optional<pid_t> VhostUserFrontend::event_thread_tid() const noexcept {
  const pid_t tid = event_tid_.load(std::memory_order_acquire);
  if (tid == 0) {
    return std::nullopt;
  }
  return tid;
}

// ---- Errors, hangups and the event thread's work -------------------------------------------------------------------

Error VhostUserFrontend::disconnected_error(std::string_view step) const {
  std::string context = fmt::format("the backend at {} is disconnected", config_.socket_path);
  std::lock_guard lock(state_mutex_);
  if (disconnect_cause_) {
    context += fmt::format(" ({})", disconnect_cause_->message());
  }
  return Error{fmt::format("vhost-user {}", step), ENOTCONN, std::move(context)};
}

void VhostUserFrontend::record_error(Error error) {
  config_.tracer.note(fmt::format("{}: {}", name_, error.message()));
  std::lock_guard lock(state_mutex_);
  last_error_ = std::move(error);
}

void VhostUserFrontend::mark_disconnected(const Error& error) {
  if (!connected_.exchange(false, std::memory_order_acq_rel)) {
    return;  // the first cause is the one worth keeping
  }
  disconnects_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lock(state_mutex_);
    disconnect_cause_ = error;
  }
  record_error(error);
  // The event thread sees the hangup and reports it to an active device's transport, whichever thread found it.
  connection_.shutdown();
}

void VhostUserFrontend::on_hangup() {
  mark_disconnected(
      Error{"vhost-user", ECONNRESET, fmt::format("{}: backend disconnected (socket {})", name_, config_.socket_path)});
  std::lock_guard lock(activation_mutex_);
  if (needs_reset_ && !reported_) {
    reported_ = true;
    // The driver learns through DEVICE_NEEDS_RESET and a configuration interrupt; the VMM keeps running.
    needs_reset_(Error{"vhost-user", ECONNRESET,
                       fmt::format("{}: backend disconnected (socket {})", name_, config_.socket_path)});
  }
}

void VhostUserFrontend::on_relay(std::uint16_t queue) {
  auto value = queue_fds_[queue].relay.read();
  if (!value) {
    record_error(std::move(value).error().with_context(fmt::format("{}: queue {} relay eventfd", name_, queue)));
    return;
  }
  if (!*value) {
    return;  // drained by a reset meanwhile
  }
  std::lock_guard lock(activation_mutex_);
  if (!interrupt_ || !relayed_[queue]) {
    return;  // not active (a spurious call after reset, or a backend writing a call fd it was never given)
  }
  relayed_interrupts_.fetch_add(1, std::memory_order_relaxed);
  if (auto signalled = interrupt_->signal_queue(queue); !signalled) {
    record_error(std::move(signalled).error().with_context(fmt::format("{}: relaying queue {}'s call", name_, queue)));
  }
}

void VhostUserFrontend::on_backend_error(std::uint16_t queue) {
  auto value = queue_fds_[queue].err.read();
  if (!value) {
    record_error(std::move(value).error().with_context(fmt::format("{}: queue {} error eventfd", name_, queue)));
    return;
  }
  if (!*value) {
    return;
  }
  backend_errors_.fetch_add(**value, std::memory_order_relaxed);
  Error error{"vhost-user backend", 0,
              fmt::format("{}: the backend reported an error on queue {} (its SET_VRING_ERR eventfd)", name_, queue)};
  record_error(error);
  std::lock_guard lock(activation_mutex_);
  if (needs_reset_ && !reported_) {
    reported_ = true;
    needs_reset_(error);
  }
}

}  // namespace vmm::vhost
