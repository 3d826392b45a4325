// SeenVersions: the versions this pod's own invalidations named, per key,
// for a while (the tombstone TTL): what a value read from L2 is checked
// against (docs/consistency.md §3c).
//
// Every versioned invalidation that reaches this pod (Invalidate,
// InvalidateMany, and InvalidateLocal, which the L1Follower calls for each
// event) notes its version here, whether or not L2 applied it. A value or
// negative entry read from L2 below the noted version is then not served:
// L2 has not applied the invalidation yet (the service's consumer lags, its
// shard had no master) or lost it in a failover (replication is
// asynchronous). This pod's L1 keeps a tombstone of the same version, but
// that one is an L1 entry like any other (evicted under pressure, emptied
// with L1 by FenceL1 or when the group table overflows, absent without L1),
// and L1 has no read for it: hence this table of its own.
//
// Bounded: at most `capacity` keys (per stripe capacity / kStripes + 1).
// A note past the bound forgets the note that expires first (the oldest),
// which then protects nothing more (L2 reads of that key are served as
// before this table existed). Forgetting is only ever that: it never
// refuses more.
//
// Thread-safety: all methods may be called concurrently (a mutex per
// stripe; Floor takes none while nothing at all is noted).
#ifndef TIERCACHE_CORE_SEEN_VERSIONS_H_
#define TIERCACHE_CORE_SEEN_VERSIONS_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "tiercache/clock.h"

namespace tiercache {

class SeenVersions {
 public:
  static constexpr size_t kStripes = 16;

  // Notes are remembered for `ttl` after the one that set their version.
  SeenVersions(size_t capacity, Clock::Duration ttl) : per_stripe_(capacity / kStripes + 1), ttl_(ttl) {}

  // An invalidation of `key` at `version` reached this pod at `now`. A
  // version at or below the one noted changes nothing (it does not extend
  // the note either). REQUIRES: version > 0.
  void Note(std::string_view key, uint64_t version, Clock::TimePoint now) {
    Stripe& s = StripeOf(key);
    std::lock_guard<std::mutex> lock(s.mu);
    Forget(s, [&] { return !s.order.empty() && s.order.front().first <= now; });  // expired
    const Clock::TimePoint until = now + ttl_;
    auto it = s.notes.find(key);
    if (it != s.notes.end()) {
      if (version <= it->second.version) return;
      it->second = Entry{version, until};
      s.order.emplace_back(until, it->first);
      return;
    }
    Forget(s, [&] { return s.notes.size() >= per_stripe_; });  // full: the oldest go
    s.notes.emplace(std::string(key), Entry{version, until});
    s.order.emplace_back(until, std::string(key));
    size_.fetch_add(1, std::memory_order_release);
  }

  // The version noted for `key` and not yet expired at clock.Now(); 0 when
  // none. Reads the clock only when a note is found.
  uint64_t Floor(std::string_view key, const Clock& clock) const {
    if (size_.load(std::memory_order_acquire) == 0) return 0;
    const Stripe& s = StripeOf(key);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.notes.find(key);
    if (it == s.notes.end() || clock.Now() >= it->second.until) return 0;
    return it->second.version;
  }

  // Keys noted (expired notes included until they are swept). For tests.
  size_t size() const { return size_.load(std::memory_order_acquire); }

 private:
  struct Entry {
    uint64_t version = 0;
    Clock::TimePoint until{};
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Stripe {
    mutable std::mutex mu;
    std::unordered_map<std::string, Entry, Hash, std::equal_to<>> notes;  // GUARDED_BY(mu)
    // (until, key) in the order notes were set, so by expiry (one ttl for
    // all); a key noted again leaves its earlier pair behind, which is
    // skipped when it comes up. GUARDED_BY(mu)
    std::deque<std::pair<Clock::TimePoint, std::string>> order;
  };

  // Drops the oldest notes while `more()`. REQUIRES: s.mu held.
  template <typename Fn>
  void Forget(Stripe& s, Fn more) {
    while (!s.order.empty() && more()) {
      auto it = s.notes.find(s.order.front().second);
      if (it != s.notes.end() && it->second.until == s.order.front().first) {  // not noted again since
        s.notes.erase(it);
        size_.fetch_sub(1, std::memory_order_release);
      }
      s.order.pop_front();
    }
  }

  Stripe& StripeOf(std::string_view key) const { return stripes_[Hash{}(key) % kStripes]; }

  const size_t per_stripe_;
  const Clock::Duration ttl_;
  std::atomic<size_t> size_{0};
  mutable std::array<Stripe, kStripes> stripes_;
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_SEEN_VERSIONS_H_
