#pragma once
/// @file
/// @brief `KvmStats`: KVM's own counters for a VM or a vCPU, read through the binary stats file descriptor
/// (KVM_GET_STATS_FD, Documentation/virt/kvm/api.rst section "KVM_GET_STATS_FD").

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"

namespace vmm::machine {

/// @brief How a statistic behaves (KVM_STATS_TYPE_*).
enum class StatType : std::uint8_t {
  Cumulative,       ///< Only grows (exits, injections).
  Instant,          ///< A current value that goes up and down.
  Peak,             ///< The largest value seen.
  LinearHistogram,  ///< `size` buckets of `bucket_size` each.
  LogHistogram,     ///< `size` buckets, bucket n holding [2^(n-1), 2^n).
  Unknown,          ///< A type newer than this code.
};

/// @brief What a statistic counts in (KVM_STATS_UNIT_*).
enum class StatUnit : std::uint8_t {
  None,     ///< A plain count.
  Bytes,    ///< Bytes (times base^exponent).
  Seconds,  ///< Seconds (times base^exponent: exponent -9 is nanoseconds).
  Cycles,   ///< CPU cycles.
  Boolean,  ///< 0 or 1.
  Unknown,  ///< A unit newer than this code.
};

/// @brief "cumulative", "instant", ...
[[nodiscard]] const char* to_string(StatType type);
/// @brief "none", "bytes", "seconds", ...
[[nodiscard]] const char* to_string(StatUnit unit);

/// @brief One statistic as KVM describes it (`struct kvm_stats_desc`, decoded).
struct StatDescriptor {
  std::string name;                   ///< e.g. "exits", "io_exits", "halt_wait_ns".
  StatType type = StatType::Unknown;  ///< From the flags (KVM_STATS_TYPE_MASK).
  StatUnit unit = StatUnit::Unknown;  ///< From the flags (KVM_STATS_UNIT_MASK).
  std::uint32_t base = 10;            ///< 10 or 2 (KVM_STATS_BASE_POW10 / POW2): the value is in unit * base^exponent.
  std::int16_t exponent = 0;          ///< Power of `base` the unit is scaled by.
  std::uint16_t size = 0;             ///< Number of 64-bit values (1, or the number of histogram buckets).
  std::uint32_t offset = 0;           ///< Byte offset of its values in the data block.
  std::uint32_t bucket_size = 0;      ///< Linear histograms: the width of a bucket.
  std::uint32_t flags = 0;            ///< The raw flags (type | unit | base).
};

/// @brief One statistic's values at one read.
struct Stat {
  std::string name;                   ///< Its name.
  std::vector<std::uint64_t> values;  ///< `size` values; one for everything but histograms.
};

/// @brief The binary stats of one VM or one vCPU: descriptors parsed once, values read on demand.
///
/// The stats fd is a read-only file: a header (`kvm_stats_header`) at offset 0 gives the size of a name, the number
/// of descriptors and where the id string, the descriptor block and the data block are. The descriptors never change
/// for the fd's life, so they are parsed once; the data block is read (pread, no seeking, so reads from several
/// threads do not interfere) each time values are wanted. KVM updates the values without stopping anything, so one
/// read is a consistent-enough picture, not an atomic one.
///
/// The kernel is trusted, but the parser is not careless: a header whose blocks overlap or whose sizes are
/// unreasonable, a descriptor whose name is not terminated or whose values lie outside the data block, or a short
/// read is refused with an error saying which field is wrong, never read past. Types and units this code does not
/// know are kept as `Unknown` (newer kernels add them); they are not errors.
class KvmStats {
 public:
  /// @brief KVM_GET_STATS_FD on a VM or vCPU descriptor, then `from_fd`.
  [[nodiscard]] static Result<KvmStats> open(const Fd& vm_or_vcpu);
  /// @brief Parses the header and descriptors of a stats file (any readable file laid out the same way: tests use a
  /// memfd to feed malformed ones).
  [[nodiscard]] static Result<KvmStats> from_fd(Fd stats_fd);

  /// @brief The id string ("kvm-<pid>" for a VM, "kvm-<pid>/vcpu-<n>" for a vCPU).
  [[nodiscard]] const std::string& id() const noexcept { return id_; }
  /// @brief Every descriptor, in the file's order.
  [[nodiscard]] const std::vector<StatDescriptor>& descriptors() const noexcept { return descriptors_; }
  /// @brief The descriptor called `name`, or null.
  [[nodiscard]] const StatDescriptor* find(std::string_view name) const noexcept;

  /// @brief Every statistic's current values, in descriptor order.
  [[nodiscard]] Result<std::vector<Stat>> read() const;
  /// @brief The current values of one statistic.
  [[nodiscard]] Result<std::vector<std::uint64_t>> read(const StatDescriptor& descriptor) const;
  /// @brief The first value of the statistic called `name`; nullopt if this VM or vCPU has no such statistic.
  [[nodiscard]] Result<std::optional<std::uint64_t>> value(std::string_view name) const;

 private:
  KvmStats(Fd fd, std::string id, std::vector<StatDescriptor> descriptors, std::uint32_t data_offset,
           std::uint64_t data_size)
      : fd_(std::move(fd)),
        id_(std::move(id)),
        descriptors_(std::move(descriptors)),
        data_offset_(data_offset),
        data_size_(data_size) {}

  Fd fd_;
  std::string id_;
  std::vector<StatDescriptor> descriptors_;
  std::uint32_t data_offset_ = 0;
  std::uint64_t data_size_ = 0;  // bytes of the data block the descriptors cover
};

}  // namespace vmm::machine
