/*
 * start.S: entry point of every vmmlab guest program (stage02 on).
 *
 * The VMM starts the vCPU here already in 64-bit mode (vmm::x86::enter_long_mode): flat segments, identity-mapped
 * paging, RSP at the top of a stack, RDI = guest-physical address of the struct vmmlab_boot_info.
 */
    .code64
    .section .text.start, "ax"
    .globl _start
_start:
    cld                             /* the ABI wants DF clear for string instructions */
    /* Zero .bss. Empty in most guests; when it is not, its pages show up in the dirty log. RDI is kept for main. */
    mov     $__bss_start, %rax
    mov     $__bss_end, %rcx
1:  cmp     %rcx, %rax
    jae     2f
    movb    $0, (%rax)
    inc     %rax
    jmp     1b
2:  call    main                    /* main(info): RDI still holds the boot-info address */
    mov     %eax, %edi
    call    vmmlab_exit             /* never returns */
    .section .note.GNU-stack, "", @progbits
