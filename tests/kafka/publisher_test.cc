// Publisher against librdkafka's in-process mock cluster (no server needed):
// option validation, delivery, queue bound, delivery timeout, and shutdown
// reporting every outstanding message exactly once.
#include "tiercache/kafka/publisher.h"

#include <librdkafka/rdkafka.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/kafka_test_util.h"

namespace tiercache::kafka {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using MockCluster = testing::KafkaMockCluster;

PublisherOptions OptionsFor(const std::string& brokers) {
  PublisherOptions o;
  o.brokers = brokers;
  o.extra = {{"log_level", "0"}};  // the mock's refused connections are expected
  return o;
}

// Counts reports per message and remembers the last status of each.
class Reports {
 public:
  explicit Reports(size_t n) : calls_(n), codes_(n, StatusCode::kOk) {}
  DeliveryCallback For(size_t i) {
    return [this, i](const Result<Delivery>& r) {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_[i];
      codes_[i] = r.status().code();
      ++total_;
    };
  }
  int calls(size_t i) const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_[i];
  }
  StatusCode code(size_t i) const {
    std::lock_guard<std::mutex> lock(mu_);
    return codes_[i];
  }
  size_t total() const {
    std::lock_guard<std::mutex> lock(mu_);
    return total_;
  }
  // Waits until `n` reports came, at most `timeout`.
  bool WaitTotal(size_t n, milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    while (total() < n) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return true;
  }

 private:
  mutable std::mutex mu_;
  std::vector<int> calls_;
  std::vector<StatusCode> codes_;
  size_t total_ = 0;
};

long ElapsedMs(Clock::time_point start) {
  return static_cast<long>(std::chrono::duration_cast<milliseconds>(Clock::now() - start).count());
}

TEST(PublisherTest, CreateRejectsBadOptions) {
  auto expect_invalid = [](PublisherOptions o, const char* what) {
    Result<std::unique_ptr<Publisher>> p = Publisher::Create(std::move(o));
    ASSERT_FALSE(p.ok()) << what;
    EXPECT_TRUE(p.status().IsInvalidArgument()) << what << ": " << p.status().ToString();
  };
  const PublisherOptions good = OptionsFor("127.0.0.1:1");
  PublisherOptions o = good;
  o.brokers = "";
  expect_invalid(o, "empty brokers");
  o = good;
  o.delivery_timeout = milliseconds(0);
  expect_invalid(o, "zero delivery_timeout");
  o = good;
  o.linger = milliseconds(-1);
  expect_invalid(o, "negative linger");
  o = good;
  o.linger = o.delivery_timeout;
  expect_invalid(o, "linger not below delivery_timeout");
  o = good;
  o.max_queued_messages = 0;
  expect_invalid(o, "zero max_queued_messages");
  o = good;
  o.max_message_bytes = 0;
  expect_invalid(o, "zero max_message_bytes");
  o = good;
  o.max_message_bytes = 10;  // librdkafka's floor is 1000
  expect_invalid(o, "max_message_bytes librdkafka refuses");
  o = good;
  o.close_timeout = milliseconds(-1);
  expect_invalid(o, "negative close_timeout");
  o = good;
  o.extra.emplace_back("no.such.property", "1");
  expect_invalid(o, "unknown librdkafka property");
  o = good;
  o.extra.emplace_back("compression.codec", "banana");
  expect_invalid(o, "bad property value");
  o = good;
  o.extra.emplace_back("enable.idempotence", "false");
  expect_invalid(o, "extra overriding a managed property");
  o = good;
  o.extra.emplace_back("acks", "1");  // conflicts with idempotence: rd_kafka_new refuses
  expect_invalid(o, "property combination librdkafka refuses");

  Result<std::unique_ptr<Publisher>> p = Publisher::Create(good);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
}

