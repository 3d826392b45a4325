#include "core/xfetch.h"

#include <gtest/gtest.h>

#include <random>

namespace tiercache {
namespace {

using std::chrono::milliseconds;
using TP = std::chrono::steady_clock::time_point;

TEST(XFetchTest, ExpiredAlwaysRefreshes) {
  TP expiry(milliseconds(1000));
  EXPECT_TRUE(XFetchShouldRefresh(expiry, expiry, milliseconds(0), 0.0, 0.5));
}

TEST(XFetchTest, ThresholdFollowsDeltaBetaAndU) {
  TP expiry(milliseconds(10000));
  // u = e^-1 -> gap = δ·β. With δ = 50 ms, β = 1: refresh iff within 50 ms.
  const double u = std::exp(-1.0);
  EXPECT_FALSE(XFetchShouldRefresh(expiry - milliseconds(51), expiry, milliseconds(50), 1.0, u));
  EXPECT_TRUE(XFetchShouldRefresh(expiry - milliseconds(49), expiry, milliseconds(50), 1.0, u));
  // β = 2 doubles the window.
  EXPECT_TRUE(XFetchShouldRefresh(expiry - milliseconds(99), expiry, milliseconds(50), 2.0, u));
  // β = 0 or δ = 0: never early.
  EXPECT_FALSE(XFetchShouldRefresh(expiry - milliseconds(1), expiry, milliseconds(50), 0.0, u));
  EXPECT_FALSE(XFetchShouldRefresh(expiry - milliseconds(1), expiry, milliseconds(0), 1.0, u));
}

// Over many readers per millisecond, the first early refresh lands a few δ
// before expiry, never seconds before (the seed design's fixed 1 s scale did).
TEST(XFetchTest, FirstRefreshLandsWithinAFewDeltasOfExpiry) {
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> dist(std::nextafter(0.0, 1.0), 1.0);
  TP expiry(milliseconds(2000));
  const milliseconds delta(50);
  double sum_lead_ms = 0;
  constexpr int kTrials = 2000;
  for (int t = 0; t < kTrials; ++t) {
    // 200 reads/s: one read every 5 ms from the start of the TTL.
    for (TP now(milliseconds(0));; now += milliseconds(5)) {
      if (XFetchShouldRefresh(now, expiry, delta, 1.0, dist(rng))) {
        sum_lead_ms += std::chrono::duration<double, std::milli>(expiry - now).count();
        break;
      }
    }
  }
  const double mean_lead = sum_lead_ms / kTrials;
  EXPECT_GT(mean_lead, 25.0);
  EXPECT_LT(mean_lead, 300.0);
}

}  // namespace
}  // namespace tiercache
