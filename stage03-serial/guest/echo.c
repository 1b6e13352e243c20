/*
 * echo: stage03's guest. An interrupt-driven UART driver on the 8259 PIC, in 64-bit mode.
 *
 * Prints a banner, then reads lines (typed characters are echoed as they arrive) and answers each with
 * "you said: <line>", until the line is "quit". Every byte in and out goes through the UART's interrupt handler.
 */
#include "vmmlab/interrupts.h"
#include "vmmlab/runtime.h"
#include "vmmlab/uart.h"

static int equals(const char *a, const char *b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}

int main(const struct vmmlab_boot_info *info) {
  (void)info;
  idt_init();
  pic_init();
  uart_init();
  interrupts_enable();

  uart_puts("vmmlab stage03: an interrupt-driven UART in a 64-bit guest. Type a line; \"quit\" ends.\n");
  char line[128];
  for (;;) {
    uart_puts("> ");
    uart_getline(line, sizeof(line));
    if (equals(line, "quit")) break;
    uart_puts("you said: ");
    uart_puts(line);
    uart_puts("\n");
  }
  uart_puts("bye\n");
  uart_flush();
  vmmlab_report(uart_stats.interrupts);
  vmmlab_report(uart_stats.rx_bytes);
  vmmlab_report(uart_stats.tx_bytes);
  return 0;
}
