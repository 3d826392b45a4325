// The logging hook: the default writes to stderr, a sink replaces it, the
// level filters, and a throwing sink does not unwind into the caller.
#include "tiercache/log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
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

}  // namespace
}  // namespace tiercache
