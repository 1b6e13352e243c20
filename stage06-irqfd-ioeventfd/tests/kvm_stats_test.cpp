// KvmStats: the binary stats fd of a real VM and vCPU, and malformed stats files (a memfd) refused with clear errors.
#include "vmm/machine/kvm_stats.hpp"

#include <gtest/gtest.h>

#include <linux/kvm.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "vmm/kvm/kvm.hpp"
#include "vmm/machine/exit_counters.hpp"
#include "vmm/machine/vcpu_loop.hpp"
#include "vmm/mmap.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::machine {
namespace {

// ---- A stats file built by hand: header, id, descriptors, data, laid out as the kernel does. ----

struct FakeDesc {
  std::string name;
  std::uint32_t flags = KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_UNIT_NONE | KVM_STATS_BASE_POW10;
  std::int16_t exponent = 0;
  std::uint16_t size = 1;
  std::uint32_t offset = 0;
};

constexpr std::uint32_t kNameSize = 48;
constexpr std::size_t kDescSize = 16 + kNameSize;

struct FakeFile {
  kvm_stats_header header{};
  std::string id = "kvm-1/vcpu-0";
  std::vector<FakeDesc> descs;
  std::vector<std::uint64_t> data;
  bool terminate_names = true;

  // The usual layout: header, id, descriptors, data.
  void lay_out() {
    header.name_size = kNameSize;
    header.num_desc = static_cast<std::uint32_t>(descs.size());
    header.id_offset = sizeof(kvm_stats_header);
    header.desc_offset = header.id_offset + kNameSize;
    header.data_offset = static_cast<std::uint32_t>(header.desc_offset + descs.size() * kDescSize);
  }

  std::vector<std::byte> bytes() const {
    std::vector<std::byte> out(header.data_offset + data.size() * 8);
    auto put = [&](std::size_t at, const void* p, std::size_t n) {
      if (at + n > out.size()) {
        out.resize(at + n);
      }
      std::memcpy(out.data() + at, p, n);
    };
    auto put_name = [&](std::size_t at, const std::string& name) {
      std::vector<char> field(kNameSize, terminate_names ? '\0' : 'x');
      std::memcpy(field.data(), name.data(), std::min<std::size_t>(name.size(), kNameSize));
      put(at, field.data(), field.size());
    };
    // Back to front, the header last: a test that points one block into another still has a readable header.
    if (!data.empty()) {
      put(header.data_offset, data.data(), data.size() * 8);
    }
    for (std::size_t i = 0; i < descs.size(); ++i) {
      const std::size_t at = header.desc_offset + i * kDescSize;
      put(at, &descs[i].flags, 4);
      put(at + 4, &descs[i].exponent, 2);
      put(at + 6, &descs[i].size, 2);
      put(at + 8, &descs[i].offset, 4);
      const std::uint32_t bucket = 0;
      put(at + 12, &bucket, 4);
      put_name(at + 16, descs[i].name);
    }
    put_name(header.id_offset, id);
    put(0, &header, sizeof(header));
    return out;
  }

