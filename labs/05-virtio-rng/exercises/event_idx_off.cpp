// Lab 05, exercise 1: EVENT_IDX off, and the counts explained. See labs/05-virtio-rng/README.md.
#include <fmt/format.h>

#include "lab05.hpp"

namespace lab05 {

vmmlab_rng_options flags_only_options() {
  // TODO: start from vmm::stage05::default_rng_options() (both phases, 4 batches of 4 requests) and keep only the
  // flags phase (VMMLAB_RNG_PHASE_FLAGS; add VMMLAB_RNG_QUIET if you don't want the bytes). Choose your own batches
  // and per_batch: at least 2 of each, per_batch at most queue_size. Then delete the print.
  fmt::print("flags_only_options: not implemented yet (lab 05, exercise 1)\n");
  return {};
}

Prediction predict(const vmmlab_rng_options& options, bool event_idx) {
  // TODO: your theory, from guest/virtio_rng.c (post, kick_needed, run_batch) and RngDevice::process_locked.
  //  - requests per phase: options.batches * options.per_batch;
  //  - kicks: does the device ever say "don't kick me" at the moment the driver posts its next buffer?
  //  - interrupts: flags mode has one bit for "interrupt me"; with EVENT_IDX, where does run_batch put used_event?
  //  - suppressed: each time the device added used entries but the driver did not want to hear about them.
  // Then delete the print.
  fmt::print("predict: not implemented yet (lab 05, exercise 1)\n");
  (void)options;
  (void)event_idx;
  return {};
}

}  // namespace lab05
