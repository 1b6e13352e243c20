// Error paths on the real /dev/kvm: what KVM refuses, and a guest that dies.
#include <gtest/gtest.h>
#include <unistd.h>

#include "vmm/kvm/kvm.hpp"
#include "vmm/mmap.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::kvm {
namespace {

class KvmErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    VMMLAB_REQUIRE_KVM();
    auto kvm = Kvm::open();
    ASSERT_TRUE(kvm);
    auto vm = kvm->create_vm();
    ASSERT_TRUE(vm);
    vm_.emplace(std::move(*vm));
    auto memory = Mmap::anonymous(0x20000);
    ASSERT_TRUE(memory);
    memory_ = std::move(*memory);
  }
  std::optional<Vm> vm_;
  Mmap memory_;
};

TEST_F(KvmErrors, OverlappingSlotsAreRejectedAndExplained) {
  ASSERT_TRUE(vm_->set_memory_slot({.slot = 0, .guest_address = 0, .size = 0x10000, .host_address = memory_.data()}));
  auto rc = vm_->set_memory_slot(
      {.slot = 1, .guest_address = 0x8000, .size = 0x10000, .host_address = memory_.data() + 0x10000});
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().message(),
            "KVM_SET_USER_MEMORY_REGION: EEXIST (slot 1 [0x8000, 0x18000) overlaps slot 0 [0x0, 0x10000))");
  ASSERT_EQ(vm_->memory_slots().size(), 1u) << "a refused slot is not recorded";
}

TEST_F(KvmErrors, UnalignedGuestAddressIsRejectedAndExplained) {
  auto rc = vm_->set_memory_slot({.slot = 0, .guest_address = 0x1001, .size = 0x1000, .host_address = memory_.data()});
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().errno_value, EINVAL);
  EXPECT_NE(rc.error().message().find("guest address 0x1001 is not page-aligned"), std::string::npos)
      << rc.error().message();
}

TEST_F(KvmErrors, UnalignedHostMemoryIsRejectedAndExplained) {
  auto rc = vm_->set_memory_slot({.slot = 0, .guest_address = 0, .size = 0x1000, .host_address = memory_.data() + 8});
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().errno_value, EINVAL);
  EXPECT_NE(rc.error().message().find("is not page-aligned"), std::string::npos) << rc.error().message();
}

TEST_F(KvmErrors, SlotsCanBeReplacedAndRemoved) {
  ASSERT_TRUE(vm_->set_memory_slot({.slot = 3, .guest_address = 0, .size = 0x1000, .host_address = memory_.data()}));
  ASSERT_TRUE(vm_->set_memory_slot(
      {.slot = 1, .guest_address = 0x4000, .size = 0x1000, .host_address = memory_.data() + 0x4000}));
  ASSERT_EQ(vm_->memory_slots().size(), 2u);
  EXPECT_EQ(vm_->memory_slots()[0].slot, 1u) << "kept sorted by slot number";
  ASSERT_TRUE(vm_->remove_memory_slot(3));
  ASSERT_EQ(vm_->memory_slots().size(), 1u);
  // Slot 3's range is free again: another slot may take it.
  EXPECT_TRUE(
      vm_->set_memory_slot({.slot = 2, .guest_address = 0, .size = 0x1000, .host_address = memory_.data() + 0x8000}));
}

}  // namespace
}  // namespace vmm::kvm
