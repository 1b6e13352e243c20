#include "vmm/machine/kvm_stats.hpp"

#include <linux/kvm.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>

#include <fmt/format.h>

namespace vmm::machine {

namespace {

constexpr const char* kOp = "KVM stats";
// `struct kvm_stats_desc` up to its flexible `name[]`: 16 bytes in C. In C++ the UAPI header's
// __DECLARE_FLEX_ARRAY makes sizeof larger (see vmm/flex_array.hpp), so the layout is spelled out and every field
// is read at its C offset.
constexpr std::size_t kDescFixedSize = 16;
constexpr std::size_t kDescFlagsAt = 0;
constexpr std::size_t kDescExponentAt = 4;
constexpr std::size_t kDescSizeAt = 6;
constexpr std::size_t kDescOffsetAt = 8;
constexpr std::size_t kDescBucketSizeAt = 12;
// Sanity limits, far above what any kernel uses (names are KVM_STATS_NAME_SIZE = 48 bytes, a vCPU has ~40 stats):
// they only stop a corrupt header from making us allocate gigabytes.
constexpr std::uint32_t kMaxNameSize = 4096;
constexpr std::uint32_t kMaxDescriptors = 65536;
constexpr std::uint64_t kMaxDataSize = 64ull << 20;

static_assert(sizeof(kvm_stats_header) == 24, "kvm_stats_header is six u32");

// pread until `out` is full; a short file is an error naming `what`.
Result<void> read_exactly(const Fd& fd, std::uint64_t offset, std::span<std::byte> out, std::string_view what) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd.get(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return sys_error("pread(stats fd)", errno, fmt::format("reading the {} at {:#x}", what, offset));
    }
    if (n == 0) {
      return logic_error(kOp,
                         fmt::format("the {} at {:#x} is cut short: {} of {} bytes", what, offset, done, out.size()));
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

template <typename T>
T load(std::span<const std::byte> bytes, std::size_t at) {
  T value{};
  std::memcpy(&value, bytes.data() + at, sizeof(T));
  return value;
}

// [a, a + a_size) and [b, b + b_size) share a byte.
bool overlaps(std::uint64_t a, std::uint64_t a_size, std::uint64_t b, std::uint64_t b_size) {
  return a_size != 0 && b_size != 0 && a < b + b_size && b < a + a_size;
}

// A NUL-terminated string of at most `bytes.size()` bytes; nullopt if there is no terminator.
std::optional<std::string> c_string(std::span<const std::byte> bytes) {
  const auto* begin = reinterpret_cast<const char*>(bytes.data());
  const auto length = ::strnlen(begin, bytes.size());
  if (length == bytes.size()) {
    return std::nullopt;
  }
  return std::string(begin, length);
}

StatType decode_type(std::uint32_t flags) {
  switch (flags & KVM_STATS_TYPE_MASK) {
    case KVM_STATS_TYPE_CUMULATIVE:
      return StatType::Cumulative;
    case KVM_STATS_TYPE_INSTANT:
      return StatType::Instant;
    case KVM_STATS_TYPE_PEAK:
      return StatType::Peak;
    case KVM_STATS_TYPE_LINEAR_HIST:
      return StatType::LinearHistogram;
    case KVM_STATS_TYPE_LOG_HIST:
      return StatType::LogHistogram;
    default:
      return StatType::Unknown;
  }
}

StatUnit decode_unit(std::uint32_t flags) {
  switch (flags & KVM_STATS_UNIT_MASK) {
    case KVM_STATS_UNIT_NONE:
      return StatUnit::None;
    case KVM_STATS_UNIT_BYTES:
      return StatUnit::Bytes;
    case KVM_STATS_UNIT_SECONDS:
      return StatUnit::Seconds;
    case KVM_STATS_UNIT_CYCLES:
      return StatUnit::Cycles;
    case KVM_STATS_UNIT_BOOLEAN:
      return StatUnit::Boolean;
    default:
      return StatUnit::Unknown;
  }
}

}  // namespace

const char* to_string(StatType type) {
  switch (type) {
    case StatType::Cumulative:
      return "cumulative";
    case StatType::Instant:
      return "instant";
    case StatType::Peak:
      return "peak";
    case StatType::LinearHistogram:
      return "linear histogram";
    case StatType::LogHistogram:
      return "log histogram";
    case StatType::Unknown:
      return "unknown";
  }
  return "?";
}

const char* to_string(StatUnit unit) {
  switch (unit) {
    case StatUnit::None:
      return "none";
    case StatUnit::Bytes:
      return "bytes";
    case StatUnit::Seconds:
      return "seconds";
    case StatUnit::Cycles:
      return "cycles";
    case StatUnit::Boolean:
      return "boolean";
    case StatUnit::Unknown:
      return "unknown";
  }
  return "?";
}

Result<KvmStats> KvmStats::open(const Fd& vm_or_vcpu) {
  auto fd = VMM_IOCTL(vm_or_vcpu, KVM_GET_STATS_FD);
  if (!fd) {
    return std::unexpected(fd.error());
  }
  // The ioctl returns a new descriptor (already close-on-exec: KVM opens it O_CLOEXEC).
  return from_fd(Fd(*fd));
}

Result<KvmStats> KvmStats::from_fd(Fd stats_fd) {
  std::array<std::byte, sizeof(kvm_stats_header)> raw{};
  if (auto rc = read_exactly(stats_fd, 0, raw, "header"); !rc) {
    return std::unexpected(rc.error());
  }
  kvm_stats_header header{};
  std::memcpy(&header, raw.data(), sizeof(header));

  // The sizes first, so that the arithmetic below cannot overflow 64 bits.
  if (header.name_size == 0 || header.name_size > kMaxNameSize) {
    return logic_error(kOp, fmt::format("header name_size {} is not in 1..{}", header.name_size, kMaxNameSize));
  }
  if (header.num_desc > kMaxDescriptors) {
    return logic_error(kOp, fmt::format("header num_desc {} is above {}", header.num_desc, kMaxDescriptors));
  }
  const std::uint64_t desc_stride = kDescFixedSize + header.name_size;
  const std::uint64_t desc_block = desc_stride * header.num_desc;
  // The four blocks must not overlap one another (the kernel puts them one after the other).
  struct Block {
    const char* name;
    std::uint64_t offset;
    std::uint64_t size;
  };
  const std::array<Block, 3> blocks{{{"header", 0, sizeof(kvm_stats_header)},
                                     {"id", header.id_offset, header.name_size},
                                     {"descriptor block", header.desc_offset, desc_block}}};
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    for (std::size_t j = i + 1; j < blocks.size(); ++j) {
      if (overlaps(blocks[i].offset, blocks[i].size, blocks[j].offset, blocks[j].size)) {
        return logic_error(
            kOp, fmt::format("the {} [{:#x}, +{:#x}) overlaps the {} [{:#x}, +{:#x})", blocks[i].name, blocks[i].offset,
                             blocks[i].size, blocks[j].name, blocks[j].offset, blocks[j].size));
      }
    }
  }

