/*
 * rom: lab 02, exercise 2. Reads a ROM the VMM mapped with KVM_MEM_READONLY, then tries to write to it.
 *
 * Reads come straight from the memory behind the slot (no exit). The write becomes a KVM_EXIT_MMIO: the VMM sees the
 * address and the bytes, the ROM is unchanged, and the guest carries on. It reports, in order: the low and high
 * halves of the first ROM word, the word at LAB02_ROM_POKE before the write, and the same word after it.
 */
#include "lab02_guest.h"
#include "vmmlab/runtime.h"

int main(const struct vmmlab_boot_info *info) {
  const uint64_t id = mmio_read64(LAB02_ROM);
  vmmlab_report((uint32_t)id);
  vmmlab_report((uint32_t)(id >> 32));
  const uint32_t before = mmio_read32(LAB02_ROM_POKE);
  mmio_write32(LAB02_ROM_POKE, LAB02_ROM_POKE_VALUE); /* a write to a read-only slot: KVM_EXIT_MMIO */
  const uint32_t after = mmio_read32(LAB02_ROM_POKE);
  vmmlab_report(before);
  vmmlab_report(after);
  *(volatile uint64_t *)info->result = id;
  console_puts(after == before ? "rom guest: the ROM kept its value\n" : "rom guest: the ROM changed!\n");
  return after == before ? 0 : 2;
}
