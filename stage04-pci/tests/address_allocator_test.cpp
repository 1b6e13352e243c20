#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "vmm/pci/address_allocator.hpp"

namespace vmm::pci {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
// The 32-bit PCI hole of stage02's x86 layout (kPciHoleStart, kPciHoleSize), spelled out to keep this test
// self-contained.
constexpr std::uint64_t kHoleStart = 0xC000'0000;
constexpr std::uint64_t kHoleSize = 0x4000'0000;
// The top 64 KiB of the address space: the pool's last byte is 2^64 - 1 and its end, 2^64, is not a std::uint64_t.
constexpr std::uint64_t kTopBase = 0xffff'ffff'ffff'0000;
constexpr std::uint64_t kTopSize = 0x1'0000;

AddressAllocator make(std::uint64_t base, std::uint64_t size) {
  auto allocator = AddressAllocator::create(base, size);
  EXPECT_TRUE(allocator) << allocator.error().message();
  return std::move(allocator).value();  // Throws (and fails the test) rather than reading an error as a value.
}

TEST(AddressAllocator, CreateDescribesAnEmptyPool) {
  auto pool = make(0xc000, 0x4000);
  EXPECT_EQ(pool.base(), 0xc000U);
  EXPECT_EQ(pool.size(), 0x4000U);
  EXPECT_EQ(pool.free_bytes(), 0x4000U);
  EXPECT_THAT(pool.allocations(), IsEmpty());
}

TEST(AddressAllocator, CreateRejectsEmptyAndWrappingPools) {
  auto empty = AddressAllocator::create(0xc000, 0);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().message(), "AddressAllocator::create: an empty pool at 0xc000");

  auto wraps = AddressAllocator::create(kTopBase, kTopSize + 1);
  ASSERT_FALSE(wraps);
  EXPECT_THAT(wraps.error().message(), HasSubstr("would run past the end of the 64-bit address space"));
  EXPECT_FALSE(AddressAllocator::create(kMax, 2));
  EXPECT_FALSE(AddressAllocator::create(2, kMax));
  EXPECT_TRUE(AddressAllocator::create(1, kMax)) << "[1, 2^64)";

  EXPECT_TRUE(AddressAllocator::create(kTopBase, kTopSize)) << "ending exactly at 2^64 is allowed";
  EXPECT_TRUE(AddressAllocator::create(kMax, 1));
  EXPECT_TRUE(AddressAllocator::create(0, kMax));
}

TEST(AddressAllocator, ResultsAreAlignedAndAtTheLowestFit) {
  auto pool = make(0x1000, 0xf000);
  EXPECT_EQ(pool.allocate(0x100, 0x1000), 0x1000U);
  EXPECT_EQ(pool.allocate(0x100, 0x1000), 0x2000U) << "0x1100 is free but not aligned to 0x1000";
  EXPECT_EQ(pool.allocate(0x10, 0x10), 0x1100U) << "the gap left by the first alignment is the lowest fit";
  EXPECT_EQ(pool.allocate(0x100, 1), 0x1110U) << "alignment 1 places at any address";
  EXPECT_EQ(pool.allocate(0x800, 0x800), 0x1800U);
  EXPECT_EQ(pool.free_bytes(), 0xf000U - 0x100 - 0x100 - 0x10 - 0x100 - 0x800);
  EXPECT_THAT(pool.allocations(),
              ElementsAre(Allocation{0x1000, 0x100}, Allocation{0x1100, 0x10}, Allocation{0x1110, 0x100},
                          Allocation{0x1800, 0x800}, Allocation{0x2000, 0x100}));
}

TEST(AddressAllocator, AnUnalignedBaseIsRoundedUp) {
  auto pool = make(0xc010, 0x3ff0);
  EXPECT_EQ(pool.allocate(0x100, 0x100), 0xc100U);
  EXPECT_EQ(pool.allocate(0xf0, 1), 0xc010U) << "the space below the first aligned address is still usable";
}

