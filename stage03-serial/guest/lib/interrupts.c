/* interrupts.c: the IDT and the 8259 PICs. See vmmlab/interrupts.h. */
#include "vmmlab/interrupts.h"

#include "vmmlab/runtime.h"

struct idt_gate {
  uint16_t offset_low;
  uint16_t selector;
  uint8_t ist;
  uint8_t type_attr;
  uint16_t offset_mid;
  uint32_t offset_high;
  uint32_t reserved;
} __attribute__((packed));

struct idt_pointer {
  uint16_t limit;
  uint64_t base;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));

#define CODE_SELECTOR 0x08 /* the VMM's GDT (vmm::x86::write_gdt) */

void idt_set_handler(uint8_t vector, interrupt_handler handler) {
  const uint64_t address = (uint64_t)handler;
  idt[vector] = (struct idt_gate){
      .offset_low = (uint16_t)address,
      .selector = CODE_SELECTOR,
      .ist = 0,
      .type_attr = 0x8e, /* present, DPL 0, 64-bit interrupt gate */
      .offset_mid = (uint16_t)(address >> 16),
      .offset_high = (uint32_t)(address >> 32),
      .reserved = 0,
  };
}

/* An exception is a bug in the guest: say so and stop (exit status 0xe0). Exceptions with an error code push one
   more word, so this handler must never return. */
__attribute__((interrupt)) static void exception_handler(struct interrupt_frame *frame) {
  console_puts("guest: unexpected exception at rip ");
  console_put_hex(frame->rip);
  console_putc('\n');
  vmmlab_exit(0xe0);
}

/* The master PIC raises IRQ 7 spuriously when a request goes away before it is acknowledged: no EOI for that one. */
__attribute__((interrupt)) static void spurious_handler(struct interrupt_frame *frame) { (void)frame; }

void idt_init(void) {
  for (int v = 0; v < 32; ++v) idt_set_handler((uint8_t)v, exception_handler);
  idt_set_handler(PIC_VECTOR_BASE + 7, spurious_handler);
  const struct idt_pointer pointer = {.limit = sizeof(idt) - 1, .base = (uint64_t)idt};
  __asm__ volatile("lidt %0" : : "m"(pointer));
}

/* 8259 ports and initialisation words. */
#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xa0
#define PIC2_DATA 0xa1

void pic_init(void) {
  outb(PIC1_CMD, 0x11); /* ICW1: edge triggered, cascade, ICW4 follows */
  outb(PIC2_CMD, 0x11);
  outb(PIC1_DATA, PIC_VECTOR_BASE);     /* ICW2: vector base */
  outb(PIC2_DATA, PIC_VECTOR_BASE + 8);
  outb(PIC1_DATA, 0x04); /* ICW3: slave on IRQ 2 */
  outb(PIC2_DATA, 0x02); /* ICW3: slave identity */
  outb(PIC1_DATA, 0x01); /* ICW4: 8086 mode */
  outb(PIC2_DATA, 0x01);
  outb(PIC1_DATA, 0xff); /* mask everything */
  outb(PIC2_DATA, 0xff);
}

void pic_unmask(uint8_t irq) {
  if (irq < 8) {
    outb(PIC1_DATA, inb(PIC1_DATA) & (uint8_t)~(1u << irq));
  } else {
    outb(PIC1_DATA, inb(PIC1_DATA) & (uint8_t)~(1u << 2)); /* the cascade line */
    outb(PIC2_DATA, inb(PIC2_DATA) & (uint8_t)~(1u << (irq - 8)));
  }
}

void pic_eoi(uint8_t irq) {
  if (irq >= 8) outb(PIC2_CMD, 0x20);
  outb(PIC1_CMD, 0x20);
}
