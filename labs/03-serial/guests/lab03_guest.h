/*
 * lab03_guest.h: what lab 03's guests and the VMM side (tests, exercises) agree on.
 */
#ifndef LAB03_GUEST_H
#define LAB03_GUEST_H

#define LAB03_COM2 0x2f8  /* the second PC serial port */
#define LAB03_COM2_IRQ 3  /* and its interrupt line: IRQ 3 on the master PIC, GSI 3 */

/* What guests/com2.c prints on COM2, polling LSR.THRE before each byte. */
#define LAB03_COM2_MESSAGE "lab03: hello from COM2\n"

#endif
