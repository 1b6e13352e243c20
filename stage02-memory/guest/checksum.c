/*
 * checksum: stage02's demo guest. Runs in 64-bit mode, set up entirely by the VMM.
 *
 * It checksums the buffer the VMM placed in guest memory (FNV-1a, 64-bit), writes the result and a message at the
 * addresses the boot info gives, prints a line on the console, and exits with 0 (PASS). It writes nothing else: the
 * dirty log then shows exactly the result page, the message page and the stack page.
 */
#include "vmmlab/runtime.h"

static uint64_t fnv1a64(const uint8_t *data, uint64_t size) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (uint64_t i = 0; i < size; ++i) {
    hash ^= data[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

static char *append(char *out, const char *end, const char *text) {
  while (*text && out < end) *out++ = *text++;
  return out;
}

int main(const struct vmmlab_boot_info *info) {
  if (info->magic != VMMLAB_BOOT_INFO_MAGIC) {
    console_puts("checksum: bad boot info\n");
    return 1;
  }
  const uint64_t sum = fnv1a64((const uint8_t *)info->input, info->input_size);
  *(volatile uint64_t *)info->result = sum;

  /* "checksummed 0x1000 bytes at 0x200000" into the message buffer */
  char *msg = (char *)info->message;
  char *end = msg + info->message_size - 1;
  char hex[19];
  char *p = append(msg, end, "checksummed ");
  format_hex(hex, info->input_size);
  p = append(p, end, hex);
  p = append(p, end, " bytes at ");
  format_hex(hex, info->input);
  p = append(p, end, hex);
  *p = '\0';

  console_puts("checksum guest: in long mode, result ");
  console_put_hex(sum);
  console_putc('\n');
  vmmlab_report((uint32_t)sum);
  return 0;
}
