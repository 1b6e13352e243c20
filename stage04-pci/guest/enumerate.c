/*
 * enumerate: stage04's guest. A bare-metal PCI enumerator, as firmware runs before an OS.
 *
 * Scans bus 0 through configuration mechanism #1 (0xCF8/0xCFC) and prints an lspci-like listing: for each device,
 * its IDs and class, each BAR with its kind and size (sized by writing all-ones), the address it assigns to it
 * (memory from 0xC000_0000, I/O from 0xC000, naturally aligned) and its capability IDs. It then enables decoding and
 * bus mastering, programs the test device's MSI-X entry 0 for vector 0x50 on the local APIC, rings the device's
 * doorbell and waits for the interrupt.
 *
 * The mechanics (configuration access, the BAR allocator, the capability walk, MSI-X, the local APIC, lines of
 * output) are stage04's guest library, guest/lib (vmmlab/pci.h, vmmlab/lapic.h, vmmlab/text.h): later stages'
 * guests use them too. This file is the enumerator's logic and its listing.
 *
 * Reports (vmmlab_report): devices found, MSI-X interrupts taken. Exit status 0 = PASS; 1..6 name the failed check.
 * Every configuration access costs two exits and every MMIO access one: the program stays small on purpose.
 */
#include "vmmlab/interrupts.h"
#include "vmmlab/lapic.h"
#include "vmmlab/pci.h"
#include "vmmlab/runtime.h"
#include "vmmlab/text.h"
#include "vmmlab/uart.h"

#define TEST_VENDOR 0x1af4
#define TEST_DEVICE 0x10f1
#define TEST_REG_ID 0x0
#define TEST_REG_DOORBELL 0x8
#define TEST_REG_FIRED 0xc
#define TEST_ID_VALUE 0x564d4d4cu

#define MSI_VECTOR 0x50

/* "  BARn io size 0x10 at 0xc000", "  BARn mem32 prefetchable size 0x1000 at 0xc0000000". */
static void print_bar(int index, const struct pci_bar *bar) {
  put_str("  BAR");
  put_hex((uint64_t)index, 1);
  if (bar->io) {
    put_str(" io");
  } else {
    put_str(bar->is64 ? " mem64" : " mem32");
    if (bar->prefetchable) put_str(" prefetchable");
  }
  put_str(" size ");
  put_number(bar->size);
  put_str(" at ");
  put_number(bar->address);
  end_line();
}

/* ---- the MSI-X interrupt ---- */

static volatile uint32_t msix_interrupts;

__attribute__((interrupt)) static void msix_handler(struct interrupt_frame *frame) {
  (void)frame;
  msix_interrupts = msix_interrupts + 1;
  lapic_eoi();
}

static int fail(int status, const char *why) {
  put_str("FAIL: ");
  put_str(why);
  end_line();
  uart_flush();
  return status;
}

int main(const struct vmmlab_boot_info *info) {
  (void)info;
  idt_init();
  pic_init();
  uart_init();
  interrupts_enable();

  uart_puts("vmmlab stage04: enumerating PCI bus 0\n");
  uint32_t devices = 0;
  int test_slot = -1;
  uint8_t test_msix = 0;
  struct pci_bar test_bars[PCI_STD_NUM_BARS] = {0};

  for (uint8_t slot = 0; slot < PCI_SLOTS; ++slot) {
    const uint32_t ids = pci_read32(slot, PCI_VENDOR_ID);
    if ((ids & 0xffff) == 0xffff) continue;
    ++devices;
    const uint32_t class_revision = pci_read32(slot, PCI_CLASS_REVISION);
    put_str("00:");
    put_hex(slot, 2);
    put_str(".0 ");
    put_hex(ids & 0xffff, 4);
    put_str(":");
    put_hex(ids >> 16, 4);
    put_str(" class ");
    put_hex(class_revision >> 8, 6);
    end_line();

    /* Decoding is off while the BARs are sized and assigned; then on, with bus mastering (MSI-X messages are
       memory writes the device starts). */
    struct pci_bar bars[PCI_STD_NUM_BARS];
    const uint16_t command = pci_assign_bars(slot, bars);
    for (int index = 0; index < PCI_STD_NUM_BARS; ++index) {
      if (bars[index].size != 0) print_bar(index, &bars[index]);
    }
    if (command != 0) pci_write16(slot, PCI_COMMAND, (uint16_t)(command | PCI_COMMAND_MASTER));

    uint8_t msix = 0;
    struct pci_cap_cursor cap;
    if (pci_cap_begin(&cap, slot)) {
      put_str("  capabilities:");
      while (pci_cap_next(&cap)) {
        put_str(" ");
        put_hex(cap.id, 2);
        if (cap.id == PCI_CAP_ID_MSIX) {
          put_str(" (MSI-X)");
          msix = cap.offset;
        }
      }
      end_line();
    }
    if ((ids & 0xffff) == TEST_VENDOR && (ids >> 16) == TEST_DEVICE) {
      test_slot = slot;
      test_msix = msix;
      for (int i = 0; i < PCI_STD_NUM_BARS; ++i) test_bars[i] = bars[i];
    }
  }
  put_str("devices: ");
  put_number(devices);
  end_line();

  if (test_slot < 0) return fail(1, "no test device");
  if (test_msix == 0) return fail(2, "the test device has no MSI-X capability");
  const uint8_t slot = (uint8_t)test_slot;
  const uint64_t table_address = pci_msix_table(slot, test_msix, test_bars);
  const uint64_t registers = test_bars[0].address;
  if (table_address == 0 || registers == 0) return fail(3, "BARs unassigned");

  /* The local APIC must be software-enabled to accept the message. */
  idt_set_handler(MSI_VECTOR, msix_handler);
  lapic_enable();

  /* Entry 0: to this CPU's local APIC, vector 0x50, unmasked. Then MSI-X on, function unmasked. */
  pci_msix_set_entry(table_address, 0, lapic_id(), MSI_VECTOR);
  pci_msix_enable(slot, test_msix);
  put_str("MSI-X table at ");
  put_number(table_address);
  put_str(" entry 0 -> vector ");
  put_number(MSI_VECTOR);
  end_line();

  mmio_write32(registers + TEST_REG_DOORBELL, 0);
  /* Check and halt with interrupts off in between, so the interrupt cannot slip in after the check. */
  for (;;) {
    interrupts_disable();
    if (msix_interrupts != 0) break;
    wait_for_interrupt();
  }
  interrupts_enable();

  if (mmio_read32(registers + TEST_REG_FIRED) != 1) return fail(4, "the device's counter is not 1");
  if (mmio_read32(registers + TEST_REG_ID) != TEST_ID_VALUE) return fail(5, "wrong ID register");
  if (msix_interrupts != 1) return fail(6, "more than one interrupt");
  uart_puts("MSI-X vector 0x50 received\n");
  uart_puts("PASS\n");
  uart_flush();
  vmmlab_report(devices);
  vmmlab_report(msix_interrupts);
  return 0;
}
