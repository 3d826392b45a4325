// TIERCACHE_DCHECK(cond): a check of an internal rule (a REQUIRES, "I/O
// thread only") that aborts with its place when broken. On in Debug builds
// and in the sanitizer builds (TIERCACHE_DCHECKS, set by CMake), where CI
// runs the concurrency tests; compiled out elsewhere, so a hot path pays
// nothing in the builds that are measured. `cond` must have no side effect.
#ifndef TIERCACHE_COMMON_DCHECK_H_
#define TIERCACHE_COMMON_DCHECK_H_

#if !defined(NDEBUG) || defined(TIERCACHE_DCHECKS)
#define TIERCACHE_DCHECK_IS_ON 1
#else
#define TIERCACHE_DCHECK_IS_ON 0
#endif

namespace tiercache::internal {
[[noreturn]] void DcheckFailed(const char* condition, const char* file, int line);
}  // namespace tiercache::internal

#if TIERCACHE_DCHECK_IS_ON
#define TIERCACHE_DCHECK(cond) \
  ((cond) ? static_cast<void>(0) : ::tiercache::internal::DcheckFailed(#cond, __FILE__, __LINE__))
#else
#define TIERCACHE_DCHECK(cond) static_cast<void>(sizeof(cond))
#endif

#endif  // TIERCACHE_COMMON_DCHECK_H_