TEST(PublisherTest, PublishRejectsBadArgumentsWithoutCallingBack) {
  PublisherOptions o = OptionsFor("127.0.0.1:1");
  o.max_message_bytes = 2000;
  o.close_timeout = milliseconds(0);
  Result<std::unique_ptr<Publisher>> p = Publisher::Create(o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Reports reports(2);
  EXPECT_TRUE((*p)->Publish("", "k", "v", reports.For(0)).IsInvalidArgument());
  EXPECT_TRUE((*p)->Publish("t", "k", std::string(2001, 'x'), reports.For(1)).IsInvalidArgument());
  EXPECT_EQ((*p)->outstanding(), 0u);
  p->reset();
  EXPECT_EQ(reports.total(), 0u);
}

TEST(PublisherTest, DeliversToMockClusterWithPartitionAndOffset) {
  MockCluster cluster;
  ASSERT_TRUE(cluster.ok());
  Result<std::unique_ptr<Publisher>> p = Publisher::Create(OptionsFor(cluster.bootstraps()));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Result<Delivery> first = (*p)->PublishAndWait("orders", "k1", "v1", milliseconds(10000), {{"h", "1"}});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_GE(first->partition, 0);
  EXPECT_GE(first->offset, 0);
  // Same key, same partition, next offset.
  Result<Delivery> second = (*p)->PublishAndWait("orders", "k1", "v2", milliseconds(10000));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->partition, first->partition);
  EXPECT_EQ(second->offset, first->offset + 1);

  Reports reports(100);
  for (size_t i = 0; i < 100; ++i) {
    ASSERT_TRUE((*p)->Publish("orders", "k" + std::to_string(i % 7), "v", reports.For(i)).ok());
  }
  ASSERT_TRUE((*p)->Flush(milliseconds(10000)).ok());
  EXPECT_EQ((*p)->outstanding(), 0u);
  for (size_t i = 0; i < 100; ++i) {
    EXPECT_EQ(reports.calls(i), 1) << i;
    EXPECT_EQ(reports.code(i), StatusCode::kOk) << i;
  }
}

