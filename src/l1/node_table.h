// NodeTable: an open-addressed hash table of Nodes keyed by (hash, key).
//
// The 64-bit hash is computed once per call by the cache; the low bits pick
// the home slot (bits 40 and up pick the shard). A slot is one word: the
// node's address, whose low 6 bits are zero (nodes are 64-byte aligned),
// with the hash's top 6 bits (a tag) in them. A probe reads a node only on a
// tag match, so a mismatching slot costs no node read but 1 time in 64; a
// match compares the key. Linear probing, load
// factor at most 1/2, deletion by backward shift (no tombstones), so 16 to 32
// bytes of table per entry (16-byte slots with the full hash took 32 to 64).
// The price: Grow() and Remove() read the nodes' hashes to find their homes
// (Grow every node once per doubling, inside a writer's exclusive section;
// Remove the nodes of the short run after the hole).
// Lookups take a string_view: no key copy on the hit path. Grows by
// doubling; shrinks only on Reset(). Not thread-safe.
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
  NodeTable() : slots_(kInitialSlots, 0) {}

  Node* Find(std::uint64_t hash, std::string_view key) const {
    const std::size_t mask = slots_.size() - 1;
    const std::uintptr_t tag = TagOf(hash);
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const std::uintptr_t s = slots_[i];
      if (s == 0) return nullptr;
      if (((s ^ tag) & kTagMask) != 0) continue;
      // The tag matched: the slot less its tag is the node. Its key decides
      // (a false match, 1 in 64, costs one key comparison).
      Node* n = reinterpret_cast<Node*>(s ^ tag);
      if (SameKey(n->key(), key)) return n;
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

  // REQUIRES: no node with the same key is present; `n` is 64-byte aligned
  // (NewNode's nodes are).
  void Insert(Node* n);
  // REQUIRES: `n` is present.
  void Remove(Node* n);
  // Forgets every node (does not free them).
  void Reset();
  // Exchanges the contents of two tables; does not allocate.
  void Swap(NodeTable& other) noexcept {
    slots_.swap(other.slots_);
    std::swap(size_, other.size_);
  }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return slots_.size(); }
  static constexpr std::size_t kSlotBytes = sizeof(std::uintptr_t);

 private:
  // The tag's bits: those a 64-byte aligned address leaves zero.
  static constexpr std::uintptr_t kTagMask = alignof(Node) - 1;
  static_assert(alignof(Node) == 64, "the tag takes the six low bits of a node's address");
  static std::uintptr_t TagOf(std::uint64_t hash) {
    return static_cast<std::uintptr_t>(hash >> 58);  // neither the home's bits nor the shard's
  }
  static Node* NodeOf(std::uintptr_t slot) { return reinterpret_cast<Node*>(slot & ~kTagMask); }
  static std::uint64_t Load64(const char* p) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
  }
  static constexpr std::size_t kInitialSlots = 16;
  void Place(Node* n);  // REQUIRES: a free slot
  void Grow();

  std::vector<std::uintptr_t> slots_;  // size is a power of two; 0: empty
  std::size_t size_ = 0;
};

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_NODE_TABLE_H_
