// Lab 09, exercise 1: the zero page. See labs/09-final-vmm/README.md.
#include "lab09.hpp"

namespace lab09 {

vmm::Result<boot_params> zero_page(const setup_header& header, const LoaderInfo& loader,
                                   std::span<const vmm::boot::E820Entry> e820) {
  // TODO: start from a zeroed boot_params and the kernel's header. Which fields does the loader own
  // (Documentation/x86/boot.rst marks them "write" or "modify")? Where do the high 32 bits of a 64-bit address go?
  (void)header;
  (void)loader;
  (void)e820;
  return vmm::logic_error("zero_page", "not implemented yet (lab 09, exercise 1)");
}

}  // namespace lab09
