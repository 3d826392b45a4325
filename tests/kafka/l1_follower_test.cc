// L1Follower against librdkafka's mock cluster and the in-memory L2: L1 is
// fenced at start until the follower caught up, events drop this pod's L1
// copies at their version (and raise a mapped group's floor to it), and when
// the brokers become unreachable L1 is fenced within the stated bound (and
// dropped: events may wait in an outbox) and trusted again once caught up.
#include "tiercache/kafka/l1_follower.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "common/kafka_test_util.h"
#include "kafka/kafka_event_test_util.h"
#include "tiercache/events.h"
#include "tiercache/l2_store.h"
#include "common/log_capture.h"

namespace tiercache::kafka {
namespace {

using testing_events::MapToKey;
using testing_events::MapToGroup;
using testing_events::FeedPage;
using testing_events::EventFor;
using testing_events::WaitFor;
using testing_events::Version;

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

class L1FollowerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.ok());
    ASSERT_EQ(rd_kafka_mock_topic_create(cluster_.get(), "posts", 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    l2_ = MakeInMemoryL2Store();
    CacheOptions co;
    co.l2 = l2_;
    co.ttl_jitter = 0;
    co.early_refresh_beta = 0;
    auto c = Cache::Create(co);
    ASSERT_TRUE(c.ok());
    cache_ = std::move(*c);
    PublisherOptions po;
    po.brokers = cluster_.bootstraps();
    po.extra = {{"log_level", "0"}};
    auto p = Publisher::Create(po);
    ASSERT_TRUE(p.ok());
    publisher_ = std::move(*p);
  }

  std::unique_ptr<L1Follower> Follower(EventMapper mapper = &MapToKey) {
    L1FollowerOptions o;
    o.brokers = cluster_.bootstraps();
    o.topics = {"posts"};
    o.max_lag = 300ms;
    o.check_interval = 50ms;
    o.extra = {{"log_level", "0"}};
    o.metrics = &metrics_;
    auto f = L1Follower::Create(o, cache_.get(), std::move(mapper));
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? std::move(*f) : nullptr;
  }

  testing::KafkaMockCluster cluster_{1};
  std::shared_ptr<L2Store> l2_;
  std::unique_ptr<Cache> cache_;
  std::unique_ptr<Publisher> publisher_;
  CounterMetrics metrics_;
};

TEST_F(L1FollowerTest, L1IsFencedUntilTheFollowerCaughtUpThenEventsDropCopiesAtTheirVersion) {
  auto follower = Follower();
  ASSERT_TRUE(follower && follower->Start().ok());
  EXPECT_FALSE(cache_->l1_trusted()) << "L1 trusted before the follower knew where the stream stood";
  ASSERT_TRUE(WaitFor([&] { return cache_->l1_trusted(); }, 15s));
  EXPECT_EQ(follower->stats().fences_by_cause["starting"], 1u);

  ASSERT_TRUE(cache_->Get("k", Version(1)).ok());
  Result<CachedValue> hit = cache_->Get("k", Version(1));
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(hit->source(), ValueSource::kL1);

  ASSERT_TRUE(publisher_->PublishAndWait("posts", "k", EventFor("k", 2), 10s).ok());
  ASSERT_TRUE(WaitFor([&] { return follower->stats().keys_dropped >= 1; }, 10s));
  EXPECT_EQ(metrics_.snapshot().lags_of(InvalidationStage::kL1), 1u);
  EXPECT_EQ(metrics_.snapshot().l1_fences[static_cast<int>(L1FenceCause::kStarting)], 1u);
  EXPECT_FALSE(metrics_.snapshot().l1_fenced);
  // L1 dropped v1 and keeps a tombstone at 2: L2 (not yet invalidated by
  // anyone here) still holds v1, and the refill from it must not enter L1.
  Result<CachedValue> after = cache_->Get("k", Version(2));
  ASSERT_TRUE(after.ok());
  EXPECT_NE(after->source(), ValueSource::kL1);
  Result<CachedValue> again = cache_->Get("k", Version(2));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->source() == ValueSource::kL1 && again->version() == 1u)
      << "the stale L2 value refilled this pod's L1 after the event";
}

