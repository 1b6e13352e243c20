/*
 * virtio_rng: stage05's guest. A bare-metal virtio-pci driver for virtio-rng (virtio 1.2, 5.4).
 *
 * It finds the device (1af4:1044) on bus 0, assigns its BARs and locates the virtio structures through the vendor
 * capabilities (4.1.4), routes the configuration and queue interrupts through MSI-X, then runs up to two phases:
 * one with VIRTIO_RING_F_EVENT_IDX negotiated, one without (flags mode). Each phase follows the initialization
 * sequence (3.1.1), sets up queue 0 as a split virtqueue (2.7) in this image's memory (guest-physical == virtual),
 * asks for random bytes in batches of requests, and ends with a device reset. Options: vmmlab/virtio_rng_options.h.
 *
 * Output (COM1), with the defaults:
 *   vmmlab stage05: virtio-rng driver
 *   00:04.0 1af4:1044 virtio-rng: common BAR0+0x0, notify BAR0+0x3000 x4, isr BAR0+0x1000, msix 2 vectors
 *   phase 1: EVENT_IDX on, queue size 16, 4 batches of 4 requests of 16 bytes
 *     features: device 0x130000000, driver 0x120000000
 *     rng 00: 5be0c1...  (16 lines: the bytes of each request, in hex)
 *   phase 1 done: requests 16, kicks 16, interrupts 4, bytes 256
 *   phase 2: EVENT_IDX off, ... (the same for flags mode)
 *   PASS
 * virtio-rng may return fewer bytes than asked (a rate-limited device does): the driver then posts the empty part
 * again until the request is full, and the "done" line ends with ", short answers N". Requests count once each.
 *
 * Reports (vmmlab_report), four per phase: EVENT_IDX negotiated (0/1), requests, kicks (notify writes), queue
 * interrupts taken.
 *
 * Exit status: 0 PASS, else (after "FAIL: <why>", with FAILED set in device_status once the device is found):
 *   1  invalid options              5  the reset did not complete        9  queue 0 unavailable or too small
 *   2  no virtio-rng device         6  no VIRTIO_F_VERSION_1             10 notify address outside its capability
 *   3  a virtio capability missing  7  FEATURES_OK refused               11 a bad used-ring entry
 *   4  no usable MSI-X              8  an MSI-X vector refused           12 DEVICE_NEEDS_RESET
 *
 * The ring protocol, driver side. The driver owns the descriptor table and the available ring, the device owns the
 * used ring; each side only publishes by moving its free-running 16-bit index, and reads the other's. Publishing
 * needs ordering: descriptors and ring entry before avail->idx (a release store: the device reads idx, then the
 * entry); used->idx before the used entries (an acquire load); and, before deciding whether to kick, our avail->idx
 * store before our read of the device's "kick me?" field (a full fence, or both sides can miss each other).
 *
 * Every MMIO and configuration access is a VM exit, and every guest instruction is slow on nested KVM: the program
 * reads each register once and keeps its big arrays out of .bss (see NOINIT).
 */
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>
#include <stdbool.h>
#include <stddef.h>

#include "vmmlab/interrupts.h"
#include "vmmlab/lapic.h"
#include "vmmlab/pci.h"
#include "vmmlab/runtime.h"
#include "vmmlab/text.h"
#include "vmmlab/uart.h"
#include "vmmlab/virtio_rng_options.h"

#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_MODERN_DEVICE_BASE 0x1040 /* modern (virtio 1.x) device IDs: 0x1040 + device type */

#define CONFIG_ENTRY 0 /* MSI-X table entries: configuration changes, then queue 0, as Linux assigns them */
#define QUEUE_ENTRY 1
#define CONFIG_VECTOR 0x51 /* their IDT vectors */
#define QUEUE_VECTOR 0x50

#define BIT(n) (1ull << (n))
#define QUEUE_MAX VMMLAB_RNG_MAX_QUEUE_SIZE
#define REQUEST_MAX VMMLAB_RNG_MAX_REQUEST_BYTES

/* start.S clears .bss a byte at a time: ~70 KiB of rings and buffers would cost ~0.3 s before main. Everything
   NOINIT is written before it is read (the ring headers in init_ring, descriptors and buffers as they are posted),
   so it lives in .noinit, which nobody clears. */
