#include "vmm/virtio/notify_ioeventfds.hpp"

#include <linux/kvm.h>

#include <utility>

#include <fmt/format.h>

#include "vmm/fd.hpp"

namespace vmm::virtio {

namespace {

constexpr std::uint64_t kPortSpaceEnd = 0x1'0000;

// The argument of KVM_IOEVENTFD for `spec`; `flags` adds DEASSIGN.
kvm_ioeventfd to_kvm(const IoeventfdSpec& spec, int fd, std::uint32_t extra_flags) {
  kvm_ioeventfd args{};
  args.addr = spec.address;
  args.len = spec.length;
  args.fd = fd;
  args.flags = extra_flags;
  if (spec.space == IoeventfdSpace::Pio) {
    args.flags |= KVM_IOEVENTFD_FLAG_PIO;
  }
  if (spec.datamatch) {
    args.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    args.datamatch = *spec.datamatch;
  }
  return args;
}

}  // namespace

std::string IoeventfdSpec::describe() const {
  std::string out = fmt::format("{} {:#x} len {}", space == IoeventfdSpace::Pio ? "pio" : "mmio", address, length);
  if (datamatch) {
    out += fmt::format(" datamatch {:#x}", *datamatch);
  }
  return out;
}

Result<Ioeventfd> Ioeventfd::create(const kvm::Vm& vm, const event::EventFd& event, const IoeventfdSpec& spec) {
  const std::string where = spec.describe();
  if (spec.length != 0 && spec.length != 1 && spec.length != 2 && spec.length != 4 && spec.length != 8) {
    return logic_error("KVM_IOEVENTFD", fmt::format("{}: the length must be 0, 1, 2, 4 or 8", where));
  }
  if (spec.length == 0 && spec.datamatch) {
    return logic_error("KVM_IOEVENTFD", fmt::format("{}: datamatch needs a length (0 matches any width)", where));
  }
  if (spec.space == IoeventfdSpace::Pio && spec.address + spec.length > kPortSpaceEnd) {
    return logic_error("KVM_IOEVENTFD", fmt::format("{}: beyond the 64 KiB port space", where));
  }
  // Our own reference to the eventfd: see the class comment.
  auto own = event.try_clone();
  if (!own) {
    return std::unexpected(own.error().with_context(fmt::format("ioeventfd at {}", where)));
  }
  const kvm_ioeventfd args = to_kvm(spec, own->fd(), 0);
  if (auto rc = VMM_IOCTL(vm.fd(), KVM_IOEVENTFD, &args); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("assign {}", where)));
  }
  return Ioeventfd(vm, std::move(*own), spec);
}

Ioeventfd::Ioeventfd(Ioeventfd&& other) noexcept
    : vm_(std::exchange(other.vm_, nullptr)), event_(std::move(other.event_)), spec_(other.spec_) {}

Ioeventfd& Ioeventfd::operator=(Ioeventfd&& other) noexcept {
  if (this != &other) {
    static_cast<void>(deassign());
    vm_ = std::exchange(other.vm_, nullptr);
    event_ = std::move(other.event_);
    spec_ = other.spec_;
  }
  return *this;
}

Ioeventfd::~Ioeventfd() {
  static_cast<void>(deassign());
}

Result<void> Ioeventfd::deassign() {
  if (vm_ == nullptr) {
    return {};
  }
  const kvm::Vm* vm = std::exchange(vm_, nullptr);
  // KVM finds the registration by space, address, length, eventfd and datamatch: the same values as the assign.
  const kvm_ioeventfd args = to_kvm(spec_, event_.fd(), KVM_IOEVENTFD_FLAG_DEASSIGN);
  if (auto rc = VMM_IOCTL(vm->fd(), KVM_IOEVENTFD, &args); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("deassign {}", spec_.describe())));
  }
  return {};
}

NotifyIoeventfds::NotifyIoeventfds(const kvm::Vm& vm, std::vector<const event::EventFd*> queue_events,
                                   NotifyLayout layout)
    : vm_(vm), queue_events_(std::move(queue_events)), layout_(layout) {}

std::uint64_t NotifyIoeventfds::notify_address(std::uint64_t bar0_base, std::uint16_t queue_index) const noexcept {
  return bar0_base + layout_.notify_offset + static_cast<std::uint64_t>(queue_index) * layout_.multiplier;
}

void NotifyIoeventfds::bar0_placed(std::optional<std::uint64_t> base) {
  std::lock_guard lock(mutex_);
  bar0_ = base;
  update_locked();
}

void NotifyIoeventfds::set_active(bool active) {
  std::lock_guard lock(mutex_);
  active_ = active;
  update_locked();
}

void NotifyIoeventfds::update_locked() {
  const std::optional<std::uint64_t> wanted = active_ ? bar0_ : std::nullopt;
  if (wanted == registered_base_) {
    return;  // nothing moved: registering again would only earn EEXIST
  }
  // Old addresses first: once the BAR has moved they may belong to another BAR, and a kick at the new base must not
  // find a stale registration of the same eventfd.
  for (auto& registration : registrations_) {
    if (auto rc = registration.deassign(); !rc) {
      last_error_ = rc.error();
      ++error_count_;
    }
  }
  registrations_.clear();
  registered_base_ = wanted;
  if (!wanted) {
    return;
  }
  if (layout_.multiplier == 0 && queue_events_.size() > 1) {
    // Every queue would share one address: only datamatch on the queue index could tell them apart.
    last_error_ = Error{.operation = "NotifyIoeventfds",
                        .context = "notify_off_multiplier 0 puts every queue at one address; not registered"};
    ++error_count_;
    return;
  }
  registrations_.reserve(queue_events_.size());
  for (std::size_t q = 0; q < queue_events_.size(); ++q) {
    const IoeventfdSpec spec{.address = notify_address(*wanted, static_cast<std::uint16_t>(q)),
                             .length = 2,
                             .datamatch = std::nullopt,
                             .space = layout_.space};
    if (queue_events_[q] == nullptr) {
      last_error_ = Error{.operation = "NotifyIoeventfds", .context = fmt::format("queue {}: no eventfd", q)};
      ++error_count_;
      continue;
    }
    auto registration = Ioeventfd::create(vm_, *queue_events_[q], spec);
    if (!registration) {
      // The queue's kicks keep arriving as MMIO exits, which the transport handles: slower, not broken.
      last_error_ = registration.error().with_context(fmt::format("queue {}", q));
      ++error_count_;
      continue;
    }
    registrations_.push_back(std::move(*registration));
  }
}

std::vector<std::uint64_t> NotifyIoeventfds::registered() const {
  std::lock_guard lock(mutex_);
  std::vector<std::uint64_t> out;
  out.reserve(registrations_.size());
  for (const auto& registration : registrations_) {
    out.push_back(registration.spec().address);
  }
  return out;
}

std::optional<std::uint64_t> NotifyIoeventfds::bar0() const {
  std::lock_guard lock(mutex_);
  return bar0_;
}

bool NotifyIoeventfds::active() const {
  std::lock_guard lock(mutex_);
  return active_;
}

std::optional<Error> NotifyIoeventfds::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

std::uint64_t NotifyIoeventfds::error_count() const {
  std::lock_guard lock(mutex_);
  return error_count_;
}

}  // namespace vmm::virtio
