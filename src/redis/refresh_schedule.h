// RefreshSchedule: when the engine asks for the cluster's slot map, and
// whom. A refresh is a round over a fixed list of candidate nodes (see
// RefreshRoundOrder), asked one at a time until one gives a map. At most one
// round runs at a time. A round is due when one was wanted (a MOVED, a lost
// connection, CLUSTERDOWN, a failed round), when `periodic` has passed since
// the last map, or while there is no map at all; never sooner than
// `min_interval` after the last node was asked. Internal.
//
// Thread-safety: none; the engine's I/O thread owns it.
#ifndef TIERCACHE_SRC_REDIS_REFRESH_SCHEDULE_H_
#define TIERCACHE_SRC_REDIS_REFRESH_SCHEDULE_H_

#include <chrono>
#include <string>
#include <vector>

#include "redis/request.h"

namespace tiercache::redis::internal {

class RefreshSchedule {
 public:
  RefreshSchedule(std::chrono::nanoseconds min_interval, std::chrono::nanoseconds periodic)
      : min_interval_(min_interval), periodic_(periodic) {}

  // Something suggests the map is stale: a round is due once min_interval
  // allows.
  void Want() { wanted_ = true; }
  // A round is due at once, whatever min_interval says (the first map).
  void WantNow() {
    wanted_ = true;
    last_start_ = TimePoint{};
  }
  bool Due(TimePoint now, bool have_map) const;

  // A round over `candidates` begins. REQUIRES (checked): !candidates.empty(), no
  // round in flight (checked). Clears the wish and the last error.
  void BeginRound(std::vector<int> candidates);
  bool HasNext() const { return next_ < candidates_.size(); }
  // The next node to ask; the refresh is in flight from `now`.
  // REQUIRES: HasNext() (checked).
  int Next(TimePoint now);
  // The node asked gave no map, for `error`.
  void Failed(std::string error) { last_error_ = std::move(error); }
  // A map was installed: the round is over.
  void Succeeded(TimePoint now);
  // Every candidate failed: the round is over, and another is wanted.
  void RoundFailed();
  // Shutting down: nothing is in flight any more.
  void Abandon() { in_flight_ = false; }

  bool in_flight() const { return in_flight_; }
  const std::string& last_error() const { return last_error_; }
  // Spreads rounds over the healthy nodes: a different count each round.
  size_t NextRotation() { return rotation_++; }

 private:
  const std::chrono::nanoseconds min_interval_, periodic_;
  bool wanted_ = false;
  bool in_flight_ = false;
  std::vector<int> candidates_;
  size_t next_ = 0;
  size_t rotation_ = 0;
  TimePoint last_start_{};
  TimePoint last_ok_{};
  std::string last_error_;
};

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_REFRESH_SCHEDULE_H_
