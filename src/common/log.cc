#include "tiercache/log.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

namespace tiercache {
namespace {

struct Hook {
  std::mutex mu;
  std::shared_ptr<const LogSink> sink;  // GUARDED_BY(mu); null: stderr
  std::atomic<int> min_level{static_cast<int>(LogLevel::kInfo)};
};

Hook& TheHook() {
  static Hook* hook = new Hook();  // never destroyed: usable during exit
  return *hook;
}

}  // namespace

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARNING";
    case LogLevel::kError: return "ERROR";
  }
  return "UNKNOWN";
}

void SetLogSink(LogSink sink) {
  std::shared_ptr<const LogSink> next = sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
  Hook& h = TheHook();
  std::lock_guard<std::mutex> lock(h.mu);
  h.sink.swap(next);
}  // the old sink is released here, outside the lock

void SetLogLevel(LogLevel level) { TheHook().min_level.store(static_cast<int>(level), std::memory_order_relaxed); }

void Log(LogLevel level, std::string_view message) {
  Hook& h = TheHook();
  if (static_cast<int>(level) < h.min_level.load(std::memory_order_relaxed)) return;
  std::shared_ptr<const LogSink> sink;
  {
    std::lock_guard<std::mutex> lock(h.mu);
    sink = h.sink;
  }
  if (sink == nullptr) {
    const std::string line = "tiercache " + std::string(LogLevelName(level)) + ": " + std::string(message) + "\n";
    std::fwrite(line.data(), 1, line.size(), stderr);  // one write: lines of threads do not interleave
    return;
  }
  try {
    (*sink)(level, message);
  } catch (...) {
    // A sink's failure is not tiercache's to report, and must not unwind
    // through the threads that log.
  }
}

}  // namespace tiercache
