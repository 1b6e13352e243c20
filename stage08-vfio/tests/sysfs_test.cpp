// The sysfs facts behind the VFIO error messages, on a fake sysfs tree laid out like the kernel's: devices link to
// their driver and IOMMU group, groups list their devices.
#include "vmm/vfio/sysfs.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "vmm/vfio/group.hpp"

namespace vmm::vfio {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class FakeSysfs : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "vmmlab-sysfs-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "bus/pci/drivers/vfio-pci");
    fs::create_directories(root_ / "bus/pci/drivers/e1000e");
    add_device("0000:00:03.0", 12, "vfio-pci");
    add_device("0000:00:03.1", 12, "e1000e");
    add_device("0000:00:04.0", 13, std::nullopt);
    fs::create_directories(root_ / "bus/pci/devices/0000:00:05.0");  // no iommu_group: no IOMMU
  }
  void TearDown() override { fs::remove_all(root_); }

  // Device directory with its driver and iommu_group links, and the group's link back to it.
  void add_device(const std::string& bdf, std::uint32_t group, const std::optional<std::string>& driver) {
    const fs::path device = root_ / "bus/pci/devices" / bdf;
    const fs::path group_dir = root_ / "kernel/iommu_groups" / std::to_string(group);
    fs::create_directories(device);
    fs::create_directories(group_dir / "devices");
    fs::create_directory_symlink(group_dir, device / "iommu_group");
    if (driver) {
      fs::create_directory_symlink(root_ / "bus/pci/drivers" / *driver, device / "driver");
    }
    fs::create_directory_symlink(device, group_dir / "devices" / bdf);
  }

  fs::path root_;
};

TEST_F(FakeSysfs, TheIommuGroupComesFromTheDevicesLink) {
  auto group = iommu_group_of(root_, "0000:00:03.1");
  ASSERT_TRUE(group) << group.error().message();
  EXPECT_EQ(*group, 12U);
  auto other = iommu_group_of(root_, "0000:00:04.0");
  ASSERT_TRUE(other) << other.error().message();
  EXPECT_EQ(*other, 13U);
}

TEST_F(FakeSysfs, AMissingDeviceOrIommuIsExplained) {
  auto missing = iommu_group_of(root_, "0000:00:1f.0");
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.error().message(), HasSubstr("no PCI device 0000:00:1f.0"));
  auto no_iommu = iommu_group_of(root_, "0000:00:05.0");
  ASSERT_FALSE(no_iommu);
  EXPECT_THAT(no_iommu.error().message(), HasSubstr("0000:00:05.0 has no iommu_group link: is an IOMMU enabled"));
}

TEST_F(FakeSysfs, TheDriverIsTheLinksLastComponent) {
  EXPECT_EQ(pci_driver(root_, "0000:00:03.0"), "vfio-pci");
  EXPECT_EQ(pci_driver(root_, "0000:00:03.1"), "e1000e");
  EXPECT_EQ(pci_driver(root_, "0000:00:04.0"), std::nullopt);
}

TEST_F(FakeSysfs, GroupMembersAndTheOnesThatMakeItNotViable) {
  auto members = group_members(root_, 12);
  ASSERT_TRUE(members) << members.error().message();
  ASSERT_EQ(members->size(), 2U);
  EXPECT_EQ((*members)[0].device, "0000:00:03.0");
  EXPECT_EQ((*members)[0].driver, "vfio-pci");
  EXPECT_EQ((*members)[1].device, "0000:00:03.1");
  EXPECT_EQ((*members)[1].driver, "e1000e");
  EXPECT_EQ(describe_non_vfio_members(*members), "0000:00:03.1 is bound to e1000e");

  auto unbound = group_members(root_, 13);
  ASSERT_TRUE(unbound) << unbound.error().message();
  EXPECT_EQ(describe_non_vfio_members(*unbound), "");  // no driver at all is fine for viability

  auto missing = group_members(root_, 99);
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.error().message(), HasSubstr("group 99: cannot list"));
}

TEST_F(FakeSysfs, OpeningTheGroupOfADeviceBoundElsewhereIsRefusedWithTheFix) {
  // Refused from sysfs alone, before /dev/vfio is touched: the same answer on a host with or without VFIO.
  auto group = Group::open_for_device("0000:00:03.1", root_);
  ASSERT_FALSE(group);
  EXPECT_THAT(group.error().message(), HasSubstr("0000:00:03.1 (group 12) is bound to e1000e, not vfio-pci"));
  EXPECT_THAT(group.error().message(), HasSubstr("echo vfio-pci > /sys/bus/pci/devices/0000:00:03.1/driver_override"));

  auto unbound = Group::open_for_device("0000:00:04.0", root_);
  ASSERT_FALSE(unbound);
  EXPECT_THAT(unbound.error().message(), HasSubstr("0000:00:04.0 (group 13) is not bound to any driver"));
}

}  // namespace
}  // namespace vmm::vfio
