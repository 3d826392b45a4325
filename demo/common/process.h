// Process helpers for the reference services.
#ifndef TIERCACHE_DEMO_COMMON_PROCESS_H_
#define TIERCACHE_DEMO_COMMON_PROCESS_H_

#include <string>

namespace demo {

// Blocks SIGINT and SIGTERM in this thread (call first in main, before any
// thread starts, so every thread inherits the mask).
void BlockTerminationSignals();
// Waits for SIGINT or SIGTERM; returns the signal's name.
std::string WaitForTermination();
// A random 128-bit id as 32 hex digits (event ids).
std::string RandomId();
// Logs one line to stderr with a timestamp and the service's name.
void Log(const std::string& service, const std::string& message);

}  // namespace demo

#endif  // TIERCACHE_DEMO_COMMON_PROCESS_H_
