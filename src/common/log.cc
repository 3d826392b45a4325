#include "tiercache/log.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <utility>

namespace tiercache {
namespace {

// A sink and the number of its calls in progress. Log() takes a reference
// to the current one under `mu` (briefly) and calls it outside; SetLogSink()
// swaps the pointer under `mu`, so no call can start on the old one after
// that, then waits for the calls of every slot retired so far to drain (two
// SetLogSink at once: each waits for what the other retired too).
struct SinkSlot {
  explicit SinkSlot(LogSink s) : sink(std::move(s)) {}
  const LogSink sink;
  std::atomic<int> calls{0};
};

struct Hook {
  std::mutex mu;
  std::shared_ptr<SinkSlot> slot;                  // GUARDED_BY(mu); null: stderr
  std::vector<std::shared_ptr<SinkSlot>> retired;  // GUARDED_BY(mu); replaced, calls maybe in progress
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

namespace {

// The length of the well-formed UTF-8 sequence at the start of `s`, or 0.
size_t Utf8SequenceAt(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // the second byte's range
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;  // no overlong forms
    if (c == 0xed) hi = 0x9f;  // no surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;  // <= U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < n || b(1) < lo || b(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (b(i) < 0x80 || b(i) > 0xbf) return 0;
  }
  return n;
}

// A well-formed character that still moves a terminal or splits a line: the
// C1 controls U+0080..U+009F (NEL, CSI...) and U+2028 / U+2029.
bool IsControlSequence(std::string_view ch) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(ch[i]); };
  if (ch.size() == 2) return b(0) == 0xc2 && b(1) <= 0x9f;
  return ch.size() == 3 && b(0) == 0xe2 && b(1) == 0x80 && (b(2) == 0xa8 || b(2) == 0xa9);
}

void AppendEscaped(std::string& out, unsigned char c) {
  static const char kHex[] = "0123456789abcdef";
  out += "\\x";
  out += kHex[c >> 4];
  out += kHex[c & 15];
}

}  // namespace

std::string SanitizeLogMessage(std::string_view message) {
  std::string out;
  out.reserve(std::min(message.size(), kMaxLogMessage) + 32);
  size_t i = 0;
  while (i < message.size()) {
    const auto c = static_cast<unsigned char>(message[i]);
    const size_t n = c < 0x80 ? 1 : Utf8SequenceAt(message.substr(i));
    const bool escape = n == 0 || c < 0x20 || c == 0x7f || c == '\\';
    const size_t width = escape ? 4 : IsControlSequence(message.substr(i, n)) ? 4 * n : n;  // its bytes in `out`
    if (out.size() + width > kMaxLogMessage) break;  // cut between characters, never inside one
    if (escape) {
      AppendEscaped(out, c);  // a control character, '\\', or a byte that is not well-formed UTF-8
      ++i;
    } else if (width != n) {
      for (size_t k = 0; k < n; ++k) AppendEscaped(out, static_cast<unsigned char>(message[i + k]));
      i += n;
    } else {
      out.append(message.substr(i, n));
      i += n;
    }
  }
  if (i < message.size()) out += "... (" + std::to_string(message.size()) + " bytes)";
  return out;
}

namespace {

// Setters one at a time (but for a sink replacing the sink): each waits for
// the calls of what was replaced and destroys it before returning, and no
// other setter holds a reference to it meanwhile.
std::mutex& SetterMutex() {
  static auto* mu = new std::mutex();  // never destroyed: usable during exit
  return *mu;
}

// Removes the retired slots no call uses any more. The caller destroys them
// once `h.mu` is released (a sink's destructor is the user's code).
std::vector<std::shared_ptr<SinkSlot>> TakeIdleRetired(Hook& h) {  // REQUIRES: h.mu held
  std::vector<std::shared_ptr<SinkSlot>> idle;
  for (auto it = h.retired.begin(); it != h.retired.end();) {
    if ((*it)->calls.load(std::memory_order_acquire) == 0) {
      idle.push_back(std::move(*it));
      it = h.retired.erase(it);
    } else {
      ++it;
    }
  }
  return idle;
}

void WaitForCalls(const SinkSlot& slot) {
  // Only calls that had already started remain: their number only falls.
  for (int spins = 0; slot.calls.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a sink held up: do not burn a core
    }
  }
}

}  // namespace

void SetLogSink(LogSink sink) {
  Hook& h = TheHook();
  std::shared_ptr<SinkSlot> fresh = sink ? std::make_shared<SinkSlot>(std::move(sink)) : nullptr;
  std::vector<std::shared_ptr<SinkSlot>> idle;
  if (t_in_sink > 0) {
    // A sink replacing the sink cannot wait for itself: its slot is retired
    // with its call in progress, and destroyed by a later SetLogSink. What is
    // idle already goes now, so a sink that replaces itself on every call
    // does not pile up slots.
    std::lock_guard<std::mutex> lock(h.mu);
    if (std::shared_ptr<SinkSlot> old = std::exchange(h.slot, std::move(fresh))) h.retired.push_back(std::move(old));
    idle = TakeIdleRetired(h);
  } else {
    std::lock_guard<std::mutex> one_setter(SetterMutex());
    std::vector<std::shared_ptr<SinkSlot>> waited_for;
    {
      std::lock_guard<std::mutex> lock(h.mu);
      if (std::shared_ptr<SinkSlot> old = std::exchange(h.slot, std::move(fresh))) h.retired.push_back(std::move(old));
      waited_for = h.retired;
    }
    for (const std::shared_ptr<SinkSlot>& slot : waited_for) WaitForCalls(*slot);
    waited_for.clear();
    std::lock_guard<std::mutex> lock(h.mu);
    idle = TakeIdleRetired(h);
  }
  // `idle` holds the last references (Log drops its own before its call
  // stops counting): the old sinks are destroyed here, outside the locks,
  // before this returns.
}

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
  // Drop this call's reference before it stops counting: once `calls` is 0,
  // SetLogSink holds the last references and destroys the sink itself.
  SinkSlot* const raw = slot.get();
  slot.reset();
  raw->calls.fetch_sub(1, std::memory_order_release);
}

}  // namespace tiercache
