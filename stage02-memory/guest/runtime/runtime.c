/* runtime.c: the freestanding runtime's functions. See vmmlab/runtime.h. */
#include "vmmlab/runtime.h"

void *memcpy(void *dst, const void *src, size_t n) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  while (n--) *d++ = *s++;
  return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  if (d < s) {
    while (n--) *d++ = *s++;
  } else {
    while (n--) d[n] = s[n];
  }
  return dst;
}

void *memset(void *dst, int c, size_t n) {
  unsigned char *d = dst;
  while (n--) *d++ = (unsigned char)c;
  return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
  const unsigned char *x = a, *y = b;
  for (; n; --n, ++x, ++y) {
    if (*x != *y) return *x < *y ? -1 : 1;
  }
  return 0;
}

size_t strlen(const char *s) {
  size_t n = 0;
  while (s[n]) ++n;
  return n;
}

void console_putc(char c) { outb(VMMLAB_PORT_CONSOLE, (uint8_t)c); }

void console_puts(const char *s) {
  while (*s) console_putc(*s++);
}

size_t format_hex(char *buf, uint64_t value) {
  static const char digits[] = "0123456789abcdef";
  char tmp[16];
  size_t n = 0;
  do {
    tmp[n++] = digits[value & 0xf];
    value >>= 4;
  } while (value);
  size_t len = 0;
  buf[len++] = '0';
  buf[len++] = 'x';
  while (n) buf[len++] = tmp[--n];
  buf[len] = '\0';
  return len;
}

void console_put_hex(uint64_t value) {
  char buf[19];
  format_hex(buf, value);
  console_puts(buf);
}

void vmmlab_exit(uint32_t status) {
  outl(VMMLAB_PORT_EXIT, status);
  for (;;) __asm__ volatile("cli; hlt");  /* with interrupts off, HLT is the end: KVM_EXIT_HLT */
}
