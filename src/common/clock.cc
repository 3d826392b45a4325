#include "tiercache/clock.h"

#include <time.h>

namespace tiercache {
namespace {

class RealClock final : public Clock {
 public:
  TimePoint Now() const noexcept override { return std::chrono::steady_clock::now(); }
  // libstdc++'s steady_clock is CLOCK_MONOTONIC; its coarse variant counts
  // from the same origin.
  TimePoint CoarseNow() const noexcept override {
    timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) return Now();
    return TimePoint(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
  }
  WallTimePoint WallNow() const noexcept override { return std::chrono::system_clock::now(); }
  // libstdc++'s system_clock is CLOCK_REALTIME; its coarse variant too.
  WallTimePoint CoarseWallNow() const noexcept override {
    timespec ts;
    if (clock_gettime(CLOCK_REALTIME_COARSE, &ts) != 0) return WallNow();
    return WallTimePoint(std::chrono::duration_cast<WallTimePoint::duration>(std::chrono::seconds(ts.tv_sec) +
                                                                             std::chrono::nanoseconds(ts.tv_nsec)));
  }
};

}  // namespace

Clock* Clock::Real() noexcept {
  static RealClock* clock = new RealClock();  // never destroyed: usable during exit
  return clock;
}

}  // namespace tiercache
