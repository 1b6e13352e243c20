/*
 * string_io: string I/O in both directions.
 *
 * REP INSB reads 16 bytes from port 0x3f9 into memory, then REP OUTSB writes them to port 0x3f8.
 * A standard KVM hands the VMM a whole batch of INS items in one KVM_EXIT_IO with count > 1: item i is at
 * data[i * size]. A VMM that answers only data[0] leaves the rest of the batch unanswered. (The host's nested KVM
 * emulates one item per exit; the rig's standard KVM batches.)
 */
    .code16
    .text
    .globl _start
_start:
    xor     %ax, %ax
    mov     %ax, %ds                       /* DS:SI and ES:DI address the buffer: segment 0, linked address */
    mov     %ax, %es
    cld
    mov     $buffer, %di
    mov     $16, %cx
    mov     $0x3f9, %dx
    rep insb                               /* port 0x3f9 -> buffer, 16 bytes */
    mov     $buffer, %si
    mov     $16, %cx
    mov     $0x3f8, %dx
    rep outsb                              /* buffer -> port 0x3f8, 16 bytes */
    hlt
buffer:
    .fill   16, 1, 0