  Fd to_fd(std::size_t truncate_to = SIZE_MAX) const {
    Fd fd(::memfd_create("fake-kvm-stats", MFD_CLOEXEC));
    EXPECT_TRUE(fd.valid());
    auto b = bytes();
    b.resize(std::min(b.size(), truncate_to));
    EXPECT_EQ(::write(fd.get(), b.data(), b.size()), static_cast<ssize_t>(b.size()));
    return fd;
  }
};

FakeFile good_file() {
  FakeFile f;
  f.descs = {{.name = "exits", .offset = 0},
             {.name = "halt_wait_ns",
              .flags = KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_UNIT_SECONDS | KVM_STATS_BASE_POW10,
              .exponent = -9,
              .offset = 8},
             {.name = "halt_poll_hist",
              .flags = KVM_STATS_TYPE_LOG_HIST | KVM_STATS_UNIT_SECONDS | KVM_STATS_BASE_POW10,
              .exponent = -9,
              .size = 3,
              .offset = 16},
             {.name = "future", .flags = 0xe | (0xe << KVM_STATS_UNIT_SHIFT) | KVM_STATS_BASE_POW2, .offset = 40}};
  f.data = {42, 1000, 1, 2, 3, 7};
  f.lay_out();
  return f;
}

TEST(KvmStatsParse, AWellFormedFileParsesWithEveryField) {
  auto stats = KvmStats::from_fd(good_file().to_fd());
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(stats->id(), "kvm-1/vcpu-0");
  ASSERT_EQ(stats->descriptors().size(), 4u);
  const auto* wait = stats->find("halt_wait_ns");
  ASSERT_NE(wait, nullptr);
  EXPECT_EQ(wait->type, StatType::Cumulative);
  EXPECT_EQ(wait->unit, StatUnit::Seconds);
  EXPECT_EQ(wait->base, 10u);
  EXPECT_EQ(wait->exponent, -9);
  EXPECT_EQ(wait->offset, 8u);
  const auto* hist = stats->find("halt_poll_hist");
  ASSERT_NE(hist, nullptr);
  EXPECT_EQ(hist->type, StatType::LogHistogram);
  EXPECT_EQ(hist->size, 3u);
  const auto* future = stats->find("future");
  ASSERT_NE(future, nullptr);
  EXPECT_EQ(future->type, StatType::Unknown) << "unknown types are kept, not refused";
  EXPECT_EQ(future->unit, StatUnit::Unknown);
  EXPECT_EQ(future->base, 2u);
  EXPECT_EQ(stats->find("nope"), nullptr);

  auto all = stats->read();
  ASSERT_TRUE(all) << all.error().message();
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[0].name, "exits");
  EXPECT_EQ((*all)[0].values, (std::vector<std::uint64_t>{42}));
  EXPECT_EQ((*all)[2].values, (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ((*all)[3].values, (std::vector<std::uint64_t>{7}));
  EXPECT_EQ(*stats->value("halt_wait_ns"), std::optional<std::uint64_t>(1000));
  EXPECT_EQ(*stats->value("nope"), std::nullopt);
}

// Expects `file` to be refused with a message containing `words`.
void expect_refused(const FakeFile& file, const std::string& words, std::size_t truncate_to = SIZE_MAX) {
  auto stats = KvmStats::from_fd(file.to_fd(truncate_to));
  ASSERT_FALSE(stats) << "accepted; expected: " << words;
  EXPECT_NE(stats.error().message().find(words), std::string::npos) << stats.error().message();
}

TEST(KvmStatsParse, MalformedHeadersAreRefused) {
  {
    auto f = good_file();
    f.header.name_size = 0;
    expect_refused(f, "name_size 0");
  }
  {
    auto f = good_file();
    f.header.name_size = 1u << 20;
    expect_refused(f, "name_size 1048576");
  }
  {
    auto f = good_file();
    f.header.num_desc = 1u << 30;
    expect_refused(f, "num_desc");
  }
  {
    auto f = good_file();
    f.header.desc_offset = 8;  // inside the header
    expect_refused(f, "overlaps");
  }
  {
    auto f = good_file();
    f.header.id_offset = f.header.desc_offset + 16;  // inside the descriptors
    expect_refused(f, "overlaps");
  }
  {
    auto f = good_file();
    f.header.data_offset = f.header.desc_offset;  // the data over the descriptors
    expect_refused(f, "the data block");
  }
  expect_refused(good_file(), "cut short", 10);  // not even a header
  const auto f = good_file();
  expect_refused(f, "descriptor block", f.header.desc_offset + 20);
  expect_refused(f, "data block", f.header.data_offset + 16);  // values the descriptors promise are missing
}

TEST(KvmStatsParse, MalformedDescriptorsAreRefused) {
  {
    auto f = good_file();
    f.descs[1].offset = 12;
    expect_refused(f, "halt_wait_ns): offset 0xc is not 8-byte aligned");
  }
  {
    auto f = good_file();
    f.descs[0].size = 0;
    expect_refused(f, "exits): size 0");
  }
  {
    auto f = good_file();
    f.descs[3].offset = 0xffff'fff8;
    f.descs[3].size = 0xffff;
    expect_refused(f, "future): values end at");
  }
  {
    auto f = good_file();
    f.descs[2].name = "";
    expect_refused(f, "descriptor 2: the name is empty");
  }
  {
    auto f = good_file();
    f.terminate_names = false;
    f.id = std::string(kNameSize, 'k');
    expect_refused(f, "not terminated");
  }
}

// ---- The real thing. ----

TEST(KvmStats, VmAndVcpuStatsParse) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = kvm::Kvm::open();
  ASSERT_TRUE(kvm);
  auto vm = kvm->create_vm();
  ASSERT_TRUE(vm);
  auto vm_stats = KvmStats::open(vm->fd());
  ASSERT_TRUE(vm_stats) << vm_stats.error().message();
  EXPECT_EQ(vm_stats->id().rfind("kvm-", 0), 0u) << vm_stats->id();
  EXPECT_FALSE(vm_stats->descriptors().empty());
  auto vm_values = vm_stats->read();
  ASSERT_TRUE(vm_values) << vm_values.error().message();
  EXPECT_EQ(vm_values->size(), vm_stats->descriptors().size());

  auto vcpu = vm->create_vcpu(0);
  ASSERT_TRUE(vcpu);
  auto stats = KvmStats::open(vcpu->fd());
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_NE(stats->id().find("vcpu-0"), std::string::npos) << stats->id();
  for (const char* name : {"exits", "io_exits", "mmio_exits", "halt_exits"}) {
    const auto* d = stats->find(name);
    ASSERT_NE(d, nullptr) << name;
    EXPECT_EQ(d->type, StatType::Cumulative) << name;
    EXPECT_EQ(d->unit, StatUnit::None) << name;
    EXPECT_EQ(d->size, 1u) << name;
  }
  for (const auto& d : stats->descriptors()) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_NE(d.type, StatType::Unknown) << d.name;
  }
  EXPECT_EQ(*stats->value("io_exits"), std::optional<std::uint64_t>(0)) << "a vCPU that never ran";
}

