// Lab 05, exercise 1: EVENT_IDX off, and the counts explained (reference). See labs/05-virtio-rng/README.md.
#include "lab05.hpp"

namespace lab05 {

vmmlab_rng_options flags_only_options() {
  vmmlab_rng_options options = vmm::stage05::default_rng_options();
  options.flags = VMMLAB_RNG_PHASE_FLAGS | VMMLAB_RNG_QUIET;  // no EVENT_IDX phase, no bytes on the console
  options.batches = 2;
  options.per_batch = 8;  // the default queue size (16) holds them
  return options;
}

Prediction predict(const vmmlab_rng_options& options, bool event_idx) {
  const std::uint64_t requests = std::uint64_t{options.batches} * options.per_batch;
  // Kicks: the device serves each kick inside its MMIO exit and re-enables notifications before the exit returns
  // (flags: VRING_USED_F_NO_NOTIFY cleared; EVENT_IDX: avail_event = next_avail). When the driver posts its next
  // buffer the device is idle and asked to be kicked, in both modes: one kick per request.
  // Interrupts: each kick adds exactly one used entry. Flags mode: VRING_AVAIL_F_NO_INTERRUPT is never set, so each
  // one interrupts. EVENT_IDX: used_event is the batch's last request, so only that entry crosses it.
  const std::uint64_t interrupts = event_idx ? options.batches : requests;
  return {.kicks = requests, .interrupts = interrupts, .suppressed = requests - interrupts};
}

}  // namespace lab05
