#include "redis/refresh_schedule.h"

#include "common/dcheck.h"

namespace tiercache::redis::internal {

bool RefreshSchedule::Due(TimePoint now, bool have_map) const {
  if (in_flight_) return false;
  const bool periodic = now - last_ok_ >= periodic_;
  if (!wanted_ && !periodic && have_map) return false;
  return now - last_start_ >= min_interval_;
}

void RefreshSchedule::BeginRound(std::vector<int> candidates) {
  TIERCACHE_DCHECK(!candidates.empty() && !in_flight_);
  candidates_ = std::move(candidates);
  next_ = 0;
  wanted_ = false;
  last_error_.clear();
}

int RefreshSchedule::Next(TimePoint now) {
  TIERCACHE_DCHECK(HasNext());
  in_flight_ = true;
  last_start_ = now;
  return candidates_[next_++];
}

void RefreshSchedule::Succeeded(TimePoint now) {
  in_flight_ = false;
  last_ok_ = now;
  next_ = candidates_.size();
}

void RefreshSchedule::RoundFailed() {
  in_flight_ = false;
  wanted_ = true;
}

}  // namespace tiercache::redis::internal
