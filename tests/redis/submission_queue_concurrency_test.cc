// SubmissionQueue: order, Close, and no lost wake-up between the I/O
// thread's PrepareSleep and a caller's Push (a `concurrency` test: also run
// under ASan and TSan).
#include "redis/submission_queue.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace tiercache::redis::internal {
namespace {

// The queue never dereferences a request: tokens stand in for them.
Request* Token(uintptr_t i) { return reinterpret_cast<Request*>(i); }

TEST(SubmissionQueueTest, TakesEverythingInOrderAndSleepsOnlyWhenEmpty) {
  SubmissionQueue q;
  ASSERT_TRUE(q.Init().ok());
  Request* batch[] = {Token(1), Token(2)};
  ASSERT_TRUE(q.Push(batch, 2));
  Request* third = Token(3);
  ASSERT_TRUE(q.Push(&third, 1));
  EXPECT_FALSE(q.PrepareSleep()) << "three requests are waiting";
  std::vector<Request*> got;
  q.TakeAll(&got);
  EXPECT_EQ(got, (std::vector<Request*>{Token(1), Token(2), Token(3)}));
  EXPECT_TRUE(q.PrepareSleep());
  q.Awake();
}

TEST(SubmissionQueueTest, CloseRefusesPushesAndHandsBackWhatWasQueued) {
  SubmissionQueue q;
  ASSERT_TRUE(q.Init().ok());
  Request* r = Token(7);
  ASSERT_TRUE(q.Push(&r, 1));
  EXPECT_EQ(q.Close(), std::vector<Request*>{Token(7)});
  Request* late = Token(8);
  EXPECT_FALSE(q.Push(&late, 1));
  std::vector<Request*> got;
  q.TakeAll(&got);
  EXPECT_TRUE(got.empty());
}

// A caller pushes one request at a time while the I/O thread loops as the
// engine's does: take, then sleep on the eventfd if PrepareSleep allows. A
// lost wake-up leaves it asleep for the whole poll timeout with a request
// queued; none may happen in 20,000 hand-offs.
TEST(SubmissionQueueTest, APushNeverFindsTheIoThreadAsleepForGood) {
  SubmissionQueue q;
  ASSERT_TRUE(q.Init().ok());
  constexpr uintptr_t kPushes = 20000;
  std::atomic<bool> done{false};
  int lost_wakeups = 0;
  uintptr_t expected = 1;
  bool in_order = true;
  std::thread io([&] {
    std::vector<Request*> got;
    while (expected <= kPushes) {
      got.clear();
      q.TakeAll(&got);
      for (Request* r : got) in_order = in_order && r == Token(expected++);
      if (!got.empty() || !q.PrepareSleep()) continue;
      pollfd p{q.event_fd(), POLLIN, 0};
      const int n = ::poll(&p, 1, 2000);
      q.Awake();
      if (n == 0) {
        ++lost_wakeups;
      } else {
        q.ConsumeWake();
      }
    }
    done = true;
  });
  for (uintptr_t i = 1; i <= kPushes; ++i) {
    Request* r = Token(i);
    ASSERT_TRUE(q.Push(&r, 1));
    if (i % 64 == 0) std::this_thread::yield();  // let the I/O thread fall asleep now and then
  }
  io.join();
  EXPECT_TRUE(done.load());
  EXPECT_TRUE(in_order);
  EXPECT_EQ(lost_wakeups, 0);
}

}  // namespace
}  // namespace tiercache::redis::internal
