/* text.c: lines of output. See vmmlab/text.h. */
#include "vmmlab/text.h"

#include <stddef.h>

#include "vmmlab/uart.h"

static char line[160];
static size_t line_length;

static void put_char(char c) {
  if (line_length == sizeof(line)) { /* a long line: send what we have, keep going */
    uart_write(line, line_length);
    line_length = 0;
  }
  line[line_length++] = c;
}

void put_str(const char *s) {
  while (*s) put_char(*s++);
}

void put_hex(uint64_t value, int digits) {
  for (int i = digits - 1; i >= 0; --i) put_char("0123456789abcdef"[(value >> (4 * i)) & 0xf]);
}

void put_number(uint64_t value) {
  int digits = 1;
  while (digits < 16 && (value >> (4 * digits)) != 0) ++digits;
  put_str("0x");
  put_hex(value, digits);
}

void put_dec(uint64_t value, int min_digits) {
  char digits[20]; /* 2^64 - 1 has 20 */
  int count = 0;
  do {
    digits[count++] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  for (int pad = count; pad < min_digits; ++pad) put_char('0');
  while (count > 0) put_char(digits[--count]);
}

void end_line(void) {
  put_char('\n');
  uart_write(line, line_length);
  line_length = 0;
}
