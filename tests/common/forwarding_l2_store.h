// ForwardingL2Store: an L2Store that forwards every call to another one.
// Tests derive from it and override only the calls they want to slow down,
// count or fail.
#ifndef TIERCACHE_TESTS_COMMON_FORWARDING_L2_STORE_H_
#define TIERCACHE_TESTS_COMMON_FORWARDING_L2_STORE_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tiercache/l2_store.h"

namespace tiercache::testing {

class ForwardingL2Store : public L2Store {
 public:
  explicit ForwardingL2Store(std::shared_ptr<L2Store> inner) : inner_(std::move(inner)) {}

  Result<std::optional<std::string>> Get(std::string_view key, milliseconds timeout) override {
    return inner_->Get(key, timeout);
  }
  std::vector<Result<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                          milliseconds timeout) override {
    return inner_->GetMany(keys, timeout);
  }
  std::vector<Result<FenceSnapshot>> Snapshot(const std::vector<std::string>& keys, milliseconds timeout) override {
    return inner_->Snapshot(keys, timeout);
  }
  std::vector<Result<FenceOutcome>> Fill(const std::vector<FillRequest>& fills, milliseconds max_age,
                                         milliseconds fence_ttl, milliseconds timeout) override {
    return inner_->Fill(fills, max_age, fence_ttl, timeout);
  }
  Status Put(std::string_view key, std::string_view envelope, milliseconds ttl, milliseconds timeout) override {
    return inner_->Put(key, envelope, ttl, timeout);
  }
  Result<FenceOutcome> Invalidate(const InvalidateRequest& q, milliseconds fence_ttl, milliseconds timeout) override {
    return inner_->Invalidate(q, fence_ttl, timeout);
  }
  std::vector<Result<FenceOutcome>> InvalidateMany(const std::vector<InvalidateRequest>& requests,
                                                   milliseconds fence_ttl, milliseconds timeout) override {
    return inner_->InvalidateMany(requests, fence_ttl, timeout);
  }
  Result<bool> RemoveCorrupt(std::string_view key, std::string_view bytes, milliseconds timeout) override {
    return inner_->RemoveCorrupt(key, bytes, timeout);
  }
  Result<LeaseOutcome> AcquireLease(std::string_view key, std::string_view token, milliseconds ttl,
                                    milliseconds timeout) override {
    return inner_->AcquireLease(key, token, ttl, timeout);
  }
  Result<bool> ExtendLease(std::string_view key, std::string_view token, milliseconds ttl,
                           milliseconds timeout) override {
    return inner_->ExtendLease(key, token, ttl, timeout);
  }
  Result<bool> ReleaseLease(std::string_view key, std::string_view token, milliseconds timeout) override {
    return inner_->ReleaseLease(key, token, timeout);
  }
  Result<GroupRead> GetInGroup(const std::vector<std::string>& keys, std::string_view group,
                               milliseconds timeout) override {
    return inner_->GetInGroup(keys, group, timeout);
  }
  Result<std::vector<FenceSnapshot>> SnapshotInGroup(const std::vector<std::string>& keys, std::string_view group,
                                                     milliseconds timeout) override {
    return inner_->SnapshotInGroup(keys, group, timeout);
  }
  Result<LeaseOutcome> AcquireLeaseInGroup(std::string_view key, std::string_view group, std::string_view token,
                                           milliseconds ttl, milliseconds timeout) override {
    return inner_->AcquireLeaseInGroup(key, group, token, ttl, timeout);
  }
  int ShardOf(std::string_view key) const override { return inner_->ShardOf(key); }

 protected:
  const std::shared_ptr<L2Store> inner_;
};

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_COMMON_FORWARDING_L2_STORE_H_
