// RefreshSchedule: a round is due when wanted, periodically, or without a
// map; never while one runs nor sooner than min_interval after the last ask;
// candidates in order; a failed round wants another.
#include "redis/refresh_schedule.h"

#include <gtest/gtest.h>

namespace tiercache::redis::internal {
namespace {

using std::chrono::milliseconds;

constexpr TimePoint At(int ms) { return TimePoint{} + milliseconds(1000000 + ms); }

TEST(RefreshScheduleTest, DueWithoutAMapAtOnceThenOnlyWhenWantedOrPeriodic) {
  RefreshSchedule s(milliseconds(100), milliseconds(5000));
  EXPECT_TRUE(s.Due(At(0), /*have_map=*/false));
  s.BeginRound({1, 2});
  EXPECT_EQ(s.Next(At(0)), 1);
  EXPECT_TRUE(s.in_flight());
  EXPECT_FALSE(s.Due(At(1000), false)) << "one round at a time";
  s.Succeeded(At(10));
  EXPECT_FALSE(s.in_flight());
  EXPECT_FALSE(s.HasNext()) << "the round is over";
  EXPECT_FALSE(s.Due(At(200), true)) << "not wanted, not periodic yet";
  s.Want();
  EXPECT_FALSE(s.Due(At(50), true)) << "min_interval after the last ask";
  EXPECT_TRUE(s.Due(At(100), true));
  s.BeginRound({3});
  s.Next(At(100));
  s.Succeeded(At(110));
  EXPECT_FALSE(s.Due(At(5000), true));
  EXPECT_TRUE(s.Due(At(5110), true)) << "periodic: 5 s after the last map";
}

TEST(RefreshScheduleTest, ARoundAsksItsCandidatesInOrderAndAFailedOneWantsAnother) {
  RefreshSchedule s(milliseconds(100), milliseconds(5000));
  s.BeginRound({4, 7, 9});
  EXPECT_EQ(s.Next(At(0)), 4);
  s.Failed("4: connection refused");
  ASSERT_TRUE(s.HasNext());
  EXPECT_EQ(s.Next(At(5)), 7);
  s.Failed("7: empty CLUSTER SLOTS");
  EXPECT_EQ(s.Next(At(9)), 9);
  s.Failed("9: timeout");
  EXPECT_FALSE(s.HasNext());
  s.RoundFailed();
  EXPECT_FALSE(s.in_flight());
  EXPECT_EQ(s.last_error(), "9: timeout");
  EXPECT_FALSE(s.Due(At(50), true)) << "min_interval counts from the last ask (at 9)";
  EXPECT_TRUE(s.Due(At(109), true)) << "a failed round wants another";
  s.BeginRound({4});
  EXPECT_EQ(s.last_error(), "") << "a new round starts with no error";
}

TEST(RefreshScheduleTest, WantNowIgnoresMinInterval) {
  RefreshSchedule s(milliseconds(100), milliseconds(5000));
  s.BeginRound({1});
  s.Next(At(0));
  s.Succeeded(At(1));
  EXPECT_FALSE(s.Due(At(2), true));
  s.WantNow();
  EXPECT_TRUE(s.Due(At(2), true));
}

TEST(RefreshScheduleTest, RotationChangesEveryRound) {
  RefreshSchedule s(milliseconds(100), milliseconds(5000));
  EXPECT_EQ(s.NextRotation(), 0u);
  EXPECT_EQ(s.NextRotation(), 1u);
}

}  // namespace
}  // namespace tiercache::redis::internal
