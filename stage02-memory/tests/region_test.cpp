#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <limits>

#include "vmm/memory/region.hpp"

namespace vmm::memory {
namespace {

using ::testing::HasSubstr;

const std::uint64_t kPage = host_page_size();

TEST(GuestMemoryRegion, AnonymousIsZeroedAndWritable) {
  auto region = GuestMemoryRegion::create(GuestAddress(0x10000), 4 * kPage);
  ASSERT_TRUE(region) << region.error().message();
  EXPECT_EQ(region->start(), GuestAddress(0x10000));
  EXPECT_EQ(region->size(), 4 * kPage);
  EXPECT_EQ(region->end(), GuestAddress(0x10000 + 4 * kPage));
  EXPECT_EQ(region->backing(), Backing::anonymous);
  EXPECT_FALSE(region->fd().valid());
  EXPECT_EQ(region->huge_pages(), HugePages::none);
  ASSERT_NE(region->host_address(), nullptr);
  EXPECT_EQ(region->bytes().size(), 4 * kPage);
  for (auto b : region->bytes()) {
    ASSERT_EQ(b, std::byte{0});
  }
  region->bytes().back() = std::byte{0x5a};
  EXPECT_EQ(region->bytes().back(), std::byte{0x5a});
}

TEST(GuestMemoryRegion, RejectsBadGeometry) {
  auto empty = GuestMemoryRegion::create(GuestAddress(0), 0);
  ASSERT_FALSE(empty);
  EXPECT_THAT(empty.error().message(), HasSubstr("0x0 bytes at 0x0: the size must be a non-zero multiple"));

  auto odd = GuestMemoryRegion::create(GuestAddress(0), kPage + 1);
  ASSERT_FALSE(odd);
  EXPECT_THAT(odd.error().message(), HasSubstr("non-zero multiple of the page size"));

  auto misaligned = GuestMemoryRegion::create(GuestAddress(0x800), kPage);
  ASSERT_FALSE(misaligned);
  EXPECT_THAT(misaligned.error().message(), HasSubstr("at 0x800: the start must be page-aligned"));

  const auto last_page = std::numeric_limits<std::uint64_t>::max() - kPage + 1;
  auto wraps = GuestMemoryRegion::create(GuestAddress(last_page), 2 * kPage);
  ASSERT_FALSE(wraps);
  EXPECT_THAT(wraps.error().message(), HasSubstr("past the end of the 64-bit address space"));
}

TEST(GuestMemoryRegion, MemfdIsVisibleThroughASecondMapping) {
  auto region = GuestMemoryRegion::create(GuestAddress(0x100000), 2 * kPage, {.backing = Backing::memfd});
  ASSERT_TRUE(region) << region.error().message();
  EXPECT_EQ(region->backing(), Backing::memfd);
  ASSERT_TRUE(region->fd().valid());
  EXPECT_TRUE(::fcntl(region->fd().get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(region->file_offset(), 0U);

  // What a vhost-user backend will do: map the same fd at the advertised offset.
  auto peer = Mmap::map(region->fd(), region->size(), PROT_READ | PROT_WRITE, MAP_SHARED,
                        static_cast<off_t>(region->file_offset()));
  ASSERT_TRUE(peer) << peer.error().message();
  ASSERT_NE(peer->data(), region->host_address()) << "a second, distinct mapping";

  std::memcpy(region->host_address() + kPage + 3, "vmm", 3);
  EXPECT_EQ(std::memcmp(peer->data() + kPage + 3, "vmm", 3), 0) << "VMM writes reach the peer";
  std::memcpy(peer->data() + 7, "peer", 4);
  EXPECT_EQ(std::memcmp(region->host_address() + 7, "peer", 4), 0) << "peer writes reach the VMM";
}

TEST(GuestMemoryRegion, HugepagesRequestFallsBackAndRecordsWhatItGot) {
  for (auto backing : {Backing::anonymous, Backing::memfd}) {
    auto region = GuestMemoryRegion::create(GuestAddress(0), kHugePageSize,
                                            {.backing = backing, .hugepages = true, .prefault = true});
    ASSERT_TRUE(region) << region.error().message();
    EXPECT_TRUE(region->prefaulted());
    if (std::filesystem::exists("/sys/kernel/mm/transparent_hugepage")) {
      // With THP compiled in, MADV_HUGEPAGE is accepted even if hugetlbfs has no pages reserved.
      EXPECT_NE(region->huge_pages(), HugePages::none);
    }
    // Whichever kind the host gave, the memory works; without a request, none is recorded.
    region->bytes()[kHugePageSize - 1] = std::byte{1};
    EXPECT_EQ(region->bytes()[kHugePageSize - 1], std::byte{1});
  }
  auto plain = GuestMemoryRegion::create(GuestAddress(0), kHugePageSize);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->huge_pages(), HugePages::none);
  EXPECT_FALSE(plain->prefaulted());
}

TEST(GuestMemoryRegion, MemfdSizeIsSealed) {
  // The size is a promise to every process that maps the memfd: it cannot shrink (SIGBUS) or grow.
  auto region = GuestMemoryRegion::create(GuestAddress(0), 2 * kPage, {.backing = Backing::memfd});
  ASSERT_TRUE(region) << region.error().message();
  const int seals = ::fcntl(region->fd().get(), F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_NE(::ftruncate(region->fd().get(), static_cast<off_t>(kPage)), 0);
  EXPECT_EQ(errno, EPERM);
}

TEST(GuestMemoryRegion, MapFileSharesAnotherProcesssMemoryAtAnOffset) {
  // What a vhost-user backend does with the frontend's memfd: map part of it, at an offset, as guest memory.
  auto owner = GuestMemoryRegion::create(GuestAddress(0), 4 * kPage, {.backing = Backing::memfd});
  ASSERT_TRUE(owner) << owner.error().message();
  auto fd = owner->fd().duplicate();
  ASSERT_TRUE(fd) << fd.error().message();
  auto mapped = GuestMemoryRegion::map_file(GuestAddress(0x200000), 2 * kPage, std::move(*fd), kPage);
  ASSERT_TRUE(mapped) << mapped.error().message();
  EXPECT_EQ(mapped->backing(), Backing::shared_file);
  EXPECT_EQ(mapped->start(), GuestAddress(0x200000));
  EXPECT_EQ(mapped->file_offset(), kPage);
  std::memcpy(owner->host_address() + kPage + 5, "shared", 6);
  EXPECT_EQ(std::memcmp(mapped->host_address() + 5, "shared", 6), 0) << "byte kPage+5 of the file is byte 5 here";
  std::memcpy(mapped->host_address() + kPage, "back", 4);
  EXPECT_EQ(std::memcmp(owner->host_address() + 2 * kPage, "back", 4), 0);
}

TEST(GuestMemoryRegion, MapFileRefusesAFileShorterThanTheRegionAndBadAlignment) {
  auto owner = GuestMemoryRegion::create(GuestAddress(0), 2 * kPage, {.backing = Backing::memfd});
  ASSERT_TRUE(owner) << owner.error().message();
  // 2 pages of file, asked for 2 pages at offset 1 page: the second page would SIGBUS.
  auto too_long = GuestMemoryRegion::map_file(GuestAddress(0), 2 * kPage, *owner->fd().duplicate(), kPage);
  ASSERT_FALSE(too_long);
  EXPECT_THAT(too_long.error().message(), HasSubstr("shorter than offset"));
  auto unaligned = GuestMemoryRegion::map_file(GuestAddress(0), kPage, *owner->fd().duplicate(), 12);
  ASSERT_FALSE(unaligned);
  EXPECT_THAT(unaligned.error().message(), HasSubstr("page-aligned"));
  auto overflow = GuestMemoryRegion::map_file(GuestAddress(0), kPage, *owner->fd().duplicate(),
                                              std::numeric_limits<std::uint64_t>::max() - kPage + 1);
  ASSERT_FALSE(overflow);
  EXPECT_THAT(overflow.error().message(), HasSubstr("overflows"));
  auto not_a_file = GuestMemoryRegion::map_file(GuestAddress(0), kPage, Fd(), 0);
  ASSERT_FALSE(not_a_file);
  EXPECT_THAT(not_a_file.error().message(), HasSubstr("fstat"));
}

}  // namespace
}  // namespace vmm::memory
