/*
 * Lab 01, exercise 2's guest: read the "switch" at port 0x3f9 four times and print what it said.
 *
 * One plain IN, then a REP INSB of three bytes (which a standard KVM delivers as one exit with count 3), then the
 * four bytes go out to port 0x3f8 followed by a newline. With the switch set to 'K' the output is "KKKK\n".
 */
    .code16
    .text
    .globl _start
_start:
    xor     %ax, %ax
    mov     %ax, %ds
    mov     %ax, %es
    cld
    mov     $0x3f9, %dx
    in      (%dx), %al              /* exit: KVM_EXIT_IO in, port 0x3f9, count 1 */
    mov     $0x3f8, %dx
    out     %al, (%dx)
    mov     $buffer, %di
    mov     $3, %cx
    mov     $0x3f9, %dx
    rep insb                        /* exit(s): KVM_EXIT_IO in, port 0x3f9, count up to 3 */
    mov     $buffer, %si
    mov     $3, %cx
    mov     $0x3f8, %dx
    rep outsb
    mov     $'\n', %al
    out     %al, (%dx)
    hlt
buffer:
    .fill   3, 1, 0
