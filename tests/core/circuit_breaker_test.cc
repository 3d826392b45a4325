#include "core/circuit_breaker.h"

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <vector>

#include "core/l2_guard.h"
#include "tiercache/log.h"

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

// An operator learns when a shard's breaker opens and closes: one log line
// each (tiercache/log.h), with the shard and the error that opened it.
TEST(L2GuardTest, LogsWhenABreakerOpensAndWhenItClosesAgain) {
  std::mutex mu;
  std::vector<std::pair<LogLevel, std::string>> lines;
  SetLogSink([&](LogLevel level, std::string_view message) {
    std::lock_guard<std::mutex> lock(mu);
    lines.emplace_back(level, std::string(message));
  });
  FakeClock clock;
  L2Guard guard({2, milliseconds(500)}, milliseconds(100), &clock, Metrics::Noop());
  guard.Record(3, Status::Unavailable("connection refused"));
  EXPECT_TRUE(lines.empty()) << "one failure does not open the breaker";
  guard.Record(3, Status::Unavailable("connection refused"));
  guard.Record(3, Status::Unavailable("connection refused"));  // already open: no second line
  clock.Advance(milliseconds(500));
  ASSERT_TRUE(guard.Allow(3));  // the probe
  guard.Record(3, Status::Ok());
  SetLogSink(nullptr);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].first, LogLevel::kWarning);
  EXPECT_NE(lines[0].second.find("breaker 3 opened"), std::string::npos) << lines[0].second;
  EXPECT_NE(lines[0].second.find("connection refused"), std::string::npos) << lines[0].second;
  EXPECT_EQ(lines[1].first, LogLevel::kInfo);
  EXPECT_NE(lines[1].second.find("breaker 3 closed"), std::string::npos) << lines[1].second;
}

}  // namespace
}  // namespace tiercache
