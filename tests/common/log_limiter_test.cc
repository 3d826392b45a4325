// LogLimiter: one line per interval, and the count of those left out carried
// into the next line written.
#include "common/log_limiter.h"

#include <gtest/gtest.h>

namespace tiercache {
namespace {

using std::chrono::milliseconds;

TEST(LogLimiterTest, AdmitsOneLinePerIntervalAndCountsTheRest) {
  FakeClock clock;
  LogLimiter limiter(milliseconds(1000));
  uint64_t left_out = 99;
  ASSERT_TRUE(limiter.Admit(clock.Now(), &left_out));
  EXPECT_EQ(left_out, 0u);
  for (int i = 0; i < 5; ++i) {
    clock.Advance(milliseconds(100));
    EXPECT_FALSE(limiter.Admit(clock.Now(), &left_out));
  }
  clock.Advance(milliseconds(500));  // 1000 ms after the first
  ASSERT_TRUE(limiter.Admit(clock.Now(), &left_out));
  EXPECT_EQ(left_out, 5u);
  EXPECT_EQ(LogLimiter::Note(left_out), " (5 similar lines left out)");
  EXPECT_EQ(LogLimiter::Note(1), " (1 similar line left out)");
  EXPECT_EQ(LogLimiter::Note(0), "");
  clock.Advance(milliseconds(1000));
  ASSERT_TRUE(limiter.Admit(clock.Now(), &left_out));
  EXPECT_EQ(left_out, 0u);
}

}  // namespace
}  // namespace tiercache
