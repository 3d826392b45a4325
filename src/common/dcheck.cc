#include "common/dcheck.h"

#include <cstdio>
#include <cstdlib>

namespace tiercache::internal {

void DcheckFailed(const char* condition, const char* file, int line) {
  std::fprintf(stderr, "tiercache: internal check failed at %s:%d: %s\n", file, line, condition);
  std::fflush(stderr);
  std::abort();
}

}  // namespace tiercache::internal