TEST(AddressAllocator, AlignmentLargerThanSize) {
  auto pool = make(kHoleStart, kHoleSize);
  EXPECT_EQ(pool.allocate(0x1000, 0x1000), 0xc000'0000U);
  const auto address = pool.allocate(0x1000, 0x1000'0000);
  ASSERT_TRUE(address) << address.error().message();
  EXPECT_EQ(*address, 0xd000'0000U);
  EXPECT_EQ(*address % 0x1000'0000, 0U);
  EXPECT_EQ(pool.allocate(0x1000, 0x1000), 0xc000'1000U) << "the skipped space stays free";
  // An alignment beyond the pool: 0x1'0000'0000 is the only multiple in reach, and it is past the end.
  auto beyond = pool.allocate(0x1000, 0x1'0000'0000);
  ASSERT_FALSE(beyond);
  EXPECT_THAT(beyond.error().message(), HasSubstr("no free range fits"));
}

TEST(AddressAllocator, BarsAreNaturallyAligned) {
  // How a PCI device's BARs are placed: alignment = size, largest first so they pack.
  auto pool = make(kHoleStart, kHoleSize);
  EXPECT_EQ(pool.allocate(0x4000, 0x4000), 0xc000'0000U);
  EXPECT_EQ(pool.allocate(0x100, 0x100), 0xc000'4000U);
  EXPECT_EQ(pool.allocate(0x100'0000, 0x100'0000), 0xc100'0000U);
  for (const auto& bar : pool.allocations()) {
    EXPECT_EQ(bar.address % bar.size, 0U) << fmt::format("{:#x} bytes at {:#x}", bar.size, bar.address);
  }
}

TEST(AddressAllocator, ExhaustionNamesTheRequestAndThePool) {
  auto pool = make(kHoleStart, kHoleSize);
  ASSERT_EQ(pool.allocate(kHoleSize - 0x1000, 1), kHoleStart);
  EXPECT_EQ(pool.free_bytes(), 0x1000U);
  auto exhausted = pool.allocate(0x2000, 0x1000);
  ASSERT_FALSE(exhausted);
  EXPECT_EQ(exhausted.error().message(),
            "AddressAllocator::allocate: 0x2000 bytes aligned to 0x1000 in [0xc0000000, 0x100000000): no free range "
            "fits (exhausted: 0x1000 bytes free)");
  EXPECT_EQ(pool.allocate(0x1000, 0x1000), 0xffff'f000U) << "the failure changed nothing";
  EXPECT_EQ(pool.free_bytes(), 0U);
  EXPECT_FALSE(pool.allocate(1, 1));
}

TEST(AddressAllocator, FragmentedHoleIsReused) {
  auto pool = make(0x1000'0000, 0x10'0000);
  const auto a = pool.allocate(0x1000, 0x1000);
  const auto b = pool.allocate(0x4000, 0x1000);
  const auto c = pool.allocate(0x1000, 0x1000);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(*b, 0x1000'1000U);
  EXPECT_EQ(*c, 0x1000'5000U);
  ASSERT_TRUE(pool.free(*b));

  EXPECT_EQ(pool.allocate(0x2000, 0x2000), 0x1000'2000U) << "fits only in B's hole once aligned: goes there";
  EXPECT_EQ(pool.allocate(0x2000, 0x1000), 0x1000'6000U) << "B's hole has 0x1000 + 0x1000 left, not contiguous";
  EXPECT_EQ(pool.allocate(0x1000, 0x1000), 0x1000'1000U) << "the rest of the hole is still the lowest fit";
}

TEST(AddressAllocator, FragmentationCanFailWithBytesFree) {
  // A B C D fill [0x0, 0x6000) of a 0x7000-byte pool; freeing B leaves 0x3000 free in pieces of 0x2000 and 0x1000.
  auto pool = make(0, 0x7000);
  ASSERT_EQ(pool.allocate(0x1000, 1), 0U);
  ASSERT_EQ(pool.allocate(0x2000, 1), 0x1000U);
  ASSERT_EQ(pool.allocate(0x1000, 1), 0x3000U);
  ASSERT_EQ(pool.allocate(0x2000, 1), 0x4000U);
  ASSERT_TRUE(pool.free(0x1000));
  EXPECT_EQ(pool.free_bytes(), 0x3000U);

  auto too_big = pool.allocate(0x3000, 1);
  ASSERT_FALSE(too_big);
  EXPECT_THAT(too_big.error().message(),
              HasSubstr("0x3000 bytes aligned to 0x1 in [0x0, 0x7000): no free range fits (0x3000 bytes free, the "
                        "largest free range 0x2000 bytes)"));
  EXPECT_EQ(pool.allocate(0x1800, 1), 0x1000U) << "a request that fits B's hole goes there, not after D";
  EXPECT_EQ(pool.allocate(0x1000, 1), 0x6000U) << "one that no longer fits the hole goes after D";
}

TEST(AddressAllocator, ReserveInTheMiddleThenAllocateAround) {
  auto pool = make(0x1'0000, 0x1'0000);
  ASSERT_TRUE(pool.reserve(0x1'4000, 0x1000));
  EXPECT_EQ(pool.free_bytes(), 0xf000U);
  EXPECT_EQ(pool.allocate(0x4000, 0x4000), 0x1'0000U);
  EXPECT_EQ(pool.allocate(0x4000, 0x4000), 0x1'8000U) << "0x14000 is aligned but reserved";
  EXPECT_EQ(pool.allocate(0x1000, 0x1000), 0x1'5000U) << "just after the reservation";
  EXPECT_EQ(pool.allocate(0x3000, 1), 0x1'c000U);
  EXPECT_EQ(pool.allocate(0x2000, 1), 0x1'6000U);
  EXPECT_EQ(pool.free_bytes(), 0x1000U);
  EXPECT_THAT(pool.allocations(),
              ElementsAre(Allocation{0x1'0000, 0x4000}, Allocation{0x1'4000, 0x1000}, Allocation{0x1'5000, 0x1000},
                          Allocation{0x1'6000, 0x2000}, Allocation{0x1'8000, 0x4000}, Allocation{0x1'c000, 0x3000}));
}

TEST(AddressAllocator, ReserveOverlappingAnAllocationIsRefused) {
  auto pool = make(0x1'0000, 0x1'0000);
  ASSERT_EQ(pool.allocate(0x2000, 0x1000), 0x1'0000U);
  ASSERT_TRUE(pool.reserve(0x1'8000, 0x1000));

  auto tail = pool.reserve(0x1'1000, 0x2000);
  ASSERT_FALSE(tail);
  EXPECT_EQ(tail.error().message(),
            "AddressAllocator::reserve: [0x11000, 0x13000) overlaps the allocation "
            "[0x10000, 0x12000)");
  auto head = pool.reserve(0x1'7000, 0x2000);
  ASSERT_FALSE(head);
  EXPECT_THAT(head.error().message(), HasSubstr("overlaps the allocation [0x18000, 0x19000)"));
  EXPECT_FALSE(pool.reserve(0x1'7000, 0x3000)) << "covering a reservation";
  EXPECT_FALSE(pool.reserve(0x1'8000, 0x1000)) << "the same range twice";
  EXPECT_FALSE(pool.reserve(0x1'8fff, 1)) << "its last byte";
  EXPECT_FALSE(pool.reserve(0x1'0000, 0x1'0000)) << "the whole pool";

  EXPECT_EQ(pool.free_bytes(), 0xd000U) << "refusals changed nothing";
  EXPECT_THAT(pool.allocations(), ElementsAre(Allocation{0x1'0000, 0x2000}, Allocation{0x1'8000, 0x1000}));
  EXPECT_TRUE(pool.reserve(0x1'2000, 0x6000)) << "exactly the gap between them";
  EXPECT_TRUE(pool.reserve(0x1'9000, 0x7000)) << "exactly the rest of the pool";
  EXPECT_EQ(pool.free_bytes(), 0U);
}

TEST(AddressAllocator, ReserveOutsideThePoolIsRefused) {
  auto pool = make(0xc000, 0x4000);
  auto below = pool.reserve(0xbff0, 0x20);
  ASSERT_FALSE(below);
  EXPECT_EQ(below.error().message(),
            "AddressAllocator::reserve: [0xbff0, 0xc010) lies outside the pool [0xc000, 0x10000)");
  EXPECT_FALSE(pool.reserve(0xfff0, 0x20)) << "straddles the end";
  EXPECT_FALSE(pool.reserve(0x1'0000, 1)) << "just past the end";
  EXPECT_FALSE(pool.reserve(0xc000, 0x4001)) << "larger than the pool";
  EXPECT_FALSE(pool.reserve(0, kMax));
  EXPECT_TRUE(pool.reserve(0xffff, 1)) << "the last byte is inside";
  EXPECT_TRUE(pool.reserve(0xc000, 1)) << "and so is the first";
}

TEST(AddressAllocator, FreeOfAnUnknownAddressIsRefused) {
  auto pool = make(0xc000, 0x4000);
  auto nothing = pool.free(0xc000);
  ASSERT_FALSE(nothing);
  EXPECT_EQ(nothing.error().message(), "AddressAllocator::free: no allocation starts at 0xc000 in [0xc000, 0x10000)");

  ASSERT_EQ(pool.allocate(0x100, 0x100), 0xc000U);
  auto inside = pool.free(0xc080);
  ASSERT_FALSE(inside);
  EXPECT_THAT(inside.error().message(),
              HasSubstr("0xc080 lies inside the allocation [0xc000, 0xc100): free takes its start address"));
  EXPECT_FALSE(pool.free(0xc100)) << "just past its end";
  EXPECT_FALSE(pool.free(0x1'0000)) << "outside the pool";

  ASSERT_TRUE(pool.free(0xc000));
  EXPECT_FALSE(pool.free(0xc000)) << "a second free";
  EXPECT_EQ(pool.free_bytes(), 0x4000U);
}

TEST(AddressAllocator, FreedRangesCoalesce) {
  auto pool = make(kHoleStart, kHoleSize);
  constexpr std::uint64_t kQuarter = kHoleSize / 4;
  std::vector<std::uint64_t> quarters;
  for (int i = 0; i < 4; ++i) {
    auto address = pool.allocate(kQuarter, kQuarter);
    ASSERT_TRUE(address) << address.error().message();
    quarters.push_back(*address);
  }
  EXPECT_EQ(pool.free_bytes(), 0U);
  // Free the middle ones first (each merges with nothing, then with one side), then both ends (merging both sides
  // at once for the second).
  ASSERT_TRUE(pool.free(quarters[1]));
  ASSERT_TRUE(pool.free(quarters[2]));
  EXPECT_EQ(pool.allocate(2 * kQuarter, 1), quarters[1]) << "two freed neighbours are one free range";
  ASSERT_TRUE(pool.free(quarters[1]));
  ASSERT_TRUE(pool.free(quarters[3]));
  ASSERT_TRUE(pool.free(quarters[0]));
  EXPECT_EQ(pool.free_bytes(), kHoleSize);
  EXPECT_THAT(pool.allocations(), IsEmpty());

  EXPECT_EQ(pool.allocate(kHoleSize, kHoleSize), kHoleStart) << "a full-size allocation succeeds again";
  ASSERT_TRUE(pool.free(kHoleStart));
  EXPECT_EQ(pool.allocate(kHoleSize, 1), kHoleStart);
}

TEST(AddressAllocator, ReservationsCoalesceToo) {
  auto pool = make(0, 0x3000);
  ASSERT_TRUE(pool.reserve(0x1000, 0x1000));
  ASSERT_TRUE(pool.reserve(0, 0x1000));
  ASSERT_TRUE(pool.reserve(0x2000, 0x1000));
  ASSERT_TRUE(pool.free(0x2000));
  ASSERT_TRUE(pool.free(0));
  ASSERT_TRUE(pool.free(0x1000));
  EXPECT_EQ(pool.allocate(0x3000, 0x1000), 0U);
}

TEST(AddressAllocator, InvalidAllocateArguments) {
  auto pool = make(0xc000, 0x4000);
  auto zero = pool.allocate(0, 1);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().message(),
            "AddressAllocator::allocate: 0x0 bytes aligned to 0x1 in [0xc000, 0x10000): the size must be non-zero");
  auto no_alignment = pool.allocate(0x10, 0);
  ASSERT_FALSE(no_alignment);
  EXPECT_THAT(no_alignment.error().message(), HasSubstr("the alignment must be a power of two"));
  EXPECT_FALSE(pool.allocate(0x10, 3));
  EXPECT_FALSE(pool.allocate(0x1800, 0x1800));
  EXPECT_FALSE(pool.allocate(0x10, kMax));
  EXPECT_FALSE(pool.allocate(kMax, 1)) << "larger than the pool";
  EXPECT_FALSE(pool.allocate(0x4001, 1));
  EXPECT_FALSE(pool.allocate(0x10, 1ULL << 63)) << "the first multiple of 2^63 at or above 0xc000 is past the pool";
  EXPECT_EQ(pool.free_bytes(), 0x4000U);
  EXPECT_THAT(pool.allocations(), IsEmpty());

  auto at_zero = make(0, 0x1000);
  EXPECT_EQ(at_zero.allocate(0x10, 1ULL << 63), 0U) << "0 is a multiple of every alignment";
}

TEST(AddressAllocator, InvalidReserveArguments) {
  auto pool = make(0xc000, 0x4000);
  auto zero = pool.reserve(0xc000, 0);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().message(), "AddressAllocator::reserve: 0x0 bytes at 0xc000: the size must be non-zero");
  auto wraps = pool.reserve(0xffff'ffff'ffff'f000, 0x2000);
  ASSERT_FALSE(wraps);
  EXPECT_THAT(wraps.error().message(),
              HasSubstr("0x2000 bytes at 0xfffffffffffff000: the range would run past the end of the 64-bit address"));
  EXPECT_FALSE(pool.reserve(kMax, kMax));
  EXPECT_FALSE(pool.reserve(0xd000, kMax)) << "wraps round to inside the pool";
}

TEST(AddressAllocator, PoolAtTheTopOfTheAddressSpace) {
  auto pool = make(kTopBase, kTopSize);
  EXPECT_EQ(pool.allocate(kTopSize, kTopSize), kTopBase);
  auto full = pool.allocate(1, 1);
  ASSERT_FALSE(full);
  EXPECT_THAT(full.error().message(), HasSubstr("in [0xffffffffffff0000, 0x10000000000000000): no free range fits"))
      << "the end, 2^64, is printed rather than wrapped to 0x0";
  ASSERT_TRUE(pool.free(kTopBase));

  EXPECT_EQ(pool.allocate(0x8000, 0x8000), kTopBase);
  EXPECT_EQ(pool.allocate(0x8000, 0x8000), 0xffff'ffff'ffff'8000U);
  EXPECT_FALSE(pool.allocate(0x1000, 1ULL << 63)) << "aligning up would wrap to 0";
  ASSERT_TRUE(pool.free(0xffff'ffff'ffff'8000));

  EXPECT_FALSE(pool.reserve(0xffff'ffff'ffff'f000, 0x2000)) << "would wrap";
  EXPECT_TRUE(pool.reserve(kMax, 1)) << "the very last byte";
  EXPECT_EQ(pool.allocate(0x1000, 0x1000), 0xffff'ffff'ffff'8000U);
  EXPECT_EQ(pool.allocate(0x6000, 1), 0xffff'ffff'ffff'9000U);
  EXPECT_EQ(pool.allocate(0xfff, 1), 0xffff'ffff'ffff'f000U) << "fills up to the last byte, not past it";
  EXPECT_EQ(pool.free_bytes(), 0U);

  for (const auto& allocation : pool.allocations()) {
    ASSERT_TRUE(pool.free(allocation.address));
  }
  EXPECT_EQ(pool.free_bytes(), kTopSize);
  EXPECT_EQ(pool.allocate(kTopSize, 1), kTopBase) << "everything coalesced, up to 2^64";
}

TEST(AddressAllocator, OneBytePoolAtTheLastAddress) {
  auto pool = make(kMax, 1);
  EXPECT_EQ(pool.allocate(1, 1), kMax);
  EXPECT_FALSE(pool.allocate(1, 1));
  ASSERT_TRUE(pool.free(kMax));
  EXPECT_FALSE(pool.allocate(2, 1));
  EXPECT_FALSE(pool.allocate(1, 2)) << "the next even address is 2^64";
  EXPECT_TRUE(pool.reserve(kMax, 1));
}

// Random allocate/reserve/free against a byte map searched by brute force: same results, same bookkeeping.
TEST(AddressAllocator, MatchesABruteForceModel) {
  constexpr std::uint64_t kBase = 0x1000;
  constexpr std::uint64_t kSize = 0x300;
  auto pool = make(kBase, kSize);
  std::vector<bool> used(kSize, false);
  std::map<std::uint64_t, std::uint64_t> starts;

  const auto all_free = [&](std::uint64_t address, std::uint64_t size) {
    if (address < kBase || address + size > kBase + kSize) {
      return false;
    }
    for (std::uint64_t i = 0; i < size; ++i) {
      if (used[address - kBase + i]) {
        return false;
      }
    }
    return true;
  };
  const auto mark = [&](std::uint64_t address, std::uint64_t size, bool value) {
    for (std::uint64_t i = 0; i < size; ++i) {
      used[address - kBase + i] = value;
    }
  };

  std::mt19937_64 random(42);
  const auto below = [&](std::uint64_t bound) {
    return std::uniform_int_distribution<std::uint64_t>(0, bound - 1)(random);
  };
  for (int step = 0; step < 5000; ++step) {
    const auto operation = below(3);
    if (operation == 0) {
      const std::uint64_t size = 1 + below(0x40);
      const std::uint64_t alignment = 1ULL << below(9);
      std::optional<std::uint64_t> expected;
      for (std::uint64_t address = (kBase + alignment - 1) / alignment * alignment; address < kBase + kSize;
           address += alignment) {
        if (all_free(address, size)) {
          expected = address;
          break;
        }
      }
      const auto got = pool.allocate(size, alignment);
      ASSERT_EQ(got.has_value(), expected.has_value()) << "step " << step;
      if (expected) {
        ASSERT_EQ(*got, *expected) << "step " << step;
        mark(*expected, size, true);
        starts[*expected] = size;
      }
    } else if (operation == 1) {
      const std::uint64_t address = kBase - 0x10 + below(kSize + 0x20);
      const std::uint64_t size = 1 + below(0x20);
      const bool expected = all_free(address, size);
      ASSERT_EQ(pool.reserve(address, size).has_value(), expected) << "step " << step;
      if (expected) {
        mark(address, size, true);
        starts[address] = size;
      }
    } else {
      // Mostly a real start, sometimes any address.
      std::uint64_t address = kBase + below(kSize);
      if (!starts.empty() && below(4) != 0) {
        address = std::next(starts.begin(), static_cast<std::ptrdiff_t>(below(starts.size())))->first;
      }
      const auto found = starts.find(address);
      ASSERT_EQ(pool.free(address).has_value(), found != starts.end()) << "step " << step;
      if (found != starts.end()) {
        mark(found->first, found->second, false);
        starts.erase(found);
      }
    }
    std::vector<Allocation> expected_allocations;
    std::uint64_t expected_free = kSize;
    for (const auto& [address, size] : starts) {
      expected_allocations.push_back(Allocation{address, size});
      expected_free -= size;
    }
    ASSERT_EQ(pool.allocations(), expected_allocations) << "step " << step;
    ASSERT_EQ(pool.free_bytes(), expected_free) << "step " << step;
  }
  // Whatever the history, freeing everything leaves one range again.
  for (const auto& [address, size] : starts) {
    ASSERT_TRUE(pool.free(address));
  }
  EXPECT_EQ(pool.allocate(kSize, 1), kBase);
}

}  // namespace
}  // namespace vmm::pci
