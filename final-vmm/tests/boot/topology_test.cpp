// --dump-topology's Graphviz output for a hand-built machine: the names scripts grep for (PCI functions as
// "00:SS.0 vvvv:dddd", as in /sys/bus/pci/devices), and a graph Graphviz's dot accepts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "vmm/machine/topology.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::machine {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Two vCPUs, the COM1 UART, a host bridge and a virtio-rng with an MMIO BAR and two MSI-X vectors: one routed to a
// GSI and programmed, one not yet. The backend's quotes and backslash must be escaped for dot.
Topology machine() {
  Topology t;
  t.vcpus = 2;
  t.ram_bytes = 512ull << 20;
  t.bus_devices = {{.bus = "io", .name = "serial", .base = 0x3f8, .size = 8}};
  TopologyPciFunction bridge;
  bridge.slot = 0;
  bridge.name = "host-bridge";
  bridge.vendor = 0x8086;
  bridge.device = 0x0d57;
  TopologyPciFunction rng;
  rng.slot = 1;
  rng.name = "virtio-rng";
  rng.vendor = 0x1af4;
  rng.device = 0x1044;
  rng.backend = R"(/dev/"u\random)";
  rng.bars = {{.index = 0, .io = false, .base = 0xc0000000, .size = 0x4000}};
  TopologyVector routed;
  routed.vector = 0;
  routed.gsi = 24;
  routed.address = 0xfee00000;
  routed.data = 0x4021;
  TopologyVector unrouted;
  unrouted.vector = 1;
  rng.vectors = {routed, unrouted};
  t.pci = {bridge, rng};
  return t;
}

TEST(TopologyDot, NamesPciFunctionsVcpusBarsAndMsixRoutes) {
  const auto dot = to_dot(machine());
  EXPECT_THAT(dot, HasSubstr("digraph"));
  EXPECT_THAT(dot, HasSubstr("00:01.0 1af4:1044")) << "slot 1, function 0, vendor:device in hex";
  EXPECT_THAT(dot, HasSubstr("00:00.0 8086:0d57"));
  EXPECT_THAT(dot, HasSubstr("virtio-rng"));
  EXPECT_THAT(dot, HasSubstr("vCPU 0"));
  EXPECT_THAT(dot, HasSubstr("vCPU 1"));
  EXPECT_THAT(dot, Not(HasSubstr("vCPU 2")));
  EXPECT_THAT(dot, HasSubstr("BAR0 MMIO"));
  EXPECT_THAT(dot, HasSubstr("0xc0000000"));
  EXPECT_THAT(dot, HasSubstr("MSI-X 0"));
  EXPECT_THAT(dot, HasSubstr("GSI 24"));
  EXPECT_THAT(dot, HasSubstr("MSI-X 1"));
  EXPECT_THAT(dot, HasSubstr("serial"));
  EXPECT_THAT(dot, HasSubstr("0x3f8-0x3ff")) << "the UART's eight ports";
  EXPECT_THAT(dot, HasSubstr(R"(/dev/\"u\\random)")) << "quote and backslash escaped";
}

TEST(TopologyDot, GraphvizRendersIt) {
  const std::filesystem::path dot_program = "/usr/bin/dot";
  if (!std::filesystem::exists(dot_program)) {
    if (vmm::testing::kvm_required()) {
      FAIL() << "no " << dot_program << " (VMMLAB_REQUIRE_KVM=1: CI installs graphviz)";
    }
    GTEST_SKIP() << "no " << dot_program << " (install graphviz)";
  }
  const auto dir = std::filesystem::path(::testing::TempDir());
  const auto dot_file = dir / "final_boot_topology.dot";
  const auto svg_file = dir / "final_boot_topology.svg";
  {
    std::ofstream out(dot_file);
    out << to_dot(machine());
  }
  std::filesystem::remove(svg_file);
  // dot exits non-zero on a syntax error (an unescaped quote, a bad attribute) and says where on stderr.
  const auto command = dot_program.string() + " -Tsvg -o " + svg_file.string() + " " + dot_file.string() + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string messages;
  char buffer[256];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) {
    messages += buffer;
  }
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << messages << "\n" << to_dot(machine());
  EXPECT_EQ(messages, "") << "no warnings either";
  std::ifstream svg(svg_file);
  const std::string rendered((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  EXPECT_THAT(rendered, HasSubstr("<svg"));
  EXPECT_THAT(rendered, HasSubstr("1af4:1044")) << "the label made it into the picture";
  std::filesystem::remove(dot_file);
  std::filesystem::remove(svg_file);
}

}  // namespace
}  // namespace vmm::machine
