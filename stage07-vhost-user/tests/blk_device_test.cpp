// BlkDevice against the mock driver and a temporary image file: reads and writes checked byte for byte in guest
// memory and in the file, any layout (split headers, data sharing a descriptor with the header or the status,
// indirect tables, buffers straddling two memory regions), FLUSH and GET_ID, every refusal (IOERR without touching
// the file, UNSUPP), the protocol violations that need a reset, the configuration space, interrupts in both
// notification modes, reset and re-activation, several queues served from several threads, and open()'s errors.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "vmm/memory/region.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/virtio/blk/blk_device.hpp"

namespace vmm::virtio::blk {
namespace {

using memory::GuestAddress;
using vmm::testing::MockBuffer;
using vmm::testing::MockDriver;
using vmm::testing::MockLayout;

constexpr std::uint16_t kQueueSize = 64;
constexpr std::uint64_t kImageSectors = 64;

// The image's initial contents: every byte depends on its offset, and sectors differ from one another.
std::uint8_t image_byte(std::uint64_t offset) {
  return static_cast<std::uint8_t>(offset * 7 + offset / kSectorBytes * 13 + 1);
}
std::vector<std::uint8_t> image_bytes(std::uint64_t offset, std::size_t length) {
  std::vector<std::uint8_t> bytes(length);
  for (std::size_t i = 0; i < length; ++i) {
    bytes[i] = image_byte(offset + i);
  }
  return bytes;
}
// Data a test writes: distinct from the image's contents, and no 64 KiB chunk of it repeats the previous one.
std::vector<std::uint8_t> data_bytes(std::uint8_t seed, std::size_t length) {
  std::vector<std::uint8_t> bytes(length);
  for (std::size_t i = 0; i < length; ++i) {
    bytes[i] = static_cast<std::uint8_t>(seed + i * 3 + i / kSectorBytes * 5);
  }
  return bytes;
}

// A temporary image file made with mkstemp and filled with `image_bytes`; removed by the destructor.
class TempImage {
 public:
  explicit TempImage(std::uint64_t size = kImageSectors * kSectorBytes) {
    std::array<char, 32> name{};
    std::strcpy(name.data(), "/tmp/vmmlab-blk-XXXXXX");
    const int fd = ::mkstemp(name.data());
    if (fd < 0) {
      ADD_FAILURE() << "mkstemp: " << std::strerror(errno);
      std::abort();
    }
    fd_ = Fd(fd);
    path_ = name.data();
    const auto bytes = image_bytes(0, size);
    EXPECT_EQ(::pwrite(fd_.get(), bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  }
  TempImage(const TempImage&) = delete;
  TempImage& operator=(const TempImage&) = delete;
  TempImage(TempImage&&) = delete;
  TempImage& operator=(TempImage&&) = delete;
  ~TempImage() { ::unlink(path_.c_str()); }

  [[nodiscard]] const std::string& path() const { return path_; }
  // The file's bytes now, read with pread (not through the device).
  [[nodiscard]] std::vector<std::uint8_t> read(std::uint64_t offset, std::size_t length) const {
    std::vector<std::uint8_t> bytes(length);
    EXPECT_EQ(::pread(fd_.get(), bytes.data(), length, static_cast<off_t>(offset)), static_cast<ssize_t>(length));
    return bytes;
  }
  // True when the file still holds exactly its initial contents.
  [[nodiscard]] bool untouched(std::uint64_t size = kImageSectors * kSectorBytes) const {
    return read(0, size) == image_bytes(0, size);
  }
  void truncate(std::uint64_t size) const { EXPECT_EQ(::ftruncate(fd_.get(), static_cast<off_t>(size)), 0); }

 private:
  Fd fd_;
  std::string path_;
};

// Records the notifications the device sends; callable from several queue threads.
class RecordingInterrupt final : public VirtioInterrupt {
 public:
  Result<void> signal_queue(std::uint16_t queue_index) override {
    std::lock_guard lock(mutex_);
    queues_.push_back(queue_index);
    return {};
  }
  Result<void> signal_config() override { return {}; }
  [[nodiscard]] std::vector<std::uint16_t> queue_signals() const {
    std::lock_guard lock(mutex_);
    return queues_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::uint16_t> queues_;
};

BlkConfig config_for(const std::string& path) {
  BlkConfig config;
  config.path = path;
  config.queue_size = kQueueSize;
  return config;
}

class BlkTest : public ::testing::Test {
 protected:
  std::shared_ptr<BlkDevice> open_device(BlkConfig config) {
    auto device = BlkDevice::open(std::move(config));
    EXPECT_TRUE(device) << device.error().message();
    return device ? *device : nullptr;
  }
  std::shared_ptr<BlkDevice> open_device() { return open_device(config_for(image_.path())); }

  // What the transport hands over at DRIVER_OK: one queue per driver (nullptr: not enabled).
  Activation activation(std::initializer_list<MockDriver*> drivers, std::uint64_t features = kAllFeatures) {
    Activation result{.memory = &memory_,
                      .features = features,
                      .queues = {},
                      .interrupt = interrupt_,
                      .needs_reset = [this](const Error& error) {
                        std::lock_guard lock(resets_mutex_);
                        resets_.push_back(error);
                      }};
    for (MockDriver* driver : drivers) {
      if (driver == nullptr) {
        result.queues.emplace_back();
        continue;
      }
      auto queue = SplitQueue::create(memory_, driver->queue_layout(), kQueueSize, driver->features(), counters_);
      EXPECT_TRUE(queue) << queue.error().message();
      result.queues.emplace_back(std::move(queue).value());
    }
    return result;
  }
  std::shared_ptr<BlkDevice> open_active(BlkConfig config) {
    auto device = open_device(std::move(config));
    auto ok = device->activate(activation({&driver_}));
    EXPECT_TRUE(ok) << ok.error().message();
    return device;
  }
  std::shared_ptr<BlkDevice> open_active() { return open_active(config_for(image_.path())); }

  // A readable request header.
  MockBuffer header(std::uint32_t type, std::uint64_t sector, MockDriver* driver = nullptr) {
    MockDriver& d = driver != nullptr ? *driver : driver_;
    const MockBuffer buffer = d.allocate(kRequestHeaderBytes, false);
    write_header(buffer.address, type, sector);
    return buffer;
  }
  void write_header(GuestAddress address, std::uint32_t type, std::uint64_t sector) {
    const virtio_blk_outhdr value{.type = type, .ioprio = 0, .sector = sector};
    ASSERT_TRUE(memory_.write_obj(address, value));
  }
  // A writable status byte, preset to a value no answer has.
  MockBuffer status(MockDriver* driver = nullptr) {
    MockDriver& d = driver != nullptr ? *driver : driver_;
    return d.allocate(1, true, kUnanswered);
  }
  std::uint8_t status_of(const MockBuffer& buffer, std::uint32_t offset = 0) {
    return driver_.read_bytes(GuestAddress(buffer.address.raw() + offset), 1)[0];
  }
  MockBuffer data_out(const std::vector<std::uint8_t>& bytes, MockDriver* driver = nullptr) {
    MockDriver& d = driver != nullptr ? *driver : driver_;
    const MockBuffer buffer = d.allocate(static_cast<std::uint32_t>(bytes.size()), false);
    EXPECT_TRUE(memory_.write(buffer.address, std::as_bytes(std::span(bytes))));
    return buffer;
  }
  std::vector<std::uint8_t> bytes_at(const MockBuffer& buffer) {
    return driver_.read_bytes(buffer.address, buffer.length);
  }

  std::uint16_t add(std::initializer_list<MockBuffer> buffers, MockDriver* driver = nullptr) {
    MockDriver& d = driver != nullptr ? *driver : driver_;
    return d.add_chain(std::vector<MockBuffer>(buffers));
  }
  void kick(BlkDevice& device, MockDriver* driver = nullptr, std::uint16_t queue = 0) {
    MockDriver& d = driver != nullptr ? *driver : driver_;
    if (d.kick_if_needed()) {
      device.queue_notify(queue);
    }
  }
  // Publishes one chain, kicks, and returns its single used entry (failing the test if there is not exactly one).
  vring_used_elem serve(BlkDevice& device, std::initializer_list<MockBuffer> buffers) {
    const auto head = add(buffers);
    kick(device);
    const auto used = driver_.collect_used();
    EXPECT_EQ(used.size(), 1u);
    if (used.size() != 1) {
      return {};
    }
    EXPECT_EQ(used[0].id, head);
    return used[0];
  }
  std::vector<Error> resets() {
    std::lock_guard lock(resets_mutex_);
    return resets_;
  }

  static constexpr std::uint8_t kUnanswered = 0xee;
  static constexpr std::uint64_t kAllFeatures =
      kCommonFeatures | (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_BLK_SIZE);

  TempImage image_;
  memory::GuestMemory memory_ = vmm::testing::make_test_memory();
  MockDriver driver_{memory_, MockLayout{.size = kQueueSize}};
  std::shared_ptr<QueueCounters> counters_ = std::make_shared<QueueCounters>();
  std::shared_ptr<RecordingInterrupt> interrupt_ = std::make_shared<RecordingInterrupt>();
  std::mutex resets_mutex_;
  std::vector<Error> resets_;
};

// --- open and description ---------------------------------------------------------------------------------------

TEST_F(BlkTest, OpenNamesTheFileAndErrnoWhenItIsMissing) {
  const std::string missing = image_.path() + "-does-not-exist";
  const auto device = BlkDevice::open(config_for(missing));
  ASSERT_FALSE(device);
  const std::string message = device.error().message();
  EXPECT_EQ(device.error().errno_value, ENOENT);
  EXPECT_NE(message.find(missing), std::string::npos) << message;
  EXPECT_NE(message.find("ENOENT"), std::string::npos) << message;
}

TEST_F(BlkTest, OpenRefusesBadConfigurations) {
  BlkConfig long_serial = config_for(image_.path());
  long_serial.serial = std::string(VIRTIO_BLK_ID_BYTES + 1, 's');
  const auto refused = BlkDevice::open(long_serial);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("serial"), std::string::npos) << refused.error().message();

  for (const std::uint16_t size : {0, 2, 100, 255, 48}) {
    BlkConfig config = config_for(image_.path());
    config.queue_size = size;
    const auto bad = BlkDevice::open(config);
    ASSERT_FALSE(bad) << "queue size " << size;
    EXPECT_NE(bad.error().message().find("queue size"), std::string::npos) << bad.error().message();
  }
  BlkConfig no_queues = config_for(image_.path());
  no_queues.queues = 0;
  EXPECT_FALSE(BlkDevice::open(no_queues));
  EXPECT_FALSE(BlkDevice::open(config_for("")));
  const auto directory = BlkDevice::open(config_for("/tmp"));
  ASSERT_FALSE(directory) << "a directory is not a disk";

  // The limits themselves are fine.
  BlkConfig exact_serial = config_for(image_.path());
  exact_serial.serial = std::string(VIRTIO_BLK_ID_BYTES, 's');
  EXPECT_TRUE(BlkDevice::open(exact_serial));
  BlkConfig small = config_for(image_.path());
  small.queue_size = 4;
  EXPECT_TRUE(BlkDevice::open(small));
  BlkConfig large = config_for(image_.path());
  large.queue_size = 32768;
  EXPECT_TRUE(BlkDevice::open(large));
}

TEST_F(BlkTest, DescribesItself) {
  auto device = open_device();
  EXPECT_EQ(device->device_type(), VIRTIO_ID_BLOCK);
  EXPECT_EQ(device->features(), kAllFeatures) << "no RO, no MQ";
  EXPECT_EQ(device->queue_max_sizes(), std::vector<std::uint16_t>{kQueueSize});
  EXPECT_EQ(device->config_size(), sizeof(virtio_blk_config));
  EXPECT_EQ(device->name(), "virtio-blk");
  EXPECT_EQ(device->capacity_sectors(), kImageSectors);
  EXPECT_FALSE(device->active());
  EXPECT_FALSE(device->last_error());
}

TEST_F(BlkTest, ReadOnlyAndMultiQueueAreOffered) {
  BlkConfig config = config_for(image_.path());
  config.read_only = true;
  config.queues = 4;
  auto device = open_device(config);
  EXPECT_EQ(device->features(), kAllFeatures | (1ull << VIRTIO_BLK_F_RO) | (1ull << VIRTIO_BLK_F_MQ));
  EXPECT_EQ(device->queue_max_sizes(), std::vector<std::uint16_t>(4, kQueueSize));
  std::array<std::uint8_t, 2> num_queues{};
  device->read_config(offsetof(virtio_blk_config, num_queues), num_queues);
  EXPECT_EQ(num_queues, (std::array<std::uint8_t, 2>{4, 0}));
}

TEST_F(BlkTest, CapacityIgnoresATrailingPartialSector) {
  image_.truncate(10 * kSectorBytes + 100);
  auto device = open_device();
  EXPECT_EQ(device->capacity_sectors(), 10u);
}

TEST_F(BlkTest, ConfigurationReadsAtAnyOffsetAndSize) {
  // A sparse 3 TiB image: a capacity whose upper 32 bits are not zero (0x1'8000'0000 sectors).
  image_.truncate(3ull << 40);
  auto device = open_device();
  constexpr std::uint64_t kSectors = (3ull << 40) / kSectorBytes;
  ASSERT_EQ(device->capacity_sectors(), kSectors);

  std::vector<std::uint8_t> all(sizeof(virtio_blk_config), 0xaa);
  device->read_config(0, all);
  virtio_blk_config config{};
  std::memcpy(&config, all.data(), sizeof(config));
  EXPECT_EQ(config.capacity, kSectors);
  EXPECT_EQ(config.seg_max, kQueueSize - 2u);
  EXPECT_EQ(config.blk_size, 512u);
  EXPECT_EQ(config.num_queues, 1u);
  EXPECT_EQ(config.size_max, 0u) << "SIZE_MAX is not offered";
  EXPECT_EQ(config.geometry.cylinders, 0u);
  EXPECT_EQ(config.wce, 0u);

  // The capacity as the driver reads it over a 32-bit bus: two halves.
  std::array<std::uint8_t, 4> low{};
  std::array<std::uint8_t, 4> high{};
  device->read_config(0, low);
  device->read_config(4, high);
  EXPECT_EQ(low, (std::array<std::uint8_t, 4>{0x00, 0x00, 0x00, 0x80}));
  EXPECT_EQ(high, (std::array<std::uint8_t, 4>{0x01, 0x00, 0x00, 0x00}));
  std::array<std::uint8_t, 1> one{};
  device->read_config(3, one);
  EXPECT_EQ(one[0], 0x80);

  std::array<std::uint8_t, 4> word{};
  device->read_config(offsetof(virtio_blk_config, seg_max), word);
  EXPECT_EQ(word, (std::array<std::uint8_t, 4>{kQueueSize - 2, 0, 0, 0}));
  device->read_config(offsetof(virtio_blk_config, blk_size), word);
  EXPECT_EQ(word, (std::array<std::uint8_t, 4>{0x00, 0x02, 0, 0}));

  // Past the end: zeros, never a crash.
  std::vector<std::uint8_t> tail(8, 0xaa);
  device->read_config(sizeof(virtio_blk_config) - 2, tail);
  EXPECT_EQ(tail, std::vector<std::uint8_t>(8, 0));
  std::vector<std::uint8_t> far(4, 0xaa);
  device->read_config(std::numeric_limits<std::uint64_t>::max() - 1, far);
  EXPECT_EQ(far, std::vector<std::uint8_t>(4, 0));

  // Writes change nothing.
  const std::array<std::uint8_t, 8> junk{1, 2, 3, 4, 5, 6, 7, 8};
  device->write_config(0, junk);
  device->write_config(offsetof(virtio_blk_config, wce), std::span(junk).first(1));
  std::vector<std::uint8_t> again(sizeof(virtio_blk_config));
  device->read_config(0, again);
  EXPECT_EQ(again, all);
}

// --- reads ------------------------------------------------------------------------------------------------------

TEST_F(BlkTest, ReadsSectorsIntoGuestMemory) {
  auto device = open_active();
  const MockBuffer data = driver_.allocate(3 * 512, true);
  const MockBuffer done = status();
  const auto used = serve(*device, {header(VIRTIO_BLK_T_IN, 5), data, done});
  EXPECT_EQ(used.len, 3 * 512 + 1u) << "the data and the status byte";
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(bytes_at(data), image_bytes(5 * 512, 3 * 512));
  const auto stats = device->stats();
  EXPECT_EQ(stats.reads, 1u);
  EXPECT_EQ(stats.bytes_read, 3 * 512u);
  EXPECT_EQ(stats.io_errors, 0u);
  EXPECT_TRUE(image_.untouched());
}

TEST_F(BlkTest, ReadsAcrossDescriptorsWithUnalignedBoundaries) {
  auto device = open_active();
  // Four sectors in three buffers whose boundaries fall inside sectors.
  const MockBuffer a = driver_.allocate(700, true);
  const MockBuffer b = driver_.allocate(1000, true);
  const MockBuffer c = driver_.allocate(348, true);
  const MockBuffer done = status();
  const auto used = serve(*device, {header(VIRTIO_BLK_T_IN, 10), a, b, c, done});
  EXPECT_EQ(used.len, 2049u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(bytes_at(a), image_bytes(10 * 512, 700));
  EXPECT_EQ(bytes_at(b), image_bytes(10 * 512 + 700, 1000));
  EXPECT_EQ(bytes_at(c), image_bytes(10 * 512 + 1700, 348));
}

TEST_F(BlkTest, LastSectorIsReadable) {
  auto device = open_active();
  const MockBuffer data = driver_.allocate(512, true);
  const MockBuffer done = status();
  const auto used = serve(*device, {header(VIRTIO_BLK_T_IN, kImageSectors - 1), data, done});
  EXPECT_EQ(used.len, 513u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(bytes_at(data), image_bytes((kImageSectors - 1) * 512, 512));
}

TEST_F(BlkTest, HeaderSplitAcrossTwoDescriptors) {
  auto device = open_active();
  // Build the header in scratch space, then hand it over as 10 + 6 bytes in two unrelated buffers.
  const MockBuffer scratch = header(VIRTIO_BLK_T_IN, 7);
  const auto bytes = driver_.read_bytes(scratch.address, kRequestHeaderBytes);
  const MockBuffer first = data_out({bytes.begin(), bytes.begin() + 10});
  const MockBuffer second = data_out({bytes.begin() + 10, bytes.end()});
  const MockBuffer data = driver_.allocate(512, true);
  const MockBuffer done = status();
  const auto used = serve(*device, {first, second, data, done});
  EXPECT_EQ(used.len, 513u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(bytes_at(data), image_bytes(7 * 512, 512));

  // The same for a write, split 4 + 12, with the data sharing nothing.
  const MockBuffer write_scratch = header(VIRTIO_BLK_T_OUT, 9);
  const auto write_bytes = driver_.read_bytes(write_scratch.address, kRequestHeaderBytes);
  const auto payload = data_bytes(0x40, 512);
  const MockBuffer done2 = status();
  const auto used2 = serve(*device, {data_out({write_bytes.begin(), write_bytes.begin() + 4}),
                                     data_out({write_bytes.begin() + 4, write_bytes.end()}), data_out(payload), done2});
  EXPECT_EQ(used2.len, 1u);
  EXPECT_EQ(status_of(done2), VIRTIO_BLK_S_OK);
  EXPECT_EQ(image_.read(9 * 512, 512), payload);
}

TEST_F(BlkTest, AnyLayoutHeaderWithDataAndDataWithStatus) {
  auto device = open_active();
  // IN: the data and the status in one writable buffer of 513 bytes, then an empty writable descriptor.
  const MockBuffer both = driver_.allocate(513, true, kUnanswered);
  const MockBuffer empty = driver_.allocate(0, true);
  const auto used = serve(*device, {header(VIRTIO_BLK_T_IN, 3), both, empty});
  EXPECT_EQ(used.len, 513u);
  const auto got = bytes_at(both);
  EXPECT_EQ(std::vector<std::uint8_t>(got.begin(), got.begin() + 512), image_bytes(3 * 512, 512));
  EXPECT_EQ(got[512], VIRTIO_BLK_S_OK) << "the status is the chain's last byte";

  // OUT: the header and the data in one readable buffer.
  const auto payload = data_bytes(0x11, 1024);
  std::vector<std::uint8_t> request(kRequestHeaderBytes + payload.size());
  const virtio_blk_outhdr out{.type = VIRTIO_BLK_T_OUT, .ioprio = 0, .sector = 20};
  std::memcpy(request.data(), &out, sizeof(out));
  std::memcpy(request.data() + kRequestHeaderBytes, payload.data(), payload.size());
  const MockBuffer done = status();
  const auto used2 = serve(*device, {data_out(request), done});
  EXPECT_EQ(used2.len, 1u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(image_.read(20 * 512, 1024), payload);
}

TEST_F(BlkTest, IndirectChainsAreServed) {
  auto device = open_active();
  const MockBuffer data = driver_.allocate(1024, true);
  const MockBuffer done = status();
  const auto head = driver_.add_indirect(std::vector<MockBuffer>{header(VIRTIO_BLK_T_IN, 30), data, done});
  kick(*device);
  const auto used = driver_.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, head);
  EXPECT_EQ(used[0].len, 1025u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(bytes_at(data), image_bytes(30 * 512, 1024));
}

TEST_F(BlkTest, ZeroLengthReadIsAnEmptySuccess) {
  auto device = open_active();
  const MockBuffer done = status();
  const auto used = serve(*device, {header(VIRTIO_BLK_T_IN, 0), done});
  EXPECT_EQ(used.len, 1u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
}

// --- writes, flush, GET_ID --------------------------------------------------------------------------------------

TEST_F(BlkTest, WritesReachTheFileAndReadBack) {
  auto device = open_active();
  const auto payload = data_bytes(0x5a, 2 * 512);
  const MockBuffer done = status();
  const auto used = serve(*device, {header(VIRTIO_BLK_T_OUT, 3), data_out(payload), done});
  EXPECT_EQ(used.len, 1u) << "only the status byte is written into the guest";
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(image_.read(3 * 512, 1024), payload);
  EXPECT_EQ(image_.read(2 * 512, 512), image_bytes(2 * 512, 512)) << "the neighbours are unchanged";
  EXPECT_EQ(image_.read(5 * 512, 512), image_bytes(5 * 512, 512));

  const MockBuffer back = driver_.allocate(1024, true);
  const auto used2 = serve(*device, {header(VIRTIO_BLK_T_IN, 3), back, status()});
  EXPECT_EQ(used2.len, 1025u);
  EXPECT_EQ(bytes_at(back), payload);

  const auto stats = device->stats();
  EXPECT_EQ(stats.writes, 1u);
  EXPECT_EQ(stats.reads, 1u);
  EXPECT_EQ(stats.bytes_written, 1024u);
  EXPECT_EQ(stats.bytes_read, 1024u);
}

TEST_F(BlkTest, WriteThroughWithoutFlushNegotiatedStillWrites) {
  auto device = open_device();
  ASSERT_TRUE(device->activate(activation({&driver_}, kCommonFeatures)));  // no VIRTIO_BLK_F_FLUSH
  const auto payload = data_bytes(0x77, 512);
  const MockBuffer done = status();
  serve(*device, {header(VIRTIO_BLK_T_OUT, 1), data_out(payload), done});
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(image_.read(512, 512), payload);
}

TEST_F(BlkTest, FlushSucceedsAndIsCounted) {
  auto device = open_active();
  const MockBuffer done = status();
  const auto used = serve(*device, {header(VIRTIO_BLK_T_FLUSH, 0), done});
  EXPECT_EQ(used.len, 1u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(device->stats().flushes, 1u);

  // A flush carrying data is malformed.
  const MockBuffer with_data = status();
  serve(*device, {header(VIRTIO_BLK_T_FLUSH, 0), driver_.allocate(512, false), with_data});
  EXPECT_EQ(status_of(with_data), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(device->stats().flushes, 1u);
  EXPECT_EQ(device->stats().io_errors, 1u);
}

TEST_F(BlkTest, GetIdPadsAShortSerialWithNuls) {
  BlkConfig config = config_for(image_.path());
  config.serial = "disk-7";
  auto device = open_active(config);
  const MockBuffer id = driver_.allocate(32, true, 0xcc);
  const MockBuffer done = status();
  const auto used = serve(*device, {header(VIRTIO_BLK_T_GET_ID, 0), id, done});
  EXPECT_EQ(used.len, 21u) << "20 ID bytes and the status";
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  std::vector<std::uint8_t> expected = {'d', 'i', 's', 'k', '-', '7'};
  expected.resize(VIRTIO_BLK_ID_BYTES, 0);
  expected.resize(32, 0xcc);  // past the ID: untouched
  EXPECT_EQ(bytes_at(id), expected);
  EXPECT_EQ(device->stats().get_ids, 1u);

  // A buffer shorter than the ID gets what fits.
  const MockBuffer small = driver_.allocate(4, true, 0xcc);
  const auto used2 = serve(*device, {header(VIRTIO_BLK_T_GET_ID, 0), small, status()});
  EXPECT_EQ(used2.len, 5u);
  EXPECT_EQ(bytes_at(small), (std::vector<std::uint8_t>{'d', 'i', 's', 'k'}));
}

TEST_F(BlkTest, GetIdOfExactlyTwentyBytesIsNotTerminated) {
  BlkConfig config = config_for(image_.path());
  config.serial = "ABCDEFGHIJKLMNOPQRST";
  auto device = open_active(config);
  // The ID spread over two buffers, then the status in a third.
  const MockBuffer first = driver_.allocate(8, true, 0xcc);
  const MockBuffer second = driver_.allocate(16, true, 0xcc);
  const MockBuffer done = status();
  const auto used = serve(*device, {header(VIRTIO_BLK_T_GET_ID, 0), first, second, done});
  EXPECT_EQ(used.len, 21u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_OK);
  const auto a = bytes_at(first);
  const auto b = bytes_at(second);
  EXPECT_EQ(std::string(a.begin(), a.end()), "ABCDEFGH");
  EXPECT_EQ(std::string(b.begin(), b.begin() + 12), "IJKLMNOPQRST");
  EXPECT_EQ(std::vector<std::uint8_t>(b.begin() + 12, b.end()), std::vector<std::uint8_t>(4, 0xcc)) << "no NUL";
}

// --- refusals ---------------------------------------------------------------------------------------------------

TEST_F(BlkTest, ReadOnlyDeviceRefusesWrites) {
  BlkConfig config = config_for(image_.path());
  config.read_only = true;
  auto device = open_active(config);
  ASSERT_TRUE(has_feature(device->features(), VIRTIO_BLK_F_RO));
  const MockBuffer done = status();
  const auto used = serve(*device, {header(VIRTIO_BLK_T_OUT, 0), data_out(data_bytes(1, 512)), done});
  EXPECT_EQ(used.len, 1u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_IOERR);
  EXPECT_TRUE(image_.untouched());
  ASSERT_TRUE(device->last_error());
  EXPECT_NE(device->last_error()->message().find("read-only"), std::string::npos) << device->last_error()->message();

  // Reads and flushes still work.
  const MockBuffer data = driver_.allocate(512, true);
  const MockBuffer read_done = status();
  serve(*device, {header(VIRTIO_BLK_T_IN, 0), data, read_done});
  EXPECT_EQ(status_of(read_done), VIRTIO_BLK_S_OK);
  EXPECT_EQ(bytes_at(data), image_bytes(0, 512));
  const MockBuffer flush_done = status();
  serve(*device, {header(VIRTIO_BLK_T_FLUSH, 0), flush_done});
  EXPECT_EQ(status_of(flush_done), VIRTIO_BLK_S_OK);

  const auto stats = device->stats();
  EXPECT_EQ(stats.writes, 0u);
  EXPECT_EQ(stats.io_errors, 1u);
  EXPECT_EQ(stats.reads, 1u);
  EXPECT_EQ(stats.flushes, 1u);
  EXPECT_TRUE(resets().empty());
}

TEST_F(BlkTest, OutOfRangeRequestsAreRefusedWithoutTouchingTheFile) {
  auto device = open_active();
  struct Case {
    std::uint32_t type;
    std::uint64_t sector;
    std::uint32_t bytes;
    const char* what;
  };
  const std::vector<Case> cases = {
      {VIRTIO_BLK_T_IN, kImageSectors, 512, "read at the capacity"},
      {VIRTIO_BLK_T_IN, kImageSectors - 1, 1024, "read running past the end"},
      {VIRTIO_BLK_T_OUT, kImageSectors, 512, "write at the capacity"},
      {VIRTIO_BLK_T_OUT, kImageSectors - 1, 1024, "write running past the end"},
      // sector * 512 wraps to 0 and 512: a naive `sector * 512 + length <= size` would accept these.
      {VIRTIO_BLK_T_OUT, 1ull << 55, 512, "write whose offset wraps to 0"},
      {VIRTIO_BLK_T_OUT, (1ull << 55) + 1, 512, "write whose offset wraps to 512"},
      {VIRTIO_BLK_T_IN, 1ull << 55, 512, "read whose offset wraps to 0"},
      {VIRTIO_BLK_T_OUT, std::numeric_limits<std::uint64_t>::max(), 512, "write at sector 2^64 - 1"},
      {VIRTIO_BLK_T_IN, std::numeric_limits<std::uint64_t>::max(), 512, "read at sector 2^64 - 1"},
      // Lengths that are not whole sectors.
      {VIRTIO_BLK_T_IN, 0, 100, "read of 100 bytes"},
      {VIRTIO_BLK_T_OUT, 0, 700, "write of 700 bytes"},
      {VIRTIO_BLK_T_OUT, 2, 511, "write of 511 bytes"},
  };
  std::uint64_t refused = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const MockBuffer data =
        c.type == VIRTIO_BLK_T_IN ? driver_.allocate(c.bytes, true, 0x33) : data_out(data_bytes(0x99, c.bytes));
    const MockBuffer done = status();
    const auto used = serve(*device, {header(c.type, c.sector), data, done});
    EXPECT_EQ(used.len, 1u) << "nothing but the status";
    EXPECT_EQ(status_of(done), VIRTIO_BLK_S_IOERR);
    if (c.type == VIRTIO_BLK_T_IN) {
      EXPECT_EQ(bytes_at(data), std::vector<std::uint8_t>(c.bytes, 0x33)) << "the guest buffer is untouched";
    }
    EXPECT_TRUE(image_.untouched());
    EXPECT_EQ(device->stats().io_errors, ++refused);
  }
  const auto stats = device->stats();
  EXPECT_EQ(stats.reads + stats.writes, 0u);
  EXPECT_EQ(stats.bytes_read + stats.bytes_written, 0u);
  EXPECT_TRUE(resets().empty()) << "the driver's mistakes, answered: no reset needed";
}

TEST_F(BlkTest, UnknownTypesAreUnsupported) {
  auto device = open_active();
  for (const std::uint32_t type : {std::uint32_t{VIRTIO_BLK_T_SCSI_CMD}, std::uint32_t{VIRTIO_BLK_T_DISCARD},
                                   std::uint32_t{VIRTIO_BLK_T_WRITE_ZEROES}, std::uint32_t{0x1234},
                                   std::uint32_t{VIRTIO_BLK_T_BARRIER | VIRTIO_BLK_T_OUT}}) {
    SCOPED_TRACE(type);
    const MockBuffer done = status();
    const auto used = serve(*device, {header(type, 0), data_out(data_bytes(0, 512)), done});
    EXPECT_EQ(used.len, 1u);
    EXPECT_EQ(status_of(done), VIRTIO_BLK_S_UNSUPP);
  }
  EXPECT_EQ(device->stats().unsupported, 5u);
  EXPECT_EQ(device->stats().io_errors, 0u);
  EXPECT_TRUE(image_.untouched());
}

TEST_F(BlkTest, MalformedChainsWithAStatusByteAreAnsweredIoErr) {
  auto device = open_active();
  // A header of 8 readable bytes.
  const MockBuffer short_header = data_out(std::vector<std::uint8_t>(8, 0));
  const MockBuffer done1 = status();
  EXPECT_EQ(serve(*device, {short_header, driver_.allocate(512, true), done1}).len, 1u);
  EXPECT_EQ(status_of(done1), VIRTIO_BLK_S_IOERR);

  // A header in a writable buffer: the chain has no readable bytes at all.
  const MockBuffer writable_header = driver_.allocate(kRequestHeaderBytes, true);
  write_header(writable_header.address, VIRTIO_BLK_T_IN, 0);
  const MockBuffer done2 = status();
  serve(*device, {writable_header, driver_.allocate(512, true), done2});
  EXPECT_EQ(status_of(done2), VIRTIO_BLK_S_IOERR);

  // A read whose data buffer is device-readable.
  const MockBuffer done3 = status();
  serve(*device, {header(VIRTIO_BLK_T_IN, 0), driver_.allocate(512, false), done3});
  EXPECT_EQ(status_of(done3), VIRTIO_BLK_S_IOERR);

  // A write whose data buffer is device-writable: the file must not change (the device must not read it as data).
  const MockBuffer wrong = driver_.allocate(512, true, 0x42);
  const MockBuffer done4 = status();
  const auto used4 = serve(*device, {header(VIRTIO_BLK_T_OUT, 0), wrong, done4});
  EXPECT_EQ(used4.len, 1u);
  EXPECT_EQ(status_of(done4), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(bytes_at(wrong), std::vector<std::uint8_t>(512, 0x42));
  EXPECT_TRUE(image_.untouched());

  // A GET_ID with readable data.
  const MockBuffer done5 = status();
  serve(*device, {header(VIRTIO_BLK_T_GET_ID, 0), driver_.allocate(20, false), done5});
  EXPECT_EQ(status_of(done5), VIRTIO_BLK_S_IOERR);

  EXPECT_EQ(device->stats().io_errors, 5u);
  EXPECT_TRUE(resets().empty());
  ASSERT_TRUE(device->last_error());

  // The queue goes on.
  const MockBuffer data = driver_.allocate(512, true);
  const MockBuffer ok = status();
  serve(*device, {header(VIRTIO_BLK_T_IN, 1), data, ok});
  EXPECT_EQ(status_of(ok), VIRTIO_BLK_S_OK);
  EXPECT_EQ(bytes_at(data), image_bytes(512, 512));
}

TEST_F(BlkTest, ChainWithoutStatusByteNeedsResetAndStopsTheQueue) {
  auto device = open_active();
  // A write with no status byte: every buffer is device-readable.
  add({header(VIRTIO_BLK_T_OUT, 0), data_out(data_bytes(1, 512))});
  kick(*device);
  EXPECT_TRUE(driver_.collect_used().empty()) << "nothing to answer with";
  ASSERT_EQ(resets().size(), 1u);
  EXPECT_NE(resets()[0].message().find("status"), std::string::npos) << resets()[0].message();
  EXPECT_TRUE(image_.untouched());
  ASSERT_TRUE(device->last_error());

  // Until reset the queue is ignored, kicks included.
  const MockBuffer done = status();
  add({header(VIRTIO_BLK_T_IN, 0), driver_.allocate(512, true), done});
  device->queue_notify(0);
  EXPECT_TRUE(driver_.collect_used().empty());
  EXPECT_EQ(status_of(done), kUnanswered);
  EXPECT_EQ(resets().size(), 1u);

  // After a reset, a fresh queue works.
  device->reset();
  MockDriver fresh(memory_,
                   MockLayout{.size = kQueueSize, .rings = GuestAddress(0x8000), .buffers = GuestAddress(0x20'0000)});
  ASSERT_TRUE(device->activate(activation({&fresh})));
  const MockBuffer data = fresh.allocate(512, true);
  const MockBuffer fresh_done = status(&fresh);
  add({header(VIRTIO_BLK_T_IN, 4, &fresh), data, fresh_done}, &fresh);
  kick(*device, &fresh);
  const auto used = fresh.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 513u);
  EXPECT_EQ(fresh.read_bytes(data.address, 512), image_bytes(4 * 512, 512));
}

TEST_F(BlkTest, ReadableStatusDescriptorNeedsReset) {
  auto device = open_active();
  // A flush whose "status" is a device-readable byte.
  const MockBuffer readable_status = driver_.allocate(1, false, kUnanswered);
  add({header(VIRTIO_BLK_T_FLUSH, 0), readable_status});
  kick(*device);
  EXPECT_TRUE(driver_.collect_used().empty());
  EXPECT_EQ(resets().size(), 1u);
  EXPECT_EQ(driver_.read_bytes(readable_status.address, 1)[0], kUnanswered) << "a readable byte is never written";
  EXPECT_EQ(device->stats().flushes, 0u);
}

TEST_F(BlkTest, InvalidRingNeedsReset) {
  auto device = open_active();
  driver_.set_avail_index(kQueueSize + 1);  // more chains than the ring holds
  device->queue_notify(0);
  EXPECT_EQ(resets().size(), 1u);
  EXPECT_EQ(driver_.used_index(), 0);
}

TEST_F(BlkTest, FileErrorsAnswerIoErrAndTheDeviceKeepsRunning) {
  auto device = open_active();
  // The image shrinks under the device: 8 sectors left of the 64 it announced.
  image_.truncate(8 * kSectorBytes);
  const MockBuffer gone = driver_.allocate(512, true, 0x33);
  const MockBuffer done = status();
  EXPECT_EQ(serve(*device, {header(VIRTIO_BLK_T_IN, 20), gone, done}).len, 1u);
  EXPECT_EQ(status_of(done), VIRTIO_BLK_S_IOERR);
  ASSERT_TRUE(device->last_error());
  EXPECT_EQ(device->last_error()->operation, "pread");
  EXPECT_EQ(device->last_error()->errno_value, EIO);
  EXPECT_NE(device->last_error()->message().find(image_.path()), std::string::npos);

  // A read that crosses the new end: the first sector arrives, and the used length says so.
  const MockBuffer half = driver_.allocate(1024, true);
  const MockBuffer done2 = status();
  EXPECT_EQ(serve(*device, {header(VIRTIO_BLK_T_IN, 7), half, done2}).len, 513u);
  EXPECT_EQ(status_of(done2), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(driver_.read_bytes(half.address, 512), image_bytes(7 * 512, 512));

  // Still serving.
  const MockBuffer data = driver_.allocate(512, true);
  const MockBuffer done3 = status();
  serve(*device, {header(VIRTIO_BLK_T_IN, 2), data, done3});
  EXPECT_EQ(status_of(done3), VIRTIO_BLK_S_OK);
  EXPECT_EQ(bytes_at(data), image_bytes(2 * 512, 512));

  const auto stats = device->stats();
  EXPECT_EQ(stats.io_errors, 2u);
  EXPECT_EQ(stats.reads, 1u);
  EXPECT_EQ(stats.bytes_read, 1024u) << "512 of the failed read, 512 of the good one";
  EXPECT_TRUE(resets().empty()) << "a host failure is not the driver's fault";
}

// --- guest memory in two regions --------------------------------------------------------------------------------

memory::GuestMemory two_region_memory() {
  std::vector<memory::GuestMemoryRegion> regions;
  for (const std::uint64_t start : {0ull, 1ull << 20}) {
    auto region = memory::GuestMemoryRegion::create(GuestAddress(start), 1ull << 20);
    EXPECT_TRUE(region) << region.error().message();
    regions.push_back(std::move(region).value());
  }
  auto memory = memory::GuestMemory::from_regions(std::move(regions));
  EXPECT_TRUE(memory) << memory.error().message();
  return std::move(memory).value();
}

TEST(BlkRegions, BuffersStraddlingTwoRegionsAreCopiedThroughTheBounceBuffer) {
  TempImage image(512 * kSectorBytes);  // 256 KiB
  const memory::GuestMemory memory = two_region_memory();
  // Buffers start 0x300 bytes below the boundary at 1 MiB: the large ones cross it.
  MockDriver driver(
      memory,
      MockLayout{.size = kQueueSize, .rings = GuestAddress(0x1000), .buffers = GuestAddress((1ull << 20) - 0x300)});
  auto device = BlkDevice::open(config_for(image.path()));
  ASSERT_TRUE(device) << device.error().message();
  auto queue = SplitQueue::create(memory, driver.queue_layout(), kQueueSize, driver.features());
  ASSERT_TRUE(queue);
  Activation activation{.memory = &memory,
                        .features = kCommonFeatures | (1ull << VIRTIO_BLK_F_FLUSH),
                        .queues = {},
                        .interrupt = std::make_shared<RecordingInterrupt>(),
                        .needs_reset = [](const Error& error) { ADD_FAILURE() << error.message(); }};
  activation.queues.emplace_back(std::move(queue).value());
  ASSERT_TRUE((*device)->activate(std::move(activation)));

  // A read of 130 KiB (more than the bounce buffer) into one buffer that crosses the boundary.
  constexpr std::uint32_t kBytes = 260 * 512;
  static_assert(kBytes > kBounceBytes * 2);
  const MockBuffer data = driver.allocate(kBytes, true);
  ASSERT_LT(data.address.raw(), 1ull << 20);
  ASSERT_GT(data.address.raw() + kBytes, 1ull << 20);
  const MockBuffer header = driver.allocate(kRequestHeaderBytes, false);
  ASSERT_TRUE(memory.write_obj(header.address, virtio_blk_outhdr{.type = VIRTIO_BLK_T_IN, .ioprio = 0, .sector = 100}));
  const MockBuffer done = driver.allocate(1, true, 0xee);
  driver.add_chain(std::vector<MockBuffer>{header, data, done});
  if (driver.kick_if_needed()) {
    (*device)->queue_notify(0);
  }
  auto used = driver.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, kBytes + 1);
  EXPECT_EQ(driver.read_bytes(done.address, 1)[0], VIRTIO_BLK_S_OK);
  EXPECT_EQ(driver.read_bytes(data.address, kBytes), image_bytes(100 * 512, kBytes));

  // Write the same region's contents back elsewhere: from guest memory across the boundary into the file.
  const auto payload = data_bytes(0x21, kBytes);
  ASSERT_TRUE(memory.write(data.address, std::as_bytes(std::span(payload))));
  const MockBuffer out_header = driver.allocate(kRequestHeaderBytes, false);
  ASSERT_TRUE(
      memory.write_obj(out_header.address, virtio_blk_outhdr{.type = VIRTIO_BLK_T_OUT, .ioprio = 0, .sector = 200}));
  const MockBuffer out_data{.address = data.address, .length = kBytes, .writable = false};
  const MockBuffer out_done = driver.allocate(1, true, 0xee);
  driver.add_chain(std::vector<MockBuffer>{out_header, out_data, out_done});
  if (driver.kick_if_needed()) {
    (*device)->queue_notify(0);
  }
  used = driver.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 1u);
  EXPECT_EQ(driver.read_bytes(out_done.address, 1)[0], VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.read(200 * 512, kBytes), payload);
  EXPECT_EQ(image.read(199 * 512, 512), image_bytes(199 * 512, 512));
  EXPECT_EQ((*device)->stats().bytes_written, kBytes);
}

// --- interrupts -------------------------------------------------------------------------------------------------

TEST_F(BlkTest, FlagsModeOneInterruptPerBatchUnlessSuppressed) {
  auto device = open_active();
  for (std::uint64_t i = 0; i < 4; ++i) {
    add({header(VIRTIO_BLK_T_IN, i), driver_.allocate(512, true), status()});
  }
  kick(*device);
  EXPECT_EQ(driver_.collect_used().size(), 4u);
  EXPECT_EQ(driver_.kicks(), 1u) << "published together, kicked once";
  EXPECT_EQ(interrupt_->queue_signals(), std::vector<std::uint16_t>{0}) << "four requests, one interrupt";
  EXPECT_EQ(driver_.used_flags() & VRING_USED_F_NO_NOTIFY, 0) << "notifications re-enabled after the batch";

  driver_.set_no_interrupt(true);
  add({header(VIRTIO_BLK_T_FLUSH, 0), status()});
  add({header(VIRTIO_BLK_T_FLUSH, 0), status()});
  kick(*device);
  EXPECT_EQ(driver_.collect_used().size(), 2u) << "served all the same";
  EXPECT_EQ(interrupt_->queue_signals().size(), 1u);
  EXPECT_EQ(counters_->snapshot().interrupts_suppressed, 1u);
  EXPECT_EQ(driver_.kicks(), 2u);

  // A kick with nothing new: no interrupt.
  driver_.set_no_interrupt(false);
  device->queue_notify(0);
  EXPECT_EQ(interrupt_->queue_signals().size(), 1u);
}

TEST_F(BlkTest, EventIdxModeInterruptsWhenTheUsedIndexCrossesUsedEvent) {
  MockDriver driver(memory_, MockLayout{.size = kQueueSize, .rings = GuestAddress(0x8000)}, true);
  auto device = open_device();
  ASSERT_TRUE(device->activate(activation({&driver}, kAllFeatures | (1ull << VIRTIO_RING_F_EVENT_IDX))));
  const auto batch = [&](int count) {
    for (int i = 0; i < count; ++i) {
      add({header(VIRTIO_BLK_T_FLUSH, 0, &driver), status(&driver)}, &driver);
    }
    kick(*device, &driver);
    return driver.collect_used().size();
  };
  // used_event is 0 (a fresh ring): the first batch moves the used index 0 -> 4 and crosses it.
  EXPECT_EQ(batch(4), 4u);
  EXPECT_EQ(interrupt_->queue_signals().size(), 1u);
  EXPECT_EQ(driver.avail_event(), 4) << "kick me when you publish past what I have taken";

  // Interrupt once the used index passes 6: 4 -> 6 does not, 6 -> 7 does.
  driver.set_used_event(6);
  EXPECT_EQ(batch(2), 2u);
  EXPECT_EQ(interrupt_->queue_signals().size(), 1u);
  EXPECT_EQ(counters_->snapshot().interrupts_suppressed, 1u);
  EXPECT_EQ(batch(1), 1u);
  EXPECT_EQ(interrupt_->queue_signals().size(), 2u);
  EXPECT_EQ(driver.kicks(), 3u) << "one kick per batch";
  EXPECT_EQ(device->stats().flushes, 7u);
}

// --- lifecycle --------------------------------------------------------------------------------------------------

TEST_F(BlkTest, ActivationRules) {
  auto device = open_device();
  EXPECT_FALSE(device->activate(activation({nullptr}))) << "no queue enabled";
  Activation no_memory = activation({&driver_});
  no_memory.memory = nullptr;
  EXPECT_FALSE(device->activate(std::move(no_memory)));
  MockDriver second(memory_, MockLayout{.size = kQueueSize, .rings = GuestAddress(0x8000)});
  EXPECT_FALSE(device->activate(activation({&driver_, &second}))) << "one queue declared, two handed over";
  EXPECT_FALSE(device->active());

  ASSERT_TRUE(device->activate(activation({&driver_})));
  EXPECT_TRUE(device->active());
  const auto again = device->activate(activation({&driver_}));
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("already active"), std::string::npos);
}

TEST_F(BlkTest, ResetStopsTheDeviceAndReactivationServesEarlierRequests) {
  auto device = open_active();
  serve(*device, {header(VIRTIO_BLK_T_FLUSH, 0), status()});
  device->reset();
  EXPECT_FALSE(device->active());
  // A kick after reset does nothing.
  const MockBuffer done = status();
  add({header(VIRTIO_BLK_T_FLUSH, 0), done});
  device->queue_notify(0);
  EXPECT_EQ(status_of(done), kUnanswered);
  EXPECT_TRUE(driver_.collect_used().empty());

  // The driver sets up a fresh queue and publishes before DRIVER_OK: activation serves it.
  MockDriver fresh(memory_,
                   MockLayout{.size = kQueueSize, .rings = GuestAddress(0x8000), .buffers = GuestAddress(0x20'0000)});
  const MockBuffer data = fresh.allocate(512, true);
  const MockBuffer fresh_done = status(&fresh);
  add({header(VIRTIO_BLK_T_IN, 6, &fresh), data, fresh_done}, &fresh);
  ASSERT_TRUE(device->activate(activation({&fresh})));
  EXPECT_TRUE(device->active());
  const auto used = fresh.collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 513u);
  EXPECT_EQ(fresh.read_bytes(data.address, 512), image_bytes(6 * 512, 512));
  EXPECT_EQ(device->stats().flushes, 1u);
  EXPECT_EQ(device->stats().reads, 1u);
}

TEST_F(BlkTest, SeveralQueuesAreServedConcurrently) {
  BlkConfig config = config_for(image_.path());
  config.queues = 2;
  auto device = open_device(config);
  MockDriver second(memory_,
                    MockLayout{.size = kQueueSize, .rings = GuestAddress(0x8000), .buffers = GuestAddress(0x20'0000)});
  ASSERT_TRUE(device->activate(activation({&driver_, &second})));

  // Each queue writes its own 32 sectors, one request per sector, in two rounds; each round both queues are kicked
  // from two threads at once (vhost-user runs one worker per queue).
  constexpr int kPerRound = 16;
  std::vector<std::pair<MockDriver*, MockBuffer>> statuses;
  for (int round = 0; round < 2; ++round) {
    for (int q = 0; q < 2; ++q) {
      MockDriver* driver = q == 0 ? &driver_ : &second;
      for (int i = 0; i < kPerRound; ++i) {
        const auto sector = static_cast<std::uint64_t>(round * 32 + q * kPerRound + i);
        const MockBuffer done = status(driver);
        statuses.emplace_back(driver, done);
        add({header(VIRTIO_BLK_T_OUT, sector, driver),
             data_out(data_bytes(static_cast<std::uint8_t>(sector), 512), driver), done},
            driver);
      }
    }
    ASSERT_TRUE(driver_.kick_if_needed());
    ASSERT_TRUE(second.kick_if_needed());
    std::thread t0([&device] { device->queue_notify(0); });
    std::thread t1([&device] { device->queue_notify(1); });
    t0.join();
    t1.join();
    EXPECT_EQ(driver_.collect_used().size(), static_cast<std::size_t>(kPerRound));
    EXPECT_EQ(second.collect_used().size(), static_cast<std::size_t>(kPerRound));
  }

  for (const auto& [driver, done] : statuses) {
    EXPECT_EQ(driver->read_bytes(done.address, 1)[0], VIRTIO_BLK_S_OK);
  }
  for (std::uint64_t sector = 0; sector < 64; ++sector) {
    EXPECT_EQ(image_.read(sector * 512, 512), data_bytes(static_cast<std::uint8_t>(sector), 512)) << sector;
  }
  EXPECT_EQ(device->stats().writes, 64u);
  EXPECT_EQ(device->stats().bytes_written, 64u * 512);
  // One interrupt per queue per round.
  const auto signals = interrupt_->queue_signals();
  EXPECT_EQ(std::count(signals.begin(), signals.end(), 0), 2);
  EXPECT_EQ(std::count(signals.begin(), signals.end(), 1), 2);
  EXPECT_TRUE(resets().empty());
}

}  // namespace
}  // namespace vmm::virtio::blk
