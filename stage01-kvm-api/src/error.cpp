#include "vmm/error.hpp"

#include <cstring>

namespace vmm {

std::string errno_name(int errno_value) {
  // strerrorname_np (glibc 2.32+) gives "EINVAL"; learners recognise the name faster than "Invalid argument".
  if (const char* name = strerrorname_np(errno_value)) {
    return name;
  }
  return fmt::format("errno {}", errno_value);
}

std::string Error::message() const {
  std::string out = operation;
  if (errno_value != 0) {
    out += fmt::format(": {}", errno_name(errno_value));
  }
  if (!context.empty()) {
    out += errno_value != 0 ? fmt::format(" ({})", context) : fmt::format(": {}", context);
  }
  return out;
}

Error Error::with_context(std::string_view more) const& {
  return Error(*this).with_context(more);
}

Error Error::with_context(std::string_view more) && {
  context = context.empty() ? std::string(more) : fmt::format("{}; {}", context, more);
  return std::move(*this);
}

}  // namespace vmm
