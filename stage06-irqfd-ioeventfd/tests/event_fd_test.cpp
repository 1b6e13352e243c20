#include "vmm/event/event_fd.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <future>
#include <limits>
#include <optional>
#include <thread>
#include <utility>

namespace vmm::event {
namespace {

using namespace std::chrono_literals;

EventFd make(EventFd::Mode mode = EventFd::Mode::Counter, std::uint32_t initial = 0) {
  auto event = EventFd::create(mode, initial);
  EXPECT_TRUE(event) << event.error().message();
  return std::move(*event);
}

// The value read, or nullopt for an empty counter; fails the test on an error.
std::optional<std::uint64_t> read_value(const EventFd& event) {
  auto value = event.read();
  EXPECT_TRUE(value) << value.error().message();
  return value ? *value : std::nullopt;
}

// poll(2) with timeout 0: is the fd readable right now?
bool readable(int fd) {
  pollfd entry{.fd = fd, .events = POLLIN, .revents = 0};
  int ready = ::poll(&entry, 1, 0);
  EXPECT_GE(ready, 0);
  return ready == 1 && (entry.revents & POLLIN) != 0;
}

// fcntl(F_GETFD) fails with EBADF exactly when the descriptor is not open.
bool is_closed(int fd) {
  errno = 0;
  return ::fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

TEST(EventFd, CounterModeCoalescesWritesIntoOneRead) {
  EventFd event = make();
  EXPECT_EQ(event.mode(), EventFd::Mode::Counter);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(event.write(1));
  }
  EXPECT_EQ(read_value(event), std::optional<std::uint64_t>(3));
  EXPECT_EQ(read_value(event), std::nullopt);
}

TEST(EventFd, SemaphoreModeReadsOnePerWrite) {
  EventFd event = make(EventFd::Mode::Semaphore);
  EXPECT_EQ(event.mode(), EventFd::Mode::Semaphore);
  ASSERT_TRUE(event.write(1));
  ASSERT_TRUE(event.write(1));
  EXPECT_EQ(read_value(event), std::optional<std::uint64_t>(1));
  EXPECT_EQ(read_value(event), std::optional<std::uint64_t>(1));
  EXPECT_EQ(read_value(event), std::nullopt);
}

TEST(EventFd, StartsWithTheInitialValue) {
  EventFd counter = make(EventFd::Mode::Counter, 5);
  EXPECT_EQ(read_value(counter), std::optional<std::uint64_t>(5));
  EXPECT_EQ(read_value(counter), std::nullopt);

  EventFd semaphore = make(EventFd::Mode::Semaphore, 2);
  EXPECT_EQ(read_value(semaphore), std::optional<std::uint64_t>(1));
  EXPECT_EQ(read_value(semaphore), std::optional<std::uint64_t>(1));
  EXPECT_EQ(read_value(semaphore), std::nullopt);
}

TEST(EventFd, ReadOfZeroReturnsNothingWithoutBlocking) {
  EventFd event = make();
  // Were the fd blocking, this read would hang the test (until ctest's timeout) instead of returning.
  auto value = event.read();
  ASSERT_TRUE(value) << value.error().message();
  EXPECT_FALSE(value->has_value());
  EXPECT_NE(::fcntl(event.fd(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(event.fd(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST(EventFd, OverflowingWriteFailsWithEagain) {
  EventFd event = make();
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max() - 1;  // the largest value it can hold
  ASSERT_TRUE(event.write(kMax));
  auto overflow = event.write(1);
  ASSERT_FALSE(overflow);
  EXPECT_EQ(overflow.error().errno_value, EAGAIN);
  EXPECT_NE(overflow.error().message().find("EAGAIN"), std::string::npos) << overflow.error().message();
  // The failed write left the counter alone.
  EXPECT_EQ(read_value(event), std::optional<std::uint64_t>(kMax));
}

TEST(EventFd, CloneSharesTheCounter) {
  EventFd event = make();
  auto clone = event.try_clone();
  ASSERT_TRUE(clone) << clone.error().message();
  EXPECT_NE(clone->fd(), event.fd());
  EXPECT_EQ(clone->mode(), event.mode());

  ASSERT_TRUE(clone->write(2));
  ASSERT_TRUE(event.write(1));
  EXPECT_EQ(read_value(event), std::optional<std::uint64_t>(3));
  EXPECT_EQ(read_value(*clone), std::nullopt);
}

TEST(EventFd, PollsReadableIffTheCounterIsNonZero) {
  EventFd event = make();
  EXPECT_FALSE(readable(event.fd()));
  ASSERT_TRUE(event.write(1));
  EXPECT_TRUE(readable(event.fd()));
  EXPECT_EQ(read_value(event), std::optional<std::uint64_t>(1));
  EXPECT_FALSE(readable(event.fd()));

  // Semaphore mode stays readable until the last unit is taken.
  EventFd semaphore = make(EventFd::Mode::Semaphore, 2);
  EXPECT_TRUE(readable(semaphore.fd()));
  (void)read_value(semaphore);
  EXPECT_TRUE(readable(semaphore.fd()));
  (void)read_value(semaphore);
  EXPECT_FALSE(readable(semaphore.fd()));
}

TEST(EventFd, WritingFromAnotherThreadWakesAPoller) {
  EventFd event = make();
  std::promise<void> started;
  // The waiter blocks in poll for up to 10 s; a write must end that wait, whenever it lands relative to the poll.
  auto woke = std::async(std::launch::async, [&] {
    started.set_value();
    pollfd entry{.fd = event.fd(), .events = POLLIN, .revents = 0};
    int ready = 0;
    do {
      ready = ::poll(&entry, 1, 10'000);
    } while (ready < 0 && errno == EINTR);
    return ready == 1 && (entry.revents & POLLIN) != 0;
  });
  started.get_future().wait();
  ASSERT_TRUE(event.write(1));
  ASSERT_EQ(woke.wait_for(20s), std::future_status::ready);
  EXPECT_TRUE(woke.get());
  EXPECT_EQ(read_value(event), std::optional<std::uint64_t>(1));
}

TEST(EventFd, ClosesItsFdOnDestructionAndMoveAssignment) {
  int fd = -1;
  {
    EventFd event = make();
    fd = event.fd();
    ASSERT_FALSE(is_closed(fd));
  }
  EXPECT_TRUE(is_closed(fd));

  EventFd first = make();
  const int first_fd = first.fd();
  EventFd moved = std::move(first);
  EXPECT_EQ(moved.fd(), first_fd);  // a move transfers the descriptor, it does not close it
  EXPECT_FALSE(is_closed(first_fd));
  EXPECT_EQ(first.fd(), -1);  // NOLINT(bugprone-use-after-move): the moved-from state is what is tested

  EventFd other = make();
  const int other_fd = other.fd();
  other = std::move(moved);  // closes the descriptor `other` held
  EXPECT_TRUE(is_closed(other_fd));
  EXPECT_EQ(other.fd(), first_fd);
  EXPECT_FALSE(is_closed(first_fd));
}

}  // namespace
}  // namespace vmm::event
