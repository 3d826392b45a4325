// The engine's lock rules are checked where DCHECKs are on (the sanitizer
// builds, Debug): a call of an "I/O thread only" method from another thread,
// and a broken REQUIRES, abort with their place. (A `concurrency` test: it
// runs in the ASan and TSan builds, where the checks are compiled in.)
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "common/dcheck.h"
#include "redis/engine.h"
#include "redis/retry_queue.h"

namespace tiercache::redis::internal {
namespace {

#if TIERCACHE_DCHECK_IS_ON

RedisClientOptions Standalone() {
  RedisClientOptions o;
  o.mode = Mode::kStandalone;
  o.seeds = {{"127.0.0.1", 1}};  // never connected: nothing is sent in these tests
  return o;
}

TEST(EngineChecksDeathTest, AnIoThreadOnlyCallFromAnotherThreadAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Engine engine(Standalone());
        if (!engine.Start().ok()) std::abort();
        // At once: Start() records the I/O thread before it returns.
        engine.SetTopology({Endpoint{"127.0.0.1", 2}});  // this thread is not the I/O thread
      },
      "internal check failed at .*engine.cc.*AssertIoThread|internal check failed at .*engine.h");
}

TEST(EngineChecksDeathTest, TheSameCallOnTheIoThreadPasses) {
  Engine engine(Standalone());
  ASSERT_TRUE(engine.Start().ok());
  EXPECT_TRUE(engine.RunOnIoThread([&] { engine.SetTopology({Endpoint{"127.0.0.1", 2}}); },
                                   std::chrono::milliseconds(5000))
                  .ok());
}

// A sync call from the I/O thread (say, inside an async callback) would wait
// for itself until its deadline: it aborts where the checks are on.
TEST(EngineChecksDeathTest, ASyncCallOnTheIoThreadAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Engine engine(Standalone());
        if (!engine.Start().ok()) std::abort();
        (void)engine.RunOnIoThread([&] { (void)engine.Call(SyncRequest(new Request)); },
                                   std::chrono::milliseconds(5000));
      },
      "internal check failed.*OnIoThread");
}

TEST(EngineChecksDeathTest, BrokenRequiresAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        SyncRequest r(new Request);
        r.MarkSubmitted();
        r.ForEngine();  // submitted twice
      },
      "internal check failed.*!submitted_");
  EXPECT_DEATH({ RetryQueue q(std::chrono::milliseconds(10), std::chrono::milliseconds(1)); },
               "internal check failed.*min_ <= max_");
}

#else

TEST(EngineChecksDeathTest, ChecksAreCompiledOutInThisBuild) {
  GTEST_SKIP() << "DCHECKs are off here (NDEBUG, no TIERCACHE_DCHECKS): the sanitizer builds run these tests";
}

#endif

}  // namespace
}  // namespace tiercache::redis::internal
