/*
 * vmmlab/interrupts.h: a 64-bit IDT and the legacy 8259 PICs, for guest programs from stage03 on.
 *
 * The VMM starts the guest with an empty IDT (any exception would shut the vCPU down). A program that wants
 * interrupts builds its own IDT, remaps the PICs away from the exception vectors, unmasks the IRQs it handles and
 * executes STI. Handlers are C functions with GCC's interrupt attribute (it saves registers and ends with IRETQ).
 */
#ifndef VMMLAB_INTERRUPTS_H
#define VMMLAB_INTERRUPTS_H

#include <stdint.h>

/** @brief What the CPU pushes on an interrupt, as GCC's interrupt attribute sees it. */
struct interrupt_frame {
  uint64_t rip, cs, rflags, rsp, ss;
};

typedef void (*interrupt_handler)(struct interrupt_frame *frame);

#define PIC_VECTOR_BASE 0x20 /* IRQ n arrives as vector 0x20 + n after pic_init() */

/* Builds the IDT: every exception reports failure (0xe0 + vector class) and halts; no IRQ handler yet. Loads it. */
void idt_init(void);
/* Installs `handler` for `vector` (an interrupt gate: IF is cleared while it runs). */
void idt_set_handler(uint8_t vector, interrupt_handler handler);

/* Remaps the two PICs to vectors 0x20..0x2f and masks every IRQ. */
void pic_init(void);
/* Unmasks (enables) one IRQ line, 0..15. */
void pic_unmask(uint8_t irq);
/* End of interrupt for `irq` (both PICs for 8..15). */
void pic_eoi(uint8_t irq);

static inline void interrupts_enable(void) { __asm__ volatile("sti"); }
static inline void interrupts_disable(void) { __asm__ volatile("cli"); }
/* Enables interrupts and halts in one step: STI's one-instruction shadow means an interrupt pending now is taken
   after HLT starts, so it wakes it, and no interrupt is lost between the check and the halt. */
static inline void wait_for_interrupt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }

#endif
