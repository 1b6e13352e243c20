#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "vmm/event/escape.hpp"
#include "vmm/event/terminal.hpp"
#include "vmm/fd.hpp"

namespace vmm::event {
namespace {

using Bytes = std::vector<std::uint8_t>;

// A pseudo-terminal: the slave side stands in for the user's terminal, the master for the terminal emulator.
struct Pty {
  Fd master;
  Fd slave;
};

Pty open_pty() {
  Fd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  EXPECT_TRUE(master.valid());
  EXPECT_EQ(::grantpt(master.get()), 0);
  EXPECT_EQ(::unlockpt(master.get()), 0);
  std::array<char, 128> name{};
  EXPECT_EQ(::ptsname_r(master.get(), name.data(), name.size()), 0);
  auto slave = Fd::open(name.data(), O_RDWR | O_NOCTTY);
  EXPECT_TRUE(slave) << slave.error().message();
  return Pty{std::move(master), slave ? std::move(*slave) : Fd()};
}

termios attributes(int fd) {
  termios t{};
  EXPECT_EQ(::tcgetattr(fd, &t), 0);
  return t;
}

bool is_cooked(const termios& t) {
  return (t.c_lflag & ICANON) != 0 && (t.c_lflag & ECHO) != 0;
}

bool readable_within(int fd, int timeout_ms) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}

// ---- Terminal -----------------------------------------------------------------------------------------------------

TEST(Terminal, RawModeOnAPty) {
  Pty pty = open_pty();
  const termios before = attributes(pty.slave.get());
  ASSERT_TRUE(is_cooked(before));  // a fresh pty starts in canonical mode with echo

  auto terminal = Terminal::make_raw(pty.slave.get());
  ASSERT_TRUE(terminal) << terminal.error().message();
  EXPECT_TRUE(terminal->is_tty());
  EXPECT_TRUE(terminal->is_raw());
  EXPECT_EQ(terminal->fd(), pty.slave.get());

  const termios raw = attributes(pty.slave.get());
  EXPECT_EQ(raw.c_lflag & ICANON, 0U);
  EXPECT_EQ(raw.c_lflag & ECHO, 0U);
  EXPECT_EQ(raw.c_lflag & ISIG, 0U);   // Ctrl-C goes to the guest
  EXPECT_EQ(raw.c_iflag & ICRNL, 0U);  // Enter arrives as CR
  EXPECT_EQ(raw.c_iflag & IXON, 0U);
  EXPECT_NE(raw.c_oflag & OPOST, 0U);  // kept on purpose: "\n" still becomes "\r\n"
  EXPECT_EQ(raw.c_cflag & CSIZE, static_cast<tcflag_t>(CS8));
  EXPECT_EQ(raw.c_cc[VMIN], 1);

  // Behaviour, not just flags: a key without a newline is readable at once, and is not echoed back.
  ASSERT_EQ(::write(pty.master.get(), "a\x03", 2), 2);
  ASSERT_TRUE(readable_within(pty.slave.get(), 100));
  std::array<char, 4> got{};
  ASSERT_EQ(::read(pty.slave.get(), got.data(), got.size()), 2);
  EXPECT_EQ(got[0], 'a');
  EXPECT_EQ(got[1], '\x03');  // Ctrl-C arrives as a byte, not as SIGINT
  EXPECT_FALSE(readable_within(pty.master.get(), 20));
}

TEST(Terminal, OutputProcessingStillTurnsNewlineIntoCrLf) {
  Pty pty = open_pty();
  auto terminal = Terminal::make_raw(pty.slave.get());
  ASSERT_TRUE(terminal);
  ASSERT_EQ(::write(pty.slave.get(), "hi\n", 3), 3);
  ASSERT_TRUE(readable_within(pty.master.get(), 100));
  std::array<char, 8> got{};
  const ssize_t n = ::read(pty.master.get(), got.data(), got.size());
  EXPECT_EQ(std::string(got.data(), n > 0 ? static_cast<std::size_t>(n) : 0), "hi\r\n");
}

TEST(Terminal, TheDestructorRestoresTheSavedSettings) {
  Pty pty = open_pty();
  const termios before = attributes(pty.slave.get());
  {
    auto terminal = Terminal::make_raw(pty.slave.get());
    ASSERT_TRUE(terminal);
    ASSERT_FALSE(is_cooked(attributes(pty.slave.get())));
  }
  const termios after = attributes(pty.slave.get());
  EXPECT_EQ(after.c_lflag, before.c_lflag);
  EXPECT_EQ(after.c_iflag, before.c_iflag);
  EXPECT_EQ(after.c_oflag, before.c_oflag);
  EXPECT_EQ(after.c_cflag, before.c_cflag);
  EXPECT_EQ(after.c_cc[VMIN], before.c_cc[VMIN]);
}

TEST(Terminal, MovingHandsOverTheRestore) {
  Pty pty = open_pty();
  Terminal outer;
  EXPECT_FALSE(outer.is_tty());
  {
    auto made = Terminal::make_raw(pty.slave.get());
    ASSERT_TRUE(made);
    Terminal inner = std::move(*made);
    EXPECT_FALSE(made->is_raw());  // moved from: its destructor must not restore
    outer = std::move(inner);
    EXPECT_FALSE(inner.is_raw());  // NOLINT(bugprone-use-after-move): checking the moved-from state on purpose
  }
  // The moved-from objects are gone and the terminal is still raw.
  EXPECT_TRUE(outer.is_raw());
  EXPECT_FALSE(is_cooked(attributes(pty.slave.get())));

  ASSERT_TRUE(outer.restore());
  EXPECT_TRUE(is_cooked(attributes(pty.slave.get())));
  EXPECT_FALSE(outer.is_raw());
  EXPECT_TRUE(outer.is_tty());
  EXPECT_TRUE(outer.restore());  // idempotent
}

TEST(Terminal, MoveAssignmentRestoresTheTargetsOwnTerminalFirst) {
  Pty first = open_pty();
  Pty second = open_pty();
  auto a = Terminal::make_raw(first.slave.get());
  ASSERT_TRUE(a);
  *a = Terminal();  // replaced by an empty Terminal: the first pty goes back to cooked mode
  EXPECT_TRUE(is_cooked(attributes(first.slave.get())));
  auto b = Terminal::make_raw(second.slave.get());  // and the process-wide slot is free again
  ASSERT_TRUE(b) << b.error().message();
}

TEST(Terminal, OnlyOneTerminalAtATimeIsRaw) {
  Pty first = open_pty();
  Pty second = open_pty();
  auto a = Terminal::make_raw(first.slave.get());
  ASSERT_TRUE(a);
  auto b = Terminal::make_raw(second.slave.get());
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().operation, "Terminal::make_raw");
  EXPECT_TRUE(is_cooked(attributes(second.slave.get())));
  ASSERT_TRUE(a->restore());
  auto c = Terminal::make_raw(second.slave.get());
  ASSERT_TRUE(c) << c.error().message();
}

