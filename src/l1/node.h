// Node, PolicyTable and NodeList: the building blocks of an L1 shard.
//
// A Node is one entry; the shard's NodeTable points at it, and its policy
// record in the shard's PolicyTable puts it in one policy list (NodeList),
// so a hit touches no allocation. Not thread-safe: every Node, record and
// list belongs to one shard and is guarded by its mutex (readers read the
// nodes' lookup lines only, see shard.h).
#ifndef TIERCACHE_L1_NODE_H_
#define TIERCACHE_L1_NODE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>
#include <utility>
#include <vector>

#include "common/dcheck.h"
#include "l1/node_arena.h"
#include "tiercache/clock.h"
#include "tiercache/l1_cache.h"

namespace tiercache::l1 {

// Which policy list a node is in.
enum class Segment : std::uint8_t { kLru, kWindow, kProbation, kProtected };

struct Node;

// What a node keeps after its key, read and written only inside the shard's
// exclusive sections (fills, invalidations, evictions).
struct NodeTail {
  Node* chain = nullptr;  // next node on the shard's retired list
  std::size_t charge = 0;
};

// One entry: a single cache line of what a lookup reads, then, in the same
// allocation (see NewNode), the fill's tag and user data (L1Fill::tag and
// ::user_data, 8 bytes each), the key bytes, 8-aligned after them
// stripe_count - 1 value stripe references (16 bytes each, null until made,
// see `striped`), and the NodeTail. So a hit reads one allocation: two lines
// when the key and the stripes fit in the second line's room after the tag
// and user data (48 bytes: a key of up to 32 bytes with two stripes), as the
// key comparison reads the key anyway. The key is at a fixed offset from the
// node (kKeyOffset), so a probe can load it in parallel with the node's first
// line instead of after it (its address depends on no field of that line):
// on a key set larger than the CPU's caches both lines then miss at once, not
// one after the other. No line of it is written by a hit; a drain writes the
// stripe references and `striped`, once, when it makes them. The node's
// recency and frequency state is a PolicyRecord in its shard's PolicyTable (a
// dense array), so the list moves of a drain touch 16-byte records that stay
// in cache instead of three nodes' lines.
// Dead from expiry (tombstone) or expiry + max_stale (others) on: see
// Shard::DeadAt.
struct alignas(64) Node {
  std::uint64_t hash = 0;
  std::uint32_t key_size = 0;
  // Its record in the shard's PolicyTable; 0 (a list head's) until placed.
  std::uint32_t policy_index = 0;
  L1EntryKind kind = L1EntryKind::kValue;
  // A power of two, fixed at NewNode: 1 + the stripe references in the
  // trailer. Every node of one cache has the same count.
  std::uint8_t stripe_count = 1;
  // The stripe references hold references to `value` (see MakeStriped).
  // Set with release by MakeStriped, with mu_ held and readers possibly
  // inside, after it wrote them; cleared, and the references taken away,
  // only inside exclusive sections (TakeStripesInto). A reader that loads
  // true (acquire) reads whole references that stay for its read section.
  std::atomic<bool> striped{false};
  Clock::TimePoint expiry{};
  L1Value value;
  std::uint64_t version = 0;
  Clock::Duration load_duration{};

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node() {
    for (std::size_t i = 0; i + 1 < stripe_count; ++i) stripe(i).~L1Value();
    tail().~NodeTail();
  }

