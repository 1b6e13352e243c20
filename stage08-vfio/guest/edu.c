/*
 * stage08: a driver for QEMU's edu device (docs/specs/edu.rst in QEMU), which the VMM passes through with VFIO.
 *
 * The guest does not know the device is real: it finds it on bus 0 like any other, gives it BAR addresses, and then
 * talks to it. What makes it passthrough is what does NOT happen: BAR0's loads and stores never leave KVM (a memory
 * slot maps the device's BAR), the device's DMA reaches guest RAM through the host IOMMU (the VMM mapped all RAM at
 * IOVA = guest-physical address), and its MSI arrives through an irqfd without the VMM running. Steps:
 *
 *   1. identification: ID register (0x010000ed: version 1.0) and the liveness register (reads back inverted);
 *   2. factorial: written, computed by the device, polled;
 *   3. MSI: the capability programmed with this CPU's LAPIC and a vector; an interrupt raised through the device's
 *      raise register (0x60) and one raised by the device itself when a factorial completes (status bit 0x80);
 *   4. DMA: 2 KiB of guest RAM copied into the device's buffer and back to another buffer, each transfer ending with
 *      an interrupt, and the two buffers compared.
 *
 * Reports (vmmlab_report), in order: the ID, liveness (1 = ok), 10!, interrupts taken, the interrupt status bits
 * seen (OR of all), DMA bytes verified. Exit status 0 = PASS; each failure has its own status.
 */
#include <linux/pci_regs.h>
#include <stdbool.h>
#include <stddef.h>

#include "vmmlab/interrupts.h"
#include "vmmlab/lapic.h"
#include "vmmlab/pci.h"
#include "vmmlab/runtime.h"
#include "vmmlab/text.h"
#include "vmmlab/uart.h"

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8

/* BAR0 registers. Below 0x80 the device answers 4-byte accesses only; the DMA registers take 4 or 8. */
#define EDU_ID 0x00
#define EDU_LIVENESS 0x04
#define EDU_FACTORIAL 0x08
#define EDU_STATUS 0x20
#define EDU_IRQ_STATUS 0x24
#define EDU_IRQ_RAISE 0x60
#define EDU_IRQ_ACK 0x64
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_COUNT 0x90
#define EDU_DMA_CMD 0x98

#define EDU_STATUS_COMPUTING 0x01 /* a factorial is being computed */
#define EDU_STATUS_IRQ 0x80       /* raise interrupt 0x01 when the factorial is done */
#define EDU_DMA_START 0x01
#define EDU_DMA_TO_RAM 0x02    /* direction: device buffer -> RAM (clear: RAM -> device buffer) */
#define EDU_DMA_IRQ 0x04       /* raise interrupt 0x100 when the transfer is done */
#define EDU_DMA_BUFFER 0x40000 /* the device's 4 KiB buffer, in its own DMA address space */
#define EDU_IRQ_FACTORIAL 0x001
#define EDU_IRQ_DMA 0x100
#define EDU_IRQ_TEST 0x5a0000 /* what this program writes to the raise register: any bits outside the above */

#define MSI_VECTOR 0x41
#define POLL_LIMIT 50000000u /* the device computes in its own thread: bounded polls, a hung device fails */

static uint64_t bar0;
static volatile uint32_t interrupts;
static volatile uint32_t irq_status_seen;

/* Two buffers in guest RAM (.bss is in RAM, below 16 MiB: inside edu's 28-bit DMA mask). Half of edu's 4 KiB buffer:
   QEMU 7.2's edu refuses a transfer that ends exactly at the end of its buffer (an off-by-one in its range check,
   which it reports as a "hardware error" that stops the whole machine). */
#define DMA_BYTES 2048
static uint8_t dma_out[DMA_BYTES] __attribute__((aligned(4096)));
static uint8_t dma_in[DMA_BYTES] __attribute__((aligned(4096)));

__attribute__((noreturn)) static void fail(uint32_t exit_status, const char* why) {
  put_str("FAIL: ");
  put_str(why);
  end_line();
  uart_flush();
  vmmlab_exit(exit_status);
}

static uint32_t edu_read(uint32_t reg) {
  return mmio_read32(bar0 + reg);
}
static void edu_write(uint32_t reg, uint32_t value) {
  mmio_write32(bar0 + reg, value);
}

