#include "core/circuit_breaker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/l2_guard.h"
#include "tiercache/metrics.h"
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

// A call let through before the breaker opened and answering late does not
// close it: only a probe's success does, after the open duration.
TEST_F(CircuitBreakerTest, ALateSuccessDoesNotCloseAnOpenBreaker) {
  ASSERT_TRUE(breaker_.Allow());  // a call that will answer late
  Fail(3);
  ASSERT_EQ(breaker_.state(), BreakerState::kOpen);
  breaker_.RecordSuccess();
  EXPECT_EQ(breaker_.state(), BreakerState::kOpen);
  EXPECT_FALSE(breaker_.Allow());
  clock_.Advance(milliseconds(500));
  ASSERT_TRUE(breaker_.Allow());  // the probe
  breaker_.RecordSuccess();
  EXPECT_EQ(breaker_.state(), BreakerState::kClosed);
}

TEST_F(CircuitBreakerTest, ClosesWhenNobodyAskedSinceATime) {
  Fail(3);
  const Clock::TimePoint opened_at = clock_.Now();
  clock_.Advance(milliseconds(100));
  EXPECT_FALSE(breaker_.CloseIfUnaskedSince(opened_at)) << "asked at its opening";
  EXPECT_FALSE(breaker_.Allow());  // asked now
  clock_.Advance(milliseconds(100));
  EXPECT_FALSE(breaker_.CloseIfUnaskedSince(opened_at + milliseconds(50)));
  EXPECT_TRUE(breaker_.CloseIfUnaskedSince(clock_.Now()));
  EXPECT_EQ(breaker_.state(), BreakerState::kClosed);
  EXPECT_FALSE(breaker_.CloseIfUnaskedSince(clock_.Now())) << "already closed";
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

namespace tiercache {
namespace {

// Captures log lines for the test's lifetime.
class Lines {
 public:
  Lines() {
    SetLogSink([this](LogLevel, std::string_view m) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.emplace_back(m);
    });
  }
  ~Lines() { SetLogSink(nullptr); }
  std::vector<std::string> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }
  int Count(const std::string& part) {
    int n = 0;
    for (const std::string& l : Get()) n += l.find(part) != std::string::npos ? 1 : 0;
    return n;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// A shard failing 2 calls in 3 for 10 s: with late successes closing the
// breaker it opened and closed on every few calls (hundreds of lines); now it
// opens once per open duration, and its lines are at most one "opened" per
// L2Guard::kLogInterval, with the count of those left out.
TEST(L2GuardTest, AShardFailingPartOfItsCallsLogsAFewLinesNotAFlood) {
  Lines log;
  FakeClock clock;
  CounterMetrics metrics;
  L2Guard guard({2, milliseconds(500)}, milliseconds(100), &clock, &metrics);
  int calls = 0;
  for (int i = 0; i < 1000; ++i) {  // 10 s of 3 concurrent calls every 10 ms
    bool allowed[3];
    for (bool& a : allowed) a = guard.Allow(3);
    for (int k = 0; k < 3; ++k) {  // they answer: two fail, the third succeeds late
      if (!allowed[k]) continue;
      ++calls;
      guard.Record(3, k == 2 ? Status::Ok() : Status::Unavailable("timeout"));
    }
    clock.Advance(milliseconds(10));
  }
  const uint64_t opened = metrics.snapshot().get(Counter::kBreakerOpened, Tier::kL2);
  EXPECT_LE(opened, 21u) << "at most one opening per open duration (+ its probe)";
  EXPECT_LT(calls, 200) << "an open breaker keeps calls away";
  EXPECT_LE(log.Count("opened"), 2) << ::testing::PrintToString(log.Get());
  EXPECT_GE(log.Count("opened"), 1);
  EXPECT_LE(log.Count("closed"), log.Count("opened"));
}

// After a failover the dead master's slots are served by another node (a
// shard of another number): nobody asks the old shard's breaker again. It is
// closed after kIdleOpenPeriods open durations, so the gauge falls while L2
// serves; a shard still asked about stays open.
TEST(L2GuardTest, ABreakerNobodyAsksAboutIsClosedAndTheGaugeFalls) {
  Lines log;
  FakeClock clock;
  CounterMetrics metrics;
  L2Guard guard({2, milliseconds(500)}, milliseconds(100), &clock, &metrics);
  for (int shard : {3, 4}) {
    guard.Record(shard, Status::Unavailable("connection refused"));
    guard.Record(shard, Status::Unavailable("connection refused"));
  }
  ASSERT_TRUE(guard.Down(3));
  ASSERT_TRUE(metrics.snapshot().breaker_open);
  for (int i = 0; i < 60; ++i) {  // 6 s of traffic on shard 5 (the new master) and on dead shard 4
    clock.Advance(milliseconds(100));
    ASSERT_TRUE(guard.Allow(5));
    guard.Record(5, Status::Ok());
    if (guard.Allow(4)) guard.Record(4, Status::Unavailable("connection refused"));
  }
  EXPECT_FALSE(guard.Down(3)) << "nobody asked about shard 3 for 6 s";
  EXPECT_TRUE(guard.Down(4)) << "shard 4 is asked about and still failing";
  EXPECT_TRUE(metrics.snapshot().breaker_open);
  EXPECT_EQ(log.Count("breaker 3 closed: no key has used its shard"), 1) << ::testing::PrintToString(log.Get());
  for (int i = 0; i < 60; ++i) {  // shard 4's keys moved too
    clock.Advance(milliseconds(100));
    ASSERT_TRUE(guard.Allow(5));
    guard.Record(5, Status::Ok());
  }
  EXPECT_FALSE(guard.Down(4));
  EXPECT_FALSE(metrics.snapshot().breaker_open) << "every breaker closed: the gauge must fall";
}

}  // namespace
}  // namespace tiercache

namespace tiercache {
namespace {

// A shard down for 3.5 s with the default options: the breaker opens, its
// probes fail and re-open it (lines left out by the limiter), then the shard
// answers. The last line must say it closed: an operator whose last line
// says "opened" goes looking for a failure that has ended.
TEST(L2GuardTest, AnOutageLongerThanTheOpenDurationEndsWithAClosedLine) {
  Lines log;
  FakeClock clock;
  CounterMetrics metrics;
  L2Guard guard(CircuitBreakerOptions{}, milliseconds(100), &clock, &metrics);
  for (int i = 0; i < 350; ++i) {  // 3.5 s, a call every 10 ms
    if (guard.Allow(3)) guard.Record(3, Status::Unavailable("connection refused"));
    clock.Advance(milliseconds(10));
  }
  ASSERT_GE(metrics.snapshot().get(Counter::kBreakerOpened, Tier::kL2), 2u) << "its probes failed";
  for (int i = 0; i < 200 && guard.Down(3); ++i) {  // the shard answers
    if (guard.Allow(3)) guard.Record(3, Status::Ok());
    clock.Advance(milliseconds(10));
  }
  ASSERT_FALSE(guard.Down(3));
  EXPECT_FALSE(metrics.snapshot().breaker_open);
  const std::vector<std::string> lines = log.Get();
  ASSERT_FALSE(lines.empty());
  EXPECT_NE(lines.back().find("breaker 3 closed"), std::string::npos) << ::testing::PrintToString(lines);
  EXPECT_EQ(log.Count("opened"), 1) << ::testing::PrintToString(lines);
}

// Metrics whose first SetBreakerOpen(false) waits until released: the
// closing of one breaker is held between reading the breakers and writing
// the gauge while another breaker opens.
class HeldGauge final : public Metrics {
 public:
  void Add(Counter, Tier, uint64_t) override {}
  void ObserveLoad(std::chrono::nanoseconds) override {}
  void SetBreakerOpen(bool open) override {
    if (!open && hold_.exchange(false)) {
      std::unique_lock<std::mutex> lock(mu_);
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    }
    std::lock_guard<std::mutex> lock(mu_);
    last_ = open;
  }
  void Arm() { hold_ = true; }
  void WaitHeld() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return held_; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  bool last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }

 private:
  std::atomic<bool> hold_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false, released_ = false, last_ = false;
};

TEST(L2GuardTest, TheGaugeEndsOpenWhenABreakerOpensWhileAnotherClosing) {
  FakeClock clock;
  HeldGauge metrics;
  L2Guard guard({1, milliseconds(500)}, milliseconds(100), &clock, &metrics);
  guard.Record(3, Status::Unavailable("down"));  // breaker 3 open
  ASSERT_TRUE(metrics.last());
  clock.Advance(milliseconds(500));
  ASSERT_TRUE(guard.Allow(3));  // its probe
  metrics.Arm();
  std::thread closing([&] { guard.Record(3, Status::Ok()); });  // reads "none open", then is held
  metrics.WaitHeld();
  guard.Record(4, Status::Unavailable("down"));  // breaker 4 opens and writes "open"
  EXPECT_TRUE(metrics.last());
  metrics.Release();  // breaker 3's stale "none open" lands
  closing.join();
  EXPECT_TRUE(guard.Down(4));
  EXPECT_TRUE(metrics.last()) << "the gauge says no breaker is open while breaker 4 is";
}

}  // namespace
}  // namespace tiercache
