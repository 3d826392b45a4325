// SingleFlight and L1Cache::get_or_load: one load per key for concurrent
// misses, waiters' deadlines, errors and exceptions not poisoning the key.
// Threads are coordinated through SingleFlight::waiting() and a gate, so the
// tests are deterministic; they also run under TSan and ASan+UBSan.
#include "tiercache/single_flight.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tiercache/l1_cache.h"

namespace tiercache {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A one-shot latch the loader blocks on until the test opens it.
class Gate {
 public:
  void Open() { open_.set_value(); }
  void Wait() { opened_.wait(); }

 private:
  std::promise<void> open_;
  std::shared_future<void> opened_ = open_.get_future().share();
};

void WaitUntil(const std::function<bool()>& done) {
  const auto give_up = std::chrono::steady_clock::now() + seconds(20);
  while (!done() && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  ASSERT_TRUE(done()) << "timed out waiting for the threads to line up";
}

TEST(SingleFlightTest, ConcurrentCallsShareOneExecution) {
  FakeClock clock;
  SingleFlight<int> flight(&clock);
  Gate gate;
  std::atomic<int> runs{0};
  constexpr int kWaiters = 6;
  auto leader = std::async(std::launch::async, [&] {
    return flight.Do("k", clock.Now() + seconds(10), [&]() -> Result<int> {
      ++runs;
      gate.Wait();
      return 42;
    });
  });
  WaitUntil([&] { return runs.load() == 1; });
  std::vector<std::future<Result<int>>> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.push_back(std::async(std::launch::async, [&] {
      return flight.Do("k", clock.Now() + seconds(10), [&]() -> Result<int> {
        ++runs;
        return -1;
      });
    }));
  }
  WaitUntil([&] { return flight.waiting() == kWaiters; });
  gate.Open();
  Result<int> lead = leader.get();
  ASSERT_TRUE(lead.ok());
  EXPECT_EQ(*lead, 42);
  for (auto& w : waiters) {
    Result<int> r = w.get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, 42);
  }
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(flight.in_flight(), 0u);
}

TEST(SingleFlightTest, DifferentKeysDoNotWaitForEachOther) {
  SingleFlight<int> flight;
  Gate gate;
  std::atomic<bool> started{false};
  auto slow = std::async(std::launch::async, [&] {
    return flight.Do("a", Clock::Real()->Now() + seconds(10), [&]() -> Result<int> {
      started = true;
      gate.Wait();
      return 1;
    });
  });
  WaitUntil([&] { return started.load(); });
  Result<int> other = flight.Do("b", Clock::Real()->Now(), []() -> Result<int> { return 2; });
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(*other, 2);
  gate.Open();
  EXPECT_EQ(*slow.get(), 1);
}

TEST(SingleFlightTest, WaiterGivesUpAtItsDeadlineAndFlightGoesOn) {
  FakeClock clock;
  SingleFlight<int> flight(&clock);
  Gate gate;
  std::atomic<bool> started{false};
  auto leader = std::async(std::launch::async, [&] {
    return flight.Do("k", clock.Now(), [&]() -> Result<int> {
      started = true;
      gate.Wait();
      return 7;
    });
  });
  WaitUntil([&] { return started.load(); });
  auto waiter = std::async(std::launch::async, [&] {
    return flight.Do("k", clock.Now() + milliseconds(100), []() -> Result<int> { return -1; });
  });
  WaitUntil([&] { return flight.waiting() == 1; });
  clock.Advance(milliseconds(100));
  Result<int> w = waiter.get();
  EXPECT_TRUE(w.status().IsDeadlineExceeded()) << w.status().ToString();
  gate.Open();
  Result<int> lead = leader.get();
  ASSERT_TRUE(lead.ok()) << "the leader is not bound by its deadline";
  EXPECT_EQ(*lead, 7);
}

