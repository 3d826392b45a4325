#include "tiercache/clock.h"

namespace tiercache {
namespace {

class RealClock final : public Clock {
 public:
  TimePoint Now() const noexcept override { return std::chrono::steady_clock::now(); }
  WallTimePoint WallNow() const noexcept override { return std::chrono::system_clock::now(); }
};

}  // namespace

Clock* Clock::Real() noexcept {
  static RealClock* clock = new RealClock();  // never destroyed: usable during exit
  return clock;
}

}  // namespace tiercache