TEST(Terminal, NotATtyIsANoOp) {
  int fds[2] = {-1, -1};
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  auto terminal = Terminal::make_raw(read_end.get());
  ASSERT_TRUE(terminal) << terminal.error().message();
  EXPECT_FALSE(terminal->is_tty());
  EXPECT_FALSE(terminal->is_raw());
  EXPECT_TRUE(terminal->restore());
  // It did not take the raw-mode slot either: a real terminal can still go raw.
  Pty pty = open_pty();
  EXPECT_TRUE(Terminal::make_raw(pty.slave.get()));
}

TEST(Terminal, ABadFdIsAnError) {
  auto terminal = Terminal::make_raw(-1);
  ASSERT_FALSE(terminal);
  EXPECT_EQ(terminal.error().message(), "tcgetattr: EBADF (fd -1)");
}

TEST(Terminal, RawAttributesKeepOutputProcessingAndOtherBits) {
  termios cooked{};
  cooked.c_iflag = ICRNL | IXON | BRKINT | IUTF8;
  cooked.c_oflag = OPOST | ONLCR;
  cooked.c_lflag = ICANON | ECHO | ISIG | IEXTEN | ECHOE;
  cooked.c_cflag = CS7 | PARENB | CREAD;
  const termios raw = Terminal::raw_attributes(cooked);
  EXPECT_EQ(raw.c_iflag, static_cast<tcflag_t>(IUTF8));
  EXPECT_EQ(raw.c_oflag, static_cast<tcflag_t>(OPOST | ONLCR));
  EXPECT_EQ(raw.c_lflag, static_cast<tcflag_t>(ECHOE));
  EXPECT_EQ(raw.c_cflag, static_cast<tcflag_t>(CS8 | CREAD));
  EXPECT_EQ(raw.c_cc[VMIN], 1);
  EXPECT_EQ(raw.c_cc[VTIME], 0);
}

// Runs `body` in a child process holding `slave` in raw mode; returns the child's wait status.
template <typename Body>
int in_child_with_raw_terminal(int slave, bool register_hooks, Body body) {
  std::fflush(nullptr);  // or the child would flush gtest's buffered output a second time
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (register_hooks && !Terminal::restore_on_fatal_signal()) {
      ::_exit(90);
    }
    auto terminal = Terminal::make_raw(slave);
    if (!terminal || !terminal->is_raw()) {
      ::_exit(91);
    }
    body();
    ::_exit(92);  // the body was supposed to end the process
  }
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  return status;
}

TEST(Terminal, AFatalSignalRestoresTheTerminal) {
  for (int signal : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(signal);
    Pty pty = open_pty();
    const int status = in_child_with_raw_terminal(pty.slave.get(), true, [signal] { ::raise(signal); });
    ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
    EXPECT_EQ(WTERMSIG(status), signal);  // re-raised: the exit status still says what killed it
    EXPECT_TRUE(is_cooked(attributes(pty.slave.get())));
  }
}

