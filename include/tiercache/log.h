// Log: one small hook for what an operator must know (a circuit breaker
// opening or closing, the Redis topology changing, an event dead-lettered,
// this pod's L1 fenced or trusted again). Never called on a hot path: at
// most a few lines per state change, and the lines that a failure could
// repeat (breaker, dead letters, topology) are rate-limited where they are
// written, with a count of the lines left out.
//
// By default each line goes to stderr as "tiercache <LEVEL>: <message>", in
// one write; if stderr blocks (a full pipe), the thread that logs blocks with
// it: a service that cannot promise a drained stderr installs a sink.
// SetLogSink replaces the default for the whole process (e.g. to feed the
// service's own logger); SetLogLevel drops lines below a level.
//
// Messages are sanitized before any sink sees them: control characters (C0,
// DEL, C1, U+2028/2029), '\' and bytes that are not well-formed UTF-8 as
// \xNN, byte by byte (so a sink gets valid UTF-8), and cut between
// characters to at most kMaxLogMessage bytes, then
// "... (N bytes)" with the original size. A key or a reason taken from an
// event can neither forge a line nor flood one.
//
// Thread-safety: every function may be called from any thread at any time.
// A sink is called from tiercache's threads (the caller's, the Redis I/O
// thread, the Kafka consumers'), possibly several at once, never under one of
// tiercache's locks: it must be thread-safe and return quickly, and it must
// not wait for tiercache (a synchronous Redis call from a sink running on
// the Redis I/O thread would wait for itself until its timeout). An
// exception it throws is swallowed. A Log call from inside a sink goes to
// stderr (never back into a sink); SetLogSink from inside a sink replaces
// the sink without waiting.
#ifndef TIERCACHE_LOG_H_
#define TIERCACHE_LOG_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace tiercache {

enum class LogLevel : uint8_t { kInfo = 0, kWarning = 1, kError = 2 };
std::string_view LogLevelName(LogLevel level);  // "INFO", "WARNING", "ERROR"

using LogSink = std::function<void(LogLevel level, std::string_view message)>;

inline constexpr size_t kMaxLogMessage = 1024;

// Replaces the process-wide sink; an empty one restores the default (stderr).
// Blocks until the calls of the old sink in progress have returned (calls
// that start meanwhile use the new one, so a stream of Log calls cannot hold
// it up), and destroys the old sink before returning: what it uses may be
// released once this returns. Several SetLogSink at once run one after the
// other.
void SetLogSink(LogSink sink);
// Lines below `level` are dropped (default: kInfo, everything).
void SetLogLevel(LogLevel level);

// Writes one line (tiercache's components call this).
void Log(LogLevel level, std::string_view message);

// `message` as Log passes it on (see above).
std::string SanitizeLogMessage(std::string_view message);

}  // namespace tiercache

#endif  // TIERCACHE_LOG_H_
