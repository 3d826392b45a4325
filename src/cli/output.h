// What the CLI's commands share for writing: previews of untrusted bytes and
// one-line errors.
#ifndef TIERCACHE_CLI_OUTPUT_H_
#define TIERCACHE_CLI_OUTPUT_H_

#include <ostream>
#include <string>
#include <string_view>

#include "tiercache/status.h"

namespace tiercache::cli {

// At most `limit` bytes of `p`, non-printable ones (and '\') as \xNN, then
// "... (N bytes)" when cut.
std::string Preview(std::string_view p, size_t limit = 80);

// Writes "tiercache: <what>: <status>" to `err` as one line (a server's
// message may span several) and returns ExitCodeOf(s).
int Fail(std::ostream& err, const std::string& what, const Status& s);

}  // namespace tiercache::cli

#endif  // TIERCACHE_CLI_OUTPUT_H_
