#include "tiercache/log.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace tiercache {
namespace {

// A sink and the number of its calls in progress. Log() takes a reference
// to the current one under `mu` (briefly) and calls it outside; SetLogSink()
// swaps the pointer under `mu`, so no call can start on the old one after
// that, then waits for `calls` of the old one to drain.
struct SinkSlot {
  explicit SinkSlot(LogSink s) : sink(std::move(s)) {}
  const LogSink sink;
  std::atomic<int> calls{0};
};

struct Hook {
  std::mutex mu;
  std::shared_ptr<SinkSlot> slot;  // GUARDED_BY(mu); null: stderr
  std::atomic<int> min_level{static_cast<int>(LogLevel::kInfo)};
};

Hook& TheHook() {
  static Hook* hook = new Hook();  // never destroyed: usable during exit
  return *hook;
}

// Depth of sink calls on this thread: a Log from inside a sink goes to
// stderr, and SetLogSink from inside one cannot wait for itself.
thread_local int t_in_sink = 0;

void WriteStderr(LogLevel level, std::string_view message) {
  const std::string line = "tiercache " + std::string(LogLevelName(level)) + ": " + std::string(message) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);  // one write: lines of threads do not interleave
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

std::string SanitizeLogMessage(std::string_view message) {
  std::string out;
  out.reserve(std::min(message.size(), kMaxLogMessage) + 16);
  size_t i = 0;
  for (; i < message.size() && out.size() < kMaxLogMessage; ++i) {
    const auto c = static_cast<unsigned char>(message[i]);
    if (c < 0x20 || c == 0x7f || c == '\\') {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (i < message.size()) out += "... (" + std::to_string(message.size()) + " bytes)";
  return out;
}

void SetLogSink(LogSink sink) {
  Hook& h = TheHook();
  std::shared_ptr<SinkSlot> old;
  {
    std::lock_guard<std::mutex> lock(h.mu);
    old = std::exchange(h.slot, sink ? std::make_shared<SinkSlot>(std::move(sink)) : nullptr);
  }
  if (!old || t_in_sink > 0) return;
  // Only calls that had already started remain: their number only falls.
  for (int spins = 0; old->calls.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a sink held up: do not burn a core
    }
  }
}  // the old sink is destroyed here (or by the last call still holding it)

void SetLogLevel(LogLevel level) { TheHook().min_level.store(static_cast<int>(level), std::memory_order_relaxed); }

void Log(LogLevel level, std::string_view message) {
  Hook& h = TheHook();
  if (static_cast<int>(level) < h.min_level.load(std::memory_order_relaxed)) return;
  const std::string clean = SanitizeLogMessage(message);
  std::shared_ptr<SinkSlot> slot;
  if (t_in_sink == 0) {
    std::lock_guard<std::mutex> lock(h.mu);
    slot = h.slot;
    if (slot) slot->calls.fetch_add(1, std::memory_order_relaxed);
  }
  if (!slot) {
    WriteStderr(level, clean);
    return;
  }
  ++t_in_sink;
  try {
    slot->sink(level, clean);
  } catch (...) {
    // A sink's failure is not tiercache's to report, and must not unwind
    // through the threads that log.
  }
  --t_in_sink;
  slot->calls.fetch_sub(1, std::memory_order_release);
}

}  // namespace tiercache
