// CircuitBreaker: stops paying a dead dependency's timeout on every call.
//
// Closed: calls go through; `failure_threshold` consecutive failures open it.
// Open: Allow() answers false (callers skip the dependency) until
//   `open_duration` has passed; then one caller at a time is let through as a
//   probe (half-open).
// Half-open: the probe's success closes the breaker; its failure re-opens it
//   for another `open_duration`. A probe that never reports back is given up
//   after `open_duration` and another probe is allowed.
// While open, outcomes reported by calls let through before it opened are
// ignored: a late success does not close it, so a shard failing part of its
// calls opens once per `open_duration`, not on every few calls. (In
// half-open, any success closes it: the probe's, or a late one, which can
// only arrive there when a call takes longer than `open_duration`.)
//
// Thread-safety: all methods may be called concurrently. Non-blocking.
#ifndef TIERCACHE_CORE_CIRCUIT_BREAKER_H_
#define TIERCACHE_CORE_CIRCUIT_BREAKER_H_

#include <chrono>
#include <cstdint>
#include <mutex>

#include "tiercache/clock.h"
#include "tiercache/status.h"

namespace tiercache {

struct CircuitBreakerOptions {
  // Consecutive failures that open the breaker. Must be >= 1.
  int failure_threshold = 5;
  // How long the breaker stays open before a probe. Must be > 0.
  std::chrono::milliseconds open_duration{1000};
};

enum class BreakerState : uint8_t { kClosed = 0, kOpen = 1, kHalfOpen = 2 };

// What a report did to the breaker, decided under its mutex: kOpened when it
// left closed or half-open for open, kClosed when it became closed again.
enum class BreakerChange : uint8_t { kNone = 0, kOpened = 1, kClosed = 2 };

class CircuitBreaker {
 public:
  // REQUIRES: options validated by Validate(); clock non-null, outlives this.
  CircuitBreaker(const CircuitBreakerOptions& options, Clock* clock);

  static Status Validate(const CircuitBreakerOptions& options);

  // True when the caller may use the dependency now. In half-open state
  // exactly one caller gets true (the probe) until it reports.
  bool Allow();
  // Report the outcome of a call that Allow() let through; returns what it
  // changed.
  BreakerChange RecordSuccess();
  BreakerChange RecordFailure();

  // Closes the breaker, if it is not closed and nobody has asked Allow()
  // since `t` (its dependency is no longer used: e.g. a Redis master whose
  // slots a failover moved to another node). True when it did.
  bool CloseIfUnaskedSince(Clock::TimePoint t);

  BreakerState state() const;
  // How many times the breaker has opened since construction.
  uint64_t times_opened() const;

 private:
  const CircuitBreakerOptions options_;
  Clock* const clock_;
  mutable std::mutex mu_;
  BreakerState state_ = BreakerState::kClosed;        // GUARDED_BY(mu_)
  int consecutive_failures_ = 0;                      // GUARDED_BY(mu_)
  Clock::TimePoint open_until_{};                     // GUARDED_BY(mu_)
  bool probe_in_flight_ = false;                      // GUARDED_BY(mu_)
  uint64_t times_opened_ = 0;                         // GUARDED_BY(mu_)
  Clock::TimePoint last_asked_{};                     // GUARDED_BY(mu_)

  void OpenLocked();
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_CIRCUIT_BREAKER_H_
