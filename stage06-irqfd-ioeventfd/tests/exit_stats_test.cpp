// ExitCounters (stage03's vCPU loop counts into it) by reason and address, and the --stats tables built from it.
#include "vmm/machine/exit_stats.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "vmm/machine/exit_counters.hpp"

namespace vmm::machine {
namespace {

// Exits as the loop would decode them (the spans only need to be the right size).
struct Exits {
  std::array<std::uint8_t, 8> bytes{};
  kvm::VcpuExit out(std::uint16_t port) {
    return kvm::IoExit{
        .port = port, .direction = kvm::IoDirection::Out, .size = 1, .count = 1, .data = {bytes.data(), 1}};
  }
  kvm::VcpuExit in(std::uint16_t port, std::uint32_t count = 1) {
    return kvm::IoExit{
        .port = port, .direction = kvm::IoDirection::In, .size = 1, .count = count, .data = {bytes.data(), count}};
  }
  kvm::VcpuExit mmio(std::uint64_t address, bool write) {
    return kvm::MmioExit{.address = address, .length = 2, .is_write = write, .data = {bytes.data(), 2}};
  }
};

TEST(ExitCounters, CountsByReason) {
  Exits e;
  ExitCounters counters;
  counters.record(e.out(0x3f8));
  counters.record(e.out(0x3f8));
  counters.record(e.in(0x3fd, 8));  // string I/O: one exit
  counters.record(e.mmio(0xc000'3000, true));
  counters.record(e.mmio(0xc000'0014, false));
  counters.record(kvm::HltExit{});
  counters.record(kvm::ShutdownExit{});
  counters.record(kvm::InterruptedExit{});
  counters.record(kvm::InternalErrorExit{});
  counters.record(kvm::FailEntryExit{});
  counters.record(kvm::SystemEventExit{});
  counters.record(kvm::DebugExit{});
  counters.record(kvm::UnknownExit{.reason = 99});
  counters.add(ExitReason::Other, 4);
  const auto s = counters.snapshot();
  EXPECT_EQ(s.count(ExitReason::IoOut), 2u);
  EXPECT_EQ(s.count(ExitReason::IoIn), 1u);
  EXPECT_EQ(s.count(ExitReason::MmioWrite), 1u);
  EXPECT_EQ(s.count(ExitReason::MmioRead), 1u);
  EXPECT_EQ(s.count(ExitReason::Hlt), 1u);
  EXPECT_EQ(s.count(ExitReason::Shutdown), 1u);
  EXPECT_EQ(s.count(ExitReason::Interrupted), 1u);
  EXPECT_EQ(s.count(ExitReason::InternalError), 1u);
  EXPECT_EQ(s.count(ExitReason::FailEntry), 1u);
  EXPECT_EQ(s.count(ExitReason::SystemEvent), 1u);
  EXPECT_EQ(s.count(ExitReason::Debug), 1u);
  EXPECT_EQ(s.count(ExitReason::Other), 5u);
  EXPECT_EQ(s.total(), 17u);
  EXPECT_EQ(counters.count(ExitReason::IoOut), 2u);
  EXPECT_STREQ(to_string(ExitReason::MmioWrite), "mmio write");
}

TEST(ExitCounters, CountsByAddressAndDirection) {
  Exits e;
  ExitCounters counters;
  counters.record(e.out(0x3f8));
  counters.record(e.out(0x3f8));
  counters.record(e.in(0x3f8));
  counters.record(e.in(0x3fd));
  counters.record(e.mmio(0xc000'3000, true));
  counters.record(e.mmio(0xc000'3000, true));
  counters.record(e.mmio(0xc000'3000, false));
  counters.record(kvm::HltExit{});
  const auto s = counters.snapshot();
  EXPECT_EQ(s.pio.size(), 2u);
  EXPECT_EQ(s.pio.at(0x3f8), (AccessCount{.reads = 1, .writes = 2}));
  EXPECT_EQ(s.pio.at(0x3fd), (AccessCount{.reads = 1, .writes = 0}));
  ASSERT_EQ(s.mmio.size(), 1u);
  EXPECT_EQ(s.mmio.at(0xc000'3000), (AccessCount{.reads = 1, .writes = 2}));
  EXPECT_EQ(s.mmio.at(0xc000'3000).total(), 3u);

  counters.reset();
  const auto zero = counters.snapshot();
  EXPECT_EQ(zero.total(), 0u);
  EXPECT_TRUE(zero.mmio.empty());
  EXPECT_TRUE(zero.pio.empty());
}

TEST(ExitCounters, SeveralVcpusCountIntoOne) {
  Exits e;
  ExitCounters counters;
  constexpr int kPerThread = 1000;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back(
        [&counters, exit = e.out(static_cast<std::uint16_t>(0x80 + t)), mmio = e.mmio(0xd000'0000, true)] {
          for (int i = 0; i < kPerThread; ++i) {
            counters.record(exit);
            counters.record(mmio);
          }
        });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  const auto s = counters.snapshot();
  EXPECT_EQ(s.count(ExitReason::IoOut), 4u * kPerThread);
  EXPECT_EQ(s.mmio.at(0xd000'0000).writes, 4u * kPerThread);
  EXPECT_EQ(s.pio.at(0x83).writes, static_cast<std::uint64_t>(kPerThread));
}

ExitCountersSnapshot sample() {
  Exits e;
  ExitCounters counters;
  for (int i = 0; i < 12; ++i) {
    counters.record(e.out(0x3f8));
  }
  for (int i = 0; i < 3; ++i) {
    counters.record(e.mmio(0xc000'3000, true));
  }
  counters.record(e.in(0xcfc));
  counters.record(kvm::HltExit{});
  return counters.snapshot();
}

TEST(ExitStatsFormat, ReasonsListWhatHappenedAndTheTotal) {
  const std::string table = format_exit_reasons(sample());
  EXPECT_EQ(table,
            "VMM userspace exits\n"
            "  io in                        1\n"
            "  io out                      12\n"
            "  mmio write                   3\n"
            "  hlt                          1\n"
            "  total                       17\n");
}

TEST(ExitStatsFormat, AddressesBusiestFirstWithALimit) {
  const std::string table = format_exit_addresses(sample(), 2);
  EXPECT_EQ(table,
            "busiest exit addresses\n"
            "  pio  0x3f8          reads 0          writes 12\n"
            "  mmio 0xc0003000     reads 0          writes 3\n"
            "  ... and 1 more\n");
  EXPECT_EQ(format_exit_addresses(ExitCountersSnapshot{}), "busiest exit addresses\n  (none)\n");
}

TEST(ExitStatsFormat, SideBySideWithKvmsCountersThatExist) {
  const std::vector<Stat> kvm{{.name = "halt_wait_ns", .values = {5}},
                              {.name = "io_exits", .values = {13}},
                              {.name = "exits", .values = {1234}},
                              {.name = "irq_injections", .values = {77}}};
  const std::string table = format_exit_stats(sample(), kvm, 1);
  EXPECT_EQ(table,
            "VMM userspace exits                 KVM vCPU stats (KVM_GET_STATS_FD)\n"
            "  io in                        1      exits                     1234\n"
            "  io out                      12      io_exits                    13\n"
            "  mmio write                   3      irq_injections              77\n"
            "  hlt                          1\n"
            "  total                       17\n"
            "busiest exit addresses\n"
            "  pio  0x3f8          reads 0          writes 12\n"
            "  ... and 2 more\n");
  EXPECT_EQ(table.find("halt_wait_ns"), std::string::npos) << "only the exit-related counters";
  // Without KVM's counters: the VMM's column alone.
  EXPECT_EQ(format_exit_stats(sample(), {}, 0),
            format_exit_reasons(sample()) + "busiest exit addresses\n  ... and 3 more\n");
}

}  // namespace
}  // namespace vmm::machine