#define NOINIT __attribute__((noinit))

static struct vmmlab_rng_options options = {
    .magic = VMMLAB_RNG_OPTIONS_MAGIC,
    .flags = VMMLAB_RNG_PHASE_EVENT_IDX | VMMLAB_RNG_PHASE_FLAGS,
    .batches = 4,
    .per_batch = 4,
    .request_bytes = 16,
    .queue_size = 16,
};
static bool chained;

/* ---- the device ---- */

/* The common configuration (4.1.4.3) as the kernel declares it: a volatile struct makes each field access exactly
   one MMIO access of the field's own width, as the spec requires. */
static volatile struct virtio_pci_common_cfg *common;
static uint8_t status;               /* what we last wrote to device_status: the driver only ever adds bits */
static uint64_t notify_base;         /* the notify capability's address in its BAR */
static uint32_t notify_length;
static uint32_t notify_multiplier;   /* queue_notify_off * this = the queue's offset from notify_base */
static volatile uint16_t *notify;    /* queue 0's notify address for this activation */

__attribute__((noreturn)) static void fail(uint32_t exit_status, const char *why) {
  if (common != NULL) common->device_status = status | VIRTIO_CONFIG_S_FAILED; /* 3.1.1: give up on the device */
  put_str("FAIL: ");
  put_str(why);
  end_line();
  uart_flush();
  vmmlab_exit(exit_status);
}

static void set_status(uint8_t bits) {
  status |= bits;
  common->device_status = status;
}

static void check_needs_reset(void) {
  if (common->device_status & VIRTIO_CONFIG_S_NEEDS_RESET) fail(12, "device needs reset");
}

/* 4.1.4.3.2: after writing 0 the driver must wait for device_status to read 0 before it reinitializes. */
static void reset_device(void) {
  status = 0;
  common->device_status = 0;
  for (int tries = 0; common->device_status != 0; ++tries) {
    if (tries == 1000) fail(5, "the device did not complete its reset");
  }
}

/* ---- interrupts: MSI-X vectors straight to the local APIC; the vector says which source, no ISR read needed ---- */

static volatile uint32_t queue_interrupts;
static volatile uint32_t config_interrupts;

__attribute__((interrupt)) static void queue_handler(struct interrupt_frame *frame) {
  (void)frame;
  queue_interrupts = queue_interrupts + 1;
  lapic_eoi();
}

__attribute__((interrupt)) static void config_handler(struct interrupt_frame *frame) {
  (void)frame;
  config_interrupts = config_interrupts + 1; /* vmmlab raises it when it sets DEVICE_NEEDS_RESET */
  lapic_eoi();
}

/* ---- the virtqueue ---- */

/* The three areas of a split virtqueue (2.7), each aligned as the spec requires (16, 2 and 4 bytes) and sized for
   the largest queue. The event fields sit past the rings: used_event after avail->ring[size], avail_event after
   used->ring[size]. `ring` points at them (struct vring only as a holder: vring_init's legacy contiguous layout is
   not used, a modern driver places each area on its own). */
static vring_desc_t descriptors[QUEUE_MAX] NOINIT;
static uint16_t avail_area[2 + QUEUE_MAX + 1] NOINIT __attribute__((aligned(VRING_AVAIL_ALIGN_SIZE)));
static uint32_t used_area[1 + 2 * QUEUE_MAX + 1] NOINIT __attribute__((aligned(VRING_USED_ALIGN_SIZE)));
static struct vring ring;
static bool event_idx;     /* VIRTIO_RING_F_EVENT_IDX negotiated in this phase */
static uint16_t avail_idx; /* our copy of avail->idx: only we write it, so we never read it back */
static uint16_t last_used; /* the used index up to which we have collected entries */

/* Request k of a batch owns buffer k and descriptor k (two: 2k, 2k+1, when chained). A batch completes before the
   next one starts, so that fixed assignment replaces a free list. */
static uint8_t buffers[QUEUE_MAX * REQUEST_MAX] NOINIT;
static uint16_t filled[QUEUE_MAX] NOINIT;   /* bytes the device has written into request k so far */
static uint8_t in_flight[QUEUE_MAX] NOINIT; /* request k is in the available ring, not yet back */

