#include "core/circuit_breaker.h"

#include <gtest/gtest.h>

namespace tiercache {
namespace {

using std::chrono::milliseconds;

class CircuitBreakerTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  CircuitBreakerOptions options_{3, milliseconds(500)};
  CircuitBreaker breaker_{options_, &clock_};

  void Fail(int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(breaker_.Allow());
      breaker_.RecordFailure();
    }
  }
};

TEST_F(CircuitBreakerTest, ValidatesOptions) {
  EXPECT_TRUE(CircuitBreaker::Validate({0, milliseconds(1)}).IsInvalidArgument());
  EXPECT_TRUE(CircuitBreaker::Validate({1, milliseconds(0)}).IsInvalidArgument());
  EXPECT_TRUE(CircuitBreaker::Validate({1, milliseconds(1)}).ok());
}

TEST_F(CircuitBreakerTest, OpensAfterConsecutiveFailuresOnly) {
  Fail(2);
  breaker_.RecordSuccess();  // resets the run
  Fail(2);
  EXPECT_EQ(breaker_.state(), BreakerState::kClosed);
  Fail(1);
  EXPECT_EQ(breaker_.state(), BreakerState::kOpen);
  EXPECT_FALSE(breaker_.Allow());
  EXPECT_EQ(breaker_.times_opened(), 1u);
}

TEST_F(CircuitBreakerTest, LetsOneProbeThroughAfterTheOpenDuration) {
  Fail(3);
  clock_.Advance(milliseconds(499));
  EXPECT_FALSE(breaker_.Allow());
  clock_.Advance(milliseconds(1));
  EXPECT_TRUE(breaker_.Allow());   // the probe
  EXPECT_EQ(breaker_.state(), BreakerState::kHalfOpen);
  EXPECT_FALSE(breaker_.Allow());  // nobody else while it is out
  breaker_.RecordSuccess();
  EXPECT_EQ(breaker_.state(), BreakerState::kClosed);
  EXPECT_TRUE(breaker_.Allow());
}

TEST_F(CircuitBreakerTest, AFailedProbeReopens) {
  Fail(3);
  clock_.Advance(milliseconds(500));
  ASSERT_TRUE(breaker_.Allow());
  breaker_.RecordFailure();
  EXPECT_EQ(breaker_.state(), BreakerState::kOpen);
  EXPECT_FALSE(breaker_.Allow());
  EXPECT_EQ(breaker_.times_opened(), 2u);
}

TEST_F(CircuitBreakerTest, ALostProbeIsReplacedAfterTheOpenDuration) {
  Fail(3);
  clock_.Advance(milliseconds(500));
  ASSERT_TRUE(breaker_.Allow());  // probe never reports
  EXPECT_FALSE(breaker_.Allow());
  clock_.Advance(milliseconds(500));
  EXPECT_TRUE(breaker_.Allow());
}

}  // namespace
}  // namespace tiercache
