// Clock: the time source of every tiercache component, injectable for tests.
//
// Two readings are offered. Now() is monotonic (steady_clock) and is what
// in-process deadlines, TTLs and latencies use. WallNow() is the system clock
// and is used only where a time must mean the same thing in several processes
// (the logical expiry stored in an L2 envelope).
//
// Thread-safety: all methods may be called concurrently from any thread.
#ifndef TIERCACHE_CLOCK_H_
#define TIERCACHE_CLOCK_H_

#include <atomic>
#include <chrono>

namespace tiercache {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using WallTimePoint = std::chrono::system_clock::time_point;
  using Duration = std::chrono::nanoseconds;

  virtual ~Clock() = default;
  virtual TimePoint Now() const noexcept = 0;
  virtual WallTimePoint WallNow() const noexcept = 0;
  // A cheaper reading of the same clock as Now(), never ahead of it and
  // behind it by at most kCoarseLag. For checks that only need to know that a
  // time is still far away; anything closer than kCoarseLag must be checked
  // with Now(). The real clock reads CLOCK_MONOTONIC_COARSE (about 7 ns
  // against 25 for Now() on the development machine): the time of the
  // kernel's last timekeeping tick, one tick (1-10 ms) behind at most, a
  // few ticks if the CPU keeping time stalls. This default returns Now().
  virtual TimePoint CoarseNow() const noexcept { return Now(); }
  // The same for the wall clock: never ahead of WallNow(), behind it by at
  // most kCoarseLag (CLOCK_REALTIME_COARSE in the real clock).
  virtual WallTimePoint CoarseWallNow() const noexcept { return WallNow(); }
  // The lag bound of CoarseNow() that callers rely on: 50 times the largest
  // tick, so a stalled timekeeping CPU is covered too.
  static constexpr Duration kCoarseLag = std::chrono::milliseconds(500);
  // Now() < t, reading only CoarseNow() when t is more than kCoarseLag away.
  // (t > coarse + lag, not t - coarse > lag: t far in the past would overflow.)
  bool Before(TimePoint t) const noexcept { return t > CoarseNow() + kCoarseLag || Now() < t; }

  // The process-wide real clock. Never null; lives for the whole process.
  static Clock* Real() noexcept;
};

// A manually advanced clock for tests. Starts at an arbitrary fixed point;
// Advance() moves all readings forward together. Never goes backwards.
// CoarseNow() and CoarseWallNow() lag by `coarse_lag` (default none), to test callers
// against the worst a coarse clock may do.
class FakeClock final : public Clock {
 public:
  // REQUIRES: Duration::zero() <= coarse_lag <= kCoarseLag.
  explicit FakeClock(Duration coarse_lag = Duration::zero()) noexcept : coarse_lag_(coarse_lag) {}
  TimePoint Now() const noexcept override {
    return TimePoint(Duration(offset_ns_.load(std::memory_order_acquire)));
  }
  TimePoint CoarseNow() const noexcept override { return Now() - coarse_lag_; }
  WallTimePoint CoarseWallNow() const noexcept override {
    return WallNow() - std::chrono::duration_cast<WallTimePoint::duration>(coarse_lag_);
  }
  WallTimePoint WallNow() const noexcept override {
    return WallTimePoint(std::chrono::duration_cast<WallTimePoint::duration>(
        Duration(kWallEpochNs + offset_ns_.load(std::memory_order_acquire))));
  }
  // REQUIRES: d >= 0.
  void Advance(Duration d) noexcept { offset_ns_.fetch_add(d.count(), std::memory_order_acq_rel); }

 private:
  // 2026-01-01T00:00:00Z, so wall readings look like real ones.
  static constexpr long long kWallEpochNs = 1767225600LL * 1000000000LL;
  const Duration coarse_lag_;
  std::atomic<long long> offset_ns_{1000000000LL};
};

}  // namespace tiercache

#endif  // TIERCACHE_CLOCK_H_