/* A fresh queue starts with both indices and both event fields at 0 (2.7.13.1 and the device's view at enable). */
static void init_ring(void) {
  ring.num = options.queue_size;
  ring.desc = descriptors;
  ring.avail = (vring_avail_t *)avail_area;
  ring.used = (vring_used_t *)used_area;
  ring.avail->flags = 0; /* flags mode: VRING_AVAIL_F_NO_INTERRUPT clear, we want every interrupt; 0 with EVENT_IDX */
  ring.avail->idx = 0;
  vring_used_event(&ring) = 0;
  ring.used->flags = 0;
  ring.used->idx = 0;
  vring_avail_event(&ring) = 0;
  avail_idx = 0;
  last_used = 0;
  __asm__ volatile("" ::: "memory"); /* all of it stored before the device learns the addresses */
}

static uint16_t used_index(void) {
  /* Acquire: the entries we read next were written by the device before it moved the index. */
  return __atomic_load_n(&ring.used->idx, __ATOMIC_ACQUIRE);
}

/* virtqueue_kick_prepare: does the device want a notification for the buffers that took avail->idx from `old` to
   `new`? The full fence orders our avail->idx store before the load below. Without it the load could pass the store:
   we would read "no kick needed" while the device, about to sleep, re-checks avail->idx and still sees the old one.
   Both would wait. */
static bool kick_needed(uint16_t old, uint16_t new) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (event_idx) return vring_need_event(__atomic_load_n(&vring_avail_event(&ring), __ATOMIC_RELAXED), new, old);
  return !(__atomic_load_n(&ring.used->flags, __ATOMIC_RELAXED) & VRING_USED_F_NO_NOTIFY);
}

/* Makes request k available for the part of its buffer still empty, and kicks if the device wants it. */
static void post(uint16_t k, uint32_t *kicks) {
  const uint16_t size = options.request_bytes;
  const uint16_t head = chained ? (uint16_t)(2 * k) : k;
  uint8_t *buffer = buffers + (size_t)k * size;
  const uint16_t done = filled[k];
  if (chained && done == 0) { /* first half, then second half: one request, one chain, one used entry */
    const uint16_t half = size / 2;
    descriptors[head] = (struct vring_desc){
        .addr = (uint64_t)buffer, .len = half, .flags = VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, .next = head + 1};
    descriptors[head + 1] = (struct vring_desc){
        .addr = (uint64_t)(buffer + half), .len = (uint32_t)(size - half), .flags = VRING_DESC_F_WRITE};
  } else { /* the whole request, or what a short answer left empty */
    descriptors[head] = (struct vring_desc){
        .addr = (uint64_t)(buffer + done), .len = (uint32_t)(size - done), .flags = VRING_DESC_F_WRITE};
  }
  in_flight[k] = 1;
  ring.avail->ring[avail_idx & (options.queue_size - 1)] = head;
  const uint16_t old = avail_idx++;
  /* Release: the descriptors and the ring entry are stored before the index that publishes them. (x86 keeps stores
     in order; this stops the compiler from reordering them.) */
  __atomic_store_n(&ring.avail->idx, avail_idx, __ATOMIC_RELEASE);
  if (kick_needed(old, avail_idx)) {
    *notify = 0; /* the queue index, 16 bits: the device starts processing inside this exit (stage05) */
    ++*kicks;
  }
}

/* Waits until the device has used `count` buffers since `start`. Interrupts off between the check and HLT
   (wait_for_interrupt is STI; HLT) so an interrupt cannot land in between and leave us halted for good. A
   configuration interrupt wakes us too: it may announce DEVICE_NEEDS_RESET, after which nothing completes. */
static void wait_used(uint16_t start, uint16_t count) {
  uint32_t config_seen = config_interrupts;
  for (;;) {
    interrupts_disable();
    if ((uint16_t)(used_index() - start) >= count) break;
    if (config_interrupts != config_seen) {
      interrupts_enable();
      config_seen = config_interrupts;
      check_needs_reset();
      continue;
    }
    wait_for_interrupt();
  }
  interrupts_enable();
}

