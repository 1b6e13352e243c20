/* pci.c: configuration mechanism #1, BARs, capabilities, MSI-X. See vmmlab/pci.h. */
#include "vmmlab/pci.h"

#include "vmmlab/lapic.h"
#include "vmmlab/runtime.h"

/* ---- configuration mechanism #1 ---- */

/* Selects the dword holding `reg`; the data port then reads or writes it (or part of it). */
static void config_select(uint8_t slot, uint8_t reg) {
  outl(PCI_CONFIG_ADDRESS, 0x80000000u | (uint32_t)slot << 11 | (reg & 0xfcu));
}

uint8_t pci_read8(uint8_t slot, uint8_t reg) {
  config_select(slot, reg);
  return inb((uint16_t)(PCI_CONFIG_DATA + (reg & 3)));
}
uint16_t pci_read16(uint8_t slot, uint8_t reg) {
  config_select(slot, reg);
  return inw((uint16_t)(PCI_CONFIG_DATA + (reg & 2)));
}
uint32_t pci_read32(uint8_t slot, uint8_t reg) {
  config_select(slot, reg);
  return inl(PCI_CONFIG_DATA);
}
void pci_write8(uint8_t slot, uint8_t reg, uint8_t value) {
  config_select(slot, reg);
  outb((uint16_t)(PCI_CONFIG_DATA + (reg & 3)), value);
}
void pci_write16(uint8_t slot, uint8_t reg, uint16_t value) {
  config_select(slot, reg);
  outw((uint16_t)(PCI_CONFIG_DATA + (reg & 2)), value);
}
void pci_write32(uint8_t slot, uint8_t reg, uint32_t value) {
  config_select(slot, reg);
  outl(PCI_CONFIG_DATA, value);
}

int pci_find_device(uint16_t vendor, uint16_t device) {
  const uint32_t wanted = (uint32_t)device << 16 | vendor; /* PCI_VENDOR_ID and PCI_DEVICE_ID in one dword */
  for (uint8_t slot = 0; slot < PCI_SLOTS; ++slot) {
    if (pci_read32(slot, PCI_VENDOR_ID) == wanted) return slot;
  }
  return -1;
}

/* ---- BARs ---- */

/* The allocator: where the next BAR of each kind may go. Shared by every device the program sets up. */
static uint64_t next_memory = 0xc0000000ull;
static uint32_t next_io = 0xc000;

static uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) & ~(alignment - 1); }