/* The MSI handler: which cause, acknowledge it (the device keeps the status until then), count. */
__attribute__((interrupt)) static void msi_handler(struct interrupt_frame* frame) {
  (void)frame;
  const uint32_t status = edu_read(EDU_IRQ_STATUS);
  edu_write(EDU_IRQ_ACK, status);
  irq_status_seen = irq_status_seen | status;
  interrupts = interrupts + 1;
  lapic_eoi();
}

/* Sleeps until the handler has run `count` times in total. STI;HLT with interrupts off in between, so an interrupt
   arriving between the check and the halt wakes the halt instead of being taken before it. */
static void wait_for_interrupts(uint32_t count) {
  interrupts_disable();
  while (interrupts < count) {
    wait_for_interrupt();
    interrupts_disable();
  }
  interrupts_enable();
}

static void wait_not_computing(void) {
  for (uint32_t i = 0; edu_read(EDU_STATUS) & EDU_STATUS_COMPUTING; ++i) {
    if (i == POLL_LIMIT)
      fail(5, "the factorial never completed");
  }
}

static uint32_t factorial(uint32_t n) {
  return n <= 1 ? 1 : n * factorial(n - 1);
}

/* Plain MSI (PCI 3.0 6.8.1): address = the LAPIC window with the destination's APIC ID, data = vector (fixed
   delivery, edge), one vector, then Enable. The VMM sees these writes (config space always exits) and turns them
   into a GSI route and VFIO's eventfd. */
static void msi_enable(uint8_t slot, uint8_t apic_id) {
  struct pci_cap_cursor cap;
  int msi = -1;
  if (pci_cap_begin(&cap, slot)) {
    while (pci_cap_next(&cap)) {
      if (cap.id == PCI_CAP_ID_MSI)
        msi = cap.offset;
    }
  }
  if (msi < 0)
    fail(6, "no MSI capability");
  const uint16_t flags = pci_read16(slot, (uint8_t)(msi + PCI_MSI_FLAGS));
  pci_write32(slot, (uint8_t)(msi + PCI_MSI_ADDRESS_LO), 0xfee00000u | ((uint32_t)apic_id << 12));
  uint8_t data = PCI_MSI_DATA_32;
  if (flags & PCI_MSI_FLAGS_64BIT) {
    pci_write32(slot, (uint8_t)(msi + PCI_MSI_ADDRESS_HI), 0);
    data = PCI_MSI_DATA_64;
  }
  pci_write16(slot, (uint8_t)(msi + data), MSI_VECTOR);
  pci_write16(slot, (uint8_t)(msi + PCI_MSI_FLAGS), (uint16_t)((flags & ~PCI_MSI_FLAGS_QSIZE) | PCI_MSI_FLAGS_ENABLE));
  put_str("MSI: capability at 0x");
  put_hex((uint64_t)msi, 2);
  put_str(", address 0x");
  put_hex(pci_read32(slot, (uint8_t)(msi + PCI_MSI_ADDRESS_LO)), 8);
  put_str(", vector 0x");
  put_hex(MSI_VECTOR, 2);
  end_line();
}

/* One DMA transfer of `count` bytes, ending with an interrupt. Addresses are guest-physical: the device puts them on
   the bus and the host IOMMU translates them. */
static void dma(uint64_t src, uint64_t dst, uint32_t count, uint32_t direction) {
  const uint32_t before = interrupts;
  mmio_write64(bar0 + EDU_DMA_SRC, src);
  mmio_write64(bar0 + EDU_DMA_DST, dst);
  mmio_write64(bar0 + EDU_DMA_COUNT, count);
  mmio_write64(bar0 + EDU_DMA_CMD, EDU_DMA_START | EDU_DMA_IRQ | direction);
  wait_for_interrupts(before + 1);
  if (mmio_read64(bar0 + EDU_DMA_CMD) & EDU_DMA_START)
    fail(9, "DMA interrupt before the transfer finished");
}