/* Takes the `count` used entries from `start`: each must name a request in flight and report 1..(room left) bytes.
   virtio-rng may answer with fewer bytes than asked (5.4.6.2); the caller posts the rest again. */
static void collect(uint16_t start, uint16_t count, uint32_t *bytes, uint32_t *short_answers) {
  if ((uint16_t)(used_index() - start) != count) fail(11, "the used index ran ahead of the requests");
  for (uint16_t i = 0; i < count; ++i) {
    const struct vring_used_elem entry = ring.used->ring[(uint16_t)(start + i) & (options.queue_size - 1)];
    const uint32_t k = chained ? entry.id / 2 : entry.id;
    if (k >= options.per_batch || (chained && (entry.id & 1)) || !in_flight[k]) {
      fail(11, "a used entry names no request in flight");
    }
    in_flight[k] = 0;
    const uint32_t room = options.request_bytes - filled[k];
    if (entry.len == 0 || entry.len > room) fail(11, "a used length is 0 or larger than the buffer");
    if (entry.len < room) ++*short_answers;
    filled[k] = (uint16_t)(filled[k] + entry.len);
    *bytes += entry.len;
  }
  last_used = (uint16_t)(start + count);
}

/* ---- the phases ---- */

struct phase_counts {
  uint32_t requests, kicks, bytes, short_answers;
};

/* One batch: per_batch requests, posted one after the other, then one wait. A short answer sends the request round
   again for its empty part until every buffer is full. */
static void run_batch(uint32_t first_request, struct phase_counts *counts) {
  const uint16_t per_batch = options.per_batch;
  for (uint16_t k = 0; k < per_batch; ++k) filled[k] = 0;
  for (uint16_t pending = per_batch; pending != 0;) {
    /* Before posting: the device must still be usable, and the console quiet. The second keeps the counts exact on
       hosts whose KVM takes no interrupt-window exit (kvm_pvm, without VMX/SVM): there, an interrupt left pending
       while the guest runs with interrupts off (the UART handler, which KVM enters first) is only delivered at the
       next VM exit, and the next kick's MSI, raised meanwhile, merges with it. So: UART drained, then one exit with
       interrupts on (the status read) to deliver anything still pending, then the batch. */
    uart_flush();
    check_needs_reset();
    const uint16_t start = last_used;
    /* EVENT_IDX: interrupt only when the used index passes start + pending - 1, i.e. for the round's last buffer.
       Written before the round's buffers are published (the release store orders it), while the device has
       nothing of ours to complete. In flags mode avail->flags stays 0: an interrupt for every buffer. */
    if (event_idx) vring_used_event(&ring) = (uint16_t)(start + pending - 1);
    for (uint16_t k = 0; k < per_batch; ++k) {
      if (filled[k] < options.request_bytes) post(k, &counts->kicks);
    }
    wait_used(start, pending);
    collect(start, pending, &counts->bytes, &counts->short_answers);
    pending = 0;
    for (uint16_t k = 0; k < per_batch; ++k) pending = (uint16_t)(pending + (filled[k] < options.request_bytes));
  }
  counts->requests += per_batch;
  if (options.flags & VMMLAB_RNG_QUIET) return;
  for (uint16_t k = 0; k < per_batch; ++k) {
    put_str("  rng ");
    put_dec(first_request + k, 2);
    put_str(": ");
    const uint8_t *buffer = buffers + (size_t)k * options.request_bytes;
    for (uint16_t i = 0; i < options.request_bytes; ++i) put_hex(buffer[i], 2);
    end_line();
  }
}

