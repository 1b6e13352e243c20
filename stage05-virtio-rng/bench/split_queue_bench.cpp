// Figure 4 of the benchmark report: split-virtqueue processing on the device side, without a guest.
//
// A MockDriver (stage05's testing library) lays the rings out in ordinary memory and publishes chains once. Each
// benchmark iteration then rewinds the device's indices and consumes the same chains again, so the timed loop is
// the device's work only: read avail->idx, take each head, walk and check its chain, write the used entry and
// publish used->idx. Two implementations do that work side by side:
//
//   vmmlab  SplitQueue::pop (read_descriptor_chain: every index, length and address checked, the chain copied out)
//           and SplitQueue::add_used, through GuestMemory.
//   raw     the floor: one hand-written loop over host pointers to the same rings, with the least checking a device
//           can do and stay memory-safe (indices masked, a chain no longer than the queue, each buffer inside the
//           one memory region), writing the chain into a fixed array.
//
// Four shapes, the ones that stress different parts: one chain of 128 descriptors (the walk), 128 chains of one
// descriptor (per-chain overhead), 32 indirect tables of 4 (the indirect path) and 256 add_used calls (the used
// ring alone). Items are chains (used entries for the last); tools/bench-report reports ns per item and the ratio.
#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "vmm/memory/guest_memory.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/uapi.hpp"

namespace {

using vmm::memory::GuestAddress;
using vmm::testing::MockBuffer;
using vmm::testing::MockDriver;
using vmm::virtio::SplitQueue;

constexpr std::uint64_t kMemorySize = 4ull << 20;
constexpr std::uint32_t kBufferSize = 64;

/// @brief The chains one benchmark consumes: how many, how long, direct or through indirect tables.
struct Shape {
  std::uint16_t queue_size;
  std::uint16_t chains;
  std::uint16_t descriptors_per_chain;
  bool indirect;
};

constexpr Shape kOneLongChain{128, 1, 128, false};
constexpr Shape kManyShortChains{128, 128, 1, false};
constexpr Shape kIndirect{128, 32, 4, true};

/// @brief Memory, a driver that has published `shape`'s chains, and the layout both implementations read.
struct Rings {
  vmm::memory::GuestMemory memory = vmm::testing::make_test_memory(kMemorySize);
  std::unique_ptr<MockDriver> driver;

  explicit Rings(const Shape& shape, bool event_idx = false) {
    driver = std::make_unique<MockDriver>(memory, vmm::testing::MockLayout{.size = shape.queue_size}, event_idx);
    for (std::uint16_t c = 0; c < shape.chains; ++c) {
      std::vector<MockBuffer> buffers;
      // Readable first, then writable, as a request and its answer (virtio 1.2, 2.7.4).
      for (std::uint16_t d = 0; d < shape.descriptors_per_chain; ++d) {
        buffers.push_back(driver->allocate(kBufferSize, d >= shape.descriptors_per_chain / 2));
      }
      if (shape.indirect) {
        driver->add_indirect(buffers);
      } else {
        driver->add_chain(buffers);
      }
    }
  }

  template <typename T>
  T* host(GuestAddress address, std::size_t length) {
    auto span = memory.to_host(address, length);
    return span ? reinterpret_cast<T*>(span->data()) : nullptr;
  }
};

// ----- vmmlab -------------------------------------------------------------------------------------------------

void bm_vmmlab(benchmark::State& state, Shape shape) {
  Rings rings(shape);
  auto queue = SplitQueue::create(rings.memory, rings.driver->queue_layout(), shape.queue_size,
                                  rings.driver->features(shape.indirect));
  if (!queue) {
    state.SkipWithError(fmt::format("{}", queue.error()).c_str());
    return;
  }
  for (auto _ : state) {
    queue->set_next_avail(0);
    queue->set_next_used(0);
    for (std::uint16_t c = 0; c < shape.chains; ++c) {
      auto chain = queue->pop();
      if (!chain || !*chain) {
        state.SkipWithError("pop failed or found no chain");
        return;
      }
      benchmark::DoNotOptimize((*chain)->writable.data());
      if (auto rc = queue->add_used((*chain)->head_index, kBufferSize); !rc) {
        state.SkipWithError("add_used failed");
        return;
      }
    }
  }
  state.SetItemsProcessed(state.iterations() * shape.chains);
}

void bm_vmmlab_add_used(benchmark::State& state) {
  constexpr std::uint16_t kSize = 256;
  Rings rings(Shape{kSize, 0, 0, false});
  auto queue = SplitQueue::create(rings.memory, rings.driver->queue_layout(), kSize, rings.driver->features());
  if (!queue) {
    state.SkipWithError(fmt::format("{}", queue.error()).c_str());
    return;
  }
  for (auto _ : state) {
    for (std::uint16_t i = 0; i < kSize; ++i) {
      if (auto rc = queue->add_used(i, kBufferSize); !rc) {
        state.SkipWithError("add_used failed");
        return;
      }
    }
  }
  state.SetItemsProcessed(state.iterations() * kSize);
}

// ----- the floor ----------------------------------------------------------------------------------------------

/// @brief One buffer of a chain as the floor records it.
struct RawBuffer {
  std::uint64_t address;
  std::uint32_t length;
  std::uint16_t flags;
};

/// @brief The floor's view of the rings: host pointers, taken once.
struct RawQueue {
  vring_desc* table;
  vring_avail* avail;
  vring_used* used;
  std::uint16_t size;
  std::byte* base;  // guest address 0 in this process
  std::uint16_t next_avail = 0;
  std::uint16_t next_used = 0;

