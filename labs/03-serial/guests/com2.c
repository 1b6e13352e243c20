/*
 * com2: lab 03, exercise 1. A minimal driver for a second 16550A at COM2 (0x2f8, IRQ 3).
 *
 * stage03's uart.c is wired to COM1, so this guest talks to COM2 itself: it programs the UART, prints
 * LAB03_COM2_MESSAGE by polling (wait for LSR.THRE, write THR), then asks for one interrupt on IRQ 3 (enabling ETBEI
 * while THR is empty makes the UART interrupt at once) and waits for it with STI; HLT. Its handler reads IIR,
 * switches ETBEI off again (so the UART stops asking) and acknowledges the PIC.
 *
 * It reports, in order: the interrupts its IRQ 3 handler took, and the IIR value that handler read first. COM1 is
 * never touched: if anything reaches COM1's sink, the VMM routed COM2's ports to the wrong device.
 */
#include "lab03_guest.h"
#include "vmmlab/interrupts.h"
#include "vmmlab/runtime.h"

#define THR 0 /* write, DLAB=0 */
#define DLL 0 /* DLAB=1 */
#define IER 1
#define DLM 1 /* DLAB=1 */
#define IIR 2 /* read */
#define FCR 2 /* write */
#define LCR 3
#define MCR 4
#define LSR 5

static volatile uint32_t interrupts;
static volatile uint32_t first_iir = 0xff;

__attribute__((interrupt)) static void com2_interrupt(struct interrupt_frame *frame) {
  (void)frame;
  const uint8_t iir = inb(LAB03_COM2 + IIR);
  if (interrupts++ == 0) first_iir = iir;
  outb(LAB03_COM2 + IER, 0x00); /* nothing more, please: the line goes low */
  pic_eoi(LAB03_COM2_IRQ);
}

int main(const struct vmmlab_boot_info *info) {
  (void)info;
  idt_init();
  pic_init(); /* every IRQ masked */

  outb(LAB03_COM2 + IER, 0x00);
  outb(LAB03_COM2 + LCR, 0x80); /* DLAB */
  outb(LAB03_COM2 + DLL, 0x01); /* 115200 baud */
  outb(LAB03_COM2 + DLM, 0x00);
  outb(LAB03_COM2 + LCR, 0x03); /* 8N1, DLAB off */
  outb(LAB03_COM2 + FCR, 0x07); /* FIFOs on and cleared */
  outb(LAB03_COM2 + MCR, 0x0b); /* DTR, RTS, OUT2 (the PC's gate from the UART to the PIC) */

  for (const char *p = LAB03_COM2_MESSAGE; *p; ++p) {
    while (!(inb(LAB03_COM2 + LSR) & 0x20)) {
    }
    outb(LAB03_COM2 + THR, (uint8_t)*p);
  }

  idt_set_handler(PIC_VECTOR_BASE + LAB03_COM2_IRQ, com2_interrupt);
  pic_unmask(LAB03_COM2_IRQ);
  interrupts_disable();
  outb(LAB03_COM2 + IER, 0x02); /* ETBEI while THR is empty: the UART raises IRQ 3 at once */
  while (interrupts == 0) {
    wait_for_interrupt(); /* STI; HLT: the interrupt wakes it (or never comes, if IRQ 3 is not wired) */
    interrupts_disable();
  }
  interrupts_enable();

  vmmlab_report(interrupts);
  vmmlab_report(first_iir);
  return 0;
}
