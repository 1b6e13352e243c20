#pragma once
/// @file
/// @brief The kernel's virtio UAPI headers, included so that C++ compiles them.
///
/// Include this instead of the `<linux/virtio_*.h>` headers directly. Two macros must be defined before the first
/// inclusion:
/// - `VIRTIO_RING_NO_LEGACY` hides `struct vring`, `vring_init` and `vring_size`, the pre-1.0 helpers for a ring laid
///   out in one contiguous block. `vring_init` assigns a `void *` to typed pointers: valid C, an error in C++. vmmlab
///   never uses them (a modern driver places the three areas independently), and the structs that remain
///   (`vring_desc`, `vring_avail`, `vring_used_elem`, `vring_used`) and `vring_need_event` are what a device needs.
/// - `VIRTIO_PCI_NO_LEGACY` hides the legacy virtio-pci register layout (an I/O BAR): out of scope here.
///
/// `vring_avail` and `vring_used` end in flexible arrays (`ring[]`): use their `offsetof`s, never their `sizeof`s or
/// objects of their type. The fields are `__virtio16`/`__le32`...: plain little-endian integers on x86.

#ifndef VIRTIO_RING_NO_LEGACY
#define VIRTIO_RING_NO_LEGACY
#endif
#ifndef VIRTIO_PCI_NO_LEGACY
#define VIRTIO_PCI_NO_LEGACY
#endif

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>
