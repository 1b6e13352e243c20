// Container::open's refusals, on any host. The path is a parameter so that the "no VFIO" case is the same everywhere
// (this host has no /dev/vfio; a learner's may have one), instead of depending on what the machine has loaded.
#include "vmm/vfio/container.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace vmm::vfio {
namespace {

using ::testing::HasSubstr;

TEST(Container, WithoutTheDeviceNodeTheErrorSaysTheHostHasNoVfio) {
  auto container = Container::open("/nonexistent-vmmlab/dev/vfio/vfio");
  ASSERT_FALSE(container);
  EXPECT_EQ(container.error().message(),
            "open /nonexistent-vmmlab/dev/vfio/vfio: ENOENT (this host has no VFIO: load vfio-pci, see "
            "stage08-vfio/README.md)");
}

TEST(Container, AFileThatIsNotAVfioContainerIsRefusedByTheApiVersionCheck) {
  auto container = Container::open("/dev/null");
  ASSERT_FALSE(container);
  EXPECT_THAT(container.error().message(), HasSubstr("VFIO_GET_API_VERSION: ENOTTY"));
  EXPECT_THAT(container.error().message(), HasSubstr("/dev/null is not a VFIO container"));
}

}  // namespace
}  // namespace vmm::vfio
