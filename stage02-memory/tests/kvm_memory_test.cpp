#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/kvm.h>

#include <vector>

#include "vmm/kvm/kvm.hpp"
#include "vmm/memory/kvm_memory.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::memory {
namespace {

using ::testing::Each;
using ::testing::HasSubstr;

const std::uint64_t kPage = host_page_size();

// 100 pages: not a multiple of 64, so the bitmap's last word is only partly used.
constexpr std::uint64_t kFirstPages = 100;
constexpr std::uint64_t kSecondPages = 3;
constexpr std::uint64_t kSecondStart = 0x100000;

GuestMemory two_regions() {
  std::vector<GuestMemoryRegion> regions;
  for (auto [start, pages] : {std::pair{std::uint64_t{0}, kFirstPages}, std::pair{kSecondStart, kSecondPages}}) {
    auto region = GuestMemoryRegion::create(GuestAddress(start), pages * kPage);
    EXPECT_TRUE(region) << region.error().message();
    regions.push_back(std::move(*region));
  }
  auto memory = GuestMemory::from_regions(std::move(regions));
  EXPECT_TRUE(memory) << memory.error().message();
  return std::move(*memory);
}

TEST(KvmMemory, RegistersEachRegionAsASlot) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = kvm::Kvm::open();
  ASSERT_TRUE(kvm) << kvm.error().message();
  auto vm = kvm->create_vm();
  ASSERT_TRUE(vm) << vm.error().message();
  auto memory = two_regions();
  ASSERT_TRUE(register_with(memory, *vm, 5)) << "slots 5 and 6";

  const auto slots = vm->memory_slots();
  ASSERT_EQ(slots.size(), 2U);
  EXPECT_EQ(slots[0].slot, 5U);
  EXPECT_EQ(slots[0].guest_address, 0U);
  EXPECT_EQ(slots[0].size, kFirstPages * kPage);
  EXPECT_EQ(slots[0].host_address, memory.regions()[0].host_address());
  EXPECT_EQ(slots[1].slot, 6U);
  EXPECT_EQ(slots[1].guest_address, kSecondStart);
  EXPECT_EQ(slots[1].host_address, memory.regions()[1].host_address());
}

TEST(KvmMemory, DirtyLogIsEmptyBeforeTheGuestRuns) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = kvm::Kvm::open();
  ASSERT_TRUE(kvm);
  auto vm = kvm->create_vm();
  ASSERT_TRUE(vm);
  auto memory = two_regions();
  ASSERT_TRUE(register_with(memory, *vm, 0));

  auto not_logging = dirty_pages(*vm, 0);
  ASSERT_FALSE(not_logging);
  EXPECT_THAT(not_logging.error().message(), HasSubstr("slot 0 does not log dirty pages"));

  auto enabled = enable_dirty_logging(*vm, 0);
  ASSERT_TRUE(enabled) << enabled.error().message();
  EXPECT_EQ(vm->memory_slots()[0].flags & KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_LOG_DIRTY_PAGES);

  // Host writes go straight to the mapping, past KVM: they are not in the log (guest writes are, in a later stage).
  ASSERT_TRUE(memory.write_obj(GuestAddress(3 * kPage), std::uint64_t{1}));
  auto log = dirty_pages(*vm, 0);
  ASSERT_TRUE(log) << log.error().message();
  EXPECT_EQ(log->pages, kFirstPages);
  EXPECT_EQ(log->page_size, kPage);
  EXPECT_EQ(log->slot_start, GuestAddress(0));
  EXPECT_EQ(log->bitmap.size(), 2U) << "ceil(100 / 64) words";
  EXPECT_THAT(log->bitmap, Each(0U));
  EXPECT_TRUE(log->dirty_pages().empty());

  auto unknown = enable_dirty_logging(*vm, 9);
  ASSERT_FALSE(unknown);
  EXPECT_THAT(unknown.error().message(), HasSubstr("slot 9 is not registered"));
}

TEST(KvmMemory, OverlappingSlotIsRefused) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = kvm::Kvm::open();
  ASSERT_TRUE(kvm);
  auto vm = kvm->create_vm();
  ASSERT_TRUE(vm);
  auto memory = two_regions();
  ASSERT_TRUE(register_with(memory, *vm, 0));

  // A second memory map whose region overlaps slot 1's range; GuestMemory cannot catch this, KVM must.
  GuestMemory other;
  auto region = GuestMemoryRegion::create(GuestAddress(kSecondStart + kPage), 4 * kPage);
  ASSERT_TRUE(region);
  ASSERT_TRUE(other.add_region(std::move(*region)));
  auto clash = register_with(other, *vm, 2);
  ASSERT_FALSE(clash);
  EXPECT_EQ(clash.error().errno_value, EEXIST);
  EXPECT_THAT(clash.error().message(), HasSubstr("overlaps slot 1"));
  EXPECT_THAT(clash.error().message(), HasSubstr(fmt::format("registering region [{:#x}, {:#x})", kSecondStart + kPage,
                                                             kSecondStart + 5 * kPage)));
  EXPECT_EQ(vm->memory_slots().size(), 2U);
}

}  // namespace
}  // namespace vmm::memory