TEST_F(L1FollowerTest, UnreachableBrokersFenceL1WithinTheBoundAndCatchingUpTrustsItAgain) {
  testing::LogCapture log;
  auto follower = Follower();
  ASSERT_TRUE(follower && follower->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return cache_->l1_trusted(); }, 15s));
  ASSERT_TRUE(cache_->Get("k", Version(1)).ok());  // in L1

  ASSERT_EQ(cluster_.SetDown(), RD_KAFKA_RESP_ERR_NO_ERROR);
  const auto down_at = SteadyClock::now();
  ASSERT_TRUE(WaitFor([&] { return !cache_->l1_trusted(); }, 5s))
      << "behind " << follower->stats().behind_ms << " ms, trusted " << follower->stats().trusted;
  const auto fenced_after = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - down_at);
  // max_lag + 2 x check_interval, plus slack for a loaded machine.
  EXPECT_LE(fenced_after.count(), 300 + 2 * 50 + 400);
  EXPECT_EQ(follower->stats().fences_by_cause["brokers_unreachable"], 1u);
  EXPECT_EQ(metrics_.snapshot().l1_fences[static_cast<int>(L1FenceCause::kBrokersUnreachable)], 1u);
  EXPECT_TRUE(metrics_.snapshot().l1_fenced);
  std::printf("L1 fenced %lld ms after the brokers went down\n", static_cast<long long>(fenced_after.count()));

  // While fenced, L1 is not read: a newer value in L2 is served.
  ASSERT_TRUE(l2_->Get("k", 100ms).ok());
  {
    CacheOptions co;
    co.l2 = l2_;
    auto writer = Cache::Create(co);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Set("k", "v2", 2).ok());
  }
  Result<CachedValue> during = cache_->Get("k", Version(2));
  ASSERT_TRUE(during.ok());
  EXPECT_EQ(during->version(), 2u) << "a fenced L1 served its copy";

  ASSERT_EQ(cluster_.SetUp(), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_TRUE(WaitFor([&] { return cache_->l1_trusted(); }, 20s)) << "L1 never trusted again";
  // The operator was told: fenced at the start and at the outage, trusted again after each.
  EXPECT_EQ(log.Count("WARNING L1 fenced (brokers_unreachable"), 1) << log.All();
  EXPECT_EQ(log.Count("INFO L1 trusted again"), 2) << log.All();
}

// An outage of the brokers holds back the producers' events too (an outbox
// publishes its backlog only after it): when the follower is trusted again,
// it has caught up with the brokers, not with those events. The L1 it kept
// through the outage would serve copies they invalidate; it is dropped.
TEST_F(L1FollowerTest, AnL1KeptThroughABrokerOutageDoesNotServeWhatChangedMeanwhile) {
  auto follower = Follower();
  ASSERT_TRUE(follower && follower->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return cache_->l1_trusted(); }, 15s));
  ASSERT_TRUE(cache_->Get("k", Version(1)).ok());
  Result<CachedValue> hit = cache_->Get("k", Version(1));
  ASSERT_TRUE(hit.ok());
  ASSERT_EQ(hit->source(), ValueSource::kL1);

  ASSERT_EQ(cluster_.SetDown(), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_TRUE(WaitFor([&] { return !cache_->l1_trusted(); }, 5s));
  // The owner writes v2 and invalidates L2 itself; its event waits in the
  // outbox (never published in this test).
  {
    CacheOptions co;
    co.l2 = l2_;
    auto writer = Cache::Create(co);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Set("k", "v2", 2).ok());
  }
  ASSERT_EQ(cluster_.SetUp(), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_TRUE(WaitFor([&] { return cache_->l1_trusted(); }, 20s)) << "L1 never trusted again";
  Result<CachedValue> after = cache_->Get("k", Version(2));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->version(), 2u) << "L1 kept through the outage served v1, which changed during it";
}

// The follower moves a mapped group itself, with the event's version as the
// group's floor: a member this pod loads below it (a replica behind the
// change) is refused before any consumer applied the event.
TEST_F(L1FollowerTest, AnEventRaisesItsGroupsFloorToItsVersion) {
  auto follower = Follower(&MapToGroup);
  ASSERT_TRUE(follower && follower->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return cache_->l1_trusted(); }, 15s));
  ASSERT_TRUE(publisher_->PublishAndWait("posts", "c42", EventFor("c42", 57), 10s).ok());
  ASSERT_TRUE(WaitFor([&] { return follower->stats().keys_dropped >= 1; }, 10s)) << "the group was not moved";
  GetOptions g;
  g.group = "feed:{c42}";
  Result<CachedValue> behind = cache_->Get(FeedPage("c42", 1), Version(56), g);
  EXPECT_TRUE(behind.status().IsAborted()) << "a member below the event's version was served";
  Result<CachedValue> current = cache_->Get(FeedPage("c42", 1), Version(57), g);
  ASSERT_TRUE(current.ok()) << current.status().ToString();
  EXPECT_EQ(current->version(), 57u);
}

}  // namespace
}  // namespace tiercache::kafka
