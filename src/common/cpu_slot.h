// CpuSlot: which CPU the calling thread runs on, for per-CPU striping of
// state written on hot paths (the L1's reader slots, CounterMetrics' counters),
// so that threads on different CPUs write different cache lines.
//
// sched_getcpu() (about 3 ns through the vDSO) is asked once per
// kCpuSlotReuses calls of a thread; a thread that migrated keeps its old
// CPU's number for at most that many calls, which costs contention, never
// correctness: callers must stay correct whatever number they get.
// Thread-safety: per-thread state only.
#ifndef TIERCACHE_COMMON_CPU_SLOT_H_
#define TIERCACHE_COMMON_CPU_SLOT_H_

#include <sched.h>

#include <cstddef>

namespace tiercache {

inline constexpr unsigned kCpuSlotReuses = 64;

// The calling thread's CPU number (0 if the kernel cannot tell), as of at
// most kCpuSlotReuses calls ago.
inline std::size_t CpuSlot() noexcept {
  thread_local unsigned cpu = 0;
  thread_local unsigned reuses = 0;
  if (reuses == 0) {
    const int c = sched_getcpu();
    cpu = c < 0 ? 0u : static_cast<unsigned>(c);
    reuses = kCpuSlotReuses;
  }
  --reuses;
  return cpu;
}

}  // namespace tiercache

#endif  // TIERCACHE_COMMON_CPU_SLOT_H_
