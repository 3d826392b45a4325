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
// The table is bounded: when a new group finds it full, Raise / Poison
// change nothing and return false; the caller then empties L1 (and fences
// the fills in flight) and only then calls Reset, so that no old member is
// servable while the bounds are forgotten.
//
// Generations only grow in L2, also across a lost key (l2_store.h), so a
// bound only rises. A move that fails poisons the group (no member served
// from L1); only a move that began after the failed one ends the poison
// (moves are numbered by BeginMove), since an earlier move returning late
// may report a generation below the failed move's.
//
// Thread-safety: all methods may be called concurrently (a mutex per stripe;
// Accepts takes one briefly, only for group members).
#ifndef TIERCACHE_CORE_GROUP_TABLE_H_
#define TIERCACHE_CORE_GROUP_TABLE_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "tiercache/clock.h"

namespace tiercache {

class GroupTable {
 public:
  static constexpr size_t kStripes = 16;

  explicit GroupTable(size_t capacity) : per_stripe_(capacity / kStripes + 1) {}

  // May an L1 entry of `group` filled under `generation` be served?
  bool Accepts(std::string_view group, uint64_t generation) const {
    const Stripe& s = StripeOf(group);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.groups.find(group);
    return it == s.groups.end() || (it->second.poisoned_by == 0 && generation >= it->second.min);
  }

  // A number for a move about to be sent, ordering it against the others.
  uint64_t BeginMove() { return next_move_.fetch_add(1, std::memory_order_relaxed) + 1; }

  // Move `move` found `group` at `generation` or beyond; L2 members below it
  // are not served until `until` (ServesFromL2). False when the table is
  // full (nothing changed): empty L1, Reset, call again.
  bool Raise(std::string_view group, uint64_t generation, uint64_t move, Clock::TimePoint until = {}) {
    return Update(group, [&](Entry& e) {
      if (generation > e.min) {
        e.min = generation;
        e.min_until = until;
      } else if (generation == e.min) {
        e.min_until = std::max(e.min_until, until);
      }
      if (e.poisoned_by != 0 && move > e.poisoned_by) e.poisoned_by = 0;
    });
  }

  // Move `move` of `group` failed: its generation is unknown; serve none of
  // its members from L1 until a move begun after this one succeeds, nor from
  // L2 until then or `until`, whichever comes first. False as Raise.
  bool Poison(std::string_view group, uint64_t move, Clock::TimePoint until = {}) {
    return Update(group, [&](Entry& e) {
      e.poisoned_by = std::max(e.poisoned_by, move);
      e.poisoned_until = std::max(e.poisoned_until, until);
    });
  }

  // May a member of `group` that L2 shows at `generation` (its group's
  // current generation there) be served at `now`? No while the group is
  // poisoned, or `generation` is below the bound, and the knowledge is
  // younger than its `until`.
  bool ServesFromL2(std::string_view group, uint64_t generation, Clock::TimePoint now) const {
    const Stripe& s = StripeOf(group);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.groups.find(group);
    if (it == s.groups.end()) return true;
    const Entry& e = it->second;
    if (e.poisoned_by != 0 && now < e.poisoned_until) return false;
    return generation >= e.min || now >= e.min_until;
  }

  // Forgets every bound. REQUIRES: L1 was emptied (and fills in flight
  // fenced) since the last Raise that returned false.
  void Reset() {
    for (Stripe& s : stripes_) {
      std::lock_guard<std::mutex> lock(s.mu);
      s.groups.clear();
    }
  }

 private:
  struct Entry {
    uint64_t min = 0;          // members below it are not served
    uint64_t poisoned_by = 0;  // the failed move; 0: not poisoned
    Clock::TimePoint min_until{};       // L2 members below `min` are not served before it
    Clock::TimePoint poisoned_until{};  // L2 members are not served before it while poisoned
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Stripe {
    mutable std::mutex mu;
    std::unordered_map<std::string, Entry, Hash, std::equal_to<>> groups;  // GUARDED_BY(mu)
  };

  template <typename Fn>
  bool Update(std::string_view group, Fn fn) {
    Stripe& s = StripeOf(group);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.groups.find(group);
    if (it == s.groups.end()) {
      if (s.groups.size() >= per_stripe_) return false;
      it = s.groups.emplace(std::string(group), Entry()).first;
    }
    fn(it->second);
    return true;
  }

  Stripe& StripeOf(std::string_view group) const { return stripes_[Hash{}(group) % kStripes]; }

  const size_t per_stripe_;
  std::atomic<uint64_t> next_move_{0};
  mutable std::array<Stripe, kStripes> stripes_;
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_GROUP_TABLE_H_