TEST(KvmStats, IoExitsCountTheGuestsPortWrites) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = kvm::Kvm::open();
  ASSERT_TRUE(kvm);
  auto vm = kvm->create_vm();
  ASSERT_TRUE(vm);
  constexpr std::uint64_t kRamSize = 0x10000;
  auto ram = Mmap::anonymous(kRamSize);
  ASSERT_TRUE(ram);
  ASSERT_TRUE(
      vm->set_memory_slot({.slot = 0, .guest_address = 0, .size = kRamSize, .host_address = ram->data(), .flags = 0}));
  ASSERT_TRUE(vm->set_tss_address(0xfffb'd000));
  auto vcpu = vm->create_vcpu(0);
  ASSERT_TRUE(vcpu);
  // Real mode at 0x1000: N times "out 0x80, al", then HLT.
  constexpr std::uint64_t kPortWrites = 7;
  std::vector<std::uint8_t> code;
  for (std::uint64_t i = 0; i < kPortWrites; ++i) {
    code.insert(code.end(), {0xe6, 0x80});
  }
  code.push_back(0xf4);
  std::memcpy(ram->data() + 0x1000, code.data(), code.size());
  auto sregs = vcpu->get_sregs();
  ASSERT_TRUE(sregs);
  sregs->cs.base = 0;
  sregs->cs.selector = 0;
  ASSERT_TRUE(vcpu->set_sregs(*sregs));
  kvm_regs regs{};
  regs.rip = 0x1000;
  regs.rflags = 0x2;
  ASSERT_TRUE(vcpu->set_regs(regs));

  auto stats = KvmStats::open(vcpu->fd());
  ASSERT_TRUE(stats) << stats.error().message();
  const auto io_before = stats->value("io_exits");
  ASSERT_TRUE(io_before && *io_before);
  const auto exits_before = stats->value("exits");
  ASSERT_TRUE(exits_before && *exits_before);

  Buses buses;
  ExitCounters counters;
  const std::atomic<bool> stop{false};
  auto outcome = run_vcpu_loop(*vcpu, buses, stop, {.trace = false, .counters = &counters});
  ASSERT_TRUE(outcome) << outcome.error().message();
  ASSERT_EQ(outcome->reason, VcpuStop::Halted) << outcome->detail;
  EXPECT_EQ(counters.count(ExitReason::IoOut), kPortWrites);

  const auto io_after = stats->value("io_exits");
  ASSERT_TRUE(io_after && *io_after);
  const auto exits_after = stats->value("exits");
  ASSERT_TRUE(exits_after && *exits_after);
  // `exits` counts every VM exit (each OUT, the HLT, and whatever else the host caused): a lower bound.
  EXPECT_GE(**exits_after - **exits_before, kPortWrites + 1);
  // `io_exits` is counted by the vendor module's I/O intercept (kvm_intel's handle_io, kvm_amd's io_interception):
  // there, each OUT is exactly one. A paravirtual KVM module (kvm_pvm) that emulates the instruction instead
  // counts it under insn_emulation, not io_exits.
  if (std::filesystem::exists("/sys/module/kvm_intel") || std::filesystem::exists("/sys/module/kvm_amd")) {
    EXPECT_EQ(**io_after - **io_before, kPortWrites);
  } else {
    RecordProperty("io_exits", "not checked: neither kvm_intel nor kvm_amd is loaded");
  }
}

}  // namespace
}  // namespace vmm::machine
