/* uart.c: an interrupt-driven 16550A driver. See vmmlab/uart.h. */
#include "vmmlab/uart.h"

#include "vmmlab/interrupts.h"
#include "vmmlab/runtime.h"

#define RING_SIZE 256 /* a power of two: indices wrap with a mask */

struct ring {
  volatile uint8_t data[RING_SIZE];
  volatile uint32_t head, tail; /* head: next to write; tail: next to read; both only grow */
};

static struct ring rx, tx;
static volatile uint8_t ier_shadow; /* what we last wrote to IER (reading it back costs an exit) */
volatile struct uart_stats uart_stats;

static inline uint32_t ring_count(const struct ring *r) { return r->head - r->tail; }

static void set_ier(uint8_t value) {
  ier_shadow = value;
  outb(UART_COM1 + UART_IER, value);
}

/* Runs with interrupts off (interrupt gate). */
static void uart_service(void) {
  for (;;) {
    const uint8_t iir = inb(UART_COM1 + UART_IIR);
    if (iir & 0x01) return; /* nothing pending */
    switch (iir & 0x0e) {
      case 0x06: /* line status: an overrun or error; reading LSR clears it */
        (void)inb(UART_COM1 + UART_LSR);
        break;
      case 0x04: /* received data */
      case 0x0c: /* character timeout (data waiting below the trigger level) */
        while (inb(UART_COM1 + UART_LSR) & UART_LSR_DR) {
          const uint8_t byte = inb(UART_COM1 + UART_RBR);
          if (ring_count(&rx) < RING_SIZE) {
            rx.data[rx.head % RING_SIZE] = byte;
            rx.head++;
          }
          uart_stats.rx_bytes++;
        }
        break;
      case 0x02: /* transmitter empty: refill up to a FIFO's worth, or stop asking */
        for (int n = 0; n < 16 && ring_count(&tx) > 0; ++n) {
          outb(UART_COM1 + UART_THR, tx.data[tx.tail % RING_SIZE]);
          tx.tail++;
          uart_stats.tx_bytes++;
        }
        if (ring_count(&tx) == 0) set_ier(ier_shadow & (uint8_t)~UART_IER_THRI);
        break;
      default: /* modem status: reading MSR clears it */
        (void)inb(UART_COM1 + UART_MSR);
        break;
    }
  }
}

__attribute__((interrupt)) static void uart_interrupt(struct interrupt_frame *frame) {
  (void)frame;
  uart_stats.interrupts++;
  uart_service();
  pic_eoi(UART_COM1_IRQ);
}

void uart_init(void) {
  outb(UART_COM1 + UART_IER, 0x00);
  outb(UART_COM1 + UART_LCR, 0x80); /* DLAB: the next two ports are the divisor latch */
  outb(UART_COM1 + UART_RBR, 0x01); /* divisor 1: 115200 baud */
  outb(UART_COM1 + UART_IER, 0x00);
  outb(UART_COM1 + UART_LCR, 0x03); /* 8 data bits, no parity, 1 stop bit, DLAB off */
  outb(UART_COM1 + UART_FCR, 0x07); /* FIFOs on, both cleared, RX trigger at 1 byte */
  outb(UART_COM1 + UART_MCR, 0x0b); /* DTR, RTS, OUT2: on a PC, OUT2 connects the UART's interrupt to the PIC */
  idt_set_handler(PIC_VECTOR_BASE + UART_COM1_IRQ, uart_interrupt);
  pic_unmask(UART_COM1_IRQ);
  set_ier(UART_IER_RDI | UART_IER_RLSI);
}

void uart_write(const char *s, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    interrupts_disable();
    while (ring_count(&tx) == RING_SIZE) {
      wait_for_interrupt(); /* THRE interrupts drain the ring */
      interrupts_disable();
    }
    tx.data[tx.head % RING_SIZE] = (uint8_t)s[i];
    tx.head++;
    /* Enabling THRI while the transmitter is empty makes the UART raise THRE at once: that starts the drain. */
    if (!(ier_shadow & UART_IER_THRI)) set_ier(ier_shadow | UART_IER_THRI);
    interrupts_enable();
  }
}

void uart_puts(const char *s) { uart_write(s, strlen(s)); }

static int rx_pop(uint8_t *byte) {
  interrupts_disable();
  if (ring_count(&rx) == 0) return 0; /* interrupts stay off: the caller halts with STI; HLT */
  *byte = rx.data[rx.tail % RING_SIZE];
  rx.tail++;
  interrupts_enable();
  return 1;
}

size_t uart_getline(char *buf, size_t cap) {
  size_t len = 0;
  for (;;) {
    uint8_t byte;
    if (!rx_pop(&byte)) {
      wait_for_interrupt();
      continue;
    }
    if (byte == '\r' || byte == '\n') {
      if (len == 0) continue; /* the '\n' of a "\r\n", or an empty line */
      uart_write("\n", 1);
      break;
    }
    if (len + 1 < cap) {
      buf[len++] = (char)byte;
      uart_write((const char *)&byte, 1);
    }
  }
  buf[len] = '\0';
  return len;
}

void uart_flush(void) {
  for (;;) {
    interrupts_disable();
    if (ring_count(&tx) == 0 && (inb(UART_COM1 + UART_LSR) & UART_LSR_TEMT)) break;
    wait_for_interrupt();
  }
  interrupts_enable();
}
