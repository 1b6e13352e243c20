/*
 * vmmlab/boot_info.h: what the VMM tells a stage02+ guest program, shared by host (C++) and guest (C) code.
 *
 * The VMM writes a struct vmmlab_boot_info into guest memory and passes its guest-physical address in RDI, the first
 * argument register of the System V ABI, so the guest's main() receives it as its parameter. Everything in it is a
 * guest-physical address (the guest's page tables identity-map them) or a size.
 */
#ifndef VMMLAB_BOOT_INFO_H
#define VMMLAB_BOOT_INFO_H

#include <stdint.h>

#define VMMLAB_BOOT_INFO_MAGIC 0x4f464e49424d4d56ull /* "VMMBINFO" */

/** @brief The parameters a guest program gets from the VMM (address in RDI at entry). */
struct vmmlab_boot_info {
  uint64_t magic;        /**< VMMLAB_BOOT_INFO_MAGIC: the guest checks it before trusting the rest. */
  uint64_t input;        /**< Guest-physical address of the input buffer the VMM filled. */
  uint64_t input_size;   /**< Its size in bytes. */
  uint64_t result;       /**< Where the guest writes its 64-bit result. */
  uint64_t message;      /**< Where the guest writes a NUL-terminated message. */
  uint64_t message_size; /**< Capacity of the message buffer, NUL included. */
};

/* Ports of the guest runtime's "report" channel. */
#define VMMLAB_PORT_CONSOLE 0x3f8 /**< One byte per OUT: COM1's data register (a UART from stage03 on). */
#define VMMLAB_PORT_REPORT 0xf0   /**< 32-bit OUT: a value the VMM records, in order. */
#define VMMLAB_PORT_EXIT 0xf4     /**< 32-bit OUT: the guest's exit status (0 = PASS); the guest then halts. */

#endif
