// Log: one small hook for what an operator must know (a circuit breaker
// opening or closing, the Redis topology changing, an event dead-lettered,
// this pod's L1 fenced or trusted again). Never called on a hot path: at
// most a few lines per state change.
//
// By default each line goes to stderr as "tiercache <LEVEL>: <message>".
// SetLogSink replaces that for the whole process (e.g. to feed the service's
// own logger); SetLogLevel drops lines below a level.
//
// Thread-safety: every function may be called from any thread at any time.
// A sink is called from tiercache's threads (the caller's, the Redis I/O
// thread, the Kafka consumers'), possibly several at once: it must be
// thread-safe, return quickly, and not call Log or SetLogSink itself. An
// exception it throws is swallowed.
#ifndef TIERCACHE_LOG_H_
#define TIERCACHE_LOG_H_

#include <cstdint>
#include <functional>
#include <string_view>

namespace tiercache {

enum class LogLevel : uint8_t { kInfo = 0, kWarning = 1, kError = 2 };
std::string_view LogLevelName(LogLevel level);  // "INFO", "WARNING", "ERROR"

using LogSink = std::function<void(LogLevel level, std::string_view message)>;

// Replaces the process-wide sink; an empty one restores the default (stderr).
// Blocks until calls of the old sink in progress have returned, so what the
// old sink uses may be released once this returns.
void SetLogSink(LogSink sink);
// Lines below `level` are dropped (default: kInfo, everything).
void SetLogLevel(LogLevel level);

// Writes one line (tiercache's components call this).
void Log(LogLevel level, std::string_view message);

}  // namespace tiercache

#endif  // TIERCACHE_LOG_H_
