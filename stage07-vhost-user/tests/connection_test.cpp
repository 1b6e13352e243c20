// The socket layer: messages and their fds over a real AF_UNIX socket, a hostile peer (huge sizes, too many fds,
// truncated messages, malformed payloads), timeouts, fd leaks, and the listener's socket-file life cycle.

#include "vmm/vhost/connection.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace vmm::vhost {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr std::uint32_t kReply = kVersion | kReplyFlag;

// How many descriptors this process has open: the leak detector.
std::size_t open_fd_count() {
  std::size_t count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++count;
  }
  return count;
}

std::pair<Connection, Connection> make_pair() {
  auto pair = Connection::pair();
  EXPECT_TRUE(pair) << pair.error().message();
  return std::move(*pair);
}

Fd make_eventfd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  EXPECT_GE(fd, 0);
  return Fd(fd);
}

// A pipe: {read end, write end}.
std::pair<Fd, Fd> make_pipe() {
  std::array<int, 2> fds{};
  EXPECT_EQ(::pipe2(fds.data(), O_CLOEXEC | O_NONBLOCK), 0);
  return {Fd(fds[0]), Fd(fds[1])};
}

Message make(Request request, Payload payload = {}, std::uint32_t flags = kVersion, std::vector<Fd> fds = {}) {
  return Message{.request = request, .flags = flags, .payload = std::move(payload), .fds = std::move(fds)};
}

std::vector<std::uint8_t> header_bytes(std::uint32_t request, std::uint32_t flags, std::uint32_t size) {
  std::vector<std::uint8_t> out(kHeaderSize);
  std::memcpy(out.data(), &request, 4);
  std::memcpy(out.data() + 4, &flags, 4);
  std::memcpy(out.data() + 8, &size, 4);
  return out;
}

// A temporary directory for socket files, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/vmmlab-vhost-XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::string file(std::string_view name) const { return fmt::format("{}/{}", path_, name); }

 private:
  std::string path_;
};

bool is_socket_file(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// --- messages and fds -----------------------------------------------------------------------------------------------

TEST(VhostConnection, MessagesTravelBothWays) {
  auto [frontend, backend] = make_pair();
  ASSERT_TRUE(frontend.send(make(Request::GetFeatures)));
  auto request = backend.receive(Direction::ToBackend);
  ASSERT_TRUE(request) << request.error().message();
  EXPECT_EQ(request->request, Request::GetFeatures);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(request->payload));

  ASSERT_TRUE(backend.send(make(Request::GetFeatures, std::uint64_t{0x140000000}, kReply)));
  auto reply = frontend.receive(Direction::ToFrontend, 5s, Request::GetFeatures);
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_TRUE(reply->is_reply());
  EXPECT_EQ(reply->u64(), 0x140000000u);

  // An acked SET: the reply is a u64 only because the frontend says an ack was asked for.
  ASSERT_TRUE(
      frontend.send(make(Request::SetVringEnable, vhost_vring_state{.index = 0, .num = 1}, kVersion | kNeedReply)));
  request = backend.receive(Direction::ToBackend);
  ASSERT_TRUE(request) << request.error().message();
  EXPECT_TRUE(request->needs_reply());
  ASSERT_TRUE(backend.send(make(Request::SetVringEnable, std::uint64_t{0}, kReply)));
  reply = frontend.receive(Direction::ToFrontend, 5s, Request::SetVringEnable, true);
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ(reply->u64(), 0u);
}