  bool buffer_ok(std::uint64_t address, std::uint32_t length) const {
    return address <= kMemorySize && length <= kMemorySize - address;
  }

  /// @brief Walks the chain at `head` into `out`; the number of buffers, or -1 for a chain a device must refuse.
  int walk(std::uint16_t head, std::array<RawBuffer, 256>& out) const {
    int n = 0;
    std::uint16_t index = head;
    const vring_desc* descriptors = table;
    std::uint32_t limit = size;
    for (;;) {
      if (index >= limit || n >= static_cast<int>(limit)) {
        return -1;
      }
      const vring_desc d = descriptors[index];
      if (d.flags & VRING_DESC_F_INDIRECT) {
        if (descriptors != table || d.len % sizeof(vring_desc) != 0 || !buffer_ok(d.addr, d.len)) {
          return -1;
        }
        descriptors = reinterpret_cast<const vring_desc*>(base + d.addr);
        limit = d.len / sizeof(vring_desc);
        index = 0;
        continue;
      }
      if (!buffer_ok(d.addr, d.len)) {
        return -1;
      }
      out[static_cast<std::size_t>(n++)] = RawBuffer{d.addr, d.len, d.flags};
      if (!(d.flags & VRING_DESC_F_NEXT)) {
        return n;
      }
      index = d.next;
    }
  }

  void push_used(std::uint16_t head, std::uint32_t length) {
    used->ring[next_used & (size - 1)] = vring_used_elem{head, length};
    ++next_used;
    std::atomic_ref<std::uint16_t>(used->idx).store(next_used, std::memory_order_release);
  }
};

RawQueue raw_queue(Rings& rings, std::uint16_t size) {
  const auto layout = rings.driver->queue_layout();
  return RawQueue{rings.host<vring_desc>(layout.descriptor_table, layout.descriptor_table_bytes(size)),
                  rings.host<vring_avail>(layout.available_ring, layout.available_ring_bytes(size)),
                  rings.host<vring_used>(layout.used_ring, layout.used_ring_bytes(size)), size,
                  rings.host<std::byte>(GuestAddress{0}, kMemorySize)};
}

void bm_raw(benchmark::State& state, Shape shape) {
  Rings rings(shape);
  RawQueue queue = raw_queue(rings, shape.queue_size);
  std::array<RawBuffer, 256> buffers{};
  for (auto _ : state) {
    queue.next_avail = 0;
    queue.next_used = 0;
    const std::uint16_t avail = std::atomic_ref<std::uint16_t>(queue.avail->idx).load(std::memory_order_acquire);
    for (; queue.next_avail != avail; ++queue.next_avail) {
      const std::uint16_t head = queue.avail->ring[queue.next_avail & (queue.size - 1)];
      if (queue.walk(head, buffers) < 0) {
        state.SkipWithError("the floor refused a chain");
        return;
      }
      benchmark::DoNotOptimize(buffers.data());
      queue.push_used(head, kBufferSize);
    }
  }
  state.SetItemsProcessed(state.iterations() * shape.chains);
}

void bm_raw_add_used(benchmark::State& state) {
  constexpr std::uint16_t kSize = 256;
  Rings rings(Shape{kSize, 0, 0, false});
  RawQueue queue = raw_queue(rings, kSize);
  for (auto _ : state) {
    for (std::uint16_t i = 0; i < kSize; ++i) {
      queue.push_used(i, kBufferSize);
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kSize);
}

}  // namespace

int main(int argc, char** argv) {
  // Pairs, vmmlab first (tools/bench-report runs the program several times: A B A B ...).
  benchmark::RegisterBenchmark("one_chain_of_128/vmmlab", bm_vmmlab, kOneLongChain);
  benchmark::RegisterBenchmark("one_chain_of_128/raw", bm_raw, kOneLongChain);
  benchmark::RegisterBenchmark("chains_128_of_1/vmmlab", bm_vmmlab, kManyShortChains);
  benchmark::RegisterBenchmark("chains_128_of_1/raw", bm_raw, kManyShortChains);
  benchmark::RegisterBenchmark("indirect_32_of_4/vmmlab", bm_vmmlab, kIndirect);
  benchmark::RegisterBenchmark("indirect_32_of_4/raw", bm_raw, kIndirect);
  benchmark::RegisterBenchmark("add_used_256/vmmlab", bm_vmmlab_add_used);
  benchmark::RegisterBenchmark("add_used_256/raw", bm_raw_add_used);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
