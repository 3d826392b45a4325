#include "core/executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

namespace tiercache {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Polls `done` every millisecond until it holds or `timeout` passes.
template <typename Pred>
bool WaitUntil(Pred done, milliseconds timeout) {
  const auto deadline = steady_clock::now() + timeout;
  while (!done()) {
    if (steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

// What hung tasks wait on. Declare it after the executor: its destructor
// opens it, so a failed assertion cannot leave Shutdown() waiting forever.
class Release {
 public:
  Release() : gate_(promise_.get_future().share()) {}
  ~Release() { Open(); }
  std::shared_future<void> gate() const { return gate_; }  // tasks copy it
  void Open() { std::call_once(opened_, [this] { promise_.set_value(); }); }

 private:
  std::promise<void> promise_;
  std::shared_future<void> gate_;
  std::once_flag opened_;
};

// Threads of this process (Linux), or -1 where /proc is missing.
int ProcessThreads() {
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/self/task", ec);
  if (ec) return -1;
  return static_cast<int>(std::distance(it, std::filesystem::directory_iterator()));
}

// ProcessThreads() once it holds still: a thread joined by an earlier test can
// linger in /proc for a moment. One thread is started and joined first, so a
// runtime that starts a helper thread of its own at the first pthread_create
// (ThreadSanitizer does) has it running before the count, not after.
int SettledProcessThreads() {
  std::thread([] {}).join();
  int n = ProcessThreads();
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
    const int m = ProcessThreads();
    if (m == n) break;
    n = m;
  }
  return n;
}

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

TEST(ExecutorTest, OverdueTasksAreReplacedSoQueuedTasksRun) {
  std::atomic<int> hung_started{0}, quick_done{0};
  ExecutorOptions options;
  options.threads = 2;
  options.queue_capacity = 100;
  options.overdue_after = milliseconds(50);
  options.max_overdue = 3;
  BoundedExecutor ex(options);
  Release release;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(ex.Submit([&, gate = release.gate()](bool) { ++hung_started; gate.wait(); }).ok());
  }
  ASSERT_TRUE(WaitUntil([&] { return hung_started == 2; }, milliseconds(1000)));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(ex.Submit([&](bool c) { if (!c) ++quick_done; }).ok());

  // Both hung workers are replaced (within ~overdue_after) and the
  // replacements run the queue.
  EXPECT_TRUE(WaitUntil([&] { return quick_done == 10 && ex.overdue() == 2; }, milliseconds(1000)))
      << "quick tasks done: " << quick_done << ", overdue: " << ex.overdue();
  EXPECT_EQ(ex.overdue(), 2u);
  EXPECT_LE(ex.threads_alive(), 5u);
  EXPECT_GE(ex.threads_alive(), 4u);  // 2 hung + 2 replacements

  // The hung tasks return; their threads exit and are joined: back to 2.
  release.Open();
  EXPECT_TRUE(WaitUntil([&] { return ex.threads_alive() == 2 && ex.overdue() == 0; }, milliseconds(2000)))
      << "threads alive: " << ex.threads_alive() << ", overdue: " << ex.overdue();
  // And the shrunk pool still works.
  ASSERT_TRUE(ex.Submit([&](bool c) { if (!c) ++quick_done; }).ok());
  EXPECT_TRUE(WaitUntil([&] { return quick_done == 11; }, milliseconds(1000)));
}

TEST(ExecutorTest, AtMostMaxOverdueReplacementThreads) {
  std::atomic<int> hung_started{0}, hung_done{0};
  std::atomic<bool> quick_ran{false};
  std::atomic<std::size_t> max_alive{0};
  ExecutorOptions options;
  options.threads = 1;
  options.queue_capacity = 100;
  options.overdue_after = milliseconds(20);
  options.max_overdue = 2;
  BoundedExecutor ex(options);
  Release release;
  // Declared after `ex` and `release`: stopped and joined first on any exit.
  std::jthread sampler([&](std::stop_token stop) {
    while (!stop.stop_requested()) {
      std::size_t alive = ex.threads_alive();
      if (alive > max_alive) max_alive = alive;  // only this thread writes
      std::this_thread::sleep_for(milliseconds(1));
    }
  });
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(ex.Submit([&, gate = release.gate()](bool) {
                    ++hung_started;
                    gate.wait();
                    ++hung_done;
                  }).ok());
  }
  ASSERT_TRUE(ex.Submit([&](bool c) { if (!c) quick_ran = true; }).ok());

  // 1 worker + 2 replacements take 3 hung tasks; then the bound stops it.
  ASSERT_TRUE(WaitUntil([&] { return hung_started == 3 && ex.overdue() == 2; }, milliseconds(1000)))
      << "hung started: " << hung_started << ", overdue: " << ex.overdue();
  std::this_thread::sleep_for(milliseconds(300));  // ~15 monitor periods
  EXPECT_EQ(hung_started.load(), 3);
  EXPECT_FALSE(quick_ran.load()) << "ran past the bound of threads + max_overdue";
  EXPECT_EQ(ex.queued(), 3u);
  EXPECT_EQ(ex.overdue(), 2u);
  EXPECT_EQ(ex.threads_alive(), 3u);

  release.Open();
  EXPECT_TRUE(WaitUntil([&] { return hung_done == 5 && quick_ran; }, milliseconds(2000)));
  EXPECT_TRUE(WaitUntil([&] { return ex.threads_alive() == 1 && ex.overdue() == 0; }, milliseconds(2000)))
      << "threads alive: " << ex.threads_alive();
  sampler.request_stop();
  sampler.join();
  EXPECT_LE(max_alive.load(), 3u);
}

TEST(ExecutorTest, WithoutOverdueAfterAHungTaskHoldsItsThread) {
  std::atomic<bool> started{false}, quick_ran{false};
  ExecutorOptions options;  // overdue_after 0: no monitor, no replacement
  options.threads = 1;
  options.max_overdue = 3;
  BoundedExecutor ex(options);
  Release release;
  ASSERT_TRUE(ex.Submit([&, gate = release.gate()](bool) { started = true; gate.wait(); }).ok());
  ASSERT_TRUE(WaitUntil([&] { return started.load(); }, milliseconds(1000)));
  ASSERT_TRUE(ex.Submit([&](bool c) { if (!c) quick_ran = true; }).ok());
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_FALSE(quick_ran.load());
  EXPECT_EQ(ex.overdue(), 0u);
  EXPECT_EQ(ex.threads_alive(), 1u);
  release.Open();
  EXPECT_TRUE(WaitUntil([&] { return quick_ran.load(); }, milliseconds(2000)));
  EXPECT_EQ(ex.threads_alive(), 1u);
}

TEST(ExecutorTest, ShutdownWaitsForOverdueTaskAndJoinsEveryThread) {
  const int threads_before = SettledProcessThreads();
  std::atomic<bool> hung_started{false}, hung_done{false}, slow_done{false};
  {
    ExecutorOptions options;
    options.threads = 1;
    options.queue_capacity = 10;
    options.overdue_after = milliseconds(30);
    options.max_overdue = 1;
    BoundedExecutor ex(options);
    Release release;
    ASSERT_TRUE(ex.Submit([&, gate = release.gate()](bool) {
                    hung_started = true;
                    gate.wait();
                    hung_done = true;
                  }).ok());
    ASSERT_TRUE(WaitUntil([&] { return hung_started.load(); }, milliseconds(1000)));
    // The replacement runs a task of its own while Shutdown() starts.
    ASSERT_TRUE(ex.Submit([&](bool c) {
                    if (c) return;
                    std::this_thread::sleep_for(milliseconds(150));
                    slow_done = true;
                  }).ok());
    ASSERT_TRUE(WaitUntil([&] { return ex.overdue() == 1 && ex.threads_alive() == 2 && ex.queued() == 0; },
                          milliseconds(1000)));

    std::thread releaser([&] {
      std::this_thread::sleep_for(milliseconds(100));
      release.Open();
    });
    const auto start = steady_clock::now();
    ex.Shutdown();
    const auto took = steady_clock::now() - start;
    releaser.join();
    EXPECT_TRUE(hung_done.load()) << "Shutdown returned while the overdue task still ran";
    EXPECT_TRUE(slow_done.load());
    EXPECT_GE(took, milliseconds(80));
    EXPECT_EQ(ex.threads_alive(), 0u);
    EXPECT_EQ(ex.overdue(), 0u);
    EXPECT_TRUE(ex.Submit([](bool) {}).IsCancelled());
  }
  if (threads_before >= 0) {
    // A joined thread can linger in /proc for a moment; it must then go.
    EXPECT_TRUE(WaitUntil([&] { return ProcessThreads() <= threads_before; }, milliseconds(1000)))
        << "threads before: " << threads_before << ", after: " << ProcessThreads();
  }
}

}  // namespace
}  // namespace tiercache
