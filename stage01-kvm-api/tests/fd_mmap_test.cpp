#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "vmm/fd.hpp"
#include "vmm/mmap.hpp"

namespace vmm {
namespace {

bool is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

TEST(Fd, ClosesOnDestruction) {
  int raw = -1;
  {
    auto fd = Fd::open("/dev/null", O_RDONLY);
    ASSERT_TRUE(fd) << fd.error().message();
    raw = fd->get();
    EXPECT_TRUE(is_open(raw));
    EXPECT_TRUE(::fcntl(raw, F_GETFD) & FD_CLOEXEC) << "every fd is close-on-exec";
  }
  EXPECT_FALSE(is_open(raw));
}

TEST(Fd, MoveTransfersOwnershipOnce) {
  auto opened = Fd::open("/dev/null", O_RDONLY);
  ASSERT_TRUE(opened);
  Fd a = std::move(*opened);
  const int raw = a.get();
  Fd b = std::move(a);
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(b.get(), raw);
  Fd c;
  c = std::move(b);
  EXPECT_EQ(c.get(), raw);
  EXPECT_TRUE(is_open(raw));
  c.reset();
  EXPECT_FALSE(is_open(raw));
}

TEST(Fd, MoveAssignmentClosesThePreviousDescriptor) {
  auto first = Fd::open("/dev/null", O_RDONLY);
  auto second = Fd::open("/dev/null", O_RDONLY);
  ASSERT_TRUE(first && second);
  const int first_raw = first->get();
  *first = std::move(*second);
  EXPECT_FALSE(is_open(first_raw));
}

TEST(Fd, ReleaseGivesUpOwnership) {
  auto fd = Fd::open("/dev/null", O_RDONLY);
  ASSERT_TRUE(fd);
  const int raw = fd->release();
  EXPECT_FALSE(fd->valid());
  EXPECT_TRUE(is_open(raw));
  Fd owner(raw);  // hand it to a new owner, which closes it
}

TEST(Fd, DuplicateIsASecondOwner) {
  auto fd = Fd::open("/dev/null", O_RDONLY);
  ASSERT_TRUE(fd);
  auto dup = fd->duplicate();
  ASSERT_TRUE(dup);
  EXPECT_NE(dup->get(), fd->get());
  fd->reset();
  EXPECT_TRUE(is_open(dup->get()));
}

TEST(Fd, OpenFailureNamesThePath) {
  auto fd = Fd::open("/no/such/file", O_RDONLY);
  ASSERT_FALSE(fd);
  EXPECT_EQ(fd.error().message(), "open: ENOENT (/no/such/file)");
}

TEST(Ioctl, FailureNamesTheRequest) {
  auto fd = Fd::open("/dev/null", O_RDONLY);
  ASSERT_TRUE(fd);
  auto rc = VMM_IOCTL(*fd, KVM_GET_API_VERSION);
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().message(), "KVM_GET_API_VERSION: ENOTTY");
}

TEST(Mmap, AnonymousIsZeroedAndUnmappedOnDestruction) {
  std::byte* addr = nullptr;
  {
    auto map = Mmap::anonymous(3 * 4096);
    ASSERT_TRUE(map);
    addr = map->data();
    EXPECT_EQ(map->size(), 3u * 4096);
    for (auto b : map->bytes()) {
      ASSERT_EQ(b, std::byte{0});
    }
    std::memset(addr, 0x5a, map->size());
  }
  // mincore fails with ENOMEM for an address range that is not mapped.
  unsigned char vec[3];
  EXPECT_EQ(::mincore(addr, 3 * 4096, vec), -1);
  EXPECT_EQ(errno, ENOMEM);
}

TEST(Mmap, MoveKeepsOneOwner) {
  auto map = Mmap::anonymous(4096);
  ASSERT_TRUE(map);
  Mmap a = std::move(*map);
  Mmap b = std::move(a);
  EXPECT_FALSE(a);
  EXPECT_TRUE(b);
  EXPECT_EQ(b.size(), 4096u);
}

TEST(Mmap, FailureIsAnError) {
  auto map = Mmap::anonymous(0);  // mmap rejects zero length with EINVAL
  ASSERT_FALSE(map);
  EXPECT_EQ(map.error().errno_value, EINVAL);
}

}  // namespace
}  // namespace vmm

#include "vmm/flex_array.hpp"

namespace vmm {
namespace {

TEST(FlexArray, CxxSeesTheWrongSizeAndWeFixTheIoctlNumber) {
  // The bug this works around: if a future header fixes it, this test says so and the workaround can go.
  EXPECT_NE(sizeof(kvm_cpuid2), 8u) << "C++ sizeof(kvm_cpuid2) now matches C: with_ioctl_size is no longer needed";
  constexpr unsigned long fixed = with_ioctl_size(KVM_GET_SUPPORTED_CPUID, 8);
  EXPECT_EQ(_IOC_SIZE(fixed), 8u);
  EXPECT_EQ(_IOC_NR(fixed), 0x05u);
  EXPECT_EQ(_IOC_TYPE(fixed), static_cast<unsigned>(KVMIO));
  EXPECT_EQ(_IOC_DIR(fixed), static_cast<unsigned>(_IOC_READ | _IOC_WRITE));
}

TEST(FlexArray, EntriesFollowTheCHeaderDirectly) {
  FlexArrayBuffer<kvm_cpuid2, kvm_cpuid_entry2> buffer(8, 3);
  EXPECT_EQ(reinterpret_cast<std::byte*>(buffer.entries()) - reinterpret_cast<std::byte*>(buffer.header()), 8);
  EXPECT_EQ(buffer.capacity(), 3u);
  EXPECT_EQ(buffer.first(3)[2].function, 0u) << "zero-initialised";
}

}  // namespace
}  // namespace vmm
