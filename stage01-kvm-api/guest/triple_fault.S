/*
 * triple_fault: a guest that cannot survive its first exception.
 *
 * It loads an interrupt table of length zero, then executes UD2. The #UD cannot be delivered (the vector is past the
 * table's limit), which raises #GP; that cannot be delivered either, which raises #DF; the double fault cannot be
 * delivered, and the CPU shuts down. KVM reports KVM_EXIT_SHUTDOWN and the VMM must stop: the vCPU is dead.
 *
 * On a standard KVM this takes one KVM_RUN. The host's nested paravirtual KVM (kvm_pvm) never reports the shutdown:
 * its ring-0 emulator fails on UD2 (KVM_EXIT_INTERNAL_ERROR) and spins on other faults. So the tests run this guest
 * in the rig only (see tests/CMakeLists.txt).
 */
    .code16
    .text
    .globl _start
_start:
    xor     %ax, %ax
    mov     %ax, %ds
    lidt    empty_idt       /* IDTR.limit = 0: no vector can be delivered */
    ud2                     /* #UD -> #GP -> #DF -> shutdown */
    hlt                     /* never reached */
    .balign 8
empty_idt:
    .word   0               /* limit */
    .long   0               /* base */
