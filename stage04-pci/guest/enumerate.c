/*
 * enumerate: stage04's guest. A bare-metal PCI enumerator, as firmware runs before an OS.
 *
 * Scans bus 0 through configuration mechanism #1 (0xCF8/0xCFC) and prints an lspci-like listing: for each device,
 * its IDs and class, each BAR with its kind and size (sized by writing all-ones), the address it assigns to it
 * (memory from 0xC000_0000, I/O from 0xC000, naturally aligned) and its capability IDs. It then enables decoding and
 * bus mastering, programs the test device's MSI-X entry 0 for vector 0x50 on the local APIC, rings the device's
 * doorbell and waits for the interrupt.
 *
 * Reports (vmmlab_report): devices found, MSI-X interrupts taken. Exit status 0 = PASS; 1..6 name the failed check.
 * Every configuration access costs two exits and every MMIO access one: the program stays small on purpose.
 */
#include "vmmlab/interrupts.h"
#include "vmmlab/runtime.h"
#include "vmmlab/uart.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

#define PCI_VENDOR_ID 0x00
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_CLASS_REVISION 0x08
#define PCI_BASE_ADDRESS_0 0x10
#define PCI_CAPABILITY_LIST 0x34
#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_CAP_ID_MSIX 0x11
#define PCI_MSIX_FLAGS_ENABLE 0x8000
#define PCI_MSIX_FLAGS_MASKALL 0x4000

#define TEST_VENDOR 0x1af4
#define TEST_DEVICE 0x10f1
#define TEST_REG_ID 0x0
#define TEST_REG_DOORBELL 0x8
#define TEST_REG_FIRED 0xc
#define TEST_ID_VALUE 0x564d4d4cu

#define LAPIC_BASE 0xfee00000ull
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define MSI_VECTOR 0x50

/* ---- configuration mechanism #1 ---- */

static void config_select(uint8_t device, uint16_t reg) {
  outl(PCI_CONFIG_ADDRESS, 0x80000000u | (uint32_t)device << 11 | (reg & 0xfcu));
}
static uint32_t config_read32(uint8_t device, uint16_t reg) {
  config_select(device, reg);
  return inl(PCI_CONFIG_DATA);
}
static uint16_t config_read16(uint8_t device, uint16_t reg) {
  config_select(device, reg);
  return inw((uint16_t)(PCI_CONFIG_DATA + (reg & 2)));
}
static uint8_t config_read8(uint8_t device, uint16_t reg) {
  config_select(device, reg);
  return inb((uint16_t)(PCI_CONFIG_DATA + (reg & 3)));
}
static void config_write32(uint8_t device, uint16_t reg, uint32_t value) {
  config_select(device, reg);
  outl(PCI_CONFIG_DATA, value);
}
static void config_write16(uint8_t device, uint16_t reg, uint16_t value) {
  config_select(device, reg);
  outw((uint16_t)(PCI_CONFIG_DATA + (reg & 2)), value);
}

/* ---- a line of output ---- */

static char line[160];
static size_t line_length;

static void put_str(const char *s) {
  while (*s && line_length < sizeof(line) - 1) line[line_length++] = *s++;
}
/* `digits` hex digits, lower case, zero-padded, no prefix. */
static void put_hex(uint64_t value, int digits) {
  for (int i = digits - 1; i >= 0; --i) {
    if (line_length < sizeof(line) - 1) line[line_length++] = "0123456789abcdef"[(value >> (4 * i)) & 0xf];
  }
}
/* 0x-prefixed, as few digits as needed. */
static void put_number(uint64_t value) {
  int digits = 1;
  while (digits < 16 && (value >> (4 * digits)) != 0) ++digits;
  put_str("0x");
  put_hex(value, digits);
}
static void end_line(void) {
  line[line_length++] = '\n';
  line[line_length] = '\0';
  uart_puts(line);
  line_length = 0;
}

/* ---- BARs ---- */

static uint64_t next_memory = 0xc0000000ull;
static uint32_t next_io = 0xc000;

static uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) & ~(alignment - 1); }

/* Sizes, assigns and prints BAR `index` of `device`; returns how many BAR registers it used (2 for 64-bit) and
   stores its address in bar_address[index]. Decoding is off while this runs. */
static int setup_bar(uint8_t device, int index, uint64_t *bar_address, uint16_t *command) {
  const uint16_t reg = (uint16_t)(PCI_BASE_ADDRESS_0 + 4 * index);
  const uint32_t original = config_read32(device, reg);
  config_write32(device, reg, 0xffffffffu);
  const uint32_t probe = config_read32(device, reg);
  config_write32(device, reg, original);
  bar_address[index] = 0;
  if (probe == 0) return 1; /* not implemented */

  put_str("  BAR");
  put_hex((uint64_t)index, 1);
  if (probe & 1) {
    uint32_t mask = probe & ~3u;
    if ((mask & 0xffff0000u) == 0) mask |= 0xffff0000u; /* 16-bit decoders read 0 above */
    const uint32_t size = ~mask + 1;
    const uint32_t base = (uint32_t)align_up(next_io, size);
    next_io = base + size;
    config_write32(device, reg, base);
    *command |= PCI_COMMAND_IO;
    bar_address[index] = base;
    put_str(" io size ");
    put_number(size);
    put_str(" at ");
    put_number(base);
    end_line();
    return 1;
  }
  const int is64 = ((probe >> 1) & 3) == 2;
  uint64_t mask = probe & ~0xfull;
  if (is64 && index < 5) {
    const uint16_t high = (uint16_t)(reg + 4);
    const uint32_t original_high = config_read32(device, high);
    config_write32(device, high, 0xffffffffu);
    mask |= (uint64_t)config_read32(device, high) << 32;
    config_write32(device, high, original_high);
  } else {
    mask |= 0xffffffff00000000ull;
  }
  const uint64_t size = ~mask + 1;
  const uint64_t base = align_up(next_memory, size);
  next_memory = base + size;
  config_write32(device, reg, (uint32_t)base);
  if (is64) config_write32(device, (uint16_t)(reg + 4), (uint32_t)(base >> 32));
  *command |= PCI_COMMAND_MEMORY;
  bar_address[index] = base;
  put_str(is64 ? " mem64" : " mem32");
  if (probe & 8) put_str(" prefetchable");
  put_str(" size ");
  put_number(size);
  put_str(" at ");
  put_number(base);
  end_line();
  return is64 ? 2 : 1;
}

