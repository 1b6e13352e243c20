/*
 * Lab 01, exercise 1, reference solution: print AL + BL (0..510) in decimal.
 *
 * Divide by 10 until the quotient is 0, pushing each remainder: the digits come out least significant first, and the
 * stack turns them around. SS and SP are 0, so the first PUSH writes at 0xfffe, inside the VM's memory.
 */
    .code16
    .text
    .globl _start
_start:
    xor     %ah, %ah
    xor     %bh, %bh
    add     %bx, %ax        /* AX = AL + BL, at most 510: needs 16 bits */
    mov     $10, %cx
    xor     %si, %si        /* number of digits pushed */
1:  xor     %dx, %dx
    div     %cx             /* AX = DX:AX / 10, DX = remainder */
    push    %dx
    inc     %si
    test    %ax, %ax
    jnz     1b
    mov     $0x3f8, %dx
2:  pop     %ax
    add     $'0', %al
    out     %al, (%dx)      /* one KVM_EXIT_IO per digit */
    dec     %si
    jnz     2b
    mov     $'\n', %al
    out     %al, (%dx)
    hlt
