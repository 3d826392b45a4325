// LocalFence: this process's side of the fence, for L1.
//
// The L2 fence (l2_store.h) decides whether a load may fill L2; its verdict
// also decides L1. But this process's own invalidations also reach its L1
// directly, and an L1 fill racing one of them must not survive it. LocalFence
// keeps a counter per stripe of keys (a hash picks the stripe), bumped by
// every local invalidation, write-through or L1 drop. A fill reads the
// counter before it reads any source, stores into L1, then reads it again:
// if it moved, the fill erases what it stored. An invalidation bumps the
// counter and then writes L1 under the shard's mutex, so whichever comes
// last wins safely (a false match on a shared stripe only costs a miss).
//
// Thread-safety: lock-free; all methods may be called concurrently.
#ifndef TIERCACHE_CORE_LOCAL_FENCE_H_
#define TIERCACHE_CORE_LOCAL_FENCE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string_view>

namespace tiercache {

class LocalFence {
 public:
  static constexpr size_t kStripes = 4096;

  uint64_t Read(std::string_view key) const { return Stripe(key).load(std::memory_order_seq_cst); }
  // Read(key) for a caller that already has std::hash<std::string_view>{}(key)
  // (GetMany hashes each key once, to find the distinct ones).
  uint64_t ReadHashed(size_t key_hash) const {
    return stripes_[key_hash % kStripes].load(std::memory_order_seq_cst);
  }
  // Returns the counter's value before the bump.
  uint64_t Bump(std::string_view key) { return Stripe(key).fetch_add(1, std::memory_order_seq_cst); }
  bool Unchanged(std::string_view key, uint64_t seen) const { return Read(key) == seen; }
  // Bumps every stripe: every fill in flight erases what it stores.
  void BumpAll() {
    for (auto& s : stripes_) s.fetch_add(1, std::memory_order_seq_cst);
  }

 private:
  std::atomic<uint64_t>& Stripe(std::string_view key) const {
    return stripes_[std::hash<std::string_view>{}(key) % kStripes];
  }
  mutable std::array<std::atomic<uint64_t>, kStripes> stripes_{};
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_LOCAL_FENCE_H_
