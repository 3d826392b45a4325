#include "core/l2_guard.h"

#include <string>

#include "tiercache/log.h"

namespace tiercache {

L2Guard::L2Guard(const CircuitBreakerOptions& options, std::chrono::milliseconds l2_timeout, Clock* clock,
                 Metrics* metrics)
    : l2_timeout_(l2_timeout), clock_(clock), metrics_(metrics) {
  for (auto& b : breakers_) b = std::make_unique<CircuitBreaker>(options, clock);
}

size_t L2Guard::ShardIndex(int shard) { return static_cast<size_t>((shard < 0 ? -shard : shard) % kBreakers); }

CircuitBreaker& L2Guard::Breaker(int shard) const { return *breakers_[ShardIndex(shard)]; }

bool L2Guard::Allow(int shard) { return Breaker(shard).Allow(); }

void L2Guard::Record(int shard, const Status& s) {
  CircuitBreaker& b = Breaker(shard);
  const uint64_t opened_before = b.times_opened();
  const BreakerState before = b.state();
  if (s.ok() || s.IsInvalidArgument() || s.IsAborted()) {
    b.RecordSuccess();
  } else {
    metrics_->Add(Counter::kL2Error, Tier::kL2);
    b.RecordFailure();
  }
  if (b.times_opened() != opened_before) {
    metrics_->Add(Counter::kBreakerOpened, Tier::kL2);
    Log(LogLevel::kWarning, "L2 circuit breaker " + std::to_string(ShardIndex(shard)) +
                                " opened (Redis shard failing: " + s.ToString() + "); its keys skip L2 meanwhile");
  } else if (before != BreakerState::kClosed && b.state() == BreakerState::kClosed) {
    Log(LogLevel::kInfo, "L2 circuit breaker " + std::to_string(ShardIndex(shard)) + " closed: its Redis shard answers again");
  }
  if (b.state() != before) {
    bool any_open = false;
    for (const auto& other : breakers_) any_open = any_open || other->state() != BreakerState::kClosed;
    metrics_->SetBreakerOpen(any_open);
  }
}

bool L2Guard::Down(int shard) const { return Breaker(shard).state() != BreakerState::kClosed; }

}  // namespace tiercache
