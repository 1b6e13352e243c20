/*
 * mbr: the boot sector of the interop tests' disk images. SeaBIOS loads it from the boot disk (a vhost-user-blk
 * device served by vmmlab's daemon, or a plain disk) to 0x7c00 and jumps to it in real mode with DL = the drive.
 *
 * It proves that data flowed through the disk's backend, in both directions, with no kernel:
 *   1. writes "vmmlab-mbr: booted\n" to the debugcon port 0xe9 (reaching this code is sector 0 read);
 *   2. reads sector 1 with INT 13h AH=0x42 (SeaBIOS's virtio-blk driver: one more request through the ring) and
 *      writes its text (up to its first NUL) to port 0xe9: the test puts a fresh marker there for each run;
 *   3. writes that same sector back as sector 2 with INT 13h AH=0x43 (a virtio-blk OUT request): the test compares
 *      the image's sectors 1 and 2 afterwards;
 *   4. writes "vmmlab-mbr: wrote sector 2\n" and exits QEMU through isa-debug-exit (port 0xf4) with kExitOk, which
 *      QEMU turns into the status (kExitOk << 1) | 1.
 * A failed read or write exits with kExitReadFailed or kExitWriteFailed instead (after a line saying so).
 *
 * Built with the host's C compiler (the preprocessor gives the constants names), linked at 0x7c00 and flattened with
 * objcopy: exactly 512 bytes, the boot signature included (see CMakeLists.txt; the .org below keeps it in place).
 */

#define DEBUGCON_PORT 0xe9
#define DEBUG_EXIT_PORT 0xf4
#define BUFFER 0x7e00         /* sector 1 is read here, right after the boot sector */

/* Keep in sync with interop_common.hpp. */
#define EXIT_OK 0x31          /* QEMU status 99 */
#define EXIT_READ_FAILED 0x22 /* QEMU status 69 */
#define EXIT_WRITE_FAILED 0x23 /* QEMU status 71 */

    .code16
    .text
    .globl _start
_start:
    cli
    xor     %ax, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     $0x7c00, %sp                   /* the stack grows down from the boot sector */
    ljmp    $0, $normalized                /* some BIOSes enter at 07c0:0000: make CS 0 */
normalized:
    sti                                    /* SeaBIOS's disk services wait for interrupts (timers, completion) */
    cld
    mov     %dl, drive

    mov     $booted, %si
    call    print

    /* Read sector 1 into BUFFER. */
    movw    $1, dap_lba
    mov     $0x42, %ah
    mov     drive, %dl
    mov     $dap, %si
    int     $0x13
    jc      read_failed
    movb    $0, BUFFER + 511               /* the marker ends at a NUL at the latest here */
    mov     $BUFFER, %si
    call    print

    /* Write it back as sector 2. AL = 0: no verify. */
    movw    $2, dap_lba
    mov     $0x4300, %ax
    mov     drive, %dl
    mov     $dap, %si
    int     $0x13
    jc      write_failed
    mov     $wrote, %si
    call    print
    mov     $EXIT_OK, %al
    jmp     exit

read_failed:
    mov     $read_error, %si
    call    print
    mov     $EXIT_READ_FAILED, %al
    jmp     exit
write_failed:
    mov     $write_error, %si
    call    print
    mov     $EXIT_WRITE_FAILED, %al
exit:
    mov     $DEBUG_EXIT_PORT, %dx
    out     %al, %dx                       /* QEMU exits here */
    cli
1:  hlt                                    /* without isa-debug-exit: stop (the test times out and says so) */
    jmp     1b

/* Writes the NUL-terminated string at DS:SI to the debugcon port. */
print:
    mov     $DEBUGCON_PORT, %dx
1:  lodsb
    test    %al, %al
    jz      2f
    out     %al, %dx
    jmp     1b
2:  ret

drive:
    .byte   0
    .balign 4
dap:                                       /* INT 13h extensions' disk address packet */
    .byte   16                             /* its size */
    .byte   0
    .word   1                              /* sectors */
    .word   BUFFER, 0                      /* buffer offset, segment */
dap_lba:
    .quad   0                              /* first sector (LBA) */

booted:
    .asciz  "vmmlab-mbr: booted\n"
wrote:
    .asciz  "vmmlab-mbr: wrote sector 2\n"
read_error:
    .asciz  "vmmlab-mbr: reading sector 1 failed\n"
write_error:
    .asciz  "vmmlab-mbr: writing sector 2 failed\n"

    .org    510                            /* the assembler fails here if the code grew past 510 bytes */
    .byte   0x55, 0xaa