TEST(VhostConnection, AnEventfdReallyPassesToThePeer) {
  auto [frontend, backend] = make_pair();
  Fd kick = make_eventfd();
  std::vector<Fd> fds;
  auto dup = kick.duplicate();
  ASSERT_TRUE(dup);
  fds.push_back(std::move(*dup));
  ASSERT_TRUE(frontend.send(make(Request::SetVringKick, std::uint64_t{2}, kVersion, std::move(fds))));

  auto message = backend.receive(Direction::ToBackend);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(message->vring_fd(), (VringFd{.index = 2, .no_fd = false}));
  ASSERT_EQ(message->fds.size(), 1u);
  EXPECT_NE(message->fds[0].get(), kick.get());
  // Received fds are close-on-exec (MSG_CMSG_CLOEXEC): they must not leak into the daemon's children.
  EXPECT_EQ(::fcntl(message->fds[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);

  // The received descriptor is the same eventfd: a write through it shows up on the original.
  const std::uint64_t one = 1;
  ASSERT_EQ(::write(message->fds[0].get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
  std::uint64_t value = 0;
  ASSERT_EQ(::read(kick.get(), &value, sizeof value), static_cast<ssize_t>(sizeof value));
  EXPECT_EQ(value, 1u);
}

TEST(VhostConnection, MemoryTableFdsArriveInRegionOrder) {
  auto [frontend, backend] = make_pair();
  constexpr std::size_t kRegions = 3;
  std::vector<std::pair<Fd, Fd>> pipes;
  MemoryTable table;
  std::vector<Fd> fds;
  for (std::size_t i = 0; i < kRegions; ++i) {
    pipes.push_back(make_pipe());
    auto write_end = pipes.back().second.duplicate();
    ASSERT_TRUE(write_end);
    fds.push_back(std::move(*write_end));
    table.regions.push_back(MemoryRegion{.guest_phys_addr = i << 20,
                                         .memory_size = 1 << 20,
                                         .userspace_addr = 0x7f0000000000 + (i << 20),
                                         .mmap_offset = 0});
  }
  ASSERT_TRUE(frontend.send(make(Request::SetMemTable, table, kVersion, std::move(fds))));
  auto message = backend.receive(Direction::ToBackend);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(std::get<MemoryTable>(message->payload), table);
  ASSERT_EQ(message->fds.size(), kRegions);
  for (std::size_t i = 0; i < kRegions; ++i) {
    const char byte = static_cast<char>('a' + i);
    ASSERT_EQ(::write(message->fds[i].get(), &byte, 1), 1);
    char got = 0;
    ASSERT_EQ(::read(pipes[i].first.get(), &got, 1), 1) << "region " << i;
    EXPECT_EQ(got, byte) << "the fd of region " << i << " is another region's";
  }
}

TEST(VhostConnection, NoFdLeaksOverAHundredExchanges) {
  auto [frontend, backend] = make_pair();
  const std::size_t before = open_fd_count();
  for (int i = 0; i < 100; ++i) {
    std::vector<Fd> fds;
    fds.push_back(make_eventfd());
    fds.push_back(make_eventfd());
    MemoryTable table{
        .regions = {
            MemoryRegion{.guest_phys_addr = 0, .memory_size = 0x1000, .userspace_addr = 0x1000, .mmap_offset = 0},
            MemoryRegion{
                .guest_phys_addr = 0x1000, .memory_size = 0x1000, .userspace_addr = 0x2000, .mmap_offset = 0}}};
    ASSERT_TRUE(frontend.send(make(Request::SetMemTable, table, kVersion, std::move(fds))));
    auto message = backend.receive(Direction::ToBackend);
    ASSERT_TRUE(message) << message.error().message();
    ASSERT_EQ(message->fds.size(), 2u);

    // And a refused one: its fd must be closed too.
    ASSERT_TRUE(frontend.send(make(Request::SetVringCall, std::uint64_t{kVringNoFdMask}, kVersion, [] {
      std::vector<Fd> one;
      one.push_back(make_eventfd());
      return one;
    }())));
    auto refused = backend.receive(Direction::ToBackend);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().errno_value, EBADMSG);
  }
  EXPECT_EQ(open_fd_count(), before);
}

// --- a hostile or vanishing peer ------------------------------------------------------------------------------------

TEST(VhostConnection, AHugeSizeIsRefusedBeforeAnyPayloadIsRead) {
  auto [peer, backend] = make_pair();
  std::vector<std::uint8_t> bytes = header_bytes(static_cast<std::uint32_t>(Request::SetMemTable), kVersion, 0x100000);
  bytes.insert(bytes.end(), {'X', 'Y', 'Z'});
  ASSERT_TRUE(peer.send_raw(bytes));

  auto message = backend.receive(Direction::ToBackend);
  ASSERT_FALSE(message);
  EXPECT_EQ(message.error().errno_value, EPROTO);
  EXPECT_THAT(message.error().message(), HasSubstr("SET_MEM_TABLE"));
  EXPECT_THAT(message.error().message(), HasSubstr("1048576"));
  // Exactly the header was consumed: the three bytes after it are still in the socket.
  std::array<char, 16> rest{};
  const ssize_t n = ::recv(backend.socket().get(), rest.data(), rest.size(), MSG_DONTWAIT);
  ASSERT_EQ(n, 3);
  EXPECT_EQ(std::string(rest.data(), 3), "XYZ");
}

TEST(VhostConnection, TheLargestValidMessageIsAccepted) {
  auto [frontend, backend] = make_pair();
  ASSERT_TRUE(frontend.send(
      make(Request::SetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = std::vector<std::uint8_t>(256, 7)})));
  auto message = backend.receive(Direction::ToBackend);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(std::get<DeviceConfig>(message->payload).bytes.size(), 256u);
}

TEST(VhostConnection, PeerClosingIsConnectionReset) {
  {
    auto [peer, backend] = make_pair();
    peer = Connection(Fd());  // closes the peer's end
    auto message = backend.receive(Direction::ToBackend);
    ASSERT_FALSE(message);
    EXPECT_EQ(message.error().errno_value, ECONNRESET);
    EXPECT_THAT(message.error().message(), HasSubstr("peer closed the connection"));
  }
  {
    // In the middle of the header.
    auto [peer, backend] = make_pair();
    ASSERT_TRUE(peer.send_raw(std::vector<std::uint8_t>{1, 0, 0, 0, 1}));
    peer.shutdown();
    auto message = backend.receive(Direction::ToBackend);
    ASSERT_FALSE(message);
    EXPECT_EQ(message.error().errno_value, ECONNRESET);
    EXPECT_THAT(message.error().message(), HasSubstr("peer closed the connection"));
  }
  {
    // In the middle of the payload.
    auto [peer, backend] = make_pair();
    std::vector<std::uint8_t> bytes = header_bytes(static_cast<std::uint32_t>(Request::SetVringAddr), kVersion, 40);
    bytes.resize(bytes.size() + 20, 0);
    ASSERT_TRUE(peer.send_raw(bytes));
    peer = Connection(Fd());
    auto message = backend.receive(Direction::ToBackend);
    ASSERT_FALSE(message);
    EXPECT_EQ(message.error().errno_value, ECONNRESET);
    EXPECT_THAT(message.error().message(), HasSubstr("peer closed the connection"));
    EXPECT_THAT(message.error().message(), HasSubstr("SET_VRING_ADDR"));
  }
}

TEST(VhostConnection, SendingToAClosedPeerIsEpipeNotSigpipe) {
  auto [frontend, backend] = make_pair();
  backend = Connection(Fd());
  // Without MSG_NOSIGNAL this would kill the test binary with SIGPIPE.
  auto sent = frontend.send(make(Request::GetFeatures));
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().errno_value, EPIPE);
}

TEST(VhostConnection, ReceiveTimesOut) {
  auto [peer, backend] = make_pair();
  auto message = backend.receive(Direction::ToBackend, 50ms);
  ASSERT_FALSE(message);
  EXPECT_EQ(message.error().errno_value, ETIMEDOUT);
  // Half a header, then silence: still a timeout, not a hang.
  ASSERT_TRUE(peer.send_raw(std::vector<std::uint8_t>{1, 0, 0}));
  message = backend.receive(Direction::ToBackend, 50ms);
  ASSERT_FALSE(message);
  EXPECT_EQ(message.error().errno_value, ETIMEDOUT);
}

TEST(VhostConnection, SendTimesOutWhenThePeerDoesNotRead) {
  auto [frontend, backend] = make_pair();
  const int small = 4096;
  ASSERT_EQ(::setsockopt(frontend.socket().get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  const Message big =
      make(Request::SetConfig, DeviceConfig{.offset = 0, .flags = 0, .bytes = std::vector<std::uint8_t>(256, 1)});
  Result<void> sent;
  for (int i = 0; i < 100000 && sent; ++i) {
    sent = frontend.send(big, 20ms);
  }
  ASSERT_FALSE(sent) << "the socket buffer never filled up";
  EXPECT_EQ(sent.error().errno_value, ETIMEDOUT);
}

TEST(VhostConnection, MoreThanEightFdsIsEprotoAndClosesThem) {
  auto [peer, backend] = make_pair();
  const std::size_t before = open_fd_count();
  {
    std::vector<Fd> owned;
    std::vector<int> raw;
    for (int i = 0; i < 9; ++i) {
      owned.push_back(make_eventfd());
      raw.push_back(owned.back().get());
    }
    // A well-formed 8-region table, but 9 fds.
    std::vector<std::uint8_t> bytes =
        header_bytes(static_cast<std::uint32_t>(Request::SetMemTable), kVersion, 8 + 8 * 32);
    const std::uint32_t count = 8;
    bytes.resize(bytes.size() + 8 + 8 * 32, 0);
    std::memcpy(bytes.data() + kHeaderSize, &count, 4);
    ASSERT_TRUE(peer.send_raw(bytes, raw));
    auto message = backend.receive(Direction::ToBackend);
    ASSERT_FALSE(message);
    EXPECT_EQ(message.error().errno_value, EPROTO);
    EXPECT_THAT(message.error().message(), HasSubstr("more than 8 fds"));
  }
  EXPECT_EQ(open_fd_count(), before) << "received fds of a refused message leaked";
}

TEST(VhostConnection, AMalformedMessageIsEbadmsgAndTheStreamStaysInStep) {
  auto [peer, backend] = make_pair();
  std::vector<std::string> trace;
  backend.set_tracer(Tracer("backend", [&](std::string_view line) { trace.emplace_back(line); }));
  const std::size_t before = open_fd_count();
  {
    // SET_VRING_NUM with 12 bytes instead of 8, and a stray fd; then a good GET_FEATURES.
    std::vector<std::uint8_t> bytes = header_bytes(static_cast<std::uint32_t>(Request::SetVringNum), kVersion, 12);
    bytes.resize(bytes.size() + 12, 0);
    Fd stray = make_eventfd();
    const std::array<int, 1> fds = {stray.get()};
    ASSERT_TRUE(peer.send_raw(bytes, fds));
  }
  ASSERT_TRUE(peer.send(make(Request::GetFeatures)));

  auto bad = backend.receive(Direction::ToBackend);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().errno_value, EBADMSG);
  EXPECT_THAT(bad.error().message(), HasSubstr("SET_VRING_NUM: payload of 12 bytes, a vring state is 8 bytes"));
  EXPECT_EQ(open_fd_count(), before) << "the refused message's fd leaked";

  auto good = backend.receive(Direction::ToBackend);
  ASSERT_TRUE(good) << good.error().message();
  EXPECT_EQ(good->request, Request::GetFeatures);

  ASSERT_EQ(trace.size(), 2u);
  EXPECT_THAT(trace[0], HasSubstr("backend: refused: "));
  EXPECT_THAT(trace[0], HasSubstr("SET_VRING_NUM"));
  EXPECT_EQ(trace[1], "backend < GET_FEATURES");
}

TEST(VhostConnection, ARefusedReplyNamesWhatWasExpected) {
  auto [frontend, backend] = make_pair();
  ASSERT_TRUE(backend.send(make(Request::GetProtocolFeatures, std::uint64_t{0}, kReply)));
  auto reply = frontend.receive(Direction::ToFrontend, 5s, Request::GetFeatures);
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().errno_value, EBADMSG);
  EXPECT_THAT(reply.error().message(), HasSubstr("GET_PROTOCOL_FEATURES reply"));
  EXPECT_THAT(reply.error().message(), HasSubstr("GET_FEATURES"));
}

TEST(VhostConnection, TracesEveryMessageWithEachSidesFdNumbers) {
  auto [frontend, backend] = make_pair();
  std::vector<std::string> lines;
  frontend.set_tracer(Tracer("frontend", [&](std::string_view line) { lines.emplace_back(line); }));
  backend.set_tracer(Tracer("backend", [&](std::string_view line) { lines.emplace_back(line); }));
  std::vector<Fd> fds;
  fds.push_back(make_eventfd());
  const int sent_fd = fds[0].get();
  ASSERT_TRUE(frontend.send(make(Request::SetVringCall, std::uint64_t{0}, kVersion, std::move(fds))));
  auto message = backend.receive(Direction::ToBackend);
  ASSERT_TRUE(message) << message.error().message();
  ASSERT_EQ(message->fds.size(), 1u);
  EXPECT_EQ(lines, (std::vector<std::string>{
                       fmt::format("frontend > SET_VRING_CALL index=0 fds=[{}]", sent_fd),
                       fmt::format("backend < SET_VRING_CALL index=0 fds=[{}]", message->fds[0].get())}));
}

TEST(VhostConnection, SendRefusesWhatEncodeRefuses) {
  auto [frontend, backend] = make_pair();
  auto sent = frontend.send(make(Request::SetMemTable, MemoryTable{}));
  ASSERT_FALSE(sent);
  EXPECT_THAT(sent.error().message(), HasSubstr("SET_MEM_TABLE"));
  // Nothing reached the peer.
  auto message = backend.receive(Direction::ToBackend, 20ms);
  ASSERT_FALSE(message);
  EXPECT_EQ(message.error().errno_value, ETIMEDOUT);
}

// --- connect and listen ---------------------------------------------------------------------------------------------

TEST(VhostListener, BindAcceptConnectAndUnlink) {
  TempDir dir;
  const std::string path = dir.file("vhost.sock");
  {
    auto listener = Listener::bind(path);
    ASSERT_TRUE(listener) << listener.error().message();
    EXPECT_EQ(listener->path(), path);
    EXPECT_TRUE(is_socket_file(path));

    auto none = listener->accept(20ms);
    ASSERT_TRUE(none) << none.error().message();
    EXPECT_FALSE(none->has_value());

    auto frontend = Connection::connect(path, 5s);
    ASSERT_TRUE(frontend) << frontend.error().message();
    auto backend = listener->accept(5s);
    ASSERT_TRUE(backend) << backend.error().message();
    ASSERT_TRUE(backend->has_value());
    EXPECT_EQ(::fcntl(backend->value().socket().get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);

    ASSERT_TRUE(frontend->send(make(Request::GetQueueNum)));
    auto message = backend->value().receive(Direction::ToBackend);
    ASSERT_TRUE(message) << message.error().message();
    EXPECT_EQ(message->request, Request::GetQueueNum);

    // Moving keeps the file; only the last owner removes it.
    Listener moved = std::move(*listener);
    EXPECT_TRUE(is_socket_file(path));
    Listener again = std::move(moved);
    EXPECT_TRUE(is_socket_file(path));
  }
  EXPECT_FALSE(exists(path)) << "the listener left its socket file behind";
}

TEST(VhostListener, AStaleSocketFileIsReplaced) {
  TempDir dir;
  const std::string path = dir.file("stale.sock");
  {
    // A daemon that died: the socket file stays, nobody listens.
    Fd raw(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(raw.valid());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    ASSERT_EQ(::bind(raw.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  }
  ASSERT_TRUE(is_socket_file(path));
  auto listener = Listener::bind(path);
  ASSERT_TRUE(listener) << listener.error().message();
  auto frontend = Connection::connect(path, 5s);
  ASSERT_TRUE(frontend) << frontend.error().message();
  auto backend = listener->accept(5s);
  ASSERT_TRUE(backend && backend->has_value());
}

TEST(VhostListener, ASecondBindWhileListeningIsEaddrinuse) {
  TempDir dir;
  const std::string path = dir.file("busy.sock");
  auto first = Listener::bind(path);
  ASSERT_TRUE(first) << first.error().message();
  auto second = Listener::bind(path);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().errno_value, EADDRINUSE);
  EXPECT_THAT(second.error().message(), HasSubstr("another process is listening"));
  EXPECT_TRUE(is_socket_file(path)) << "the failed bind removed the live listener's socket";
}

TEST(VhostListener, ARegularFileIsNeverRemoved) {
  TempDir dir;
  const std::string path = dir.file("not-a-socket");
  std::ofstream(path) << "precious";
  auto listener = Listener::bind(path);
  ASSERT_FALSE(listener);
  EXPECT_EQ(listener.error().errno_value, EADDRINUSE);
  std::ifstream in(path);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST(VhostListener, ConnectRetriesUntilTheDaemonListens) {
  TempDir dir;
  const std::string path = dir.file("late.sock");
  // Nobody there: ENOENT after the timeout, not an immediate failure and not a hang.
  auto nobody = Connection::connect(path, 30ms);
  ASSERT_FALSE(nobody);
  EXPECT_EQ(nobody.error().errno_value, ENOENT);
  EXPECT_THAT(nobody.error().message(), HasSubstr(path));

  // A connect started before the listener exists succeeds once it does.
  auto pending = std::async(std::launch::async, [&] { return Connection::connect(path, 10s); });
  auto listener = Listener::bind(path);
  ASSERT_TRUE(listener) << listener.error().message();
  auto frontend = pending.get();
  ASSERT_TRUE(frontend) << frontend.error().message();
  auto backend = listener->accept(5s);
  ASSERT_TRUE(backend && backend->has_value());
  ASSERT_TRUE(frontend->send(make(Request::SetOwner)));
  auto message = backend->value().receive(Direction::ToBackend);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(message->request, Request::SetOwner);
}

TEST(VhostListener, PathsMustFitSunPath) {
  const std::string long_path = "/tmp/" + std::string(120, 'x');
  auto listener = Listener::bind(long_path);
  ASSERT_FALSE(listener);
  EXPECT_EQ(listener.error().errno_value, ENAMETOOLONG);
  auto connection = Connection::connect(long_path, 10ms);
  ASSERT_FALSE(connection);
  EXPECT_EQ(connection.error().errno_value, ENAMETOOLONG);
}

}  // namespace
}  // namespace vmm::vhost
