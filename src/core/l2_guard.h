// L2Guard: every L2 call of the tiered cache goes through here. It bounds the
// call's time (the cache's l2_timeout, or less when the caller's deadline is
// nearer) and keeps one circuit breaker per L2 shard (L2Store::ShardOf: a
// Redis master), so a dead shard fails fast for its own keys only while the
// other shards keep serving. A success on one shard never closes another's
// breaker.
//
// Thread-safety: all methods may be called concurrently. Run() blocks for the
// L2 call; no lock is held across it.
#ifndef TIERCACHE_CORE_L2_GUARD_H_
#define TIERCACHE_CORE_L2_GUARD_H_

#include <algorithm>
#include <array>
#include <memory>

#include "core/circuit_breaker.h"
#include "tiercache/clock.h"
#include "tiercache/metrics.h"
#include "tiercache/status.h"

namespace tiercache {

class L2Guard {
 public:
  // Shards beyond kBreakers share breakers (shard % kBreakers).
  static constexpr int kBreakers = 64;

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

  const std::chrono::milliseconds l2_timeout_;
  Clock* const clock_;
  Metrics* const metrics_;
  std::array<std::unique_ptr<CircuitBreaker>, kBreakers> breakers_;
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_L2_GUARD_H_
