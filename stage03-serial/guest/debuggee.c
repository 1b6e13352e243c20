/*
 * debuggee: a guest made to be stopped, stepped and inspected with gdb (lab 10).
 *
 *   stage03-serial --guest debuggee --gdb tcp:1234      the VMM waits for gdb before the first instruction
 *   gdb -ex 'target remote :1234' debuggee.elf           (the demo prints the exact command)
 *
 * No interrupts and no devices but the console: every instruction it runs is one a learner can step to, and the
 * same run always takes the same path. It counts three ticks (a variable to watch), computes fibonacci(20) (a
 * function to break in and finish), prints the result and exits with status 0.
 */

/* -O0: every variable lives in memory and every source line has its own instructions, which is what a debugger
 * shows best. The other guests keep -O2. */
#pragma GCC optimize("O0")

#include "vmmlab/runtime.h"

/* `watch ticks` stops just after each write to it. */
volatile uint64_t ticks;
/* `print fib_result` reads guest memory through the stub. */
uint64_t fib_result;

void tick(void) { ticks = ticks + 1; }

uint64_t fibonacci(unsigned n) {
  uint64_t a = 0;
  uint64_t b = 1;
  for (unsigned i = 0; i < n; ++i) {
    uint64_t next = a + b;
    a = b;
    b = next;
  }
  return a;
}

int main(const struct vmmlab_boot_info *info) {
  (void)info;
  console_puts("debuggee: counting\n");
  for (int i = 0; i < 3; ++i) {
    tick();
  }
  fib_result = fibonacci(20);
  console_puts("debuggee: fibonacci(20) = ");
  console_put_hex(fib_result);
  console_puts("\n");
  vmmlab_report((uint32_t)ticks);
  return 0;
}
