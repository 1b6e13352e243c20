/*
 * vmmlab/pci.h: PCI for guest programs from stage04 on, as firmware does it before an OS runs.
 *
 * Configuration mechanism #1 (ports 0xCF8/0xCFC) on bus 0, function 0 of each slot: register access, finding a
 * device, sizing and assigning its BARs, walking its capability list, and programming MSI-X. The register names are
 * the kernel's (<linux/pci_regs.h>: plain #defines, usable from freestanding code).
 *
 * Every configuration access costs two VM exits (the address OUT, then the data IN or OUT) and every MMIO access to
 * a BAR one: callers read what they need once.
 */
#ifndef VMMLAB_PCI_H
#define VMMLAB_PCI_H

#include <linux/pci_regs.h>
#include <stdbool.h>
#include <stdint.h>

#define PCI_CONFIG_ADDRESS 0xcf8 /* 32-bit: enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2 */
#define PCI_CONFIG_DATA 0xcfc    /* the selected dword; a narrower access picks bytes with the port's low bits */
#define PCI_SLOTS 32             /* devices on a bus */

/* ---- configuration mechanism #1: bus 0, function 0 of `slot`, register `reg` (0..0xff) ---- */

/* Reads a register of the given width; `reg` must be aligned to it. An empty slot reads all-ones. */
uint8_t pci_read8(uint8_t slot, uint8_t reg);
uint16_t pci_read16(uint8_t slot, uint8_t reg);
uint32_t pci_read32(uint8_t slot, uint8_t reg);
/* Writes a register of the given width; `reg` must be aligned to it. */
void pci_write8(uint8_t slot, uint8_t reg, uint8_t value);
void pci_write16(uint8_t slot, uint8_t reg, uint16_t value);
void pci_write32(uint8_t slot, uint8_t reg, uint32_t value);

/* The first slot on bus 0 whose function 0 has this vendor and device ID, or -1. */
int pci_find_device(uint16_t vendor, uint16_t device);

/* ---- BARs ---- */

/** @brief One base address register after pci_assign_bars(). */
struct pci_bar {
  uint64_t address;  /**< Where it was put (0: not implemented, or the upper half of a 64-bit BAR). */
  uint64_t size;     /**< Its size in bytes, a power of two (0: not implemented). */
  bool io;           /**< An I/O BAR (else memory). */
  bool is64;         /**< A 64-bit memory BAR: it also uses the next register, whose entry stays empty. */
  bool prefetchable; /**< Memory without read side effects. */
};

/* Turns the device's decoding off (PCI_COMMAND = 0), then sizes each BAR (write all-ones, read back, restore) and
   assigns it the next naturally aligned address: memory from 0xC000_0000, I/O from 0xC000, one allocator for the
   whole program so devices do not overlap. Fills bars[0..5] and returns the PCI_COMMAND decode bits the assigned
   BARs need (PCI_COMMAND_IO, PCI_COMMAND_MEMORY). Decoding stays off: the caller writes PCI_COMMAND, adding
   PCI_COMMAND_MASTER if the device does DMA or sends MSIs (both are memory writes the device starts). */
uint16_t pci_assign_bars(uint8_t slot, struct pci_bar bars[PCI_STD_NUM_BARS]);

/* ---- capabilities ---- */

/** @brief A position in a device's capability list (see pci_cap_begin). */
struct pci_cap_cursor {
  uint8_t slot;   /**< The device. */
  uint8_t offset; /**< The current capability's offset in configuration space (after pci_cap_next returned true). */
  uint8_t id;     /**< Its ID (PCI_CAP_ID_*). */
  uint8_t next;   /**< Where the next one is (0: none). */
  uint8_t budget; /**< Capabilities left before the walk gives up: a looping list must not hang the guest. */
};

/* Starts a walk of `slot`'s capability list; false if it has none (PCI_STATUS_CAP_LIST clear). Usage:
       struct pci_cap_cursor cap;
       if (pci_cap_begin(&cap, slot)) while (pci_cap_next(&cap)) use(cap.offset, cap.id);  */
bool pci_cap_begin(struct pci_cap_cursor *cursor, uint8_t slot);
/* Moves to the next capability (the first one after pci_cap_begin): true with offset and id set, false at the end. */
bool pci_cap_next(struct pci_cap_cursor *cursor);

/* ---- MSI-X (the capability at `cap` in `slot`) ---- */

/* How many entries the device's MSI-X table has. */
uint16_t pci_msix_vectors(uint8_t slot, uint8_t cap);
/* The guest-physical address of the MSI-X table (its BAR's address plus the table offset); 0 if that BAR is not
   assigned. */
uint64_t pci_msix_table(uint8_t slot, uint8_t cap, const struct pci_bar bars[PCI_STD_NUM_BARS]);
/* Programs table entry `entry` to send `vector` to the local APIC `apic_id` (fixed delivery, edge), then unmasks
   it: the message is complete before the device may use it. */
void pci_msix_set_entry(uint64_t table, uint16_t entry, uint8_t apic_id, uint8_t vector);
/* Sets MSI-X Enable and clears Function Mask: from now on the device signals through its table, not INTx. */
void pci_msix_enable(uint8_t slot, uint8_t cap);

#endif
