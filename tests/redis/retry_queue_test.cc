// RetryQueue: the backoff doubles from min to max, nothing is kept past its
// deadline, and a request comes out when its backoff is over, when its caller
// gave up, when its deadline passed, or when everything is retried at once.
#include "redis/retry_queue.h"

#include <gtest/gtest.h>

#include <memory>

namespace tiercache::redis::internal {
namespace {

using std::chrono::milliseconds;

struct Unref {
  void operator()(Request* r) const { r->Unref(); }
};
using RequestPtr = std::unique_ptr<Request, Unref>;

RequestPtr NewRequest(TimePoint deadline) {
  RequestPtr r(new Request);
  r->deadline = deadline;
  return r;
}

TEST(RetryQueueTest, BackoffDoublesFromMinToMax) {
  RetryQueue q(milliseconds(10), milliseconds(50));
  EXPECT_EQ(q.Backoff(1), milliseconds(10));
  EXPECT_EQ(q.Backoff(2), milliseconds(20));
  EXPECT_EQ(q.Backoff(3), milliseconds(40));
  EXPECT_EQ(q.Backoff(4), milliseconds(50));
  EXPECT_EQ(q.Backoff(60), milliseconds(50)) << "no overflow however many attempts";
}

TEST(RetryQueueTest, ARetryAfterTheDeadlineIsRefused) {
  RetryQueue q(milliseconds(10), milliseconds(50));
  const TimePoint now{};
  RequestPtr r = NewRequest(now + milliseconds(25));
  EXPECT_TRUE(q.Park(r.get(), now));  // retry at +10
  EXPECT_EQ(r->attempts, 1);
  EXPECT_EQ(r->retry_at, now + milliseconds(10));
  ASSERT_EQ(q.TakeDue(now + milliseconds(10), false).size(), 1u);
  EXPECT_FALSE(q.Park(r.get(), now + milliseconds(10))) << "+10 + 20 is past the deadline at +25";
  EXPECT_EQ(r->attempts, 2);
  EXPECT_TRUE(q.empty());
}

TEST(RetryQueueTest, RequestsComeOutWhenDueAbandonedExpiredOrAll) {
  RetryQueue q(milliseconds(10), milliseconds(50));
  const TimePoint now{};
  RequestPtr waiting = NewRequest(now + milliseconds(100));
  RequestPtr abandoned = NewRequest(now + milliseconds(100));
  RequestPtr expiring = NewRequest(now + milliseconds(12));
  ASSERT_TRUE(q.Park(waiting.get(), now));
  ASSERT_TRUE(q.Park(abandoned.get(), now));
  ASSERT_TRUE(q.Park(expiring.get(), now));
  EXPECT_TRUE(q.TakeDue(now + milliseconds(5), false).empty());
  abandoned->state.store(Request::kAbandoned);
  EXPECT_EQ(q.TakeDue(now + milliseconds(5), false), std::vector<Request*>{abandoned.get()});
  // At +10 the two left are due; one of them is also past its deadline at +12.
  EXPECT_EQ(q.TakeDue(now + milliseconds(12), false), (std::vector<Request*>{waiting.get(), expiring.get()}));
  ASSERT_TRUE(q.Park(waiting.get(), now + milliseconds(12)));  // second retry: +20
  EXPECT_EQ(q.TakeDue(now + milliseconds(13), /*all=*/true), std::vector<Request*>{waiting.get()});
  EXPECT_TRUE(q.empty());
}

}  // namespace
}  // namespace tiercache::redis::internal
