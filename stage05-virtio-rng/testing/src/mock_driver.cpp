#include "vmm/testing/mock_driver.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "vmm/memory/region.hpp"

namespace vmm::testing {

namespace {

using memory::GuestAddress;
using memory::GuestMemory;

constexpr std::uint64_t kDescriptorBytes = sizeof(vring_desc);
constexpr std::uint64_t kAvailRing = offsetof(vring_avail, ring);
constexpr std::uint64_t kUsedRing = offsetof(vring_used, ring);
constexpr std::uint64_t kBufferAlign = 16;

// A mistake in the test's own setup (memory too small, out of descriptors...): not a device bug, so stop here
// rather than let the test go on measuring nonsense. stdout is flushed so the gtest failure line is not lost.
[[noreturn]] void setup_error(std::string_view what) {
  ADD_FAILURE() << "MockDriver: " << what;
  std::fflush(stdout);
  fmt::print(stderr, "MockDriver: {} (a mistake in the test's setup)\n", what);
  std::abort();
}

template <typename T>
T must(Result<T> result, std::string_view what) {
  if (!result) {
    setup_error(fmt::format("{}: {}", what, result.error().message()));
  }
  if constexpr (!std::is_void_v<T>) {
    return std::move(result).value();
  }
}

std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

GuestAddress at(GuestAddress area, std::uint64_t offset) {
  return GuestAddress(area.raw() + offset);
}

}  // namespace

MockDriver::MockDriver(const memory::GuestMemory& memory, MockLayout layout, bool event_idx)
    : memory_(memory), event_idx_(event_idx), next_buffer_(layout.buffers) {
  const auto size = layout.size;
  if (size == 0 || (size & (size - 1)) != 0) {
    setup_error(fmt::format("queue size {} is not a power of two", size));
  }
  // Packed as a driver would: table (16-aligned), available ring right after it, used ring at the next multiple of 4.
  const auto table = GuestAddress(align_up(layout.rings.raw(), 16));
  const auto available = at(table, virtio::QueueLayout::descriptor_table_bytes(size));
  const auto used = GuestAddress(align_up(available.raw() + virtio::QueueLayout::available_ring_bytes(size), 4));
  queue_layout_ = {.size = size, .descriptor_table = table, .available_ring = available, .used_ring = used};

  // Zero the three areas: every index 0, no flags, event fields 0 (a freshly reset queue).
  const auto end = used.raw() + virtio::QueueLayout::used_ring_bytes(size);
  const std::vector<std::byte> zeros(end - table.raw());
  must(memory_.write(table, zeros), "zeroing the rings");

  // Descriptors are handed out from the back of the vector: 0, 1, 2... first.
  free_.resize(size);
  for (std::size_t i = 0; i < size; ++i) {
    free_[i] = static_cast<std::uint16_t>(size - 1 - i);
  }
  chain_length_.assign(size, 0);
}

MockBuffer MockDriver::allocate(std::uint32_t length, bool writable, std::uint8_t fill) {
  const auto address = next_buffer_;
  if (length > 0) {
    const std::vector<std::byte> bytes(length, std::byte{fill});
    must(memory_.write(address, bytes), "allocating a buffer");
  }
  next_buffer_ = GuestAddress(align_up(address.raw() + length, kBufferAlign));
  return {.address = address, .length = length, .writable = writable};
}

std::uint16_t MockDriver::take_descriptor() {
  if (free_.empty()) {
    setup_error("no free descriptor left: collect used buffers first, or use a larger queue");
  }
  const auto index = free_.back();
  free_.pop_back();
  return index;
}

std::uint16_t MockDriver::add_chain(std::span<const MockBuffer> buffers) {
  if (buffers.empty()) {
    setup_error("add_chain with no buffers");
  }
  if (buffers.size() > free_.size()) {
    setup_error(fmt::format("add_chain needs {} descriptors, {} are free", buffers.size(), free_.size()));
  }
  std::vector<std::uint16_t> indices;
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    indices.push_back(take_descriptor());
  }
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    auto flags = static_cast<std::uint16_t>(buffers[i].writable ? VRING_DESC_F_WRITE : 0);
    if (!last) {
      flags |= VRING_DESC_F_NEXT;
    }
    write_descriptor(indices[i], vring_desc{.addr = buffers[i].address.raw(),
                                            .len = buffers[i].length,
                                            .flags = flags,
                                            .next = last ? std::uint16_t{0} : indices[i + 1]});
  }
  const auto head = indices.front();
  chain_length_[head] = static_cast<std::uint16_t>(buffers.size());
  publish(head);
  return head;
}