/* The initialization sequence (3.1.1) and queue 0's setup (4.1.5.1.3), up to DRIVER_OK. */
static void start_phase(uint32_t number, bool want_event_idx) {
  reset_device();
  set_status(VIRTIO_CONFIG_S_ACKNOWLEDGE); /* we noticed the device */
  set_status(VIRTIO_CONFIG_S_DRIVER);      /* and know how to drive it */

  /* Features: 64 bits, read and written 32 at a time through the select registers. */
  common->device_feature_select = 0;
  uint64_t device_features = common->device_feature;
  common->device_feature_select = 1;
  device_features |= (uint64_t)common->device_feature << 32;
  if (!(device_features & BIT(VIRTIO_F_VERSION_1))) fail(6, "the device does not offer VIRTIO_F_VERSION_1");
  uint64_t driver_features = BIT(VIRTIO_F_VERSION_1); /* modern device: little-endian rings, this transport */
  event_idx = want_event_idx && (device_features & BIT(VIRTIO_RING_F_EVENT_IDX));
  if (event_idx) driver_features |= BIT(VIRTIO_RING_F_EVENT_IDX);
  common->guest_feature_select = 0;
  common->guest_feature = (uint32_t)driver_features;
  common->guest_feature_select = 1;
  common->guest_feature = (uint32_t)(driver_features >> 32);
  /* The device may refuse the combination: it then leaves FEATURES_OK clear, so read it back. */
  set_status(VIRTIO_CONFIG_S_FEATURES_OK);
  if (!(common->device_status & VIRTIO_CONFIG_S_FEATURES_OK)) fail(7, "the device refused FEATURES_OK");

  /* MSI-X vectors (4.1.5.1.2): a device that cannot map one reads back VIRTIO_MSI_NO_VECTOR. */
  common->msix_config = CONFIG_ENTRY;
  if (common->msix_config != CONFIG_ENTRY) fail(8, "the device refused the configuration MSI-X vector");

  common->queue_select = 0;
  const uint16_t max_size = common->queue_size; /* the device's maximum; 0: no such queue */
  if (max_size == 0 || common->queue_enable != 0) fail(9, "queue 0 is not available");
  if (options.queue_size > max_size) fail(9, "the queue size is above the device's maximum");
  common->queue_size = options.queue_size;
  common->queue_msix_vector = QUEUE_ENTRY;
  if (common->queue_msix_vector != QUEUE_ENTRY) fail(8, "the device refused the queue's MSI-X vector");
  init_ring();
  common->queue_desc_lo = (uint32_t)(uint64_t)ring.desc;
  common->queue_desc_hi = (uint32_t)((uint64_t)ring.desc >> 32);
  common->queue_avail_lo = (uint32_t)(uint64_t)ring.avail; /* the driver area */
  common->queue_avail_hi = (uint32_t)((uint64_t)ring.avail >> 32);
  common->queue_used_lo = (uint32_t)(uint64_t)ring.used; /* the device area */
  common->queue_used_hi = (uint32_t)((uint64_t)ring.used >> 32);
  common->queue_enable = 1;
  const uint32_t notify_offset = (uint32_t)common->queue_notify_off * notify_multiplier;
  if ((uint64_t)notify_offset + 2 > notify_length) fail(10, "queue 0's notify address is outside its capability");
  notify = (volatile uint16_t *)(notify_base + notify_offset);

  set_status(VIRTIO_CONFIG_S_DRIVER_OK); /* the device is live: it may use the queue from now on */
  check_needs_reset();                   /* vmmlab sets it if activation failed */

  put_str("phase ");
  put_dec(number, 1);
  put_str(event_idx ? ": EVENT_IDX on" : ": EVENT_IDX off");
  put_str(", queue size ");
  put_dec(options.queue_size, 1);
  put_str(", ");
  put_dec(options.batches, 1);
  put_str(" batches of ");
  put_dec(options.per_batch, 1);
  put_str(" requests of ");
  put_dec(options.request_bytes, 1);
  put_str(chained ? " bytes (two descriptors each)" : " bytes");
  end_line();
  if (want_event_idx && !event_idx) {
    put_str("  EVENT_IDX not offered: this phase runs without it");
    end_line();
  }
  put_str("  features: device ");
  put_number(device_features);
  put_str(", driver ");
  put_number(driver_features);
  end_line();
}