  static constexpr std::size_t kTagBytes = 2 * sizeof(std::uint64_t);  // tag, user_data
  // The key's offset from the end of the node: right after the tag and user data.
  static constexpr std::size_t kKeyOffset = kTagBytes;
  // The stripe references' offset from the end of the node: after the key, 8-aligned.
  static std::size_t StripesOffset(std::size_t key_size) {
    return (kKeyOffset + key_size + alignof(L1Value) - 1) & ~(alignof(L1Value) - 1);
  }
  // The NodeTail's offset from the end of the node.
  static std::size_t TailOffset(std::size_t stripes, std::size_t key_size) {
    return (StripesOffset(key_size) + (stripes - 1) * sizeof(L1Value) + alignof(NodeTail) - 1) &
           ~(alignof(NodeTail) - 1);
  }
  // The bytes NewNode allocates for a node: whole cache lines.
  static std::size_t AllocationBytes(std::size_t stripes, std::size_t key_size) {
    return (sizeof(Node) + TailOffset(stripes, key_size) + sizeof(NodeTail) + alignof(Node) - 1) &
           ~(alignof(Node) - 1);
  }
  std::string_view key() const { return {trailer() + kKeyOffset, key_size}; }
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
  NodeTail& tail() const {
    return *std::launder(reinterpret_cast<NodeTail*>(trailer() + TailOffset(stripe_count, key_size)));
  }
  std::size_t charge() const { return tail().charge; }
  void set_charge(std::size_t c) { tail().charge = c; }
  // Extra reference i (< stripe_count - 1) to `value`, each with its own
  // control block, so that readers on different CPUs bump different
  // reference counts (see L1Options::value_stripes). Null until MakeStriped;
  // made only for entries read from more than one CPU (Shard::NoteReader),
  // so most entries of a large cache have no control blocks for them.
  L1Value& stripe(std::size_t i) const {
    return *std::launder(reinterpret_cast<L1Value*>(trailer() + StripesOffset(key_size) + i * sizeof(L1Value)));
  }
  // Makes the stripe references to `value` and publishes them (REQUIRES:
  // kind is kValue, stripe_count > 1, not striped, mu_ held). May throw
  // std::bad_alloc, and then changes nothing.
  void MakeStriped() {
    const std::size_t n = stripe_count - 1u;
    try {
      for (std::size_t i = 0; i < n; ++i) {
        stripe(i) = L1Value(value.get(), [keep = value](const std::string*) noexcept {});
      }
    } catch (...) {
      for (std::size_t i = 0; i < n; ++i) stripe(i).reset();  // never published: no reader saw them
      throw;
    }
    striped.store(true, std::memory_order_release);
  }
  // Moves the stripe references to `to` (a node of the same stripe count
  // that has none), for the caller to free after the section, and clears
  // `striped`. REQUIRES: inside an exclusive section.
  void TakeStripesInto(Node& to) {
    for (std::size_t i = 0; i + 1 < stripe_count; ++i) stripe(i).swap(to.stripe(i));
    striped.store(false, std::memory_order_relaxed);
  }

