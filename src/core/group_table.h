// GroupTable: which generations of each group this pod's L1 may still serve.
//
// A member of a group (GetOptions::group) is stored in L1 with the group
// generation it was filled under (L1Fill::tag). When this pod learns that a
// group moved on (its own InvalidateGroup returned the new generation, which
// the L1Follower also calls for every group event), Raise records it, and
// from then on an L1 entry of that group below it is not served: every page
// of a feed goes at once, without visiting the pages. A group the table does
// not know has no such bound (this pod saw no invalidation of it since its
// L1 was last emptied).
//
// The table is bounded: when full, it is emptied, and the caller must empty
// L1 with it (Raise returns false), so that forgetting a bound never makes
// an old member servable again.
//
// Generations only grow in L2, except when a group's key is lost (eviction):
// it then restarts at a random number in [2^40, 2^50) (l2_store.h). A raise
// far below the recorded bound (more than kResetDistance) is such a restart
// and replaces the bound; a smaller step down is two raises of this pod
// arriving out of order and is ignored.
//
// Thread-safety: all methods may be called concurrently (a mutex per stripe;
// Accepts takes one briefly, only for group members).
#ifndef TIERCACHE_CORE_GROUP_TABLE_H_
#define TIERCACHE_CORE_GROUP_TABLE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tiercache {

class GroupTable {
 public:
  static constexpr size_t kStripes = 16;
  static constexpr uint64_t kResetDistance = uint64_t{1} << 32;

  explicit GroupTable(size_t capacity) : per_stripe_(capacity / kStripes + 1) {}

  // May an L1 entry of `group` filled under `generation` be served?
  bool Accepts(std::string_view group, uint64_t generation) const {
    const Stripe& s = StripeOf(group);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.min.find(group);
    return it == s.min.end() || generation >= it->second;
  }

  // `group` is at `generation` or beyond. False: the table was full and has
  // been emptied (then it holds only this bound): the caller empties L1.
  bool Raise(std::string_view group, uint64_t generation) { return Set(group, generation, /*force=*/false); }

  // This pod could not learn `group`'s new generation: serve none of its
  // members from L1 until a later Raise. False as for Raise.
  bool Poison(std::string_view group) { return Set(group, kPoisoned, /*force=*/true); }

  void Clear() {
    for (Stripe& s : stripes_) {
      std::lock_guard<std::mutex> lock(s.mu);
      s.min.clear();
    }
  }

 private:
  static constexpr uint64_t kPoisoned = std::numeric_limits<uint64_t>::max();

  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Stripe {
    mutable std::mutex mu;
    std::unordered_map<std::string, uint64_t, Hash, std::equal_to<>> min;  // GUARDED_BY(mu)
  };

  bool Set(std::string_view group, uint64_t generation, bool force) {
    Stripe& s = StripeOf(group);
    {
      std::lock_guard<std::mutex> lock(s.mu);
      auto it = s.min.find(group);
      if (it != s.min.end()) {
        const uint64_t cur = it->second;
        if (force || cur == kPoisoned || generation > cur || cur - generation > kResetDistance) it->second = generation;
        return true;
      }
      if (s.min.size() < per_stripe_) {
        s.min.emplace(std::string(group), generation);
        return true;
      }
    }
    Clear();
    std::lock_guard<std::mutex> lock(s.mu);
    s.min.emplace(std::string(group), generation);
    return false;
  }

  Stripe& StripeOf(std::string_view group) const { return stripes_[Hash{}(group) % kStripes]; }

  const size_t per_stripe_;
  mutable std::array<Stripe, kStripes> stripes_;
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_GROUP_TABLE_H_
