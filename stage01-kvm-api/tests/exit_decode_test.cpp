// Exit decoding from synthetic kvm_run pages: no KVM needed. The kernel fills these fields in real life; here the
// test plays the kernel, including a kernel (or a corrupted page) that lies about offsets and sizes.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "vmm/kvm/exit.hpp"

namespace vmm::kvm {
namespace {

// A fake vCPU mapping: the kvm_run struct followed by the PIO data page, as KVM lays it out.
class FakeRunPage {
 public:
  static constexpr std::size_t kSize = 3 * 4096;
  FakeRunPage() : storage_(new (std::align_val_t{4096}) std::uint8_t[kSize]()) {}
  ~FakeRunPage() { operator delete[](storage_, std::align_val_t{4096}); }
  FakeRunPage(const FakeRunPage&) = delete;
  FakeRunPage& operator=(const FakeRunPage&) = delete;

  kvm_run& run() { return *reinterpret_cast<kvm_run*>(storage_); }
  std::uint8_t* bytes() { return storage_; }

  void set_io(std::uint8_t direction, std::uint16_t port, std::uint8_t size, std::uint32_t count,
              std::uint64_t data_offset = 4096) {
    run().exit_reason = KVM_EXIT_IO;
    run().io.direction = direction;
    run().io.port = port;
    run().io.size = size;
    run().io.count = count;
    run().io.data_offset = data_offset;
  }

