// The logging hook: the default writes to stderr, a sink replaces it, the
// level filters, and a throwing sink does not unwind into the caller.
#include "tiercache/log.h"

#include <gtest/gtest.h>

#include <stdexcept>
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

}  // namespace
}  // namespace tiercache
