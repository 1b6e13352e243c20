// The x86-64 register layout of vmmlab's gdb stub (issue 11): gdb itself reads the target description and must put
// every register at the offset the stub encodes it at; KVM's structs round-trip through 'g'/'G' and 'p'/'P'.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "vmm/gdb/x86_registers.hpp"

namespace vmm::gdb {
namespace {

std::size_t index_of(std::string_view name) {
  const auto regs = x86_64_registers();
  for (std::size_t i = 0; i < regs.size(); ++i) {
    if (regs[i].name == name) {
      return i;
    }
  }
  ADD_FAILURE() << "no register " << name;
  return 0;
}

template <typename T>
T at(const std::vector<std::uint8_t>& g, std::string_view name) {
  T value{};
  std::memcpy(&value, g.data() + x86_64_registers()[index_of(name)].offset, sizeof(T));
  return value;
}

X86Registers sample() {
  X86Registers s;
  s.regs.rax = 0x1111111111111111;
  s.regs.rsp = 0x7fff0000;
  s.regs.r15 = 0xf15f15f15f15f15f;
  s.regs.rip = 0xffffffff81000000;
  s.regs.rflags = 0x246;
  s.sregs.cs.selector = 0x10;
  s.sregs.gs.selector = 0x18;
  s.sregs.fs.base = 0xfeed0000;
  s.sregs.gs.base = 0xffff888000000000;
  s.sregs.cr0 = 0x80050033;
  s.sregs.cr3 = 0x1234000;
  s.sregs.efer = 0xd01;
  s.fpu.fcw = 0x37f;
  s.fpu.ftwx = 0x01;  // st0 in use
  s.fpu.fpr[0][9] = 0x40;
  s.fpu.xmm[15][0] = 0xab;
  s.fpu.mxcsr = 0x1f80;
  return s;
}

TEST(X86Registers, TheGPacketHoldsKvmsValuesAtTheirOffsets) {
  const auto g = encode_registers(sample());
  ASSERT_EQ(g.size(), x86_64_g_bytes());
  EXPECT_EQ(at<std::uint64_t>(g, "rax"), 0x1111111111111111u);
  EXPECT_EQ(at<std::uint64_t>(g, "rsp"), 0x7fff0000u);
  EXPECT_EQ(at<std::uint64_t>(g, "r15"), 0xf15f15f15f15f15fu);
  EXPECT_EQ(at<std::uint64_t>(g, "rip"), 0xffffffff81000000u);
  EXPECT_EQ(at<std::uint32_t>(g, "eflags"), 0x246u);
  EXPECT_EQ(at<std::uint32_t>(g, "cs"), 0x10u);
  EXPECT_EQ(at<std::uint32_t>(g, "gs"), 0x18u);
  EXPECT_EQ(at<std::uint64_t>(g, "fs_base"), 0xfeed0000u);
  EXPECT_EQ(at<std::uint64_t>(g, "gs_base"), 0xffff888000000000u);
  EXPECT_EQ(at<std::uint64_t>(g, "cr0"), 0x80050033u);
  EXPECT_EQ(at<std::uint64_t>(g, "cr3"), 0x1234000u);
  EXPECT_EQ(at<std::uint64_t>(g, "efer"), 0xd01u);
  EXPECT_EQ(at<std::uint32_t>(g, "fctrl"), 0x37fu);
  EXPECT_EQ(at<std::uint32_t>(g, "ftag"), 0xfffcu) << "st0 valid (00), st1-st7 empty (11)";
  EXPECT_EQ(g[x86_64_registers()[index_of("st0")].offset + 9], 0x40);
  EXPECT_EQ(g[x86_64_registers()[index_of("xmm15")].offset], 0xab);
  EXPECT_EQ(at<std::uint32_t>(g, "mxcsr"), 0x1f80u);
}

TEST(X86Registers, GAndPWriteBackWhatTheyRead) {
  X86Registers s = sample();
  auto g = encode_registers(s);
  const std::uint64_t rip = 0x1000000;
  std::memcpy(g.data() + x86_64_registers()[index_of("rip")].offset, &rip, 8);
  X86Registers back;
  ASSERT_TRUE(decode_registers(back, g).has_value());
  EXPECT_EQ(back.regs.rip, rip);
  EXPECT_EQ(back.regs.r15, s.regs.r15);
  EXPECT_EQ(back.sregs.cr3, s.sregs.cr3);
  EXPECT_EQ(back.fpu.ftwx, 0x01) << "the full tag word folds back into the abridged one";
  EXPECT_EQ(encode_registers(back), g);
  EXPECT_FALSE(decode_registers(back, std::span(g).first(g.size() - 1)).has_value());

  const std::uint8_t selector[4] = {0x2b, 0, 0, 0};
  const auto before = s.sregs.ds;
  ASSERT_TRUE(write_register(s, index_of("ds"), selector).has_value());
  EXPECT_EQ(s.sregs.ds.selector, 0x2b);
  EXPECT_EQ(s.sregs.ds.base, before.base) << "only the selector changes";
  EXPECT_EQ(read_register(s, index_of("ds")).value(), std::vector<std::uint8_t>(selector, selector + 4));
  const std::uint8_t eflags[4] = {0x02, 0x00, 0x00, 0x00};
  s.regs.rflags = 0xdead00000246;
  ASSERT_TRUE(write_register(s, index_of("eflags"), eflags).has_value());
  EXPECT_EQ(s.regs.rflags, 0xdead00000002u) << "eflags is the low half of RFLAGS";
  EXPECT_FALSE(write_register(s, index_of("rip"), eflags).has_value()) << "4 bytes for an 8-byte register";
  EXPECT_FALSE(read_register(s, x86_64_registers().size()).has_value());
}

// gdb's own reading of the description: `maint print remote-registers` prints each register's number and its
// offset in the 'g' packet. They must be ours, name for name.
TEST(X86Registers, GdbPlacesEveryRegisterWhereTheStubEncodesIt) {
  if (std::system("gdb --version >/dev/null 2>&1") != 0) {
    if (std::getenv("VMMLAB_REQUIRE_KVM") != nullptr) {
      FAIL() << "gdb is not installed (tools/install-deps installs it)";
    }
    GTEST_SKIP() << "gdb is not installed";
  }
  const std::string xml_path = ::testing::TempDir() + "/vmmlab-x86-64.xml";
  std::ofstream(xml_path) << x86_64_target_xml();
  const std::string command =
      "gdb -batch -nx -ex 'set tdesc filename " + xml_path + "' -ex 'maint print remote-registers' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) {
    output += buffer;
  }
  ASSERT_EQ(::pclose(pipe), 0) << output;
  std::size_t matched = 0;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::vector<std::string> w{std::istream_iterator<std::string>(words), std::istream_iterator<std::string>()};
    if (w.size() < 8 || w[0] == "Name") {
      continue;  // the header, and gdb's pseudo-registers (no remote number)
    }
    const auto regs = x86_64_registers();
    for (std::size_t i = 0; i < regs.size(); ++i) {
      if (regs[i].name == w[0]) {
        EXPECT_EQ(std::stoul(w[w.size() - 2]), i) << w[0] << "'s remote number";
        EXPECT_EQ(std::stoul(w[w.size() - 1]), regs[i].offset) << w[0] << "'s offset in the 'g' packet";
        ++matched;
      }
    }
  }
  EXPECT_EQ(matched, x86_64_registers().size()) << "gdb did not list every register:\n" << output;
  std::remove(xml_path.c_str());
}

}  // namespace
}  // namespace vmm::gdb
