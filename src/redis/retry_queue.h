// RetryQueue: requests waiting out a backoff before they are routed again
// (TRYAGAIN, CLUSTERDOWN, LOADING, MASTERDOWN, a lost connection). The n-th
// retry of a request waits retry_backoff_min * 2^(n-1), at most
// retry_backoff_max; a retry that would come after the request's deadline is
// refused, so nothing is retried past its deadline. Internal.
//
// Thread-safety: none; the engine's I/O thread owns it.
#ifndef TIERCACHE_SRC_REDIS_RETRY_QUEUE_H_
#define TIERCACHE_SRC_REDIS_RETRY_QUEUE_H_

#include <chrono>
#include <vector>

#include "common/dcheck.h"
#include "redis/request.h"

namespace tiercache::redis::internal {

class RetryQueue {
 public:
  // REQUIRES: 0 < min <= max (checked).
  RetryQueue(std::chrono::nanoseconds min, std::chrono::nanoseconds max) : min_(min), max_(max) {
    TIERCACHE_DCHECK(min_.count() > 0 && min_ <= max_);
  }

  // The wait before retry number `attempts` (1 = the first retry).
  std::chrono::nanoseconds Backoff(int attempts) const;
  // Counts a retry of `req` and keeps it until its backoff has passed.
  // False, keeping nothing, when that would be at or after its deadline.
  bool Park(Request* req, TimePoint now);
  // Removes and returns the requests due at `now`: backoff over, abandoned
  // by their caller, or past their deadline (to be failed); all of them when
  // `all` (the topology changed: retry now).
  std::vector<Request*> TakeDue(TimePoint now, bool all);

  bool empty() const { return parked_.empty(); }
  size_t size() const { return parked_.size(); }

 private:
  const std::chrono::nanoseconds min_, max_;
  std::vector<Request*> parked_;
};

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_RETRY_QUEUE_H_
