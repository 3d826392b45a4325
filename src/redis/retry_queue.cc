#include "redis/retry_queue.h"

#include <algorithm>

namespace tiercache::redis::internal {

std::chrono::nanoseconds RetryQueue::Backoff(int attempts) const {
  auto d = min_;
  for (int i = 1; i < attempts && d < max_; ++i) d *= 2;
  return std::min(d, max_);
}

bool RetryQueue::Park(Request* req, TimePoint now) {
  ++req->attempts;
  req->retry_at = now + Backoff(req->attempts);
  if (req->retry_at >= req->deadline) return false;
  parked_.push_back(req);
  return true;
}

std::vector<Request*> RetryQueue::TakeDue(TimePoint now, bool all) {
  std::vector<Request*> due;
  if (parked_.empty()) return due;
  auto keep = std::stable_partition(parked_.begin(), parked_.end(), [&](const Request* r) {
    return !(all || now >= r->retry_at || !r->Live() || now >= r->deadline);
  });
  due.assign(keep, parked_.end());
  parked_.erase(keep, parked_.end());
  return due;
}

}  // namespace tiercache::redis::internal