static void run_phase(uint32_t number, bool want_event_idx) {
  start_phase(number, want_event_idx);
  struct phase_counts counts = {0};
  const uint32_t interrupts_before = queue_interrupts;
  for (uint16_t batch = 0; batch < options.batches; ++batch) run_batch((uint32_t)batch * options.per_batch, &counts);
  const uint32_t interrupts = queue_interrupts - interrupts_before;
  check_needs_reset(); /* after the last batch (the others are checked before the next one) */

  put_str("phase ");
  put_dec(number, 1);
  put_str(" done: requests ");
  put_dec(counts.requests, 1);
  put_str(", kicks ");
  put_dec(counts.kicks, 1);
  put_str(", interrupts ");
  put_dec(interrupts, 1);
  put_str(", bytes ");
  put_dec(counts.bytes, 1);
  if (counts.short_answers != 0) { /* a rate-limited device may hand out fewer bytes than asked */
    put_str(", short answers ");
    put_dec(counts.short_answers, 1);
  }
  end_line();
  vmmlab_report(event_idx);
  vmmlab_report(counts.requests);
  vmmlab_report(counts.kicks);
  vmmlab_report(interrupts);
  reset_device(); /* the device forgets the queue; the VMM records this activation */
}

/* ---- setup ---- */

/* Takes the VMM's options if it passed some; NULL if they are usable, else why not. */
static const char *read_options(const struct vmmlab_boot_info *info) {
  if (info->magic == VMMLAB_BOOT_INFO_MAGIC && info->input_size >= sizeof(options)) {
    const struct vmmlab_rng_options *given = (const struct vmmlab_rng_options *)info->input;
    if (given->magic == VMMLAB_RNG_OPTIONS_MAGIC) options = *given;
  }
  const uint32_t phases = VMMLAB_RNG_PHASE_EVENT_IDX | VMMLAB_RNG_PHASE_FLAGS;
  chained = (options.flags & VMMLAB_RNG_CHAINED) != 0;
  if (options.flags & ~(phases | VMMLAB_RNG_CHAINED | VMMLAB_RNG_QUIET)) return "options: unknown flags";
  if (!(options.flags & phases)) return "options: no phase requested";
  if (options.batches == 0) return "options: batches must be at least 1";
  const uint16_t queue_size = options.queue_size;
  if (queue_size == 0 || queue_size > QUEUE_MAX || (queue_size & (queue_size - 1)) != 0) {
    return "options: queue_size must be a power of two, at most 256";
  }
  if (options.request_bytes == 0 || options.request_bytes > REQUEST_MAX) {
    return "options: request_bytes must be 1..256";
  }
  if (chained && options.request_bytes < 2) return "options: a chained request needs at least 2 bytes";
  if (options.per_batch == 0 || options.per_batch * (chained ? 2 : 1) > queue_size) {
    return "options: per_batch must be 1..queue_size (queue_size/2 when chained)";
  }
  return NULL;
}

/* Where a virtio structure is: which BAR, where in it, how long (a virtio_pci_cap). */
struct region {
  uint8_t bar;
  uint32_t offset, length;
  bool found;
};

/* The structure's address, after checking it lies inside an assigned memory BAR and is at least `min_length`. */
static uint64_t region_address(const struct region *region, uint32_t min_length, const struct pci_bar *bars,
                               const char *missing) {
  if (!region->found || region->bar >= PCI_STD_NUM_BARS || region->length < min_length) fail(3, missing);
  const struct pci_bar *bar = &bars[region->bar];
  if (bar->size == 0 || bar->io || (uint64_t)region->offset + region->length > bar->size) fail(3, missing);
  return bar->address + region->offset;
}

static void put_region(const char *name, const struct region *region) {
  put_str(name);
  put_str(" BAR");
  put_dec(region->bar, 1);
  put_str("+");
  put_number(region->offset);
}

