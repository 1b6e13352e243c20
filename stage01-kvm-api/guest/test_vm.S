/*
 * test_vm: the first guest program, the one Cloud Hypervisor's test_vm (and LWN's "Using the KVM API") start with.
 *
 * The vCPU starts in real mode with CS base 0 and RIP at the load address. The VMM puts 2 in AX and 3 in BX.
 * The guest adds them, turns the sum into an ASCII digit, writes it and a newline to port 0x3f8 (COM1's data
 * register, though no UART exists yet: each OUT simply exits to the VMM), then halts.
 *
 * Every OUT is a KVM_EXIT_IO and HLT is a KVM_EXIT_HLT: five instructions of work, three exits.
 */
    .code16
    .text
    .globl _start
_start:
    mov     $0x3f8, %dx     /* the port number goes in DX for OUT with a 16-bit port */
    add     %bl, %al        /* al = 2 + 3 */
    add     $'0', %al       /* 5 -> '5' */
    out     %al, (%dx)      /* exit #1: KVM_EXIT_IO, out, port 0x3f8, 1 byte */
    mov     $'\n', %al
    out     %al, (%dx)      /* exit #2 */
    hlt                     /* exit #3: KVM_EXIT_HLT */
    .globl  test_vm_end
test_vm_end:
