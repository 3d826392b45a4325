#include "cli/output.h"

#include <cctype>

#include "cli/commands.h"

namespace tiercache::cli {

std::string Preview(std::string_view p, size_t limit) {
  std::string out;
  for (size_t i = 0; i < p.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(p[i]);
    if (std::isprint(c) && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (p.size() > limit) out += "... (" + std::to_string(p.size()) + " bytes)";
  return out;
}

int Fail(std::ostream& err, const std::string& what, const Status& s) {
  std::string line = s.ToString();
  for (size_t at = 0; (at = line.find_first_of("\r\n", at)) != std::string::npos;) {
    size_t end = line.find_first_not_of("\r\n\t ", at);
    line.replace(at, (end == std::string::npos ? line.size() : end) - at, end == std::string::npos ? "" : "; ");
  }
  err << "tiercache: " << what << ": " << line << "\n";
  return ExitCodeOf(s);
}

}  // namespace tiercache::cli
