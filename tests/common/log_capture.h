// Captures tiercache's log lines (tiercache/log.h) for the lifetime of the
// object, so a test can check that an operator was told.
#ifndef TIERCACHE_TESTS_COMMON_LOG_CAPTURE_H_
#define TIERCACHE_TESTS_COMMON_LOG_CAPTURE_H_

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tiercache/log.h"

namespace tiercache::testing {

class LogCapture {
 public:
  LogCapture() {
    SetLogSink([this](LogLevel level, std::string_view m) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.push_back(std::string(LogLevelName(level)) + " " + std::string(m));
    });
  }
  ~LogCapture() { SetLogSink(nullptr); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // Lines containing `part`.
  int Count(std::string_view part) const {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const std::string& l : lines_) n += l.find(part) != std::string::npos ? 1 : 0;
    return n;
  }
  std::string All() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string all;
    for (const std::string& l : lines_) all += l + "\n";
    return all;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_COMMON_LOG_CAPTURE_H_
