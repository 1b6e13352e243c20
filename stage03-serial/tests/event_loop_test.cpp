#include <gtest/gtest.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "vmm/event/event_loop.hpp"

namespace vmm::event {
namespace {

using namespace std::chrono_literals;

struct Pipe {
  Fd read;
  Fd write;
};

Pipe make_pipe() {
  int fds[2] = {-1, -1};
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

void write_byte(const Fd& fd, char byte) {
  ASSERT_EQ(::write(fd.get(), &byte, 1), 1);
}

EventLoop make_loop() {
  auto loop = EventLoop::create();
  EXPECT_TRUE(loop) << loop.error().message();
  return std::move(*loop);
}

// Signal tests change the thread's mask; this puts it back so later tests see the process as it was.
class SignalMaskGuard {
 public:
  SignalMaskGuard() { ::pthread_sigmask(SIG_SETMASK, nullptr, &saved_); }
  SignalMaskGuard(const SignalMaskGuard&) = delete;
  SignalMaskGuard& operator=(const SignalMaskGuard&) = delete;
  SignalMaskGuard(SignalMaskGuard&&) = delete;
  SignalMaskGuard& operator=(SignalMaskGuard&&) = delete;
  ~SignalMaskGuard() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }

 private:
  sigset_t saved_{};
};

TEST(EventLoop, CallsTheCallbackWhenAPipeIsReadable) {
  EventLoop loop = make_loop();
  Pipe pipe = make_pipe();
  std::vector<std::uint32_t> calls;
  std::string received;
  ASSERT_TRUE(loop.add(pipe.read.get(), EPOLLIN, [&](std::uint32_t events) {
    calls.push_back(events);
    char byte = 0;
    while (::read(pipe.read.get(), &byte, 1) == 1) {
      received += byte;
    }
  }));
  EXPECT_EQ(loop.watch_count(), 1U);

  auto idle = loop.run_once(0ms);
  ASSERT_TRUE(idle) << idle.error().message();
  EXPECT_FALSE(*idle);
  EXPECT_TRUE(calls.empty());

  write_byte(pipe.write, 'a');
  write_byte(pipe.write, 'b');
  auto ran = loop.run_once(100ms);
  ASSERT_TRUE(ran) << ran.error().message();
  EXPECT_TRUE(*ran);
  ASSERT_EQ(calls.size(), 1U);
  EXPECT_TRUE(calls[0] & EPOLLIN);
  EXPECT_EQ(received, "ab");

  // Drained: nothing more to dispatch.
  EXPECT_FALSE(*loop.run_once(0ms));
  EXPECT_EQ(calls.size(), 1U);
}

TEST(EventLoop, ReportsHangupWhenTheWriterCloses) {
  EventLoop loop = make_loop();
  Pipe pipe = make_pipe();
  std::uint32_t seen = 0;
  ASSERT_TRUE(loop.add(pipe.read.get(), EPOLLIN, [&](std::uint32_t events) { seen = events; }));
  pipe.write.reset();
  ASSERT_TRUE(*loop.run_once(100ms));
  EXPECT_TRUE(seen & EPOLLHUP);
}

TEST(EventLoop, ACallbackCanRemoveItselfAndAnotherReadyFd) {
  EventLoop loop = make_loop();
  Pipe first = make_pipe();
  Pipe second = make_pipe();
  write_byte(first.write, 'x');
  write_byte(second.write, 'y');
  int calls = 0;
  std::string alive_after_remove;
  // Both fds are ready in the same batch; whichever runs first removes both, so the other must not run.
  auto remove_both = [&, tag = std::string("captured state survives its own removal")](std::uint32_t) {
    ++calls;
    EXPECT_TRUE(loop.remove(first.read.get()));
    EXPECT_TRUE(loop.remove(second.read.get()));
    alive_after_remove = tag;  // the callback object is still alive after its watch was removed
  };
  ASSERT_TRUE(loop.add(first.read.get(), EPOLLIN, remove_both));
  ASSERT_TRUE(loop.add(second.read.get(), EPOLLIN, remove_both));

  ASSERT_TRUE(*loop.run_once(100ms));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(alive_after_remove, "captured state survives its own removal");
  EXPECT_EQ(loop.watch_count(), 0U);
  // Both pipes are still readable, but nobody watches them any more.
  EXPECT_FALSE(*loop.run_once(10ms));
  EXPECT_EQ(calls, 1);
}

TEST(EventLoop, AFdCanBeAddedAgainAfterRemove) {
  EventLoop loop = make_loop();
  Pipe pipe = make_pipe();
  write_byte(pipe.write, 'x');
  int old_calls = 0;
  int new_calls = 0;
  ASSERT_TRUE(loop.add(pipe.read.get(), EPOLLIN, [&](std::uint32_t) { ++old_calls; }));
  ASSERT_TRUE(loop.remove(pipe.read.get()));
  ASSERT_TRUE(loop.add(pipe.read.get(), EPOLLIN, [&](std::uint32_t) { ++new_calls; }));
  ASSERT_TRUE(*loop.run_once(100ms));
  EXPECT_EQ(old_calls, 0);
  EXPECT_EQ(new_calls, 1);
}

TEST(EventLoop, TimerFiresRepeatedlyUntilCancelled) {
  EventLoop loop = make_loop();
  int fired = 0;
  TimerId timer;
  const auto start = std::chrono::steady_clock::now();
  auto added = loop.add_timer(5ms, [&] {
    if (++fired == 3) {
      EXPECT_TRUE(loop.cancel_timer(timer));  // from its own callback
      loop.stop();
    }
  });
  ASSERT_TRUE(added) << added.error().message();
  timer = *added;
  ASSERT_TRUE(loop.run());
  EXPECT_EQ(fired, 3);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 15ms);
  EXPECT_EQ(loop.watch_count(), 0U);
  // Cancelled: no more expirations.
  EXPECT_FALSE(*loop.run_once(20ms));
  EXPECT_EQ(fired, 3);
  // Cancelling twice is a clear error, not a crash.
  auto again = loop.cancel_timer(timer);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().operation, "EventLoop::cancel_timer");
}

