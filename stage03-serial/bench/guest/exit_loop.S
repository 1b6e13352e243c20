/*
 * exit_loop: the guest of stage03's exit round-trip benchmark. It does nothing but exit, forever.
 *
 * Real mode, entered with AX = 0 (port I/O) or AX = 1 (MMIO). Every iteration is one instruction that KVM cannot
 * complete by itself (nothing in the kernel claims port 0xe0, and no memory slot backs 0x20000), so every iteration
 * is one KVM_RUN return to the VMM: the loop measures exactly the round trip guest -> KVM -> userspace -> guest.
 * The host decides when to stop by not entering the guest again.
 */
    .code16
    .text
    .globl _start
_start:
    mov     $0xe0, %dx          /* the benchmark's port: OUT to it is a KVM_EXIT_IO */
    mov     $0x2000, %cx
    mov     %cx, %es            /* ES:0 = guest-physical 0x20000, above the 64 KiB of RAM: a KVM_EXIT_MMIO */
    test    %ax, %ax
    jnz     mmio
pio:
    out     %al, (%dx)
    jmp     pio
mmio:
    movb    %al, %es:0
    jmp     mmio
