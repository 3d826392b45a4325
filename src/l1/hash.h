// HashKey: the L1's hash of a key. The cache computes it once per call; its
// high bits pick the shard, its low bits the table slot, and a fold of it is
// the key's frequency sketch key. A shard hashes a node's key again only
// where it starts from the node (eviction, purging, striping): nodes keep no
// hash.
#ifndef TIERCACHE_L1_HASH_H_
#define TIERCACHE_L1_HASH_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tiercache::l1 {
namespace hash_internal {

inline std::uint64_t Load64(const char* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);  // fixed size: one unaligned load
  return w;
}

inline std::uint64_t Round(std::uint64_t h, std::uint64_t w) {
  h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
  return h ^ (h >> 29);
}

}  // namespace hash_internal

// A short-key hash: one multiply per 8 bytes (the last 8 bytes are read with
// an overlapping load instead of a variable-length copy), then a light
// finaliser. Keys are chosen by the application, so speed matters more here
// than resistance to deliberately colliding keys.
inline std::uint64_t HashKey(std::string_view key) {
  const char* p = key.data();
  const std::size_t n = key.size();
  std::uint64_t h = n * 0xC2B2AE3D27D4EB4FULL;
  if (n >= 8) {
    const char* last = p + n - 8;
    for (; p < last; p += 8) h = hash_internal::Round(h, hash_internal::Load64(p));
    h = hash_internal::Round(h, hash_internal::Load64(last));
  } else if (n >= 4) {
    std::uint32_t a, b;
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + n - 4, 4);
    h = hash_internal::Round(h, (std::uint64_t{a} << 32) | b);
  } else if (n > 0) {
    const auto byte = [p](std::size_t i) { return std::uint64_t{static_cast<unsigned char>(p[i])}; };
    h = hash_internal::Round(h, (byte(0) << 16) | (byte(n / 2) << 8) | byte(n - 1));
  }
  h ^= h >> 32;
  h *= 0xD6E8FEB86659FD93ULL;
  return h ^ (h >> 29);
}

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_HASH_H_