TEST(EventLoop, TimerRejectsAZeroInterval) {
  EventLoop loop = make_loop();
  auto timer = loop.add_timer(0ns, [] {});
  ASSERT_FALSE(timer);
  EXPECT_EQ(timer.error().operation, "EventLoop::add_timer");
  EXPECT_EQ(loop.watch_count(), 0U);
}

TEST(EventLoop, CancelTimerDoesNotRemoveOtherWatches) {
  EventLoop loop = make_loop();
  Pipe pipe = make_pipe();
  ASSERT_TRUE(loop.add(pipe.read.get(), EPOLLIN, [](std::uint32_t) {}));
  // Tokens start at 1: the pipe's watch is token 1, and it is not a timer.
  EXPECT_FALSE(loop.cancel_timer(TimerId{1}));
  EXPECT_FALSE(loop.cancel_timer(TimerId{0}));
  EXPECT_EQ(loop.watch_count(), 1U);
}

TEST(EventLoop, PostFromAnotherThreadRunsOnTheLoopThread) {
  EventLoop loop = make_loop();
  std::thread::id ran_on;
  std::thread::id poster_id;
  int order = 0;
  std::vector<int> seen;
  std::thread poster([&] {
    poster_id = std::this_thread::get_id();
    EXPECT_TRUE(loop.post([&] { seen.push_back(++order); }));
    EXPECT_TRUE(loop.post([&] {
      seen.push_back(++order);
      ran_on = std::this_thread::get_id();
      loop.stop();
    }));
  });
  auto ran = loop.run();
  poster.join();
  ASSERT_TRUE(ran) << ran.error().message();
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_NE(ran_on, poster_id);
  EXPECT_EQ(seen, (std::vector<int>{1, 2}));
}

TEST(EventLoop, ANotifierOutlivesItsLoop) {
  std::shared_ptr<Notifier> notifier;
  bool ran = false;
  {
    EventLoop loop = make_loop();
    notifier = loop.notifier();
  }
  // The loop is gone: posting must neither crash nor run the callback.
  EXPECT_TRUE(notifier->post([&] { ran = true; }));
  EXPECT_FALSE(ran);
  EXPECT_FALSE(notifier->post(nullptr));
}

TEST(EventLoop, StopFromACallbackReturnsFromRun) {
  EventLoop loop = make_loop();
  Pipe pipe = make_pipe();
  write_byte(pipe.write, 'x');
  int calls = 0;
  // The callback never drains the pipe, so the fd stays ready: only stop() ends run().
  ASSERT_TRUE(loop.add(pipe.read.get(), EPOLLIN, [&](std::uint32_t) {
    ++calls;
    loop.stop();
  }));
  ASSERT_TRUE(loop.run());
  EXPECT_EQ(calls, 1);
  // A later run() starts afresh and stops again at the next stop().
  ASSERT_TRUE(loop.run());
  EXPECT_EQ(calls, 2);
}

TEST(EventLoop, SignalsArriveThroughTheLoop) {
  SignalMaskGuard mask_guard;
  EventLoop loop = make_loop();
  std::vector<signalfd_siginfo> received;
  auto added = loop.add_signals({SIGUSR1}, [&](const signalfd_siginfo& info) { received.push_back(info); });
  ASSERT_TRUE(added) << added.error().message();

  sigset_t blocked;
  ASSERT_EQ(::pthread_sigmask(SIG_SETMASK, nullptr, &blocked), 0);
  EXPECT_EQ(sigismember(&blocked, SIGUSR1), 1);

  // Unblocked, SIGUSR1's default action would kill the test binary.
  ASSERT_EQ(::raise(SIGUSR1), 0);
  auto ran = loop.run_once(100ms);
  ASSERT_TRUE(ran) << ran.error().message();
  EXPECT_TRUE(*ran);
  ASSERT_EQ(received.size(), 1U);
  EXPECT_EQ(received[0].ssi_signo, static_cast<std::uint32_t>(SIGUSR1));
  EXPECT_EQ(received[0].ssi_pid, static_cast<std::uint32_t>(::getpid()));
  // Consumed: the signal is no longer pending.
  sigset_t pending;
  ASSERT_EQ(::sigpending(&pending), 0);
  EXPECT_EQ(sigismember(&pending, SIGUSR1), 0);
}

