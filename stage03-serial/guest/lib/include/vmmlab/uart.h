/*
 * vmmlab/uart.h: an interrupt-driven driver for a 16550A UART at COM1 (port 0x3f8, IRQ 4).
 *
 * Received bytes are moved into a ring buffer by the interrupt handler; bytes to send go into another ring buffer
 * and the "transmitter empty" interrupt (THRE) drains it, as Linux's 8250 driver does.
 */
#ifndef VMMLAB_UART_H
#define VMMLAB_UART_H

#include <stddef.h>
#include <stdint.h>

#define UART_COM1 0x3f8
#define UART_COM1_IRQ 4

/* Register offsets (DLAB = 0 unless noted). */
#define UART_RBR 0 /* read: receive buffer */
#define UART_THR 0 /* write: transmit holding */
#define UART_IER 1 /* interrupt enable */
#define UART_IIR 2 /* read: interrupt identification */
#define UART_FCR 2 /* write: FIFO control */
#define UART_LCR 3 /* line control; bit 7 = DLAB */
#define UART_MCR 4 /* modem control */
#define UART_LSR 5 /* line status */
#define UART_MSR 6 /* modem status */
#define UART_SCR 7 /* scratch */

#define UART_IER_RDI 0x01  /* received data available */
#define UART_IER_THRI 0x02 /* transmitter holding register empty */
#define UART_IER_RLSI 0x04 /* receiver line status */
#define UART_LSR_DR 0x01
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40

/* Programs the UART (115200 8N1, FIFOs on, OUT2 so the IRQ reaches the PIC), installs the handler, unmasks IRQ 4. */
void uart_init(void);
/* Queues bytes for sending (waits for room with interrupts on); "\n" is sent as is. */
void uart_write(const char *s, size_t n);
void uart_puts(const char *s);
/* Waits (HLT) until a line ended by '\r' or '\n' arrived; copies at most cap-1 bytes without the terminator, NUL
   terminates, returns the length. Characters are echoed as they arrive, like a terminal. */
size_t uart_getline(char *buf, size_t cap);
/* Waits until everything queued has left the UART. */
void uart_flush(void);

/* Counters for the VMM and the lab: interrupts taken, bytes received, bytes sent. */
struct uart_stats {
  uint32_t interrupts, rx_bytes, tx_bytes;
};
extern volatile struct uart_stats uart_stats;

#endif
