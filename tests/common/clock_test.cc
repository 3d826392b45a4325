// The real clock's readings: CoarseNow() never leads Now() and lags it by
// less than the bound callers rely on (Clock::kCoarseLag).
#include "tiercache/clock.h"

#include <gtest/gtest.h>

#include <chrono>

namespace tiercache {
namespace {

TEST(RealClockTest, CoarseReadingNeverLeadsAndLagsLessThanTheBound) {
  const Clock& clock = *Clock::Real();
  Clock::Duration worst{0};
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  int reads = 0;
  while (std::chrono::steady_clock::now() < until) {
    const Clock::TimePoint coarse = clock.CoarseNow();
    const Clock::TimePoint precise = clock.Now();
    ASSERT_LE(coarse, precise) << "the coarse reading must never be ahead";
    if (precise - coarse > worst) worst = precise - coarse;
    ++reads;
  }
  EXPECT_GT(reads, 1000);
  EXPECT_LT(worst, Clock::kCoarseLag);
  // The coarse clock moves: it is not a constant.
  const Clock::TimePoint first = clock.CoarseNow();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (clock.CoarseNow() == first && std::chrono::steady_clock::now() < deadline) {
  }
  EXPECT_GT(clock.CoarseNow(), first);
}

// Coarse readings lag by the whole bound: Before() must still be exact.
TEST(ClockTest, BeforeIsExactWhateverTheCoarseLag) {
  FakeClock clock(Clock::kCoarseLag);
  const Clock::TimePoint now = clock.Now();
  using D = Clock::Duration;
  for (D offset : {D(-std::chrono::hours(1)), D(-Clock::kCoarseLag), D(-1), D(0)}) {
    EXPECT_FALSE(clock.Before(now + offset)) << offset.count();
  }
  EXPECT_FALSE(clock.Before(Clock::TimePoint::min())) << "no overflow far in the past";
  for (D offset : {D(1), D(Clock::kCoarseLag), D(2 * Clock::kCoarseLag), D(std::chrono::hours(1))}) {
    EXPECT_TRUE(clock.Before(now + offset)) << offset.count();
  }
}

TEST(FakeClockTest, CoarseReadingIsThePreciseOne) {
  FakeClock clock;
  EXPECT_EQ(clock.CoarseNow(), clock.Now());
  clock.Advance(std::chrono::milliseconds(7));
  EXPECT_EQ(clock.CoarseNow(), clock.Now());
}

}  // namespace
}  // namespace tiercache
