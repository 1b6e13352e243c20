/*
 * lab02_guest.h: where lab 02 puts its extra memory, shared by the guests (C) and the VMM side (C++).
 */
#ifndef LAB02_GUEST_H
#define LAB02_GUEST_H

/* Exercise 1: high RAM, the first guest-physical address above the 32-bit PCI hole (4 GiB), 2 MiB of it. */
#define LAB02_HIGH_RAM 0x100000000ull
#define LAB02_HIGH_RAM_SIZE 0x200000ull
/* The high_ram guest stores its checksum in the last 8 bytes of high RAM as well. */
#define LAB02_HIGH_RAM_RESULT (LAB02_HIGH_RAM + LAB02_HIGH_RAM_SIZE - 8)

/* Exercise 2: a 64 KiB ROM at the top of the 32-bit address space, where a PC's firmware lives. */
#define LAB02_ROM 0xffff0000ull
#define LAB02_ROM_SIZE 0x10000ull
/* The rom guest reads the 64-bit word at LAB02_ROM, then writes LAB02_ROM_POKE_VALUE (32 bits) at LAB02_ROM_POKE. */
#define LAB02_ROM_POKE (LAB02_ROM + 0x10)
#define LAB02_ROM_POKE_VALUE 0xdeadbeefu

#endif
