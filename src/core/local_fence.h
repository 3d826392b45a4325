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
#include <cstring>
#include <string_view>

namespace tiercache {

class LocalFence {
 public:
  static constexpr size_t kStripes = 4096;

  // The hash that picks a key's stripe: 8 bytes at a time (the last word
  // of a key of 8 bytes or more read where it ends, overlapping the one
  // before), then murmur3's 64-bit finalizer, so that every bit (the low
  // ones pick the stripe, and the slot in GetMany's table of distinct keys,
  // which uses this hash too) depends on every byte and on the length.
  static uint64_t Hash(std::string_view key) noexcept {
    const char* p = key.data();
    size_t n = key.size();
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (; n > 8; p += 8, n -= 8) h = Mix(h, Load8(p));
    if (key.size() >= 8) {
      h = Mix(h, Load8(key.data() + key.size() - 8));
    } else if (n > 0) {
      uint64_t word = 0;
      for (size_t i = 0; i < n; ++i) word |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
      h = Mix(h, word);
    }
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
  }

  uint64_t Read(std::string_view key) const { return Stripe(key).load(std::memory_order_seq_cst); }
  // Read(key) for a caller that already has Hash(key) (GetMany hashes each
  // key once, to find the distinct ones).
  uint64_t ReadHashed(uint64_t key_hash) const {
    return stripes_[key_hash % kStripes].load(std::memory_order_seq_cst);
  }
  // Starts bringing Hash(key)'s stripe into the cache, for a caller that
  // will ReadHashed it a little later (GetMany: its keys' stripes are read
  // after their L1 lookups; each is a likely cache miss otherwise).
  void PrefetchHashed(uint64_t key_hash) const { __builtin_prefetch(&stripes_[key_hash % kStripes]); }
  // Returns the counter's value before the bump.
  uint64_t Bump(std::string_view key) { return Stripe(key).fetch_add(1, std::memory_order_seq_cst); }
  bool Unchanged(std::string_view key, uint64_t seen) const { return Read(key) == seen; }
  // Bumps every stripe: every fill in flight erases what it stores.
  void BumpAll() {
    for (auto& s : stripes_) s.fetch_add(1, std::memory_order_seq_cst);
  }

 private:
  static uint64_t Load8(const char* p) noexcept {
    uint64_t word;
    std::memcpy(&word, p, 8);
    return word;
  }
  static uint64_t Mix(uint64_t h, uint64_t word) noexcept {
    h = (h ^ word) * 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 32);
  }
  std::atomic<uint64_t>& Stripe(std::string_view key) const {
    return stripes_[Hash(key) % kStripes];
  }
  mutable std::array<std::atomic<uint64_t>, kStripes> stripes_{};
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_LOCAL_FENCE_H_