int main(const struct vmmlab_boot_info* info) {
  (void)info;
  idt_init();
  pic_init();
  uart_init();
  interrupts_enable();
  uart_puts("vmmlab stage08: edu driver\n");

  const int found = pci_find_device(EDU_VENDOR, EDU_DEVICE);
  if (found < 0)
    fail(1, "no edu device (1234:11e8) on bus 0");
  const uint8_t slot = (uint8_t)found;
  struct pci_bar bars[PCI_STD_NUM_BARS];
  const uint16_t decode = pci_assign_bars(slot, bars);
  if (bars[0].size == 0 || bars[0].io)
    fail(1, "edu has no memory BAR0");
  bar0 = bars[0].address;
  /* Bus master: the device's DMA and its MSI are memory writes it starts. */
  pci_write16(slot, PCI_COMMAND, (uint16_t)(decode | PCI_COMMAND_MASTER));
  put_str("00:");
  put_hex(slot, 2);
  put_str(".0 1234:11e8 edu: BAR0 0x");
  put_hex(bar0, 8);
  put_str(" (");
  put_dec(bars[0].size >> 10, 1);
  put_str(" KiB)");
  end_line();

  /* 1. identification */
  const uint32_t id = edu_read(EDU_ID);
  put_str("ID 0x");
  put_hex(id, 8);
  put_str(": version ");
  put_dec(id >> 24, 1);
  put_str(".");
  put_dec((id >> 16) & 0xff, 1);
  end_line();
  if ((id & 0xff) != 0xed)
    fail(2, "the ID register does not read 0x......ed");
  edu_write(EDU_LIVENESS, 0x12345678u);
  const bool alive = edu_read(EDU_LIVENESS) == ~0x12345678u;
  if (!alive)
    fail(3, "the liveness register did not invert");

  /* 2. factorial, polled */
  wait_not_computing();
  edu_write(EDU_FACTORIAL, 10);
  wait_not_computing();
  const uint32_t fact = edu_read(EDU_FACTORIAL);
  put_str("10! = ");
  put_dec(fact, 1);
  end_line();
  if (fact != factorial(10))
    fail(4, "wrong factorial");

  /* 3. MSI: handler, LAPIC, capability; then two interrupts */
  idt_set_handler(MSI_VECTOR, msi_handler);
  lapic_enable();
  msi_enable(slot, lapic_id());
  edu_write(EDU_IRQ_RAISE, EDU_IRQ_TEST);
  wait_for_interrupts(1);
  edu_write(EDU_STATUS, EDU_STATUS_IRQ);
  edu_write(EDU_FACTORIAL, 5);
  wait_for_interrupts(2);
  if (edu_read(EDU_FACTORIAL) != factorial(5))
    fail(4, "wrong factorial (interrupt mode)");
  if ((irq_status_seen & (EDU_IRQ_TEST | EDU_IRQ_FACTORIAL)) != (EDU_IRQ_TEST | EDU_IRQ_FACTORIAL)) {
    fail(7, "the interrupt status did not show both causes");
  }
  put_str("MSI: ");
  put_dec(interrupts, 1);
  put_str(" interrupts (raise register, factorial done)");
  end_line();

  /* 4. DMA: RAM -> device buffer -> another buffer in RAM */
  for (uint32_t i = 0; i < sizeof(dma_out); ++i)
    dma_out[i] = (uint8_t)(i * 7 + 3);
  memset(dma_in, 0, sizeof(dma_in));
  dma((uint64_t)(uintptr_t)dma_out, EDU_DMA_BUFFER, sizeof(dma_out), 0);
  dma(EDU_DMA_BUFFER, (uint64_t)(uintptr_t)dma_in, sizeof(dma_in), EDU_DMA_TO_RAM);
  if (memcmp(dma_out, dma_in, sizeof(dma_in)) != 0)
    fail(8, "the bytes that came back differ");
  if (!(irq_status_seen & EDU_IRQ_DMA))
    fail(7, "no DMA interrupt status seen");
  put_str("DMA: ");
  put_dec(sizeof(dma_in), 1);
  put_str(" bytes RAM 0x");
  put_hex((uint64_t)(uintptr_t)dma_out, 8);
  put_str(" -> edu -> RAM 0x");
  put_hex((uint64_t)(uintptr_t)dma_in, 8);
  put_str(", equal");
  end_line();

  vmmlab_report(id);
  vmmlab_report(alive ? 1 : 0);
  vmmlab_report(fact);
  vmmlab_report(interrupts);
  vmmlab_report(irq_status_seen);
  vmmlab_report(sizeof(dma_in));
  uart_puts("PASS\n");
  uart_flush();
  return 0;
}
