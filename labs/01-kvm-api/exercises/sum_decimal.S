/*
 * Lab 01, exercise 1: print the sum of AL and BL in decimal.
 *
 * The VMM puts two numbers (0..255 each) in AL and BL. Print their sum (0..510) as decimal digits on port 0x3f8,
 * then a newline, then HLT. 17 and 25 must print "42\n"; 255 and 255 must print "510\n".
 *
 * This starting point is test_vm: it only works while the sum is a single digit.
 * Hints are in labs/01-kvm-api/README.md.
 */
    .code16
    .text
    .globl _start
_start:
    mov     $0x3f8, %dx
    add     %bl, %al
    add     $'0', %al
    out     %al, (%dx)
    mov     $'\n', %al
    out     %al, (%dx)
    hlt