TEST(Terminal, WithoutTheHooksAFatalSignalLeavesTheTerminalRaw) {
  // The control for the test above: what the hooks are for.
  Pty pty = open_pty();
  const int status = in_child_with_raw_terminal(pty.slave.get(), false, [] { ::raise(SIGTERM); });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_FALSE(is_cooked(attributes(pty.slave.get())));
}

TEST(Terminal, ExitRestoresTheTerminal) {
  // std::exit runs atexit hooks but not the destructors of the Terminal on the child's stack.
  Pty pty = open_pty();
  const int status = in_child_with_raw_terminal(pty.slave.get(), true, [] { std::exit(7); });
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 7);
  EXPECT_TRUE(is_cooked(attributes(pty.slave.get())));
}

// ---- EscapeDetector -----------------------------------------------------------------------------------------------

constexpr std::uint8_t kCtrlA = 0x01;

TEST(EscapeDetector, OrdinaryBytesPassThrough) {
  EscapeDetector detector;
  const Bytes input = {'l', 's', '\r', 0x03, 0x1b, '[', 'A'};
  const EscapeResult result = detector.feed(input);
  EXPECT_EQ(result.forward, input);
  EXPECT_FALSE(result.quit);
  EXPECT_FALSE(detector.pending());
}

TEST(EscapeDetector, EmptyInput) {
  EscapeDetector detector;
  const EscapeResult result = detector.feed({});
  EXPECT_TRUE(result.forward.empty());
  EXPECT_FALSE(result.quit);
}

TEST(EscapeDetector, CtrlAXQuitsAndForwardsWhatCameBefore) {
  EscapeDetector detector;
  const EscapeResult result = detector.feed(Bytes{'a', 'b', kCtrlA, 'x', 'c', 'd'});
  EXPECT_TRUE(result.quit);
  EXPECT_EQ(result.forward, (Bytes{'a', 'b'}));  // "cd" after the quit is dropped
}

TEST(EscapeDetector, CtrlACtrlASendsOneCtrlA) {
  EscapeDetector detector;
  const EscapeResult result = detector.feed(Bytes{'a', kCtrlA, kCtrlA, 'b'});
  EXPECT_FALSE(result.quit);
  EXPECT_EQ(result.forward, (Bytes{'a', kCtrlA, 'b'}));
}

TEST(EscapeDetector, ALiteralCtrlAFollowedByXDoesNotQuit) {
  EscapeDetector detector;
  const EscapeResult result = detector.feed(Bytes{kCtrlA, kCtrlA, 'x'});
  EXPECT_FALSE(result.quit);
  EXPECT_EQ(result.forward, (Bytes{kCtrlA, 'x'}));
}

TEST(EscapeDetector, CtrlAFollowedByAnythingElsePassesBothBytes) {
  EscapeDetector detector;
  const EscapeResult result = detector.feed(Bytes{kCtrlA, 'X', kCtrlA, 'c'});
  EXPECT_FALSE(result.quit);  // only a lower-case x quits
  EXPECT_EQ(result.forward, (Bytes{kCtrlA, 'X', kCtrlA, 'c'}));
}

TEST(EscapeDetector, QuitSplitAcrossTwoFeeds) {
  EscapeDetector detector;
  const EscapeResult first = detector.feed(Bytes{'a', kCtrlA});
  EXPECT_EQ(first.forward, (Bytes{'a'}));  // the Ctrl-A is held back
  EXPECT_FALSE(first.quit);
  EXPECT_TRUE(detector.pending());
  const EscapeResult second = detector.feed(Bytes{'x'});
  EXPECT_TRUE(second.quit);
  EXPECT_TRUE(second.forward.empty());
  EXPECT_FALSE(detector.pending());
}

TEST(EscapeDetector, LiteralCtrlASplitAcrossTwoFeeds) {
  EscapeDetector detector;
  EXPECT_TRUE(detector.feed(Bytes{kCtrlA}).forward.empty());
  const EscapeResult second = detector.feed(Bytes{kCtrlA, 'z'});
  EXPECT_FALSE(second.quit);
  EXPECT_EQ(second.forward, (Bytes{kCtrlA, 'z'}));
}

TEST(EscapeDetector, NonCommandSplitAcrossTwoFeeds) {
  EscapeDetector detector;
  EXPECT_TRUE(detector.feed(Bytes{kCtrlA}).forward.empty());
  EXPECT_TRUE(detector.feed({}).forward.empty());  // an empty read changes nothing
  EXPECT_TRUE(detector.pending());
  const EscapeResult result = detector.feed(Bytes{'q'});
  EXPECT_FALSE(result.quit);
  EXPECT_EQ(result.forward, (Bytes{kCtrlA, 'q'}));
  EXPECT_FALSE(detector.pending());
}

}  // namespace
}  // namespace vmm::event
