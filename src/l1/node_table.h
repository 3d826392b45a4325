// NodeTable: an open-addressed hash table of Nodes keyed by (hash, key).
//
// The 64-bit hash is computed once per call by the cache; its low 32 bits
// pick the home slot (the high bits pick the shard). Each slot holds the
// full hash next to the node pointer, so a probe reads nodes only on a
// full-hash match: a hit reads one node, where chains through the nodes read
// 1.5 of them on average at load factor 1 (a cache miss each on a large key
// set). Linear probing, deletion by backward shift (no tombstones). The
// capacity need not be a power of two: the home is the hash scaled to it
// (Lemire's multiply-shift), so the table can stop growing at the size its
// shard's max_entries needs. It grows by doubling, at most to that final
// size, with a load factor of at most 1/2 below it and 3/4 at it: a full
// shard's table takes about 21 bytes per entry, not 32 to 64 as
// power-of-two sizes at load 1/2 did. (One-word slots, the node's address
// with 6 bits of the hash in its aligned low bits, took 16 to 32 bytes per
// entry instead of 32 to 64, but made a 1,000-key hit about 2 ns slower,
// 48-50 against 46.5-47 ns in alternated runs: see docs/performance.md,
// seventh round.) Lookups take a string_view: no key copy on the hit path.
// Shrinks only when swapped for an empty one (Shard::Clear). Not
// thread-safe.
#ifndef TIERCACHE_L1_NODE_TABLE_H_
#define TIERCACHE_L1_NODE_TABLE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "l1/node.h"

namespace tiercache::l1 {

class NodeTable {
 public:
  // A table for at most `max_entries` entries at once (the shard's bound;
  // an insertion may briefly exceed it by one before an eviction).
  explicit NodeTable(std::size_t max_entries = kUnbounded)
      : slots_(kInitialSlots), final_slots_(FinalSlots(max_entries)) {}

  Node* Find(std::uint64_t hash, std::string_view key) const {
    const Slot* slots = slots_.data();
    const std::size_t n = slots_.size();
    for (std::size_t i = Home(hash, n);;) {
      const Slot& s = slots[i];
      if (s.node == nullptr) return nullptr;
      if (s.hash == hash && SameKey(s.node->key(), key)) return s.node;
      if (++i == n) i = 0;
    }
  }
  // a == b, inlined: keys are short, and a library memcmp call costs more
  // than comparing them 8 bytes at a time (the last 8 with an overlapping
  // load).
  static bool SameKey(std::string_view a, std::string_view b) {
    const std::size_t n = a.size();
    if (n != b.size()) return false;
    if (n < 8) return n == 0 || std::memcmp(a.data(), b.data(), n) == 0;
    for (std::size_t i = 0; i + 8 < n; i += 8) {
      if (Load64(a.data() + i) != Load64(b.data() + i)) return false;
    }
    return Load64(a.data() + n - 8) == Load64(b.data() + n - 8);
  }

  // Adds `n`, whose key hashes to `hash`. REQUIRES: no node with the same
  // key is present. May throw std::bad_alloc (growing), and then changes
  // nothing.
  void Insert(std::uint64_t hash, Node* n);
  // REQUIRES: `n`, whose key hashes to `hash`, is present.
  void Remove(std::uint64_t hash, Node* n);
  // Puts `to` (the same key) in the slot of `from`. REQUIRES: `from`, whose
  // key hashes to `hash`, is present.
  void Replace(std::uint64_t hash, Node* from, Node* to) { slots_[SlotOf(hash, from)].node = to; }
  // Exchanges the contents of two tables; does not allocate.
  void Swap(NodeTable& other) noexcept {
    slots_.swap(other.slots_);
    std::swap(size_, other.size_);
    std::swap(final_slots_, other.final_slots_);
  }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return slots_.size(); }

 private:
  struct Slot {
    std::uint64_t hash = 0;
    Node* node = nullptr;  // null: empty
  };
  static std::uint64_t Load64(const char* p) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
  }
  static constexpr std::size_t kInitialSlots = 16;
  static constexpr std::size_t kUnbounded = ~std::size_t{0};
  // The slots that hold max_entries + 1 at load 3/4 (none past 2^32: Home
  // scales 32 bits; a shard of over 3 x 2^30 entries keeps doubling).
  static std::size_t FinalSlots(std::size_t max_entries) {
    if (max_entries >= (std::size_t{3} << 30)) return kUnbounded;
    return std::max(kInitialSlots, ((max_entries + 1) * 4 + 2) / 3);
  }
  // The low 32 bits of the hash scaled to [0, slots).
  static std::size_t Home(std::uint64_t hash, std::size_t slots) {
    return static_cast<std::size_t>((static_cast<std::uint64_t>(static_cast<std::uint32_t>(hash)) * slots) >> 32);
  }
  // How far slot j is past slot `from`, cyclically.
  std::size_t Distance(std::size_t from, std::size_t j) const {
    return j >= from ? j - from : j + slots_.size() - from;
  }
  std::size_t Next(std::size_t i) const { return i + 1 == slots_.size() ? 0 : i + 1; }
  void Place(std::uint64_t hash, Node* n);  // REQUIRES: a free slot
  std::size_t SlotOf(std::uint64_t hash, const Node* n) const {
    std::size_t i = Home(hash, slots_.size());
    while (slots_[i].node != n) i = Next(i);
    return i;
  }
  void Grow();

  std::vector<Slot> slots_;  // past 2^32 slots, only 2^32 of them are homes (still correct)
  std::size_t size_ = 0;
  std::size_t final_slots_;  // where doubling stops and the load may reach 3/4
};

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_NODE_TABLE_H_
