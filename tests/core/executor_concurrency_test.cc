#include "core/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

namespace tiercache {
namespace {

TEST(ExecutorTest, RunsEveryTaskOnce) {
  std::atomic<int> ran{0};
  {
    BoundedExecutor ex(3, 10000);
    for (int i = 0; i < 5000; ++i) {
      ASSERT_TRUE(ex.Submit([&](bool cancelled) { if (!cancelled) ran.fetch_add(1); }).ok());
    }
    while (ex.queued() > 0) std::this_thread::yield();
  }
  EXPECT_EQ(ran.load(), 5000);
}

TEST(ExecutorTest, FullQueueIsAnErrorNotABlock) {
  BoundedExecutor ex(1, 2);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<bool> started{false};
  ASSERT_TRUE(ex.Submit([&, gate](bool) { started = true; gate.wait(); }).ok());
  while (!started) std::this_thread::yield();
  ASSERT_TRUE(ex.Submit([](bool) {}).ok());
  ASSERT_TRUE(ex.Submit([](bool) {}).ok());
  Status s = ex.Submit([](bool) {});
  EXPECT_TRUE(s.IsResourceExhausted()) << s.ToString();
  release.set_value();
}

TEST(ExecutorTest, ShutdownCancelsQueuedTasksAndRefusesNewOnes) {
  BoundedExecutor ex(1, 10);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<bool> started{false};
  std::atomic<int> cancelled{0}, ran{0};
  ASSERT_TRUE(ex.Submit([&, gate](bool) { started = true; gate.wait(); }).ok());
  while (!started) std::this_thread::yield();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(ex.Submit([&](bool c) { (c ? cancelled : ran).fetch_add(1); }).ok());
  }
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release.set_value();
  });
  ex.Shutdown();
  releaser.join();
  EXPECT_EQ(cancelled.load() + ran.load(), 3);
  EXPECT_TRUE(ex.Submit([](bool) {}).IsCancelled());
}

}  // namespace
}  // namespace tiercache
