#include "vmm/testing/kvm.hpp"

#include <cstdlib>
#include <string_view>

#include "vmm/kvm/kvm.hpp"

namespace vmm::testing {

std::string kvm_unavailable_reason() {
  auto kvm = kvm::Kvm::open();
  return kvm ? std::string() : kvm.error().message();
}

bool kvm_required() {
  const char* value = std::getenv("VMMLAB_REQUIRE_KVM");
  return value != nullptr && std::string_view(value) == "1";
}

}  // namespace vmm::testing