  const L1Value& ValueFor(std::size_t reader) const {
    const std::size_t i = reader & (stripe_count - 1u);
    if (i == 0 || !striped.load(std::memory_order_acquire)) return value;
    return stripe(i - 1);
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
  friend std::unique_ptr<Node, struct NodeDeleter> NewNode(std::string_view key, std::size_t stripes,
                                                           NodeArena* arena);
  char* trailer() const { return const_cast<char*>(reinterpret_cast<const char*>(this)) + sizeof(Node); }
};
static_assert(sizeof(Node) == 64, "a node's lookup fields are one cache line");
static_assert(sizeof(L1Value) % alignof(L1Value) == 0 && alignof(NodeTail) <= alignof(Node));
static_assert(std::atomic<bool>::is_always_lock_free);

// Destroys a node and gives its memory back to the arena it came from (null:
// the general allocator).
struct NodeDeleter {
  NodeArena* arena = nullptr;
  void operator()(Node* n) const noexcept {
    const std::size_t bytes = Node::AllocationBytes(n->stripe_count, n->key_size);
    n->~Node();
    if (arena != nullptr) {
      arena->Free(n, bytes);
    } else {
      ::operator delete(n, std::align_val_t{alignof(Node)});
    }
  }
};
using NodePtr = std::unique_ptr<Node, NodeDeleter>;

// A default-initialised Node with room for `stripes` (a power of two, at
// most kMaxValueStripes) value references, followed by a zero tag and user
// data, a copy of `key`, null stripe references and a zero NodeTail; its
// memory from `arena` (its shard's), or from the general allocator when
// null. Throws std::bad_alloc.
inline NodePtr NewNode(std::string_view key, std::size_t stripes = 1, NodeArena* arena = nullptr) {
  // Whole cache lines: no other allocation (say, a value's reference count,
  // written on every hit) may share the line holding this node's key.
  const std::size_t bytes = Node::AllocationBytes(stripes, key.size());
  void* memory = arena != nullptr ? arena->Allocate(bytes) : ::operator new(bytes, std::align_val_t{alignof(Node)});
  static_assert(alignof(Node) == NodeArena::kBlockAlign);
  Node* n = new (memory) Node();
  n->key_size = static_cast<std::uint32_t>(key.size());
  n->stripe_count = static_cast<std::uint8_t>(stripes);
  n->set_tag(0);
  n->set_user_data(0);
  for (std::size_t i = 0; i + 1 < stripes; ++i) {
    new (n->trailer() + Node::StripesOffset(key.size()) + i * sizeof(L1Value)) L1Value();
  }
  new (n->trailer() + Node::TailOffset(stripes, key.size())) NodeTail();
  if (!key.empty()) std::memcpy(n->trailer() + Node::kKeyOffset, key.data(), key.size());
  return NodePtr(n, NodeDeleter{arena});
}

// The node's hash folded to the 32 bits the frequency sketch is keyed by, so
// that policy upkeep (drains, admission contests) does not read the node
// (a drain does once, to make its value stripes: Shard::NoteReader).
inline std::uint32_t SketchKeyOf(std::uint64_t hash) {
  return static_cast<std::uint32_t>(hash ^ (hash >> 32));
}

// A node's policy state: its place in one list, its sketch key and its
// TinyLFU mark.
struct PolicyRecord {
  std::uint32_t prev = 0;
  std::uint32_t next = 0;
  std::uint32_t sketch_key = 0;  // SketchKeyOf(node's hash)
  // The low 16 bits of FrequencySketch::halvings() when the sketch last said
  // this key's estimate is saturated, so it stays so until the next halving
  // and a hit need not read the sketch (see Shard::CountInSketch); 0: not
  // known to be saturated. A mark left from 65,536 halvings earlier (a
  // halving ends at most every 5 x capacity increments after the first, or
  // at a drop of the hit rate, so after at least 65,536 x 5 x capacity
  // hit-rate samples or increments) reads as current: that key's increments
  // are then counted as saturated ones until the next halving, which only
  // lowers its estimate for that one period.
  std::uint16_t saturated_at = 0;
  Segment segment = Segment::kLru;
  // Shard::DrainSlot's, for value stripes: the low 7 bits are 1 + the stripe
  // (reader slot mod the stripe count) of the reader whose drained hit on
  // this record came last (0: none yet); kStriped is set once the node has
  // stripes, or for an entry that has no value to stripe (negative). An
  // overwrite (which takes the stripes away) resets the whole byte.
  std::uint8_t seen = 0;
  static constexpr std::uint8_t kStriped = 0x80;
};
static_assert(sizeof(PolicyRecord) == 16);

// The policy records of one shard's nodes, in one dense array: records 0 to
// kLists - 1 are the heads of the circular lists (one per Segment), the others
// belong to nodes (Node::policy_index) or are free (chained through `next`).
// Not thread-safe: guarded by the shard's mutex; readers never touch it.
class PolicyTable {
 public:
  static constexpr std::uint32_t kLists = 4;

  PolicyTable() { Reset(); }
  PolicyTable(const PolicyTable&) = delete;
  PolicyTable& operator=(const PolicyTable&) = delete;

  // Makes sure the next Attach needs no allocation. May throw
  // std::bad_alloc, and then leaves the table as it was (both arrays grow
  // their capacity first; the appends that follow cannot reallocate); Attach
  // does not throw.
  void Reserve() {
    if (free_ != 0) return;
    if (records_.size() == records_.capacity() || nodes_.size() == nodes_.capacity()) {
      const std::size_t want = 2 * records_.size();
      records_.reserve(want);
      nodes_.reserve(want);
    }
    records_.emplace_back();
    nodes_.push_back(nullptr);
    free_ = static_cast<std::uint32_t>(records_.size() - 1);
    records_[free_].next = 0;
  }
  // Gives `n` a free record (REQUIRES: Reserve() since the last Attach).
  void Attach(Node* n) {
    const std::uint32_t i = free_;
    free_ = records_[i].next;
    records_[i] = PolicyRecord{};
    records_[i].sketch_key = SketchKeyOf(n->hash);
    nodes_[i] = n;
    n->policy_index = i;
  }
  // Frees `n`'s record. REQUIRES: `n` is in no list.
  void Detach(Node* n) {
    const std::uint32_t i = n->policy_index;
    nodes_[i] = nullptr;
    records_[i].next = free_;
    free_ = i;
    n->policy_index = 0;
  }
  // Exchanges the contents of two tables (every node's record moves with
  // it); does not allocate. The lists' sizes (NodeList) are the caller's.
  void Swap(PolicyTable& other) noexcept {
    records_.swap(other.records_);
    nodes_.swap(other.nodes_);
    std::swap(free_, other.free_);
  }
  // Forgets every node and releases the memory beyond the heads.
  void Reset() {
    std::vector<PolicyRecord>(kLists).swap(records_);
    std::vector<Node*>(kLists, nullptr).swap(nodes_);
    for (std::uint32_t h = 0; h < kLists; ++h) records_[h].prev = records_[h].next = h;
    free_ = 0;
  }