TEST(SingleFlightTest, ErrorGoesToWaitersButDoesNotPoisonTheKey) {
  FakeClock clock;
  SingleFlight<int> flight(&clock);
  Gate gate;
  std::atomic<bool> started{false};
  auto leader = std::async(std::launch::async, [&] {
    return flight.Do("k", clock.Now() + seconds(10), [&]() -> Result<int> {
      started = true;
      gate.Wait();
      return Status::Unavailable("database down");
    });
  });
  WaitUntil([&] { return started.load(); });
  auto waiter = std::async(std::launch::async, [&] {
    return flight.Do("k", clock.Now() + seconds(10), []() -> Result<int> { return -1; });
  });
  WaitUntil([&] { return flight.waiting() == 1; });
  gate.Open();
  EXPECT_TRUE(leader.get().status().IsUnavailable());
  EXPECT_TRUE(waiter.get().status().IsUnavailable());
  Result<int> later = flight.Do("k", clock.Now(), []() -> Result<int> { return 5; });
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(*later, 5);
}

TEST(SingleFlightTest, ThrowingFunctionBecomesInternalForEveryone) {
  FakeClock clock;
  SingleFlight<int> flight(&clock);
  Gate gate;
  std::atomic<bool> started{false};
  auto leader = std::async(std::launch::async, [&] {
    return flight.Do("k", clock.Now() + seconds(10), [&]() -> Result<int> {
      started = true;
      gate.Wait();
      throw std::runtime_error("loader bug");
    });
  });
  WaitUntil([&] { return started.load(); });
  auto waiter = std::async(std::launch::async, [&] {
    return flight.Do("k", clock.Now() + seconds(10), []() -> Result<int> { return -1; });
  });
  WaitUntil([&] { return flight.waiting() == 1; });
  gate.Open();
  Result<int> lead = leader.get();
  EXPECT_TRUE(lead.status().IsInternal());
  EXPECT_NE(lead.status().message().find("loader bug"), std::string_view::npos);
  EXPECT_TRUE(waiter.get().status().IsInternal());
  Result<int> thrown_int = flight.Do("k", clock.Now(), []() -> Result<int> { throw 3; });
  EXPECT_TRUE(thrown_int.status().IsInternal());
  EXPECT_EQ(*flight.Do("k", clock.Now(), []() -> Result<int> { return 9; }), 9);
}

// ---- get_or_load -------------------------------------------------------------

class GetOrLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    L1Options o;
    o.clock = &clock_;
    o.default_ttl = seconds(10);
    cache_ = std::move(*L1Cache::Create(o));
  }
  FakeClock clock_;
  std::unique_ptr<L1Cache> cache_;
};

TEST_F(GetOrLoadTest, ConcurrentMissesRunOneLoadAndShareTheValue) {
  Gate gate;
  std::atomic<int> loads{0};
  L1Loader loader = [&]() -> Result<L1Loaded> {
    ++loads;
    gate.Wait();
    clock_.Advance(milliseconds(30));  // the load "takes" 30 ms: its δ
    return L1Loaded{std::make_shared<const std::string>("value"), 3, seconds(0)};
  };
  constexpr int kCallers = 8;
  std::vector<std::future<Result<L1Entry>>> callers;
  for (int i = 0; i < kCallers; ++i) {
    callers.push_back(std::async(std::launch::async, [&] {
      return cache_->GetOrLoad("k", loader, clock_.Now() + seconds(5));
    }));
  }
  WaitUntil([&] { return loads.load() == 1; });
  // The others are waiting, or have not yet missed; open once all wait.
  // (Callers that miss after the load completes get a plain hit.)
  std::this_thread::sleep_for(milliseconds(20));
  gate.Open();
  for (auto& c : callers) {
    Result<L1Entry> r = c.get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r->value, "value");
    EXPECT_EQ(r->version, 3u);
    EXPECT_EQ(r->load_duration, milliseconds(30));
  }
  EXPECT_EQ(loads.load(), 1);
  auto hit = cache_->Get("k");
  ASSERT_TRUE(hit.ok() && hit->has_value());
  EXPECT_EQ((*hit)->load_duration, milliseconds(30));
}

TEST_F(GetOrLoadTest, HitDoesNotCallLoader) {
  ASSERT_TRUE(cache_->Set("k", std::make_shared<const std::string>("cached"), L1Fill{}).ok());
  int loads = 0;
  Result<L1Entry> r = cache_->GetOrLoad(
      "k", [&]() -> Result<L1Loaded> { ++loads; return L1Loaded{}; }, clock_.Now());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r->value, "cached");
  EXPECT_EQ(loads, 0);
}

