// L2Guard: every L2 call of the tiered cache goes through here. It bounds the
// call's time (the cache's l2_timeout, or less when the caller's deadline is
// nearer) and keeps one circuit breaker per L2 shard (L2Store::ShardOf: a
// Redis master), so a dead shard fails fast for its own keys only while the
// other shards keep serving. A success on one shard never closes another's
// breaker.
//
// The breaker gauge (Metrics::SetBreakerOpen) is 1 while any breaker is not
// closed; its last write follows the last change (each writer checks again
// after writing).
//
// A breaker nobody has asked about for kIdleOpenPeriods open durations is
// closed (its shard is no longer used: a failover moved its slots to a
// node with another shard number), so the breaker gauge does not stay up
// while L2 serves. Log lines: "opened" at most once per kLogInterval per
// breaker (with the number left out), and "closed" only after a logged
// "opened".
//
// Thread-safety: all methods may be called concurrently. Run() blocks for the
// L2 call; no lock is held across it.
#ifndef TIERCACHE_CORE_L2_GUARD_H_
#define TIERCACHE_CORE_L2_GUARD_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <memory>

#include "common/log_limiter.h"
#include "core/circuit_breaker.h"
#include "tiercache/clock.h"
#include "tiercache/metrics.h"
#include "tiercache/status.h"

namespace tiercache {

class L2Guard {
 public:
  // Shards beyond kBreakers share breakers (shard % kBreakers).
  static constexpr int kBreakers = 64;
  static constexpr int kIdleOpenPeriods = 10;
  static constexpr std::chrono::seconds kLogInterval{10};

  // REQUIRES: options validated; clock and metrics non-null and outliving this.
  L2Guard(const CircuitBreakerOptions& options, std::chrono::milliseconds l2_timeout, Clock* clock,
          Metrics* metrics);

  // Runs `call(timeout)` against `shard` unless its breaker is open.
  // Errors: kUnavailable (breaker open), kDeadlineExceeded (no time left
  // before `deadline`), or the call's own.
  template <typename Call>
  auto Run(int shard, Clock::TimePoint deadline, Call&& call) -> decltype(call(std::chrono::milliseconds(1))) {
    const Clock::TimePoint now = clock_->Now();
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::min(deadline, now + l2_timeout_) - now);
    if (left < std::chrono::milliseconds(1)) return Status::DeadlineExceeded("no time left for an L2 call");
    if (!Allow(shard)) return Status::Unavailable("L2 circuit breaker open for shard " + std::to_string(shard));
    auto r = call(left);
    Record(shard, StatusOf(r));
    return r;
  }

  // Lets a call through `shard`'s breaker (see CircuitBreaker::Allow); a
  // call let through must be reported with Record.
  bool Allow(int shard);
  // Reports a call's outcome: OK, kInvalidArgument and kAborted count as the
  // shard answering.
  void Record(int shard, const Status& s);
  // True when `shard`'s breaker keeps calls away (open or probing).
  bool Down(int shard) const;

 private:
  static const Status& StatusOf(const Status& s) { return s; }
  template <typename T>
  static Status StatusOf(const Result<T>& r) {
    return r.status();
  }
  static size_t ShardIndex(int shard);  // the breaker of `shard`
  CircuitBreaker& Breaker(int shard) const;
  void LogChange(size_t index, const Status& s, BreakerChange change);
  // At most once per open duration: closes breakers nobody asked about.
  void CloseUnasked();
  void PublishGauge();
  bool AnyNotClosed() const;

  // What was logged of one breaker.
  struct BreakerLog {
    LogLimiter opened{kLogInterval};
    std::atomic<bool> open_logged{false};  // a "closed" line follows only a logged "opened"
  };

  const std::chrono::milliseconds l2_timeout_;
  const std::chrono::milliseconds open_duration_;
  Clock* const clock_;
  Metrics* const metrics_;
  std::array<std::unique_ptr<CircuitBreaker>, kBreakers> breakers_;
  std::array<BreakerLog, kBreakers> logs_;
  std::atomic<int64_t> last_sweep_ns_{0};  // clock_ time of the last CloseUnasked
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_L2_GUARD_H_