TEST(EventLoop, AddSignalsRejectsUncatchableSignals) {
  SignalMaskGuard mask_guard;
  EventLoop loop = make_loop();
  auto added = loop.add_signals({SIGKILL}, [](const signalfd_siginfo&) {});
  ASSERT_FALSE(added);
  EXPECT_EQ(added.error().operation, "EventLoop::add_signals");
  EXPECT_EQ(loop.watch_count(), 0U);
}

std::atomic<bool> g_usr2_handled{false};
extern "C" void note_usr2(int) {
  g_usr2_handled = true;
}

TEST(EventLoop, RunRetriesAfterASignalInterruptsEpollWait) {
  SignalMaskGuard mask_guard;
  struct sigaction action {};
  struct sigaction previous {};
  action.sa_handler = note_usr2;
  sigemptyset(&action.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR2, &action, &previous), 0);
  g_usr2_handled = false;

  EventLoop loop = make_loop();
  const pthread_t loop_thread = ::pthread_self();
  std::atomic<bool> running{false};
  ASSERT_TRUE(loop.post([&] { running = true; }));
  std::thread interrupter([&] {
    while (!running) {
      std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(20ms);  // let the loop go back into epoll_wait
    ::pthread_kill(loop_thread, SIGUSR2);
    std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(loop.post([&] { loop.stop(); }));
  });
  auto ran = loop.run();
  interrupter.join();
  ::sigaction(SIGUSR2, &previous, nullptr);
  ASSERT_TRUE(ran) << ran.error().message();  // EINTR was not reported as an error
  EXPECT_TRUE(g_usr2_handled);
}

TEST(EventLoop, ErrorsNameTheSyscall) {
  EventLoop loop = make_loop();
  int closed = -1;
  {
    Pipe pipe = make_pipe();
    closed = pipe.read.get();
  }
  auto bad = loop.add(closed, EPOLLIN, [](std::uint32_t) {});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().operation, "epoll_ctl");
  EXPECT_EQ(bad.error().errno_value, EBADF);
  EXPECT_NE(bad.error().message().find("epoll_ctl: EBADF"), std::string::npos) << bad.error().message();
  EXPECT_EQ(loop.watch_count(), 0U);

  Pipe pipe = make_pipe();
  ASSERT_TRUE(loop.add(pipe.read.get(), EPOLLIN, [](std::uint32_t) {}));
  auto twice = loop.add(pipe.read.get(), EPOLLIN, [](std::uint32_t) {});
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().message(), fmt::format("epoll_ctl: EEXIST (EPOLL_CTL_ADD fd {})", pipe.read.get()));
  EXPECT_EQ(loop.watch_count(), 1U);

  auto unknown = loop.remove(pipe.write.get());
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().message(), fmt::format("EventLoop::remove: fd {} is not watched", pipe.write.get()));
}

TEST(EventLoop, RemovingAClosedFdReportsTheBugButForgetsTheWatch) {
  EventLoop loop = make_loop();
  Pipe pipe = make_pipe();
  const int fd = pipe.read.get();
  ASSERT_TRUE(loop.add(fd, EPOLLIN, [](std::uint32_t) {}));
  pipe.read.reset();
  auto removed = loop.remove(fd);
  ASSERT_FALSE(removed);
  EXPECT_EQ(removed.error().errno_value, EBADF);
  EXPECT_EQ(loop.watch_count(), 0U);
}

}  // namespace
}  // namespace vmm::event

#include "vmm/event/write_all.hpp"

namespace vmm::event {
namespace {

TEST(WriteAll, EveryByteArrivesAndErrorsNameTheCall) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  const std::string text(10000, 'x');
  ASSERT_TRUE(write_all(write_end.get(), std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size())));
  std::string got(text.size(), '\0');
  std::size_t have = 0;
  while (have < got.size()) {
    const ssize_t n = ::read(read_end.get(), got.data() + have, got.size() - have);
    ASSERT_GT(n, 0);
    have += static_cast<std::size_t>(n);
  }
  EXPECT_EQ(got, text);
  const std::uint8_t byte = 1;
  auto bad = write_all(-1, std::span(&byte, 1));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), "write: EBADF (fd -1, 1 bytes left)");
}

}  // namespace
}  // namespace vmm::event
