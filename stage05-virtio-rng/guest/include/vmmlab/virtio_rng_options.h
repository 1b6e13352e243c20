/*
 * vmmlab/virtio_rng_options.h: what the VMM asks of stage05's virtio-rng driver guest, shared by host (C++) and
 * guest (C) code.
 *
 * The VMM may copy one struct vmmlab_rng_options into the guest's input buffer (vmmlab_boot_info.input). The guest
 * uses it when input_size covers it and the magic matches; otherwise it runs its defaults (both phases, 4 batches of
 * 4 requests of 16 bytes, queue size 16). Options that break a rule below make the guest fail (exit status 1) rather
 * than guess.
 */
#ifndef VMMLAB_VIRTIO_RNG_OPTIONS_H
#define VMMLAB_VIRTIO_RNG_OPTIONS_H

#include <stdint.h>

#define VMMLAB_RNG_OPTIONS_MAGIC 0x4f474e52u /* "RNGO" in memory (little endian) */

/* flags */
#define VMMLAB_RNG_PHASE_EVENT_IDX 0x1u /* run a phase with VIRTIO_RING_F_EVENT_IDX negotiated (if offered) */
#define VMMLAB_RNG_PHASE_FLAGS 0x2u     /* run a phase without it (flags mode); after the EVENT_IDX phase */
#define VMMLAB_RNG_CHAINED 0x4u         /* each request is two writable descriptors (first half, second half) */
#define VMMLAB_RNG_QUIET 0x8u           /* don't print the bytes */

#define VMMLAB_RNG_MAX_QUEUE_SIZE 256    /* the largest queue the guest's rings hold */
#define VMMLAB_RNG_MAX_REQUEST_BYTES 256 /* the largest request */

/** @brief The driver's parameters (16 bytes, no padding). */
struct vmmlab_rng_options {
  uint32_t magic;         /**< VMMLAB_RNG_OPTIONS_MAGIC. */
  uint32_t flags;         /**< VMMLAB_RNG_*: at least one phase; no other bits. */
  uint16_t batches;       /**< Batches per phase, at least 1. */
  uint16_t per_batch;     /**< Requests per batch, 1..queue_size (1..queue_size/2 when chained). */
  uint16_t request_bytes; /**< Bytes per request, 1..VMMLAB_RNG_MAX_REQUEST_BYTES (at least 2 when chained). */
  uint16_t queue_size;    /**< A power of two, 1..VMMLAB_RNG_MAX_QUEUE_SIZE, at most the device's maximum. */
};

#endif
