#pragma once
/// @file
/// @brief Test support: skip or fail a KVM test when /dev/kvm is unusable.

#include <gtest/gtest.h>

#include <string>

namespace vmm::testing {

/// @brief Empty when /dev/kvm can be opened and answers KVM_GET_API_VERSION; otherwise why not.
[[nodiscard]] std::string kvm_unavailable_reason();

/// @brief True when the environment says a missing KVM is a failure (CI sets VMMLAB_REQUIRE_KVM=1).
[[nodiscard]] bool kvm_required();

}  // namespace vmm::testing

/// @brief First line of every KVM test. Without usable KVM: skip with the reason, or fail under VMMLAB_REQUIRE_KVM=1.
#define VMMLAB_REQUIRE_KVM()                                                                      \
  do {                                                                                            \
    if (auto reason_ = ::vmm::testing::kvm_unavailable_reason(); !reason_.empty()) {              \
      if (::vmm::testing::kvm_required()) {                                                       \
        FAIL() << "KVM is required (VMMLAB_REQUIRE_KVM=1) but unusable: " << reason_;             \
      } else {                                                                                    \
        GTEST_SKIP() << "no usable KVM: " << reason_ << " (try tools/rig -- <this test binary>)"; \
      }                                                                                           \
    }                                                                                             \
  } while (false)
