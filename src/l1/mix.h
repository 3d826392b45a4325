// Mix: splitmix64's finaliser, a cheap, well-mixing bijection on 64 bits.
// The L1 applies it to the key's hash to place the sketch's counters apart
// from the table's (low bits) and shard's (high bits) use of that hash, and
// to draw TTL jitter.
#ifndef TIERCACHE_L1_MIX_H_
#define TIERCACHE_L1_MIX_H_

#include <cstdint>

namespace tiercache::l1 {

inline std::uint64_t Mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_MIX_H_