  std::vector<std::byte> id_bytes(header.name_size);
  if (auto rc = read_exactly(stats_fd, header.id_offset, id_bytes, "id"); !rc) {
    return std::unexpected(rc.error());
  }
  auto id = c_string(id_bytes);
  if (!id) {
    return logic_error(kOp, fmt::format("the id string is not terminated within name_size {}", header.name_size));
  }

  std::vector<std::byte> desc_bytes(desc_block);
  if (auto rc = read_exactly(stats_fd, header.desc_offset, desc_bytes, "descriptor block"); !rc) {
    return std::unexpected(rc.error());
  }
  std::vector<StatDescriptor> descriptors;
  descriptors.reserve(header.num_desc);
  std::uint64_t data_size = 0;
  for (std::uint32_t i = 0; i < header.num_desc; ++i) {
    const auto entry = std::span<const std::byte>(desc_bytes).subspan(i * desc_stride, desc_stride);
    StatDescriptor d;
    d.flags = load<std::uint32_t>(entry, kDescFlagsAt);
    d.exponent = load<std::int16_t>(entry, kDescExponentAt);
    d.size = load<std::uint16_t>(entry, kDescSizeAt);
    d.offset = load<std::uint32_t>(entry, kDescOffsetAt);
    d.bucket_size = load<std::uint32_t>(entry, kDescBucketSizeAt);
    auto name = c_string(entry.subspan(kDescFixedSize));
    if (!name || name->empty()) {
      return logic_error(kOp, fmt::format("descriptor {}: the name is {}", i, name ? "empty" : "not terminated"));
    }
    d.name = std::move(*name);
    d.type = decode_type(d.flags);
    d.unit = decode_unit(d.flags);
    d.base = (d.flags & KVM_STATS_BASE_MASK) == KVM_STATS_BASE_POW2 ? 2 : 10;
    if (d.size == 0) {
      return logic_error(kOp, fmt::format("descriptor {} ({}): size 0", i, d.name));
    }
    if (d.offset % sizeof(std::uint64_t) != 0) {
      return logic_error(kOp,
                         fmt::format("descriptor {} ({}): offset {:#x} is not 8-byte aligned", i, d.name, d.offset));
    }
    const std::uint64_t end = std::uint64_t{d.offset} + std::uint64_t{d.size} * sizeof(std::uint64_t);
    if (end > kMaxDataSize) {
      return logic_error(
          kOp, fmt::format("descriptor {} ({}): values end at {:#x}, beyond {:#x}", i, d.name, end, kMaxDataSize));
    }
    data_size = std::max(data_size, end);
    descriptors.push_back(std::move(d));
  }
  for (const auto& block : blocks) {
    if (overlaps(block.offset, block.size, header.data_offset, data_size)) {
      return logic_error(kOp, fmt::format("the data block [{:#x}, +{:#x}) overlaps the {} [{:#x}, +{:#x})",
                                          header.data_offset, data_size, block.name, block.offset, block.size));
    }
  }
  KvmStats stats(std::move(stats_fd), std::move(*id), std::move(descriptors), header.data_offset, data_size);
  // One read now, so a data block shorter than its descriptors say is refused here rather than on first use.
  if (auto values = stats.read(); !values) {
    return std::unexpected(values.error());
  }
  return stats;
}

const StatDescriptor* KvmStats::find(std::string_view name) const noexcept {
  auto it = std::ranges::find(descriptors_, name, &StatDescriptor::name);
  return it == descriptors_.end() ? nullptr : &*it;
}

Result<std::vector<Stat>> KvmStats::read() const {
  // The whole data block in one pread: every value comes from the same moment (as nearly as KVM allows).
  std::vector<std::byte> data(data_size_);
  if (auto rc = read_exactly(fd_, data_offset_, data, "data block"); !rc) {
    return std::unexpected(rc.error());
  }
  std::vector<Stat> out;
  out.reserve(descriptors_.size());
  for (const auto& d : descriptors_) {
    Stat stat{.name = d.name, .values = std::vector<std::uint64_t>(d.size)};
    std::memcpy(stat.values.data(), data.data() + d.offset, d.size * sizeof(std::uint64_t));
    out.push_back(std::move(stat));
  }
  return out;
}

Result<std::vector<std::uint64_t>> KvmStats::read(const StatDescriptor& descriptor) const {
  std::vector<std::uint64_t> values(descriptor.size);
  const std::uint64_t end = std::uint64_t{descriptor.offset} + values.size() * sizeof(std::uint64_t);
  if (end > data_size_) {
    return logic_error(kOp, fmt::format("{}: values end at {:#x}, beyond the data block", descriptor.name, end));
  }
  if (auto rc = read_exactly(fd_, std::uint64_t{data_offset_} + descriptor.offset,
                             std::as_writable_bytes(std::span(values)), descriptor.name);
      !rc) {
    return std::unexpected(rc.error());
  }
  return values;
}

Result<std::optional<std::uint64_t>> KvmStats::value(std::string_view name) const {
  const StatDescriptor* descriptor = find(name);
  if (descriptor == nullptr) {
    return std::nullopt;
  }
  auto values = read(*descriptor);
  if (!values) {
    return std::unexpected(values.error());
  }
  return values->front();
}

}  // namespace vmm::machine
