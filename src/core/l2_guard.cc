#include "core/l2_guard.h"

#include <string>

#include "tiercache/log.h"

namespace tiercache {

L2Guard::L2Guard(const CircuitBreakerOptions& options, std::chrono::milliseconds l2_timeout, Clock* clock,
                 Metrics* metrics)
    : l2_timeout_(l2_timeout), open_duration_(options.open_duration), clock_(clock), metrics_(metrics) {
  for (auto& b : breakers_) b = std::make_unique<CircuitBreaker>(options, clock);
}

size_t L2Guard::ShardIndex(int shard) { return static_cast<size_t>((shard < 0 ? -shard : shard) % kBreakers); }

CircuitBreaker& L2Guard::Breaker(int shard) const { return *breakers_[ShardIndex(shard)]; }

bool L2Guard::Allow(int shard) { return Breaker(shard).Allow(); }

void L2Guard::Record(int shard, const Status& s) {
  const size_t index = ShardIndex(shard);
  CircuitBreaker& b = *breakers_[index];
  BreakerChange change;
  if (s.ok() || s.IsInvalidArgument() || s.IsAborted()) {
    change = b.RecordSuccess();
  } else {
    metrics_->Add(Counter::kL2Error, Tier::kL2);
    change = b.RecordFailure();
  }
  if (change == BreakerChange::kOpened) metrics_->Add(Counter::kBreakerOpened, Tier::kL2);
  LogChange(index, s, change);
  if (change != BreakerChange::kNone) PublishGauge();
  CloseUnasked();
}

void L2Guard::LogChange(size_t index, const Status& s, BreakerChange change) {
  BreakerLog& log = logs_[index];
  if (change == BreakerChange::kOpened) {
    uint64_t left_out = 0;
    if (log.opened.Admit(clock_->Now(), &left_out)) {
      log.open_logged.store(true);
      Log(LogLevel::kWarning, "L2 circuit breaker " + std::to_string(index) + " opened (Redis shard failing: " +
                                  s.ToString() + "); its keys skip L2 meanwhile" + LogLimiter::Note(left_out));
    }
  } else if (change == BreakerChange::kClosed && log.open_logged.exchange(false)) {
    Log(LogLevel::kInfo, "L2 circuit breaker " + std::to_string(index) + " closed: its Redis shard answers again");
  }
}

void L2Guard::CloseUnasked() {
  const Clock::TimePoint now = clock_->Now();
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  int64_t last = last_sweep_ns_.load(std::memory_order_relaxed);
  if (now_ns - last < std::chrono::duration_cast<std::chrono::nanoseconds>(open_duration_).count() ||
      !last_sweep_ns_.compare_exchange_strong(last, now_ns, std::memory_order_relaxed)) {
    return;
  }
  bool closed_any = false;
  for (size_t i = 0; i < breakers_.size(); ++i) {
    if (!breakers_[i]->CloseIfUnaskedSince(now - kIdleOpenPeriods * open_duration_)) continue;
    closed_any = true;
    if (logs_[i].open_logged.exchange(false)) {
      Log(LogLevel::kInfo, "L2 circuit breaker " + std::to_string(i) + " closed: no key has used its shard for " +
                               std::to_string((kIdleOpenPeriods * open_duration_).count()) +
                               " ms (a failover moved its slots)");
    }
  }
  if (closed_any) PublishGauge();
}

void L2Guard::PublishGauge() {
  // A writer that lost a race with another change writes again: the last
  // write always follows a read made after the last change.
  for (bool open = AnyNotClosed();;) {
    metrics_->SetBreakerOpen(open);
    const bool now = AnyNotClosed();
    if (now == open) break;
    open = now;
  }
}

bool L2Guard::AnyNotClosed() const {
  for (const auto& b : breakers_) {
    if (b->state() != BreakerState::kClosed) return true;
  }
  return false;
}

bool L2Guard::Down(int shard) const { return Breaker(shard).state() != BreakerState::kClosed; }

}  // namespace tiercache
