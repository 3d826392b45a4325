// Node and NodeList: the intrusive building blocks of an L1 shard.
//
// A Node is one entry; the shard's NodeTable points at it, and it sits in
// one policy list (NodeList), so a hit touches no allocation. Not thread-safe:
// every Node and list belongs to one shard and is guarded by its mutex.
#ifndef TIERCACHE_L1_NODE_H_
#define TIERCACHE_L1_NODE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>

#include "tiercache/clock.h"
#include "tiercache/l1_cache.h"

namespace tiercache::l1 {

// Which policy list a node is in.
enum class Segment : std::uint8_t { kLru, kWindow, kProbation, kProtected };

struct ListLinks {
  ListLinks* prev = nullptr;
  ListLinks* next = nullptr;
};

// A trailer follows the Node in the same allocation (see NewNode): the
// fill's tag and user data (L1Fill::tag and ::user_data, 8 bytes each),
// stripe_count - 1 stripe references (16 bytes each), then the key bytes. So
// a lookup reads one allocation, not a node plus a separately allocated key
// or stripe array, and what it reads besides line 1 shares the key's line,
// which lookups read anyway and only fills write.
// Layout by who writes what: line 0 is rewritten by the policy on every
// drained hit (links, segment); line 1 holds what a lookup reads and only
// fills write; the trailer follows from line 2 on. So one thread's recency
// updates do not evict the lines another thread's lookups read.
struct alignas(64) Node : ListLinks {
  // Line 0: policy state.
  Segment segment = Segment::kLru;
  std::size_t charge = 0;
  // FrequencySketch::halvings() when the sketch last said this key's estimate
  // is saturated, so it stays so until the next halving and a hit need not
  // read the sketch (see Shard::CountInSketch); 0: not known to be saturated.
  std::uint64_t saturated_at = 0;

  // Line 1: read by lookups. Dead from expiry (tombstone) or expiry +
  // max_stale (others) on: see Shard::DeadAt.
  alignas(64) Node* chain = nullptr;  // next node on the shard's retired list
  std::uint64_t hash = 0;
  std::uint32_t key_size = 0;
  L1EntryKind kind = L1EntryKind::kValue;
  // A power of two, fixed at NewNode: 1 + the stripe references in the
  // trailer. Every node of one cache has the same count.
  std::uint8_t stripe_count = 1;
  Clock::TimePoint expiry{};
  L1Value value;
  std::uint64_t version = 0;
  Clock::Duration load_duration{};

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node() {
    for (std::size_t i = 0; i + 1 < stripe_count; ++i) stripe(i).~L1Value();
  }

  static constexpr std::size_t kTagBytes = 2 * sizeof(std::uint64_t);  // tag, user_data
  static std::size_t TrailerBytes(std::size_t stripes) { return kTagBytes + (stripes - 1) * sizeof(L1Value); }
  std::string_view key() const { return {trailer() + TrailerBytes(stripe_count), key_size}; }
  std::uint64_t tag() const {
    std::uint64_t t;
    std::memcpy(&t, trailer(), sizeof t);
    return t;
  }
  void set_tag(std::uint64_t t) { std::memcpy(trailer(), &t, sizeof t); }
  std::uint64_t user_data() const {
    std::uint64_t u;
    std::memcpy(&u, trailer() + sizeof u, sizeof u);
    return u;
  }
  void set_user_data(std::uint64_t u) { std::memcpy(trailer() + sizeof u, &u, sizeof u); }
  // Extra references to `value` (i < stripe_count - 1), each with its own
  // control block, so that readers on different CPUs bump different
  // reference counts (see L1Options::value_stripes). Null unless the node
  // holds a value.
  L1Value& stripe(std::size_t i) const {
    return *std::launder(reinterpret_cast<L1Value*>(trailer() + kTagBytes + i * sizeof(L1Value)));
  }
  const L1Value& ValueFor(std::size_t reader) const {
    const std::size_t i = reader & (stripe_count - 1u);
    return i == 0 ? value : stripe(i - 1);
  }
  // Assigns every field of *out but `stale`.
  void CopyTo(L1Entry* out, std::size_t reader = 0) const {
    out->kind = kind;
    out->value = ValueFor(reader);
    out->version = version;
    out->expiry = expiry;
    out->load_duration = load_duration;
    out->tag = tag();
    out->user_data = user_data();
  }

 private:
  friend std::unique_ptr<Node, struct NodeDeleter> NewNode(std::string_view key, std::size_t stripes);
  char* trailer() const { return const_cast<char*>(reinterpret_cast<const char*>(this)) + sizeof(Node); }
};
static_assert(sizeof(Node) == 128, "Node is two cache lines: policy, lookup");
static_assert(sizeof(L1Value) % alignof(L1Value) == 0 && Node::kTagBytes % alignof(L1Value) == 0);

struct NodeDeleter {
  void operator()(Node* n) const noexcept {
    n->~Node();
    ::operator delete(n, std::align_val_t{alignof(Node)});
  }
};
using NodePtr = std::unique_ptr<Node, NodeDeleter>;

// A default-initialised Node with room for `stripes` (a power of two, at
// most kMaxValueStripes) value references, followed by a zero tag, null stripe
// references and a copy of `key`.
inline NodePtr NewNode(std::string_view key, std::size_t stripes = 1) {
  // Whole cache lines: no other allocation (say, a value's reference count,
  // written on every hit) may share the line holding this node's key.
  const std::size_t bytes = (sizeof(Node) + Node::TrailerBytes(stripes) + key.size() + alignof(Node) - 1) &
                            ~(alignof(Node) - 1);
  void* memory = ::operator new(bytes, std::align_val_t{alignof(Node)});
  Node* n = new (memory) Node();
  n->key_size = static_cast<std::uint32_t>(key.size());
  n->stripe_count = static_cast<std::uint8_t>(stripes);
  n->set_tag(0);
  n->set_user_data(0);
  for (std::size_t i = 0; i + 1 < stripes; ++i) {
    new (n->trailer() + Node::kTagBytes + i * sizeof(L1Value)) L1Value();
  }
  if (!key.empty()) std::memcpy(n->trailer() + Node::TrailerBytes(stripes), key.data(), key.size());
  return NodePtr(n);
}

// A circular doubly linked list of nodes; front = most recently used.
class NodeList {
 public:
  NodeList() { head_.prev = head_.next = &head_; }
  NodeList(const NodeList&) = delete;
  NodeList& operator=(const NodeList&) = delete;

  bool empty() const { return head_.next == &head_; }
  std::size_t size() const { return size_; }
  Node* front() const { return empty() ? nullptr : static_cast<Node*>(head_.next); }
  Node* back() const { return empty() ? nullptr : static_cast<Node*>(head_.prev); }
  // The node after `n` towards the back, or null at the end.
  Node* next(const Node* n) const {
    return n->next == &head_ ? nullptr : static_cast<Node*>(n->next);
  }

  void push_front(Node* n) {
    n->prev = &head_;
    n->next = head_.next;
    head_.next->prev = n;
    head_.next = n;
    ++size_;
  }
  void remove(Node* n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = nullptr;
    --size_;
  }
  void move_to_front(Node* n) {
    if (head_.next == n) return;
    remove(n);
    push_front(n);
  }

 private:
  ListLinks head_;
  std::size_t size_ = 0;
};

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_NODE_H_
