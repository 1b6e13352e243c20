/*
 * high_ram: lab 02, exercise 1. Checksums the buffer the boot info points at (the test puts it in high RAM, at
 * 4 GiB) and stores the result twice: where the boot info says, and in the last 8 bytes of high RAM.
 *
 * Without a KVM slot at 4 GiB the guest's loads become KVM_EXIT_MMIO; without a page-table mapping for 4 GiB they
 * page-fault, and with no IDT that is a triple fault.
 */
#include "lab02_guest.h"
#include "vmmlab/runtime.h"

int main(const struct vmmlab_boot_info *info) {
  if (info->magic != VMMLAB_BOOT_INFO_MAGIC) {
    return 1;
  }
  const uint8_t *data = (const uint8_t *)info->input;
  uint64_t hash = 0xcbf29ce484222325ull; /* FNV-1a 64, as stage02's checksum guest */
  for (uint64_t i = 0; i < info->input_size; ++i) {
    hash ^= data[i];
    hash *= 0x100000001b3ull;
  }
  *(volatile uint64_t *)info->result = hash;
  *(volatile uint64_t *)LAB02_HIGH_RAM_RESULT = hash;
  vmmlab_report((uint32_t)info->input);
  vmmlab_report((uint32_t)(info->input >> 32));
  console_puts("high_ram guest: done\n");
  return 0;
}
