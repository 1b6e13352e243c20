#include "child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include <fmt/format.h>

extern char** environ;

namespace vmm::stage07 {

namespace {

ExitStatus decode_status(int raw) {
  if (WIFSIGNALED(raw)) {
    return {.code = 128 + WTERMSIG(raw), .signal = WTERMSIG(raw)};
  }
  return {.code = WEXITSTATUS(raw), .signal = std::nullopt};
}

}  // namespace

std::string ExitStatus::describe() const {
  if (signal) {
    const char* name = ::sigabbrev_np(*signal);
    return fmt::format("killed by SIG{}", name != nullptr ? name : std::to_string(*signal).c_str());
  }
  return fmt::format("exit status {}", code);
}

Result<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& argv) {
  if (argv.empty()) {
    return logic_error("ChildProcess::spawn", "no program given");
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return sys_error("pipe2", errno, argv[0]);
  }
  Fd read_end(pipe_fds[0]);
  Fd write_end(pipe_fds[1]);

  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  // dup2 clears FD_CLOEXEC on the child's copy; everything else of ours stays closed in the child.
  ::posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
  ::posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  // Nothing else of ours: descriptors this process inherited without close-on-exec would leak into the child.
  ::posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& arg : argv) {
    args.push_back(const_cast<char*>(arg.c_str()));
  }
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return sys_error("posix_spawnp", rc, argv[0]);
  }
  return ChildProcess(pid, std::move(read_end));
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, 0)),
      stdout_(std::move(other.stdout_)),
      eof_(other.eof_),
      output_(std::move(other.output_)),
      status_(other.status_) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = std::exchange(other.pid_, 0);
    stdout_ = std::move(other.stdout_);
    eof_ = other.eof_;
    output_ = std::move(other.output_);
    status_ = other.status_;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

bool ChildProcess::read_some(std::chrono::milliseconds timeout) {
  if (eof_ || !stdout_) {
    return false;
  }
  pollfd pfd{.fd = stdout_.get(), .events = POLLIN, .revents = 0};
  const int ready = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  if (ready <= 0) {
    return true;  // timeout or EINTR: nothing yet
  }
  char buffer[4096];
  const ssize_t n = ::read(stdout_.get(), buffer, sizeof buffer);
  if (n > 0) {
    output_.append(buffer, static_cast<std::size_t>(n));
    return true;
  }
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
    return true;
  }
  eof_ = true;
  return false;
}

Result<bool> ChildProcess::wait_for_output(std::string_view needle, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (output_.find(needle) == std::string::npos) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return sys_error(
          "ChildProcess::wait_for_output", ETIMEDOUT,
          fmt::format("pid {}: no \"{}\" after {} ms; output so far: \"{}\"", pid_, needle, timeout.count(), output_));
    }
    if (!read_some(std::min(left, std::chrono::milliseconds(100)))) {
      return output_.find(needle) != std::string::npos;
    }
  }
  return true;
}

const std::string& ChildProcess::output() {
  while (!eof_ && stdout_) {
    const auto before = output_.size();
    if (!read_some(std::chrono::milliseconds(0)) || output_.size() == before) {
      break;
    }
  }
  return output_;
}

Result<ExitStatus> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (status_) {
    return *status_;
  }
  if (pid_ <= 0) {
    return logic_error("ChildProcess::wait", "no process");
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int raw = 0;
    const pid_t done = ::waitpid(pid_, &raw, WNOHANG);
    if (done == pid_) {
      status_ = decode_status(raw);
      (void)output();  // whatever it wrote before exiting
      return *status_;
    }
    if (done < 0 && errno != EINTR) {
      return sys_error("waitpid", errno, fmt::format("pid {}", pid_));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return sys_error("ChildProcess::wait", ETIMEDOUT,
                       fmt::format("pid {} still running after {} ms", pid_, timeout.count()));
    }
    // Drain stdout meanwhile: a child blocked on a full pipe would never exit.
    if (!read_some(std::chrono::milliseconds(10))) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

Result<ExitStatus> ChildProcess::terminate(std::chrono::milliseconds grace) {
  if (status_) {
    return *status_;
  }
  if (auto rc = kill(SIGTERM); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto status = wait(grace)) {
    return status;
  }
  if (auto rc = kill(SIGKILL); !rc) {
    return std::unexpected(rc.error());
  }
  return wait(std::chrono::seconds(10));
}

Result<void> ChildProcess::kill(int signal) {
  if (pid_ <= 0 || status_) {
    return logic_error("ChildProcess::kill", "the process has already been reaped");
  }
  if (::kill(pid_, signal) != 0) {
    return sys_error("kill", errno, fmt::format("pid {}", pid_));
  }
  return {};
}

}  // namespace vmm::stage07