 private:
  std::uint8_t* storage_;
};

TEST(ExitDecode, OutByteCarriesPortSizeAndData) {
  FakeRunPage page;
  page.set_io(KVM_EXIT_IO_OUT, 0x3f8, 1, 1);
  page.bytes()[4096] = '5';
  auto exit = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(exit) << exit.error().message();
  auto* io = std::get_if<IoExit>(&*exit);
  ASSERT_NE(io, nullptr);
  EXPECT_EQ(io->port, 0x3f8);
  EXPECT_EQ(io->direction, IoDirection::Out);
  EXPECT_EQ(io->size, 1);
  EXPECT_EQ(io->count, 1u);
  ASSERT_EQ(io->data.size(), 1u);
  EXPECT_EQ(io->data[0], '5');
  EXPECT_EQ(io->data.data(), page.bytes() + 4096) << "data must point into the kvm_run mapping, not a copy";
  EXPECT_EQ(exit_reason(*exit), static_cast<std::uint32_t>(KVM_EXIT_IO));
  EXPECT_EQ(describe(*exit), "KVM_EXIT_IO out port 0x3f8 size 1 count 1 data 35");
}

TEST(ExitDecode, StringIoExposesEveryItem) {
  FakeRunPage page;
  page.set_io(KVM_EXIT_IO_OUT, 0x80, 2, 3, 4096);
  const std::uint16_t words[] = {0x1111, 0x2222, 0x3333};
  std::memcpy(page.bytes() + 4096, words, sizeof(words));
  auto exit = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(exit);
  auto& io = std::get<IoExit>(*exit);
  ASSERT_EQ(io.count, 3u);
  ASSERT_EQ(io.data.size(), 6u);
  for (std::uint32_t i = 0; i < io.count; ++i) {
    std::uint16_t value = 0;
    std::memcpy(&value, io.item(i).data(), 2);
    EXPECT_EQ(value, words[i]) << "item " << i;
  }
}

TEST(ExitDecode, InExitDataIsWritableForTheAnswer) {
  FakeRunPage page;
  page.set_io(KVM_EXIT_IO_IN, 0x3f9, 4, 1);
  auto exit = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(exit);
  auto& io = std::get<IoExit>(*exit);
  EXPECT_EQ(io.direction, IoDirection::In);
  io.data[0] = 0xab;  // What a VMM does to answer an IN: KVM copies it into the guest's register on the next KVM_RUN.
  EXPECT_EQ(page.bytes()[4096], 0xab);
}

TEST(ExitDecode, IoDataOutsideTheMappingIsRejected) {
  FakeRunPage page;
  page.set_io(KVM_EXIT_IO_OUT, 0x3f8, 1, 1, FakeRunPage::kSize);  // starts exactly at the end
  EXPECT_FALSE(decode_exit(page.run(), FakeRunPage::kSize));
  page.set_io(KVM_EXIT_IO_OUT, 0x3f8, 4, 2048, 8192);  // 8 KiB of data from offset 8 KiB: 4 KiB too many
  auto exit = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_FALSE(exit);
  EXPECT_NE(exit.error().message().find("outside the 0x3000-byte kvm_run mapping"), std::string::npos)
      << exit.error().message();
  page.set_io(KVM_EXIT_IO_OUT, 0x3f8, 1, 1, ~std::uint64_t{0});  // offset + length would wrap
  EXPECT_FALSE(decode_exit(page.run(), FakeRunPage::kSize));
  page.set_io(KVM_EXIT_IO_OUT, 0x3f8, 4, 0xffffffffu);  // size * count overflows 32 bits
  EXPECT_FALSE(decode_exit(page.run(), FakeRunPage::kSize));
}

TEST(ExitDecode, IoSizeAndCountAreValidated) {
  FakeRunPage page;
  page.set_io(KVM_EXIT_IO_OUT, 0x3f8, 3, 1);
  auto exit = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_FALSE(exit);
  EXPECT_EQ(exit.error().message(), "decode KVM_EXIT_IO: invalid access size 3 at port 0x3f8");
  page.set_io(KVM_EXIT_IO_OUT, 0x3f8, 1, 0);
  EXPECT_FALSE(decode_exit(page.run(), FakeRunPage::kSize));
  page.set_io(7, 0x3f8, 1, 1);
  EXPECT_FALSE(decode_exit(page.run(), FakeRunPage::kSize));
}

TEST(ExitDecode, MmioWriteAndRead) {
  FakeRunPage page;
  page.run().exit_reason = KVM_EXIT_MMIO;
  page.run().mmio.phys_addr = 0xfee00000;
  page.run().mmio.len = 4;
  page.run().mmio.is_write = 1;
  std::memcpy(page.run().mmio.data, "\x01\x02\x03\x04", 4);
  auto exit = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(exit);
  auto& mmio = std::get<MmioExit>(*exit);
  EXPECT_EQ(mmio.address, 0xfee00000u);
  EXPECT_EQ(mmio.length, 4u);
  EXPECT_TRUE(mmio.is_write);
  EXPECT_EQ(mmio.data.size(), 4u);
  EXPECT_EQ(mmio.data[3], 0x04);
  EXPECT_EQ(describe(*exit), "KVM_EXIT_MMIO write address 0xfee00000 length 4 data 01 02 03 04");

  page.run().mmio.is_write = 0;
  page.run().mmio.len = 8;
  auto read = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(read);
  EXPECT_FALSE(std::get<MmioExit>(*read).is_write);
  EXPECT_EQ(std::get<MmioExit>(*read).data.data(), page.run().mmio.data);
}

TEST(ExitDecode, MmioLengthIsValidated) {
  FakeRunPage page;
  page.run().exit_reason = KVM_EXIT_MMIO;
  page.run().mmio.len = 9;
  EXPECT_FALSE(decode_exit(page.run(), FakeRunPage::kSize));
  page.run().mmio.len = 0;
  EXPECT_FALSE(decode_exit(page.run(), FakeRunPage::kSize));
}

TEST(ExitDecode, SimpleReasons) {
  FakeRunPage page;
  page.run().exit_reason = KVM_EXIT_HLT;
  EXPECT_TRUE(std::holds_alternative<HltExit>(*decode_exit(page.run(), FakeRunPage::kSize)));
  page.run().exit_reason = KVM_EXIT_SHUTDOWN;
  EXPECT_TRUE(std::holds_alternative<ShutdownExit>(*decode_exit(page.run(), FakeRunPage::kSize)));
  page.run().exit_reason = KVM_EXIT_INTR;
  EXPECT_TRUE(std::holds_alternative<InterruptedExit>(*decode_exit(page.run(), FakeRunPage::kSize)));
}

TEST(ExitDecode, FailEntryKeepsTheHardwareReason) {
  FakeRunPage page;
  page.run().exit_reason = KVM_EXIT_FAIL_ENTRY;
  page.run().fail_entry.hardware_entry_failure_reason = 0x21;
  page.run().fail_entry.cpu = 1;
  auto exit = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(exit);
  EXPECT_EQ(std::get<FailEntryExit>(*exit).hardware_entry_failure_reason, 0x21u);
  EXPECT_EQ(std::get<FailEntryExit>(*exit).cpu, 1u);
}

TEST(ExitDecode, InternalErrorKeepsSuberrorAndClampsData) {
  FakeRunPage page;
  page.run().exit_reason = KVM_EXIT_INTERNAL_ERROR;
  page.run().internal.suberror = KVM_INTERNAL_ERROR_EMULATION;
  page.run().internal.ndata = 2;
  page.run().internal.data[0] = 0xdead;
  page.run().internal.data[1] = 0xbeef;
  auto exit = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(exit);
  auto& internal = std::get<InternalErrorExit>(*exit);
  EXPECT_EQ(internal.suberror, static_cast<std::uint32_t>(KVM_INTERNAL_ERROR_EMULATION));
  ASSERT_EQ(internal.words().size(), 2u);
  EXPECT_EQ(internal.words()[1], 0xbeefu);
  EXPECT_EQ(describe(*exit), "KVM_EXIT_INTERNAL_ERROR KVM_INTERNAL_ERROR_EMULATION data [0xdead, 0xbeef]");

  page.run().internal.ndata = 1000;  // a lie: only 16 words exist
  auto clamped = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(clamped);
  EXPECT_EQ(std::get<InternalErrorExit>(*clamped).words().size(), 16u);
}

TEST(ExitDecode, SystemEventAndDebug) {
  FakeRunPage page;
  page.run().exit_reason = KVM_EXIT_SYSTEM_EVENT;
  page.run().system_event.type = KVM_SYSTEM_EVENT_RESET;
  page.run().system_event.ndata = 1;
  page.run().system_event.data[0] = 7;
  auto event = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(event);
  EXPECT_EQ(std::get<SystemEventExit>(*event).type, static_cast<std::uint32_t>(KVM_SYSTEM_EVENT_RESET));
  EXPECT_EQ(std::get<SystemEventExit>(*event).data[0], 7u);

  page.run().exit_reason = KVM_EXIT_DEBUG;
  page.run().debug.arch.exception = 1;
  page.run().debug.arch.pc = 0x1004;
  auto debug = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(debug);
  EXPECT_EQ(std::get<DebugExit>(*debug).pc, 0x1004u);
}

TEST(ExitDecode, UnknownReasonIsReportedByNumber) {
  FakeRunPage page;
  page.run().exit_reason = 4242;
  auto exit = decode_exit(page.run(), FakeRunPage::kSize);
  ASSERT_TRUE(exit);
  EXPECT_EQ(std::get<UnknownExit>(*exit).reason, 4242u);
  EXPECT_EQ(describe(*exit), "KVM_EXIT_4242");
}

TEST(ExitNames, KnownReasonsHaveTheirHeaderNames) {
  EXPECT_EQ(exit_reason_name(KVM_EXIT_IO), "KVM_EXIT_IO");
  EXPECT_EQ(exit_reason_name(KVM_EXIT_HLT), "KVM_EXIT_HLT");
  EXPECT_EQ(exit_reason_name(KVM_EXIT_MMIO), "KVM_EXIT_MMIO");
  EXPECT_EQ(exit_reason_name(KVM_EXIT_SHUTDOWN), "KVM_EXIT_SHUTDOWN");
  EXPECT_EQ(exit_reason_name(KVM_EXIT_INTERNAL_ERROR), "KVM_EXIT_INTERNAL_ERROR");
  EXPECT_EQ(exit_reason_name(KVM_EXIT_SYSTEM_EVENT), "KVM_EXIT_SYSTEM_EVENT");
}

}  // namespace
}  // namespace vmm::kvm
