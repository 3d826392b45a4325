#include "core/circuit_breaker.h"

namespace tiercache {

CircuitBreaker::CircuitBreaker(const CircuitBreakerOptions& options, Clock* clock)
    : options_(options), clock_(clock) {}

Status CircuitBreaker::Validate(const CircuitBreakerOptions& options) {
  if (options.failure_threshold < 1) return Status::InvalidArgument("breaker failure_threshold must be >= 1");
  if (options.open_duration <= std::chrono::milliseconds::zero()) {
    return Status::InvalidArgument("breaker open_duration must be > 0");
  }
  return Status::Ok();
}

bool CircuitBreaker::Allow() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != BreakerState::kClosed) last_asked_ = clock_->Now();
  switch (state_) {
    case BreakerState::kClosed:
      return true;
    case BreakerState::kOpen:
      if (clock_->Now() < open_until_) return false;
      state_ = BreakerState::kHalfOpen;
      probe_in_flight_ = true;
      open_until_ = clock_->Now() + options_.open_duration;  // probe's own deadline
      return true;
    case BreakerState::kHalfOpen:
      if (probe_in_flight_ && clock_->Now() < open_until_) return false;
      probe_in_flight_ = true;  // the previous probe never reported: try another
      open_until_ = clock_->Now() + options_.open_duration;
      return true;
  }
  return false;
}

BreakerChange CircuitBreaker::RecordSuccess() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == BreakerState::kOpen) return BreakerChange::kNone;  // a call let through before it opened
  const bool was_closed = state_ == BreakerState::kClosed;
  consecutive_failures_ = 0;
  probe_in_flight_ = false;
  state_ = BreakerState::kClosed;
  return was_closed ? BreakerChange::kNone : BreakerChange::kClosed;
}

BreakerChange CircuitBreaker::RecordFailure() {
  std::lock_guard<std::mutex> lock(mu_);
  probe_in_flight_ = false;
  if (state_ == BreakerState::kHalfOpen) {
    OpenLocked();
    return BreakerChange::kOpened;
  }
  if (state_ == BreakerState::kClosed && ++consecutive_failures_ >= options_.failure_threshold) {
    OpenLocked();
    return BreakerChange::kOpened;
  }
  return BreakerChange::kNone;
}

bool CircuitBreaker::CloseIfUnaskedSince(Clock::TimePoint t) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == BreakerState::kClosed || last_asked_ >= t) return false;
  state_ = BreakerState::kClosed;
  consecutive_failures_ = 0;
  probe_in_flight_ = false;
  return true;
}

void CircuitBreaker::OpenLocked() {
  last_asked_ = clock_->Now();  // its idle time counts from its opening
  state_ = BreakerState::kOpen;
  open_until_ = clock_->Now() + options_.open_duration;
  consecutive_failures_ = 0;
  ++times_opened_;
}

BreakerState CircuitBreaker::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

uint64_t CircuitBreaker::times_opened() const {
  std::lock_guard<std::mutex> lock(mu_);
  return times_opened_;
}

}  // namespace tiercache