TEST(PublisherTest, FullQueueIsResourceExhaustedWithoutCallingBack) {
  MockCluster cluster;
  ASSERT_TRUE(cluster.ok());
  ASSERT_EQ(cluster.SetDown(), RD_KAFKA_RESP_ERR_NO_ERROR);
  PublisherOptions o = OptionsFor(cluster.bootstraps());
  o.max_queued_messages = 2;
  o.close_timeout = milliseconds(100);
  Result<std::unique_ptr<Publisher>> p = Publisher::Create(o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Reports reports(3);
  ASSERT_TRUE((*p)->Publish("t", "a", "1", reports.For(0)).ok());
  ASSERT_TRUE((*p)->Publish("t", "b", "2", reports.For(1)).ok());
  Status full = (*p)->Publish("t", "c", "3", reports.For(2));
  EXPECT_TRUE(full.IsResourceExhausted()) << full.ToString();
  EXPECT_EQ((*p)->outstanding(), 2u);
  Status flushed = (*p)->Flush(milliseconds(50));
  EXPECT_TRUE(flushed.IsDeadlineExceeded()) << flushed.ToString();
  p->reset();
  EXPECT_EQ(reports.calls(0), 1);
  EXPECT_EQ(reports.calls(1), 1);
  EXPECT_EQ(reports.calls(2), 0);
}

TEST(PublisherTest, DestructionCancelsEachOutstandingMessageOnceWithinCloseTimeout) {
  MockCluster cluster;
  ASSERT_TRUE(cluster.ok());
  ASSERT_EQ(cluster.SetDown(), RD_KAFKA_RESP_ERR_NO_ERROR);
  PublisherOptions o = OptionsFor(cluster.bootstraps());
  o.delivery_timeout = milliseconds(60000);
  o.close_timeout = milliseconds(300);
  Result<std::unique_ptr<Publisher>> p = Publisher::Create(o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  constexpr size_t kMessages = 200;
  Reports reports(kMessages);
  for (size_t i = 0; i < kMessages; ++i) {
    ASSERT_TRUE((*p)->Publish("t", "k" + std::to_string(i % 13), "v", reports.For(i)).ok());
  }
  EXPECT_EQ((*p)->outstanding(), kMessages);
  const auto start = Clock::now();
  p->reset();
  const long took = ElapsedMs(start);
  EXPECT_LT(took, 300 + 1500) << "destruction took " << took << " ms";
  RecordProperty("destruction_ms", std::to_string(took));
  for (size_t i = 0; i < kMessages; ++i) {
    EXPECT_EQ(reports.calls(i), 1) << i;
    EXPECT_EQ(reports.code(i), StatusCode::kCancelled) << i;
  }
}

TEST(PublisherTest, UnreachableBrokerFailsEachMessageWithinDeliveryTimeout) {
  MockCluster cluster;
  ASSERT_TRUE(cluster.ok());
  ASSERT_EQ(cluster.SetDown(), RD_KAFKA_RESP_ERR_NO_ERROR);
  PublisherOptions o = OptionsFor(cluster.bootstraps());
  o.delivery_timeout = milliseconds(500);
  Result<std::unique_ptr<Publisher>> p = Publisher::Create(o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  constexpr size_t kMessages = 20;
  Reports reports(kMessages);
  const auto start = Clock::now();
  for (size_t i = 0; i < kMessages; ++i) ASSERT_TRUE((*p)->Publish("t", "k", "v", reports.For(i)).ok());
  ASSERT_TRUE(reports.WaitTotal(kMessages, milliseconds(500 + 2500)));
  const long took = ElapsedMs(start);
  EXPECT_LT(took, 500 + 2500);
  RecordProperty("all_reports_ms", std::to_string(took));
  for (size_t i = 0; i < kMessages; ++i) {
    EXPECT_EQ(reports.calls(i), 1) << i;
    EXPECT_EQ(reports.code(i), StatusCode::kUnavailable) << i;
  }
  Result<Delivery> waited = (*p)->PublishAndWait("t", "k", "v", milliseconds(5000));
  EXPECT_TRUE(waited.status().IsUnavailable()) << waited.status().ToString();
  // A message counts as outstanding until its callback (here PublishAndWait's
  // own) has returned, which may be just after PublishAndWait woke up.
  EXPECT_TRUE((*p)->Flush(milliseconds(1000)).ok());
  EXPECT_EQ((*p)->outstanding(), 0u);
}

TEST(PublisherTest, CallbackExceptionsAndReentrantCallsStayContained) {
  MockCluster cluster;
  ASSERT_TRUE(cluster.ok());
  Result<std::unique_ptr<Publisher>> p = Publisher::Create(OptionsFor(cluster.bootstraps()));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Publisher* pub = p->get();
  std::atomic<int> calls{0};
  Status flush_in_callback;
  Status wait_in_callback;
  ASSERT_TRUE(pub->Publish("t", "k", "v", [&](const Result<Delivery>&) {
                    flush_in_callback = pub->Flush(milliseconds(1000));
                    wait_in_callback = pub->PublishAndWait("t", "k", "v", milliseconds(1000)).status();
                    ++calls;
                    throw std::runtime_error("callback failure");
                  }).ok());
  ASSERT_TRUE(pub->Flush(milliseconds(10000)).ok());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(flush_in_callback.code(), StatusCode::kFailedPrecondition) << flush_in_callback.ToString();
  EXPECT_EQ(wait_in_callback.code(), StatusCode::kFailedPrecondition) << wait_in_callback.ToString();
  // The publisher still works after the exception.
  Result<Delivery> after = pub->PublishAndWait("t", "k", "v", milliseconds(10000));
  EXPECT_TRUE(after.ok()) << after.status().ToString();
}

}  // namespace
}  // namespace tiercache::kafka