  PolicyRecord& operator[](std::uint32_t i) { return records_[i]; }
  const PolicyRecord& operator[](std::uint32_t i) const { return records_[i]; }
  PolicyRecord& of(const Node* n) { return records_[n->policy_index]; }
  Node* node(std::uint32_t i) const { return nodes_[i]; }
  // Records, the heads included.
  std::size_t size() const { return records_.size(); }
  // True when both arrays have one entry per record.
  bool ConsistentForTesting() const { return records_.size() == nodes_.size(); }
  std::size_t allocated_for_testing() const { return records_.capacity(); }

 private:
  std::vector<PolicyRecord> records_;
  std::vector<Node*> nodes_;  // nodes_[i]: the node of records_[i], if any
  std::uint32_t free_ = 0;    // first free record; 0: none (0 is a head)
};

// A circular doubly linked list of nodes through their PolicyRecords; front
// = most recently used. The list's head is record `head` of `table`.
class NodeList {
 public:
  NodeList(PolicyTable* table, std::uint32_t head) : table_(table), head_(head) {}
  NodeList(const NodeList&) = delete;
  NodeList& operator=(const NodeList&) = delete;

  bool empty() const { return (*table_)[head_].next == head_; }
  std::size_t size() const { return size_; }
  Node* front() const { return table_->node((*table_)[head_].next); }  // null when empty
  Node* back() const { return table_->node((*table_)[head_].prev); }
  // The node after `n` towards the back, or null at the end.
  Node* next(const Node* n) const { return table_->node(table_->of(n).next); }

  void push_front(Node* n) { push_front(n->policy_index); }
  void remove(Node* n) { remove(n->policy_index); }
  void move_to_front(Node* n) { move_to_front(n->policy_index); }
  // The same by record index (Node::policy_index), without reading the node.
  void push_front(std::uint32_t i) {
    TIERCACHE_DCHECK(i >= PolicyTable::kLists);
    PolicyTable& t = *table_;
    const std::uint32_t first = t[head_].next;
    t[i].prev = head_;
    t[i].next = first;
    t[first].prev = i;
    t[head_].next = i;
    ++size_;
  }
  void remove(std::uint32_t i) {
    TIERCACHE_DCHECK(i >= PolicyTable::kLists);  // a node's record, not a head (a detached node's 0)
    PolicyTable& t = *table_;
    PolicyRecord& r = t[i];
    t[r.prev].next = r.next;
    t[r.next].prev = r.prev;
    r.prev = r.next = 0;
    --size_;
  }
  // remove(i) then push_front(i), without their writes that cancel out (the
  // size, the removed record's links): once per drained hit.
  void move_to_front(std::uint32_t i) {
    TIERCACHE_DCHECK(i >= PolicyTable::kLists);
    PolicyTable& t = *table_;
    PolicyRecord& head = t[head_];
    const std::uint32_t first = head.next;
    if (first == i) return;
    PolicyRecord& r = t[i];
    t[r.prev].next = r.next;
    t[r.next].prev = r.prev;
    r.prev = head_;
    r.next = first;
    t[first].prev = i;
    head.next = i;
  }
  void clear() { size_ = 0; }  // with PolicyTable::Reset()

 private:
  PolicyTable* table_;
  std::uint32_t head_;
  std::size_t size_ = 0;
};

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_NODE_H_