std::uint16_t MockDriver::add_indirect(std::span<const MockBuffer> buffers) {
  if (buffers.empty()) {
    setup_error("add_indirect with no buffers");
  }
  // The table is ordinary buffer space, as Linux kmallocs it; its entries chain with next = i + 1.
  const auto table = allocate(static_cast<std::uint32_t>(buffers.size() * kDescriptorBytes), false);
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    auto flags = static_cast<std::uint16_t>(buffers[i].writable ? VRING_DESC_F_WRITE : 0);
    if (!last) {
      flags |= VRING_DESC_F_NEXT;
    }
    const vring_desc entry{.addr = buffers[i].address.raw(),
                           .len = buffers[i].length,
                           .flags = flags,
                           .next = static_cast<std::uint16_t>(last ? 0 : i + 1)};
    must(memory_.write_obj(at(table.address, i * kDescriptorBytes), entry), "writing an indirect table entry");
  }
  const auto head = take_descriptor();
  write_descriptor(head, vring_desc{.addr = table.address.raw(),
                                    .len = table.length,
                                    .flags = static_cast<std::uint16_t>(VRING_DESC_F_INDIRECT),
                                    .next = 0});
  chain_length_[head] = 1;
  publish(head);
  return head;
}

bool MockDriver::kick_needed() {
  // Linux's virtio_mb in virtqueue_kick_prepare: our avail->idx store must be globally visible before we read the
  // device's hint, or both sides could read the other's stale value (we skip the kick, it goes to sleep). Pairs with
  // the fence in SplitQueue::enable_notification.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const auto old_index = last_kick_avail_;
  const auto new_index = avail_idx_;
  last_kick_avail_ = new_index;
  if (new_index == old_index) {
    return false;  // nothing published since the last decision
  }
  if (event_idx_) {
    return virtio::need_event(avail_event(), new_index, old_index);
  }
  return (used_flags() & VRING_USED_F_NO_NOTIFY) == 0;
}

bool MockDriver::kick_if_needed() {
  const bool kick = kick_needed();
  if (kick) {
    ++kicks_;
  }
  return kick;
}

std::vector<vring_used_elem> MockDriver::collect_used() {
  const auto size = queue_layout_.size;
  const auto used = used_index();  // acquire: the entries below it are visible
  const auto fresh = static_cast<std::uint16_t>(used - last_used_);
  std::vector<vring_used_elem> out;
  if (fresh > size) {
    // The device's bug, not the test's: report it and collect nothing.
    ADD_FAILURE() << fmt::format("MockDriver: used index moved from {} to {}, more than the queue size {}", last_used_,
                                 used, size);
    return out;
  }
  for (std::uint16_t i = 0; i < fresh; ++i) {
    const auto slot = static_cast<std::uint16_t>((last_used_ + i) % size);
    const auto element =
        must(memory_.read_obj<vring_used_elem>(at(queue_layout_.used_ring, kUsedRing + sizeof(vring_used_elem) * slot)),
             "reading a used entry");
    out.push_back(element);
    if (element.id >= size) {
      ADD_FAILURE() << fmt::format("MockDriver: used entry id {} is out of range (queue size {})", element.id, size);
      continue;
    }
    // Free the chain as Linux's detach_buf does: follow `next` from the head for as many descriptors as it had.
    // Heads published raw (`publish`) were never taken from the free list: nothing to give back.
    auto index = static_cast<std::uint16_t>(element.id);
    for (std::uint16_t n = chain_length_[element.id]; n > 0; --n) {
      free_.push_back(index);
      const auto descriptor =
          must(memory_.read_obj<vring_desc>(at(queue_layout_.descriptor_table, kDescriptorBytes * index)), "freeing");
      index = descriptor.next;
    }
    chain_length_[element.id] = 0;
  }
  last_used_ = used;
  return out;
}

