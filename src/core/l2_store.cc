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

Result<GroupRead> L2Store::GetInGroup(const std::vector<std::string>&, std::string_view, milliseconds) {
  return Status::FailedPrecondition("this L2 store does not support groups");
}

Result<std::vector<FenceSnapshot>> L2Store::SnapshotInGroup(const std::vector<std::string>&, std::string_view,
                                                            milliseconds) {
  return Status::FailedPrecondition("this L2 store does not support groups");
}

Result<LeaseOutcome> L2Store::AcquireLeaseInGroup(std::string_view, std::string_view, std::string_view,
                                                  milliseconds, milliseconds) {
  return Status::FailedPrecondition("this L2 store does not support groups");
}

}  // namespace tiercache