/* Sizes and assigns BAR `index`; returns how many BAR registers it uses (2 for a 64-bit BAR). */
static int assign_bar(uint8_t slot, int index, struct pci_bar *bar) {
  const uint8_t reg = (uint8_t)(PCI_BASE_ADDRESS_0 + 4 * index);
  /* Sizing: the bits that stay 0 after writing all-ones are the size's alignment bits; the low bits are type. */
  const uint32_t original = pci_read32(slot, reg);
  pci_write32(slot, reg, 0xffffffffu);
  const uint32_t probe = pci_read32(slot, reg);
  pci_write32(slot, reg, original);
  *bar = (struct pci_bar){0};
  if (probe == 0) return 1; /* not implemented */

  if (probe & PCI_BASE_ADDRESS_SPACE_IO) {
    uint32_t mask = probe & PCI_BASE_ADDRESS_IO_MASK;
    if ((mask & 0xffff0000u) == 0) mask |= 0xffff0000u; /* 16-bit decoders read 0 above */
    const uint32_t size = ~mask + 1;
    const uint32_t base = (uint32_t)align_up(next_io, size);
    next_io = base + size;
    pci_write32(slot, reg, base);
    *bar = (struct pci_bar){.address = base, .size = size, .io = true};
    return 1;
  }
  /* A 64-bit BAR needs the next register too; BAR5 has none, so it cannot be one (treat it as 32-bit). */
  const bool is64 = (probe & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64 && index < 5;
  uint64_t mask = probe & (uint32_t)PCI_BASE_ADDRESS_MEM_MASK;
  if (is64) {
    const uint8_t high = (uint8_t)(reg + 4);
    const uint32_t original_high = pci_read32(slot, high);
    pci_write32(slot, high, 0xffffffffu);
    mask |= (uint64_t)pci_read32(slot, high) << 32;
    pci_write32(slot, high, original_high);
  } else {
    mask |= 0xffffffff00000000ull;
  }
  const uint64_t size = ~mask + 1;
  const uint64_t base = align_up(next_memory, size);
  next_memory = base + size;
  pci_write32(slot, reg, (uint32_t)base);
  if (is64) pci_write32(slot, (uint8_t)(reg + 4), (uint32_t)(base >> 32));
  *bar = (struct pci_bar){
      .address = base, .size = size, .is64 = is64, .prefetchable = (probe & PCI_BASE_ADDRESS_MEM_PREFETCH) != 0};
  return is64 ? 2 : 1;
}

uint16_t pci_assign_bars(uint8_t slot, struct pci_bar bars[PCI_STD_NUM_BARS]) {
  /* Decoding off while the BARs hold all-ones or half-written addresses, as Linux does: the device must not claim
     accesses meant for someone else in between. */
  pci_write16(slot, PCI_COMMAND, 0);
  uint16_t command = 0;
  for (int index = 0; index < PCI_STD_NUM_BARS;) {
    const int used = assign_bar(slot, index, &bars[index]);
    if (used == 2) bars[index + 1] = (struct pci_bar){0};
    if (bars[index].size != 0) command |= bars[index].io ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    index += used;
  }
  return command;
}

/* ---- capabilities ---- */

/* 48 capabilities of at least 4 bytes fill the 192 bytes after the standard header: more means a loop. */
#define CAP_BUDGET 48

bool pci_cap_begin(struct pci_cap_cursor *cursor, uint8_t slot) {
  *cursor = (struct pci_cap_cursor){.slot = slot, .budget = CAP_BUDGET};
  if (!(pci_read16(slot, PCI_STATUS) & PCI_STATUS_CAP_LIST)) return false;
  cursor->next = pci_read8(slot, PCI_CAPABILITY_LIST) & 0xfc; /* the low two bits are reserved */
  return true;
}

bool pci_cap_next(struct pci_cap_cursor *cursor) {
  if (cursor->next == 0 || cursor->budget == 0) return false;
  --cursor->budget;
  /* ID and next pointer in one 16-bit read: one access instead of two. */
  const uint16_t header = pci_read16(cursor->slot, cursor->next);
  cursor->offset = cursor->next;
  cursor->id = (uint8_t)header;
  cursor->next = (uint8_t)(header >> 8) & 0xfc;
  return true;
}

/* ---- MSI-X ---- */

uint16_t pci_msix_vectors(uint8_t slot, uint8_t cap) {
  return (uint16_t)((pci_read16(slot, (uint8_t)(cap + PCI_MSIX_FLAGS)) & PCI_MSIX_FLAGS_QSIZE) + 1);
}

uint64_t pci_msix_table(uint8_t slot, uint8_t cap, const struct pci_bar bars[PCI_STD_NUM_BARS]) {
  /* The Table Offset/BIR register: which BAR (BAR Indicator, bits 2:0) and where in it (the rest, 8-byte aligned). */
  const uint32_t table = pci_read32(slot, (uint8_t)(cap + PCI_MSIX_TABLE));
  const uint32_t bir = table & PCI_MSIX_TABLE_BIR;
  if (bir >= PCI_STD_NUM_BARS || bars[bir].address == 0) return 0; /* BIR 6 and 7 are reserved */
  return bars[bir].address + (table & PCI_MSIX_TABLE_OFFSET);
}

void pci_msix_set_entry(uint64_t table, uint16_t entry, uint8_t apic_id, uint8_t vector) {
  const uint64_t at = table + (uint64_t)entry * PCI_MSIX_ENTRY_SIZE;
  /* An MSI is a write of `data` to `address`: 0xFEE0_0000 plus the destination APIC ID in bits 19:12 names a local
     APIC; the data's low byte is the vector (fixed delivery, edge triggered). */
  mmio_write32(at + PCI_MSIX_ENTRY_LOWER_ADDR, (uint32_t)LAPIC_BASE | (uint32_t)apic_id << 12);
  mmio_write32(at + PCI_MSIX_ENTRY_UPPER_ADDR, 0);
  mmio_write32(at + PCI_MSIX_ENTRY_DATA, vector);
  mmio_write32(at + PCI_MSIX_ENTRY_VECTOR_CTRL, 0); /* unmasked, last: the entry is complete */
}

void pci_msix_enable(uint8_t slot, uint8_t cap) {
  const uint8_t reg = (uint8_t)(cap + PCI_MSIX_FLAGS);
  const uint16_t control = pci_read16(slot, reg);
  pci_write16(slot, reg, (uint16_t)((control | PCI_MSIX_FLAGS_ENABLE) & ~PCI_MSIX_FLAGS_MASKALL));
}