/* ---- the MSI-X interrupt ---- */

static volatile uint32_t msix_interrupts;

__attribute__((interrupt)) static void msix_handler(struct interrupt_frame *frame) {
  (void)frame;
  msix_interrupts = msix_interrupts + 1;
  mmio_write32(LAPIC_BASE + LAPIC_EOI, 0);
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
  uint64_t test_bars[6] = {0};

  for (uint8_t device = 0; device < 32; ++device) {
    const uint32_t ids = config_read32(device, PCI_VENDOR_ID);
    if ((ids & 0xffff) == 0xffff) continue;
    ++devices;
    const uint32_t class_revision = config_read32(device, PCI_CLASS_REVISION);
    put_str("00:");
    put_hex(device, 2);
    put_str(".0 ");
    put_hex(ids & 0xffff, 4);
    put_str(":");
    put_hex(ids >> 16, 4);
    put_str(" class ");
    put_hex(class_revision >> 8, 6);
    end_line();

    /* Decoding off while sizing and assigning, as Linux does; then on, with bus mastering. */
    config_write16(device, PCI_COMMAND, 0);
    uint64_t bars[6] = {0};
    uint16_t command = 0;
    for (int index = 0; index < 6;) index += setup_bar(device, index, bars, &command);
    if (command != 0) config_write16(device, PCI_COMMAND, (uint16_t)(command | PCI_COMMAND_MASTER));

    uint8_t msix = 0;
    if (config_read16(device, PCI_STATUS) & PCI_STATUS_CAP_LIST) {
      put_str("  capabilities:");
      uint8_t pointer = config_read8(device, PCI_CAPABILITY_LIST) & 0xfc;
      for (int guard = 0; pointer != 0 && guard < 48; ++guard) {
        const uint16_t header = config_read16(device, pointer);
        const uint8_t id = (uint8_t)header;
        put_str(" ");
        put_hex(id, 2);
        if (id == PCI_CAP_ID_MSIX) {
          put_str(" (MSI-X)");
          msix = pointer;
        }
        pointer = (uint8_t)(header >> 8) & 0xfc;
      }
      end_line();
    }
    if ((ids & 0xffff) == TEST_VENDOR && (ids >> 16) == TEST_DEVICE) {
      test_slot = device;
      test_msix = msix;
      for (int i = 0; i < 6; ++i) test_bars[i] = bars[i];
    }
  }
  put_str("devices: ");
  put_number(devices);
  end_line();

  if (test_slot < 0) return fail(1, "no test device");
  if (test_msix == 0) return fail(2, "the test device has no MSI-X capability");
  const uint8_t slot = (uint8_t)test_slot;
  const uint32_t table = config_read32(slot, (uint16_t)(test_msix + 4));
  const uint64_t table_address = test_bars[table & 7] + (table & ~7u);
  if (test_bars[table & 7] == 0 || test_bars[0] == 0) return fail(3, "BARs unassigned");

  /* The local APIC: software-enable it (spurious vector 0xff) so it accepts the message. */
  idt_set_handler(MSI_VECTOR, msix_handler);
  mmio_write32(LAPIC_BASE + LAPIC_SVR, 0x1ff);

  /* Entry 0: to APIC ID 0, fixed delivery, vector 0x50; unmasked. Then MSI-X on, function unmasked. */
  mmio_write32(table_address + 0, (uint32_t)LAPIC_BASE);
  mmio_write32(table_address + 4, 0);
  mmio_write32(table_address + 8, MSI_VECTOR);
  mmio_write32(table_address + 12, 0);
  const uint16_t control = config_read16(slot, (uint16_t)(test_msix + 2));
  config_write16(slot, (uint16_t)(test_msix + 2),
                 (uint16_t)((control | PCI_MSIX_FLAGS_ENABLE) & ~PCI_MSIX_FLAGS_MASKALL));
  put_str("MSI-X table at ");
  put_number(table_address);
  put_str(" entry 0 -> vector ");
  put_number(MSI_VECTOR);
  end_line();

  mmio_write32(test_bars[0] + TEST_REG_DOORBELL, 0);
  /* Check and halt with interrupts off in between, so the interrupt cannot slip in after the check. */
  for (;;) {
    interrupts_disable();
    if (msix_interrupts != 0) break;
    wait_for_interrupt();
  }
  interrupts_enable();

  if (mmio_read32(test_bars[0] + TEST_REG_FIRED) != 1) return fail(4, "the device's counter is not 1");
  if (mmio_read32(test_bars[0] + TEST_REG_ID) != TEST_ID_VALUE) return fail(5, "wrong ID register");
  if (msix_interrupts != 1) return fail(6, "more than one interrupt");
  uart_puts("MSI-X vector 0x50 received\n");
  uart_puts("PASS\n");
  uart_flush();
  vmmlab_report(devices);
  vmmlab_report(msix_interrupts);
  return 0;
}
