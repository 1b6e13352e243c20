/*
 * vmmlab/lapic.h: the local APIC, as far as a guest taking MSIs needs it (stage04 on).
 *
 * KVM's in-kernel local APIC sits at its reset address in xAPIC mode. An MSI is a memory write to 0xFEEx_xxxx that
 * the APIC turns into an interrupt; it accepts it only once software-enabled, and the handler must end with an EOI
 * or the APIC delivers nothing of equal or lower priority again. Inline, so interrupt handlers call no function.
 */
#ifndef VMMLAB_LAPIC_H
#define VMMLAB_LAPIC_H

#include <stdint.h>

#include "vmmlab/runtime.h"

#define LAPIC_BASE 0xfee00000ull
#define LAPIC_ID 0x20  /* bits 31:24: this CPU's APIC ID */
#define LAPIC_EOI 0xb0 /* write 0: end of interrupt */
#define LAPIC_SVR 0xf0 /* spurious-interrupt vector register; bit 8 = APIC software enable */
#define LAPIC_SPURIOUS_VECTOR 0xff

/* Software-enables the local APIC (spurious vector 0xff). */
static inline void lapic_enable(void) { mmio_write32(LAPIC_BASE + LAPIC_SVR, 0x100 | LAPIC_SPURIOUS_VECTOR); }
/* Ends the interrupt being handled: call it last in every handler of an APIC-delivered vector. */
static inline void lapic_eoi(void) { mmio_write32(LAPIC_BASE + LAPIC_EOI, 0); }
/* This CPU's APIC ID: the destination of MSIs meant for it. */
static inline uint8_t lapic_id(void) { return (uint8_t)(mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24); }

#endif
