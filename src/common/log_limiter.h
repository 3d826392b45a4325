// LogLimiter: at most one line per interval for a line that a failure could
// repeat (a flapping breaker, a stream of poison events, a resharding), with
// the number of lines left out carried into the next one written.
//
// Thread-safety: Admit may be called concurrently. Non-blocking (a short
// mutex, never held while logging).
#ifndef TIERCACHE_COMMON_LOG_LIMITER_H_
#define TIERCACHE_COMMON_LOG_LIMITER_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "tiercache/clock.h"

namespace tiercache {

class LogLimiter {
 public:
  explicit LogLimiter(std::chrono::milliseconds interval) : interval_(interval) {}

  // True when a line may be written at `now`; then *suppressed holds the
  // lines turned away since the last one admitted. The first call admits.
  bool Admit(Clock::TimePoint now, uint64_t* suppressed) {
    std::lock_guard<std::mutex> lock(mu_);
    if (admitted_once_ && now - last_ < interval_) {
      ++suppressed_;
      return false;
    }
    admitted_once_ = true;
    last_ = now;
    *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

  // " (N similar lines left out)" or "".
  static std::string Note(uint64_t suppressed) {
    return suppressed == 0 ? std::string()
                           : " (" + std::to_string(suppressed) + " similar line" + (suppressed == 1 ? "" : "s") +
                                 " left out)";
  }

 private:
  const std::chrono::milliseconds interval_;
  std::mutex mu_;
  bool admitted_once_ = false;   // GUARDED_BY(mu_)
  Clock::TimePoint last_{};      // GUARDED_BY(mu_)
  uint64_t suppressed_ = 0;      // GUARDED_BY(mu_)
};

}  // namespace tiercache

#endif  // TIERCACHE_COMMON_LOG_LIMITER_H_
