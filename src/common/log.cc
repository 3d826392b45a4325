#include "tiercache/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <shared_mutex>
#include <string>

namespace tiercache {
namespace {

// Log() holds mu shared while it calls the sink; SetLogSink() holds it
// exclusively to swap, so it returns only once no call of the old sink is in
// progress.
struct Hook {
  std::shared_mutex mu;
  LogSink sink;  // GUARDED_BY(mu); empty: stderr
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
  Hook& h = TheHook();
  {
    std::unique_lock<std::shared_mutex> lock(h.mu);
    h.sink.swap(sink);
  }
}  // the old sink is destroyed here, outside the lock

void SetLogLevel(LogLevel level) { TheHook().min_level.store(static_cast<int>(level), std::memory_order_relaxed); }

void Log(LogLevel level, std::string_view message) {
  Hook& h = TheHook();
  if (static_cast<int>(level) < h.min_level.load(std::memory_order_relaxed)) return;
  std::shared_lock<std::shared_mutex> lock(h.mu);
  if (!h.sink) {
    const std::string line = "tiercache " + std::string(LogLevelName(level)) + ": " + std::string(message) + "\n";
    std::fwrite(line.data(), 1, line.size(), stderr);  // one write: lines of threads do not interleave
    return;
  }
  try {
    h.sink(level, message);
  } catch (...) {
    // A sink's failure is not tiercache's to report, and must not unwind
    // through the threads that log.
  }
}

}  // namespace tiercache
