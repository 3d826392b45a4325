// NodeTable: an open-addressed hash table of Nodes keyed by (hash, key).
//
// The 64-bit hash is computed once per call by the cache; the low bits pick
// the home slot (the high bits pick the shard). Each slot holds the full hash
// next to the node pointer, so a probe reads nodes only on a full-hash match:
// a hit reads one node, where chains through the nodes read 1.5 of them on
// average at load factor 1 (a cache miss each on a large key set). Linear
// probing, load factor at most 1/2, deletion by backward shift (no
// tombstones). (One-word slots, the node's address with 6 bits of the hash
// in its aligned low bits, took 16 to 32 bytes per entry instead of 32 to
// 64, but made a 1,000-key hit about 2 ns slower, 48-50 against 46.5-47 ns
// in alternated runs: see docs/performance.md, seventh round.) Lookups take
// a string_view: no key copy on the hit path. Grows by doubling; shrinks only
// when swapped for an empty one (Shard::Clear). Not thread-safe.
#ifndef TIERCACHE_L1_NODE_TABLE_H_
#define TIERCACHE_L1_NODE_TABLE_H_

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
  NodeTable() : slots_(kInitialSlots) {}

  Node* Find(std::uint64_t hash, std::string_view key) const {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.node == nullptr) return nullptr;
      if (s.hash == hash && SameKey(s.node->key(), key)) return s.node;
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
  void Place(std::uint64_t hash, Node* n);  // REQUIRES: a free slot
  std::size_t SlotOf(std::uint64_t hash, const Node* n) const {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = hash & mask;
    while (slots_[i].node != n) i = (i + 1) & mask;
    return i;
  }
  void Grow();

  std::vector<Slot> slots_;  // size is a power of two
  std::size_t size_ = 0;
};

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_NODE_TABLE_H_
