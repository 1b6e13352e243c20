#include <gtest/gtest.h>

#include <cerrno>

#include "vmm/error.hpp"
#include "vmm/kvm/kvm.hpp"

namespace vmm {
namespace {

TEST(Error, NamesOperationErrnoAndContext) {
  Error error{"KVM_SET_USER_MEMORY_REGION", EINVAL, "slot 0 overlaps slot 1"};
  EXPECT_EQ(error.message(), "KVM_SET_USER_MEMORY_REGION: EINVAL (slot 0 overlaps slot 1)");
  EXPECT_EQ(fmt::format("{}", error), error.message());
}

TEST(Error, WithoutErrnoTheContextFollowsAColon) {
  EXPECT_EQ((Error{"load guest", 0, "image too large"}.message()), "load guest: image too large");
  EXPECT_EQ((Error{"KVM_RUN", EINTR, ""}.message()), "KVM_RUN: EINTR");
}

TEST(Error, ContextAccumulates) {
  Error error = Error{"open", ENOENT, "/dev/kvm"}.with_context("is KVM enabled?");
  EXPECT_EQ(error.message(), "open: ENOENT (/dev/kvm; is KVM enabled?)");
}

TEST(Error, UnknownErrnoIsPrintedAsANumber) {
  EXPECT_EQ(errno_name(99999), "errno 99999");
}

TEST(Error, ResultCarriesTheError) {
  Result<int> failed = sys_error("KVM_CREATE_VM", ENOMEM);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().errno_value, ENOMEM);
  EXPECT_EQ(failed.error().message(), "KVM_CREATE_VM: ENOMEM");
}

TEST(CapabilityName, KnownAndUnknown) {
  EXPECT_EQ(kvm::capability_name(KVM_CAP_IRQCHIP), "KVM_CAP_IRQCHIP");
  EXPECT_EQ(kvm::capability_name(KVM_CAP_USER_MEMORY), "KVM_CAP_USER_MEMORY");
  EXPECT_EQ(kvm::capability_name(KVM_CAP_IOEVENTFD), "KVM_CAP_IOEVENTFD");
  EXPECT_EQ(kvm::capability_name(100000), "KVM_CAP_100000");
}

TEST(KvmOpen, MissingDeviceIsAClearError) {
  auto kvm = kvm::Kvm::open("/nonexistent/kvm");
  ASSERT_FALSE(kvm);
  EXPECT_EQ(kvm.error().errno_value, ENOENT);
  EXPECT_EQ(kvm.error().message(),
            "open: ENOENT (/nonexistent/kvm; is KVM enabled, and may this user open the device?)");
}

TEST(KvmOpen, NonKvmDeviceFailsTheVersionCheck) {
  // /dev/null opens fine but answers no KVM ioctl: the error must name the ioctl, not crash or return garbage.
  auto kvm = kvm::Kvm::open("/dev/null");
  ASSERT_FALSE(kvm);
  EXPECT_EQ(kvm.error().operation, "KVM_GET_API_VERSION");
  EXPECT_EQ(kvm.error().errno_value, ENOTTY);
}

}  // namespace
}  // namespace vmm