TEST_F(GetOrLoadTest, NullValueIsCachedAsNegative) {
  int loads = 0;
  L1Loader loader = [&]() -> Result<L1Loaded> {
    ++loads;
    return L1Loaded{nullptr, 4, seconds(0)};
  };
  Result<L1Entry> r = cache_->GetOrLoad("gone", loader, clock_.Now());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->negative());
  Result<L1Entry> again = cache_->GetOrLoad("gone", loader, clock_.Now());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->negative());
  EXPECT_EQ(loads, 1);
}

TEST_F(GetOrLoadTest, FailureAndExceptionAreNotCached) {
  int loads = 0;
  Result<L1Entry> failed = cache_->GetOrLoad(
      "k", [&]() -> Result<L1Loaded> { ++loads; return Status::Unavailable("db"); }, clock_.Now());
  EXPECT_TRUE(failed.status().IsUnavailable());
  Result<L1Entry> thrown = cache_->GetOrLoad(
      "k", [&]() -> Result<L1Loaded> { ++loads; throw std::runtime_error("bug"); }, clock_.Now());
  EXPECT_TRUE(thrown.status().IsInternal());
  Result<L1Entry> ok = cache_->GetOrLoad(
      "k",
      [&]() -> Result<L1Loaded> {
        ++loads;
        return L1Loaded{std::make_shared<const std::string>("v"), 1, seconds(0)};
      },
      clock_.Now());
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(loads, 3);
  EXPECT_EQ(cache_->Stats().entries, 1u);
}

TEST_F(GetOrLoadTest, LoadRefusedByTombstoneIsAbortedAndNotCached) {
  ASSERT_TRUE(cache_->Invalidate("k", 10).ok());
  Result<L1Entry> r = cache_->GetOrLoad(
      "k",
      []() -> Result<L1Loaded> {
        return L1Loaded{std::make_shared<const std::string>("old"), 9, seconds(0)};
      },
      clock_.Now());
  EXPECT_TRUE(r.status().IsAborted()) << r.status().ToString();
  EXPECT_EQ(cache_->Stats().refused_fills, 1u);
}

TEST_F(GetOrLoadTest, LoadRefusedByNewerValueReturnsTheNewerValue) {
  // A writer stores v5 while our (slow) load of v4 is running.
  Result<L1Entry> r = cache_->GetOrLoad(
      "k",
      [&]() -> Result<L1Loaded> {
        EXPECT_TRUE(
            cache_->Set("k", std::make_shared<const std::string>("v5"), L1Fill{5, {}, {}, {}})
                .ok());
        return L1Loaded{std::make_shared<const std::string>("v4"), 4, seconds(0)};
      },
      clock_.Now());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r->value, "v5");
  EXPECT_EQ(r->version, 5u);
}

TEST_F(GetOrLoadTest, BadKeyIsInvalidWithoutLoading) {
  int loads = 0;
  Result<L1Entry> r = cache_->GetOrLoad(
      "", [&]() -> Result<L1Loaded> { ++loads; return L1Loaded{}; }, clock_.Now());
  EXPECT_TRUE(r.status().IsInvalidArgument());
  EXPECT_EQ(loads, 0);
}

TEST_F(GetOrLoadTest, WaiterDeadlineIsDeadlineExceeded) {
  Gate gate;
  std::atomic<bool> started{false};
  auto leader = std::async(std::launch::async, [&] {
    return cache_->GetOrLoad(
        "k",
        [&]() -> Result<L1Loaded> {
          started = true;
          gate.Wait();
          return L1Loaded{std::make_shared<const std::string>("v"), 1, seconds(0)};
        },
        clock_.Now());
  });
  WaitUntil([&] { return started.load(); });
  const Clock::TimePoint deadline = clock_.Now() + milliseconds(50);
  auto waiter = std::async(std::launch::async, [&] {
    return cache_->GetOrLoad(
        "k", []() -> Result<L1Loaded> { return Status::Internal("must not run"); }, deadline);
  });
  // Whether the waiter joins the flight before or after this, its deadline
  // has passed by the time it checks.
  std::this_thread::sleep_for(milliseconds(20));
  clock_.Advance(milliseconds(50));
  Result<L1Entry> w = waiter.get();
  EXPECT_TRUE(w.status().IsDeadlineExceeded()) << w.status().ToString();
  gate.Open();
  ASSERT_TRUE(leader.get().ok());
}

}  // namespace
}  // namespace tiercache
