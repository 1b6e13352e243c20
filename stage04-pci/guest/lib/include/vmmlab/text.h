/*
 * vmmlab/text.h: building lines of output for the UART (stage04 on).
 *
 * A line is assembled in a buffer and handed to uart_write() in one piece by end_line(); a line longer than the
 * buffer goes out in several pieces, nothing is cut. Not for interrupt handlers (one buffer, no locking).
 */
#ifndef VMMLAB_TEXT_H
#define VMMLAB_TEXT_H

#include <stdint.h>

/* Appends a string. */
void put_str(const char *s);
/* Appends `value` as exactly `digits` hex digits: lower case, zero-padded, no prefix. */
void put_hex(uint64_t value, int digits);
/* Appends `value` in hex with a 0x prefix and as few digits as needed. */
void put_number(uint64_t value);
/* Appends `value` in decimal, zero-padded to at least `min_digits` digits. */
void put_dec(uint64_t value, int min_digits);
/* Ends the line with '\n' and queues it on the UART. */
void end_line(void);

#endif
