// L2Store's default methods.
#include "tiercache/l2_store.h"

namespace tiercache {

std::vector<Result<FenceOutcome>> L2Store::InvalidateMany(const std::vector<InvalidateRequest>& requests,
                                                          milliseconds fence_ttl, milliseconds timeout) {
  std::vector<Result<FenceOutcome>> out;
  out.reserve(requests.size());
  for (const InvalidateRequest& q : requests) out.push_back(Invalidate(q, fence_ttl, timeout));
  return out;
}

}  // namespace tiercache
