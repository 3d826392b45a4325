// The logging hook: the default writes to stderr, a sink replaces it, the
// level filters, a throwing sink does not unwind into the caller, messages
// are sanitized, and SetLogSink's wait holds with many threads logging and
// several replacing the sink (a `concurrency` test: also run under ASan and
// TSan).
#include "tiercache/log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <string>
#include <vector>

namespace tiercache {
namespace {

TEST(LogTest, DefaultsToOneStderrLinePerMessage) {
  SetLogSink(nullptr);
  SetLogLevel(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  Log(LogLevel::kWarning, "breaker opened");
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "tiercache WARNING: breaker opened\n");
}

TEST(LogTest, ASinkReplacesStderrAndTheLevelFilters) {
  std::vector<std::string> got;
  SetLogSink([&](LogLevel level, std::string_view m) { got.push_back(std::string(LogLevelName(level)) + " " + std::string(m)); });
  SetLogLevel(LogLevel::kWarning);
  ::testing::internal::CaptureStderr();
  Log(LogLevel::kInfo, "dropped");
  Log(LogLevel::kError, "kept");
  const std::string err = ::testing::internal::GetCapturedStderr();
  SetLogSink(nullptr);
  SetLogLevel(LogLevel::kInfo);
  EXPECT_EQ(err, "") << "a sink replaces stderr";
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "ERROR kept");
}

TEST(LogTest, AThrowingSinkIsSwallowed) {
  SetLogSink([](LogLevel, std::string_view) { throw std::runtime_error("the sink failed"); });
  EXPECT_NO_THROW(Log(LogLevel::kError, "anything"));
  SetLogSink(nullptr);
}

// What a sink uses may be released once SetLogSink returns: it waits for a
// call of the old sink in progress (here one held inside the sink).
TEST(LogTest, SetLogSinkWaitsForACallOfTheOldSinkInProgress) {
  std::mutex mu;
  std::condition_variable cv;
  bool inside = false, release = false;
  SetLogSink([&](LogLevel, std::string_view) {
    std::unique_lock<std::mutex> lock(mu);
    inside = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  });
  std::thread logger([] { Log(LogLevel::kInfo, "held"); });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return inside; });
  }
  std::atomic<bool> replaced{false};
  std::thread replacer([&] {
    SetLogSink(nullptr);
    replaced = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const bool early = replaced.load();
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  logger.join();
  replacer.join();
  EXPECT_FALSE(early) << "SetLogSink returned while the old sink was still running";
  EXPECT_TRUE(replaced.load());
}

// glibc's shared_mutex lets readers in while a writer waits: with the sink
// called under a shared lock, four threads logging through a slow sink kept
// SetLogSink waiting for seconds (forever, in the review's run). Calls that
// start after the swap use the new sink, so only the calls in progress count.
TEST(LogTest, SetLogSinkIsNotHeldUpByAStreamOfLogCalls) {
  SetLogSink([](LogLevel, std::string_view) { std::this_thread::sleep_for(std::chrono::microseconds(500)); });
  std::atomic<bool> stop{false};
  std::vector<std::thread> loggers;
  for (int i = 0; i < 4; ++i) {
    loggers.emplace_back([&] {
      while (!stop.load()) Log(LogLevel::kInfo, "busy");
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto start = std::chrono::steady_clock::now();
  std::atomic<int> new_calls{0};
  SetLogSink([&](LogLevel, std::string_view) { new_calls.fetch_add(1); });
  const auto took = std::chrono::steady_clock::now() - start;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stop = true;
  for (auto& t : loggers) t.join();
  SetLogSink(nullptr);
  EXPECT_LT(took, std::chrono::seconds(1));
  EXPECT_GT(new_calls.load(), 0) << "the loggers moved to the new sink";
}

// A sink that logs (or whose code calls something that logs) does not recurse
// into itself or deadlock: its line goes to stderr. A sink that replaces the
// sink does not wait for itself.
TEST(LogTest, ASinkThatLogsOrReplacesTheSinkNeitherRecursesNorDeadlocks) {
  std::atomic<int> calls{0};
  SetLogSink([&](LogLevel, std::string_view m) {
    calls.fetch_add(1);
    Log(LogLevel::kError, std::string("inner ") + std::string(m));
  });
  ::testing::internal::CaptureStderr();
  Log(LogLevel::kWarning, "outer");
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(err, "tiercache ERROR: inner outer\n");

  SetLogSink([&](LogLevel, std::string_view) { SetLogSink(nullptr); });
  Log(LogLevel::kInfo, "replace yourself");  // returns: the test would hang otherwise
  ::testing::internal::CaptureStderr();
  Log(LogLevel::kInfo, "back to stderr");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "tiercache INFO: back to stderr\n");
}

// Keys and reasons taken from events reach log lines: they can neither forge
// a second line nor make one without end.
TEST(LogTest, MessagesAreEscapedAndCut) {
  std::vector<std::string> got;
  SetLogSink([&](LogLevel, std::string_view m) { got.emplace_back(m); });
  Log(LogLevel::kWarning, "key two\ntiercache ERROR: forged\\ \x01");
  Log(LogLevel::kWarning, std::string(5000, 'k'));
  SetLogSink(nullptr);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], "key two\\x0atiercache ERROR: forged\\x5c \\x01");
  EXPECT_EQ(got[1], std::string(kMaxLogMessage, 'k') + "... (5000 bytes)");
  EXPECT_EQ(SanitizeLogMessage("plain"), "plain");
}

TEST(LogTest, SanitizingKeepsUtf8WholeAndValid) {
  std::string accented = "a";
  for (int i = 0; i < 600; ++i) accented += "\xc3\xa9";  // é
  const std::string cut = SanitizeLogMessage(accented);
  const size_t note = cut.find("... (1201 bytes)");
  ASSERT_NE(note, std::string::npos) << cut.substr(cut.size() - 40);
  EXPECT_LE(note, kMaxLogMessage);
  EXPECT_EQ(note % 2, 1u) << "cut inside a character";  // "a" + whole 2-byte characters
  EXPECT_EQ(SanitizeLogMessage("ok \xf0\x9f\x99\x82 \xff \xc3 \xed\xa0\x80"),
            "ok \xf0\x9f\x99\x82 \\xff \\xc3 \\xed\\xa0\\x80")
      << "a valid 4-byte character kept; a stray byte, a truncated sequence and a surrogate escaped";
}

// Two SetLogSink at once: A installs X, B replaces X with Y while a call of X
// is in progress, then A removes the sink to free what X uses. A must wait
// for X's call too, not only for Y's.
TEST(LogTest, EachSetLogSinkWaitsForEverySinkReplacedSoFar) {
  std::mutex mu;
  std::condition_variable cv;
  bool inside = false, release = false;
  SetLogSink([&](LogLevel, std::string_view) {  // X
    std::unique_lock<std::mutex> lock(mu);
    inside = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  });
  std::thread logger([] { Log(LogLevel::kInfo, "held in X"); });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return inside; });
  }
  std::atomic<bool> b_done{false}, a_done{false};
  std::thread b([&] {
    SetLogSink([](LogLevel, std::string_view) {});  // Y
    b_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::thread a([&] {
    SetLogSink(nullptr);
    a_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const bool a_early = a_done.load(), b_early = b_done.load();
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  logger.join();
  a.join();
  b.join();
  EXPECT_FALSE(b_early);
  EXPECT_FALSE(a_early) << "SetLogSink returned while a sink it follows was still running";
}

// The old sink is destroyed before SetLogSink returns, not later on the
// thread whose call was in progress. (A race of a few instructions when
// broken: this check catches it only now and then; 50 rounds a run.)
TEST(LogTest, TheOldSinkIsDestroyedBeforeSetLogSinkReturns) {
  struct Canary {  // constructed in place: a temporary's destructor would set the flag at once
    explicit Canary(std::atomic<bool>* d) : destroyed(d) {}
    Canary(const Canary&) = delete;
    ~Canary() { destroyed->store(true); }
    std::atomic<bool>* destroyed;
  };
  for (int round = 0; round < 50; ++round) {
    std::atomic<bool> destroyed{false}, inside{false}, release{false};
    auto canary = std::make_shared<Canary>(&destroyed);
    SetLogSink([canary, &inside, &release](LogLevel, std::string_view) {
      inside = true;
      while (!release.load()) std::this_thread::yield();
    });
    canary.reset();
    std::thread logger([] { Log(LogLevel::kInfo, "in progress"); });
    while (!inside.load()) std::this_thread::yield();
    std::thread setter([&] {
      SetLogSink(nullptr);
      EXPECT_TRUE(destroyed.load()) << "round " << round;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    release = true;
    logger.join();
    setter.join();
  }
}

TEST(LogTest, C1ControlsAndLineSeparatorsAreEscapedToo) {
  EXPECT_EQ(SanitizeLogMessage("a\xc2\x85" "b\xc2\x9b" "31m\xe2\x80\xa8" "c\xe2\x80\xa9" "d\xc2\xa9"),
            "a\\xc2\\x85b\\xc2\\x9b31m\\xe2\\x80\\xa8c\\xe2\\x80\\xa9d\xc2\xa9")
      << "NEL, CSI, LINE and PARAGRAPH SEPARATOR escaped; the copyright sign kept";
}

// Two SetLogSink at once, each replacing a sink with a call in progress:
// each sink must be destroyed before the SetLogSink that replaced it returns.
// A replaces S0 (a call held in it), a call is held in A's S1, then B
// replaces S1; S0's call ends: A must return with S0 destroyed, though B,
// still waiting for S1's call, once held a copy of S0 that kept it alive.
TEST(LogTest, EachReplacedSinkIsDestroyedBeforeItsReplacerReturns) {
  struct Canary {  // constructed in place: a temporary's destructor would set the flag at once
    explicit Canary(std::atomic<bool>* d) : destroyed(d) {}
    Canary(const Canary&) = delete;
    ~Canary() { destroyed->store(true); }
    std::atomic<bool>* destroyed;
  };
  // The first call into the sink is held until `release`; later ones return
  // at once (a call meant for the next sink that still found this one).
  struct Held {
    std::atomic<bool> inside{false}, release{false};
    std::atomic<int> calls{0};
    void Wait() {
      if (calls.fetch_add(1) != 0) return;
      inside = true;
      while (!release.load()) std::this_thread::yield();
    }
  };
  for (int round = 0; round < 20; ++round) {
    std::atomic<bool> s0_destroyed{false}, s1_destroyed{false}, a_done{false}, b_done{false};
    Held h0, h1;
    auto c0 = std::make_shared<Canary>(&s0_destroyed);
    SetLogSink([c0, &h0](LogLevel, std::string_view) { h0.Wait(); });
    c0.reset();
    std::thread l0([] { Log(LogLevel::kInfo, "held in S0"); });
    while (!h0.inside.load()) std::this_thread::yield();
    std::thread a([&] {
      auto c1 = std::make_shared<Canary>(&s1_destroyed);
      SetLogSink([c1, &h1](LogLevel, std::string_view) { h1.Wait(); });  // S1 replaces S0
      EXPECT_TRUE(s0_destroyed.load()) << "round " << round << ": S0 outlived the SetLogSink that replaced it";
      a_done = true;
    });
    // Logs until a call lands in S1, i.e. once A has swapped (and waits for
    // S0's call): calls that still find S0 return at once. A fixed sleep here
    // hung the test under load, its one call held in S0 for good.
    std::thread l1([&h1] {
      while (!h1.inside.load()) Log(LogLevel::kInfo, "held in S1");
    });
    while (!h1.inside.load()) std::this_thread::yield();
    std::thread b([&] {
      SetLogSink(nullptr);  // replaces S1
      EXPECT_TRUE(s1_destroyed.load()) << "round " << round << ": S1 outlived the SetLogSink that replaced it";
      b_done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // B is in SetLogSink
    h0.release = true;  // S0's call ends: A may return; B still waits for S1's
    while (!a_done.load()) std::this_thread::yield();
    EXPECT_FALSE(b_done.load());
    h1.release = true;
    l0.join();
    l1.join();
    a.join();
    b.join();
  }
}

// A sink that installs a new sink on every call: the replaced ones must not
// pile up (each call left its slot behind: 10,000 calls, 10,000 sinks kept,
// and every call copied them all).
TEST(LogTest, ASinkReplacingItselfOnEveryCallKeepsFewSinksAlive) {
  auto alive = std::make_shared<int>(0);  // one reference per sink alive, plus this one
  std::function<void(LogLevel, std::string_view)> self;
  self = [&self, alive](LogLevel, std::string_view) { SetLogSink(self); };
  SetLogSink(self);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10000; ++i) Log(LogLevel::kInfo, "again");
  const auto took = std::chrono::steady_clock::now() - start;
  const long kept = alive.use_count() - 2;  // `alive` here and in `self`
  SetLogSink(nullptr);
  EXPECT_LE(kept, 3) << "sinks left alive after 10,000 self-replacements";
  EXPECT_LT(took, std::chrono::seconds(2));
}

}  // namespace
}  // namespace tiercache