/* Finds the device, gives it addresses, maps its virtio structures and its interrupts; prints what it found. */
static void setup_device(void) {
  const int found = pci_find_device(VIRTIO_VENDOR, VIRTIO_MODERN_DEVICE_BASE + VIRTIO_ID_RNG);
  if (found < 0) fail(2, "no virtio-rng device (1af4:1044) on bus 0");
  const uint8_t slot = (uint8_t)found;
  struct pci_bar bars[PCI_STD_NUM_BARS];
  const uint16_t command = pci_assign_bars(slot, bars);
  /* Memory decoding for the BARs; bus mastering because the device writes our rings and buffers and sends MSIs. */
  pci_write16(slot, PCI_COMMAND, (uint16_t)(command | PCI_COMMAND_MASTER));

  /* The capability list: MSI-X, and vendor-specific ones, each a virtio_pci_cap whose cfg_type says which virtio
     structure it locates. The first of each type is the one to use (4.1.4.1); unknown types are skipped. */
  struct region common_region = {0}, notify_region = {0}, isr_region = {0};
  uint8_t msix = 0;
  struct pci_cap_cursor cap;
  if (pci_cap_begin(&cap, slot)) {
    while (pci_cap_next(&cap)) {
      if (cap.id == PCI_CAP_ID_MSIX) msix = cap.offset;
      if (cap.id != PCI_CAP_ID_VNDR) continue;
      const uint8_t type = pci_read8(slot, cap.offset + offsetof(struct virtio_pci_cap, cfg_type));
      struct region *region = type == VIRTIO_PCI_CAP_COMMON_CFG   ? &common_region
                              : type == VIRTIO_PCI_CAP_NOTIFY_CFG ? &notify_region
                              : type == VIRTIO_PCI_CAP_ISR_CFG    ? &isr_region
                                                                  : NULL;
      if (region == NULL || region->found) continue;
      region->found = true;
      region->bar = pci_read8(slot, cap.offset + offsetof(struct virtio_pci_cap, bar));
      region->offset = pci_read32(slot, cap.offset + offsetof(struct virtio_pci_cap, offset));
      region->length = pci_read32(slot, cap.offset + offsetof(struct virtio_pci_cap, length));
      if (type == VIRTIO_PCI_CAP_NOTIFY_CFG) {
        const uint8_t multiplier = cap.offset + offsetof(struct virtio_pci_notify_cap, notify_off_multiplier);
        notify_multiplier = pci_read32(slot, multiplier);
      }
    }
  }
  /* The kernel's struct is the virtio 1.0 common configuration: all this driver uses. */
  common = (volatile struct virtio_pci_common_cfg *)region_address(
      &common_region, sizeof(struct virtio_pci_common_cfg), bars, "no usable common configuration capability");
  notify_base = region_address(&notify_region, 2, bars, "no usable notify capability");
  notify_length = notify_region.length;
  (void)region_address(&isr_region, 1, bars, "no usable ISR capability"); /* required; unused with MSI-X */
  if (msix == 0) fail(4, "no MSI-X capability");
  const uint16_t vectors = pci_msix_vectors(slot, msix);
  const uint64_t table = pci_msix_table(slot, msix, bars);
  if (vectors < 2 || table == 0) fail(4, "MSI-X needs 2 vectors in an assigned BAR");

  put_str("00:");
  put_hex(slot, 2);
  put_str(".0 1af4:");
  put_hex(VIRTIO_MODERN_DEVICE_BASE + VIRTIO_ID_RNG, 4);
  put_str(" virtio-rng: ");
  put_region("common", &common_region);
  put_region(", notify", &notify_region);
  put_str(" x");
  put_dec(notify_multiplier, 1);
  put_region(", isr", &isr_region);
  put_str(", msix ");
  put_dec(vectors, 1);
  put_str(" vectors");
  end_line();

  /* Handlers first, then the APIC, then the table entries, then MSI-X on: no message can arrive half set up. */
  idt_set_handler(CONFIG_VECTOR, config_handler);
  idt_set_handler(QUEUE_VECTOR, queue_handler);
  lapic_enable();
  const uint8_t apic_id = lapic_id();
  pci_msix_set_entry(table, CONFIG_ENTRY, apic_id, CONFIG_VECTOR);
  pci_msix_set_entry(table, QUEUE_ENTRY, apic_id, QUEUE_VECTOR);
  pci_msix_enable(slot, msix);
}

int main(const struct vmmlab_boot_info *info) {
  idt_init();
  pic_init();
  uart_init();
  interrupts_enable();
  uart_puts("vmmlab stage05: virtio-rng driver\n");

  const char *invalid = read_options(info);
  if (invalid != NULL) fail(1, invalid);
  setup_device();

  uint32_t phase = 0;
  if (options.flags & VMMLAB_RNG_PHASE_EVENT_IDX) run_phase(++phase, true);
  if (options.flags & VMMLAB_RNG_PHASE_FLAGS) run_phase(++phase, false);

  uart_puts("PASS\n");
  uart_flush();
  return 0;
}
