/*
 * vmmlab/runtime.h: the freestanding runtime every vmmlab guest program links (stage02 on).
 *
 * No libc: just port and MMIO access, a few string functions the compiler may call on its own, a console on port
 * 0x3f8, and a way to report values and an exit status to the VMM. Programs define
 *     int main(const struct vmmlab_boot_info *info);
 * and the runtime's _start (start.S) calls it with the address the VMM put in RDI.
 */
#ifndef VMMLAB_RUNTIME_H
#define VMMLAB_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "vmmlab/boot_info.h"

/* Port I/O: each access to a port nobody in the kernel handles is a KVM_EXIT_IO. */
static inline void outb(uint16_t port, uint8_t value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t value) { __asm__ volatile("outw %0, %1" : : "a"(value), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t value) { __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
  uint8_t value;
  __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}
static inline uint16_t inw(uint16_t port) {
  uint16_t value;
  __asm__ volatile("inw %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}
static inline uint32_t inl(uint16_t port) {
  uint32_t value;
  __asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}

/* MMIO: volatile so the compiler emits exactly one access of exactly this width (a KVM_EXIT_MMIO if unbacked). */
static inline uint8_t mmio_read8(uint64_t addr) { return *(volatile uint8_t *)addr; }
static inline uint32_t mmio_read32(uint64_t addr) { return *(volatile uint32_t *)addr; }
static inline uint64_t mmio_read64(uint64_t addr) { return *(volatile uint64_t *)addr; }
static inline void mmio_write8(uint64_t addr, uint8_t v) { *(volatile uint8_t *)addr = v; }
static inline void mmio_write32(uint64_t addr, uint32_t v) { *(volatile uint32_t *)addr = v; }
static inline void mmio_write64(uint64_t addr, uint64_t v) { *(volatile uint64_t *)addr = v; }

/* The compiler may emit calls to these four even when the program does not. */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* Console on port 0x3f8. */
void console_putc(char c);
void console_puts(const char *s);
void console_put_hex(uint64_t value);

/* Formats value as 0x... into buf (at least 19 bytes); returns the length written, NUL not counted. */
size_t format_hex(char *buf, uint64_t value);

/* Tells the VMM a 32-bit value (it records them in order). */
static inline void vmmlab_report(uint32_t value) { outl(VMMLAB_PORT_REPORT, value); }

/* Tells the VMM the exit status (0 = PASS) and halts for good. */
__attribute__((noreturn)) void vmmlab_exit(uint32_t status);

int main(const struct vmmlab_boot_info *info);

#endif