void MockDriver::set_used_event(std::uint16_t index) {
  // seq_cst, like Linux's virtio_store_mb: the driver re-reads used->idx after publishing used_event.
  must(memory_.store<std::uint16_t>(
           at(queue_layout_.available_ring, kAvailRing + sizeof(std::uint16_t) * queue_layout_.size), index),
       "writing used_event");
}

void MockDriver::set_no_interrupt(bool no_interrupt) {
  const auto address = at(queue_layout_.available_ring, offsetof(vring_avail, flags));
  const auto flags = must(memory_.load<std::uint16_t>(address), "reading avail->flags");
  const auto updated = static_cast<std::uint16_t>(no_interrupt ? (flags | VRING_AVAIL_F_NO_INTERRUPT)
                                                               : (flags & ~VRING_AVAIL_F_NO_INTERRUPT));
  must(memory_.store<std::uint16_t>(address, updated), "writing avail->flags");
}

void MockDriver::write_descriptor(std::uint16_t index, const vring_desc& descriptor) {
  if (index >= queue_layout_.size) {
    setup_error(fmt::format("write_descriptor {}: the table has {} entries", index, queue_layout_.size));
  }
  must(memory_.write_obj(at(queue_layout_.descriptor_table, kDescriptorBytes * index), descriptor),
       "writing a descriptor");
}

void MockDriver::publish(std::uint16_t head) {
  const auto slot = static_cast<std::uint16_t>(avail_idx_ % queue_layout_.size);
  must(memory_.write_obj(at(queue_layout_.available_ring, kAvailRing + sizeof(std::uint16_t) * slot), head),
       "writing an available entry");
  // Release: the entry and the descriptors must be visible before the index that publishes them.
  set_avail_index(static_cast<std::uint16_t>(avail_idx_ + 1));
}

void MockDriver::set_avail_index(std::uint16_t index) {
  must(memory_.store<std::uint16_t>(at(queue_layout_.available_ring, offsetof(vring_avail, idx)), index,
                                    std::memory_order_release),
       "writing avail->idx");
  avail_idx_ = index;
}

void MockDriver::start_at(std::uint16_t avail_index, std::uint16_t used_index) {
  set_avail_index(avail_index);
  last_kick_avail_ = avail_index;
  last_used_ = used_index;
  // A shortcut for tests: the queue looks as if it had already run this far. used->idx and avail_event belong to
  // the device, but a device that stopped at these indices would have left exactly these values there (with
  // notifications enabled); used_event is what a driver waiting for the next buffer would have written.
  must(memory_.store<std::uint16_t>(at(queue_layout_.used_ring, offsetof(vring_used, idx)), used_index),
       "writing used->idx");
  must(memory_.store<std::uint16_t>(
           at(queue_layout_.used_ring, kUsedRing + sizeof(vring_used_elem) * queue_layout_.size), avail_index),
       "writing avail_event");
  set_used_event(used_index);
}

std::uint16_t MockDriver::used_index() const {
  // Acquire: pairs with the device's release store in add_used, so the entries below the index are visible.
  return must(
      memory_.load<std::uint16_t>(at(queue_layout_.used_ring, offsetof(vring_used, idx)), std::memory_order_acquire),
      "reading used->idx");
}

std::uint16_t MockDriver::used_flags() const {
  return must(
      memory_.load<std::uint16_t>(at(queue_layout_.used_ring, offsetof(vring_used, flags)), std::memory_order_relaxed),
      "reading used->flags");
}

std::uint16_t MockDriver::avail_event() const {
  return must(
      memory_.load<std::uint16_t>(at(queue_layout_.used_ring, kUsedRing + sizeof(vring_used_elem) * queue_layout_.size),
                                  std::memory_order_relaxed),
      "reading avail_event");
}

std::vector<std::uint8_t> MockDriver::read_bytes(memory::GuestAddress address, std::size_t length) const {
  std::vector<std::uint8_t> out(length);
  must(memory_.read(address, std::as_writable_bytes(std::span(out))), "reading guest bytes");
  return out;
}

memory::GuestMemory make_test_memory(std::uint64_t size) {
  auto region = must(memory::GuestMemoryRegion::create(GuestAddress(0), size), "creating the test memory");
  std::vector<memory::GuestMemoryRegion> regions;
  regions.push_back(std::move(region));
  return must(GuestMemory::from_regions(std::move(regions)), "building the test memory");
}

}  // namespace vmm::testing
