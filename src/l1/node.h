// Node, PolicyTable and NodeList: the building blocks of an L1 shard.
//
// A Node is one entry; the shard's NodeTable points at it, and its policy
// record in the shard's PolicyTable puts it in one policy list (NodeList),
// so a hit touches no allocation. Not thread-safe: every Node, record and
// list belongs to one shard and is guarded by its mutex (readers read nodes
// without it, and nothing of a node changes while they may be inside, see
// shard.h).
#ifndef TIERCACHE_L1_NODE_H_
#define TIERCACHE_L1_NODE_H_

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>
#include <utility>
#include <vector>

#include "common/dcheck.h"
#include "l1/l1_options.h"
#include "l1/node_arena.h"
#include "tiercache/clock.h"
#include "tiercache/l1_cache.h"

namespace tiercache::l1 {

// Which policy list a node is in.
enum class Segment : std::uint8_t { kLru, kWindow, kProbation, kProtected };

struct Node;

// Node::load_duration's 32-bit form: nanoseconds below 2^31 ns (about 2.1 s),
// else microseconds with the top bit set, at most 2^31 - 1 of them (about
// 35.8 minutes; longer loads read as that). Negative durations read as 0.
inline std::uint32_t EncodeLoadDuration(Clock::Duration d) {
  const auto ns = d.count();
  if (ns <= 0) return 0;
  constexpr std::int64_t kTop = std::int64_t{1} << 31;
  if (ns < kTop) return static_cast<std::uint32_t>(ns);
  const std::int64_t us = std::min<std::int64_t>(ns / 1000, kTop - 1);
  return static_cast<std::uint32_t>(kTop | us);
}
inline Clock::Duration DecodeLoadDuration(std::uint32_t code) {
  if ((code >> 31) == 0) return Clock::Duration(code);
  return std::chrono::microseconds(code & 0x7FFFFFFFu);
}

// What a node holds besides its key, fixed when it is made (NewNode): so
// its size, and where each part of its trailer lies.
struct NodeShape {
  std::size_t key_size = 0;
  bool has_tag = false;        // a nonzero L1Fill::tag
  bool has_user_data = false;  // a nonzero L1Fill::user_data
  // 1 + the value stripe references after the key: 1 for nodes as filled; a
  // power of two up to kMaxValueStripes for the copies
  // Shard::MakeStripedCopy makes of entries read from several CPUs.
  std::size_t stripes = 1;
};

// One entry, in one allocation: 48 bytes of fields, then the key bytes, then
// (8-aligned) the tag and user data if nonzero, then the value stripe
// references if any (16 bytes each); at least 64 bytes. A key of up to 16
// bytes makes a 64-byte node, which the shard's arena places on one cache
// line (it places no block across more lines than its size needs). Nothing
// of it is written while readers may be inside: every field is fixed when
// the node enters the shard; an overwrite, and striping, replace the node
// (inside exclusive sections) instead of changing it. The node's recency and frequency state
// is a PolicyRecord in its shard's PolicyTable (a dense array), so the list
// moves of a drain touch 16-byte records that stay in cache instead of three
// nodes' lines. The node keeps no hash: the table's slot has it, and the
// rare operations that start from a node (eviction, purging, striping) hash
// its key.
// Dead from expiry (tombstone) or expiry + max_stale (others) on: see
// Shard::DeadAt.
struct Node {
  L1Value value;
  Clock::TimePoint expiry{};
  std::uint64_t version = 0;
  // Packed: a key's size is at most kMaxKeyBytesLimit (2^20).
  std::uint32_t key_size : 21 = 0;
  std::uint32_t stripe_shift : 3 = 0;  // log2 of NodeShape::stripes
  std::uint32_t kind_bits : 2 = 0;     // an L1EntryKind
  std::uint32_t has_tag : 1 = 0;
  std::uint32_t has_user_data : 1 = 0;
  std::uint32_t load_duration_code = 0;  // EncodeLoadDuration
  // The shard's bookkeeping (written only inside exclusive sections): while
  // the node is in the shard, its record in the PolicyTable (0, a list
  // head's, until placed; readers read it to record a hit) and its charge
  // (at most kMaxEntryCharge); once it has left, the next node on the
  // shard's retired list.
  union Bookkeeping {
    struct {
      std::uint32_t policy_index;
      std::uint32_t charge;
    } live;
    Node* chain;
  } book{.live = {0, 0}};

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node() {
    for (std::size_t i = 0; i + 1 < stripes(); ++i) stripe(i).~L1Value();
  }

  static constexpr std::size_t kMaxEntryCharge = kMaxEntryChargeLimit;
  static_assert(kMaxEntryCharge <= 0xFFFFFFFFu, "Bookkeeping::charge holds it");

  // The trailer: the key at the node's end, then the optional parts.
  static std::size_t ExtrasOffset(std::size_t key_size) {
    return (sizeof(Node) + key_size + 7) & ~std::size_t{7};
  }
  static std::size_t StripesOffset(const NodeShape& s) {
    return ExtrasOffset(s.key_size) + 8 * (std::size_t{s.has_tag} + std::size_t{s.has_user_data});
  }
  // The bytes NewNode allocates for a node: a multiple of 8, at least a
  // cache line (a smaller block would share its line with a neighbour's
  // start or end, and the arena places no block of a line or less across
  // two lines).
  static std::size_t AllocationBytes(const NodeShape& s) {
    return std::max<std::size_t>(64, StripesOffset(s) + (s.stripes - 1) * sizeof(L1Value));
  }
  NodeShape shape() const {
    return {key_size, has_tag != 0, has_user_data != 0, stripes()};
  }
  std::size_t stripes() const { return std::size_t{1} << stripe_shift; }
  L1EntryKind kind() const { return static_cast<L1EntryKind>(kind_bits); }
  std::string_view key() const { return {base() + sizeof(Node), key_size}; }
  std::uint64_t tag() const { return has_tag ? Load(ExtrasOffset(key_size)) : 0; }
  std::uint64_t user_data() const {
    return has_user_data ? Load(ExtrasOffset(key_size) + 8 * std::size_t{has_tag}) : 0;
  }
  Clock::Duration load_duration() const { return DecodeLoadDuration(load_duration_code); }
  std::uint32_t policy_index() const { return book.live.policy_index; }
  void set_policy_index(std::uint32_t i) { book.live.policy_index = i; }
  std::size_t charge() const { return book.live.charge; }
  // Extra reference i (< stripes() - 1) to `value`, each with its own
  // control block, so that readers on different CPUs bump different
  // reference counts (see L1Options::value_stripes). Only the copies
  // Shard::MakeStripedCopy makes have them.
  L1Value& stripe(std::size_t i) const {
    return *std::launder(reinterpret_cast<L1Value*>(base() + StripesOffset(shape()) + i * sizeof(L1Value)));
  }

  const L1Value& ValueFor(std::size_t reader) const {
    const std::size_t i = reader & (stripes() - 1);
    return i == 0 ? value : stripe(i - 1);
  }
  // Assigns every field of *out but `stale`.
  void CopyTo(L1Entry* out, std::size_t reader = 0) const {
    out->kind = kind();
    out->value = ValueFor(reader);
    out->version = version;
    out->expiry = expiry;
    out->load_duration = load_duration();
    out->tag = tag();
    out->user_data = user_data();
  }

 private:
  friend std::unique_ptr<Node, struct NodeDeleter> NewNode(std::string_view key, const NodeShape& shape,
                                                           NodeArena* arena);
  friend std::unique_ptr<Node, struct NodeDeleter> NewFilledNode(std::string_view key, L1Value&& value,
                                                                 const struct NodeFields& f, NodeArena* arena);
  friend std::unique_ptr<Node, struct NodeDeleter> NewStripedCopy(const Node& from, std::size_t stripes,
                                                                  NodeArena* arena);
  char* base() const { return const_cast<char*>(reinterpret_cast<const char*>(this)); }
  std::uint64_t Load(std::size_t offset) const {
    std::uint64_t v;
    std::memcpy(&v, base() + offset, sizeof v);
    return v;
  }
  void Store(std::size_t offset, std::uint64_t v) { std::memcpy(base() + offset, &v, sizeof v); }
};
static_assert(sizeof(Node) == 48, "a 16-byte key makes a 64-byte node");
static_assert(alignof(Node) == 8 && sizeof(L1Value) % 8 == 0 && alignof(L1Value) <= 8);
static_assert(kMaxKeyBytesLimit < (std::size_t{1} << 21), "Node::key_size holds every key size");
static_assert(kMaxValueStripes <= (std::size_t{1} << 7), "Node::stripe_shift holds every stripe count");

// Destroys a node and gives its memory back to the arena it came from (null:
// the general allocator).
struct NodeDeleter {
  NodeArena* arena = nullptr;
  void operator()(Node* n) const noexcept {
    const std::size_t bytes = Node::AllocationBytes(n->shape());
    n->~Node();
    if (arena != nullptr) {
      arena->Free(n, bytes);
    } else {
      ::operator delete(n);
    }
  }
};
using NodePtr = std::unique_ptr<Node, NodeDeleter>;

// What a fill gives a new node besides its key and value.
struct NodeFields {
  L1EntryKind kind = L1EntryKind::kValue;
  std::uint64_t version = 0;
  Clock::TimePoint expiry{};
  Clock::Duration load_duration{};
  std::uint64_t tag = 0;
  std::uint64_t user_data = 0;
  std::size_t charge = 0;  // at most Node::kMaxEntryCharge
};

// A node of `shape` (shape.key_size == key.size(); its has_tag and
// has_user_data as it will be filled) holding a copy of `key`, zero fields
// and null stripe references; its memory from `arena` (its shard's), or from
// the general allocator when null. Throws std::bad_alloc.
inline NodePtr NewNode(std::string_view key, const NodeShape& shape, NodeArena* arena = nullptr) {
  TIERCACHE_DCHECK(shape.key_size == key.size() && std::has_single_bit(shape.stripes));
  const std::size_t bytes = Node::AllocationBytes(shape);
  void* memory = arena != nullptr ? arena->Allocate(bytes) : ::operator new(bytes);
  Node* n = new (memory) Node();
  n->key_size = static_cast<std::uint32_t>(key.size());
  n->stripe_shift = static_cast<std::uint32_t>(std::countr_zero(shape.stripes));
  n->has_tag = shape.has_tag;
  n->has_user_data = shape.has_user_data;
  if (!key.empty()) std::memcpy(n->base() + sizeof(Node), key.data(), key.size());
  for (std::size_t i = 0; i + 1 < shape.stripes; ++i) {
    new (n->base() + Node::StripesOffset(shape) + i * sizeof(L1Value)) L1Value();
  }
  return NodePtr(n, NodeDeleter{arena});
}

// A node of `key` with no tag, user data or stripes, its fields zero, from
// the general allocator. Throws std::bad_alloc.
inline NodePtr NewNode(std::string_view key) { return NewNode(key, NodeShape{key.size(), false, false, 1}); }

// A node of `key` filled with `value` and `f` (tag and user data kept only
// when nonzero). Throws std::bad_alloc, and then leaves `value` as it was.
inline NodePtr NewFilledNode(std::string_view key, L1Value&& value, const NodeFields& f, NodeArena* arena) {
  TIERCACHE_DCHECK(f.charge <= Node::kMaxEntryCharge);
  NodeShape shape;
  shape.key_size = key.size();
  shape.has_tag = f.tag != 0;
  shape.has_user_data = f.user_data != 0;
  NodePtr n = NewNode(key, shape, arena);
  n->value = std::move(value);
  n->expiry = f.expiry;
  n->version = f.version;
  n->kind_bits = static_cast<std::uint32_t>(f.kind);
  n->load_duration_code = EncodeLoadDuration(f.load_duration);
  n->book.live.charge = static_cast<std::uint32_t>(f.charge);
  if (shape.has_tag) n->Store(Node::ExtrasOffset(shape.key_size), f.tag);
  if (shape.has_user_data) n->Store(Node::ExtrasOffset(shape.key_size) + 8 * std::size_t{shape.has_tag}, f.user_data);
  return n;
}

// A copy of `from` (a value entry with no stripes) with `stripes` - 1 extra
// references to its value, each with a control block of its own that keeps
// the value alive, and the same policy record and charge. Throws
// std::bad_alloc (then nothing is left allocated).
inline NodePtr NewStripedCopy(const Node& from, std::size_t stripes, NodeArena* arena) {
  TIERCACHE_DCHECK(from.kind() == L1EntryKind::kValue && from.stripes() == 1 && stripes > 1);
  NodeShape shape = from.shape();
  shape.stripes = stripes;
  NodePtr n = NewNode(from.key(), shape, arena);
  n->value = from.value;
  n->expiry = from.expiry;
  n->version = from.version;
  n->kind_bits = from.kind_bits;
  n->load_duration_code = from.load_duration_code;
  n->book.live = from.book.live;
  const std::size_t extras = Node::ExtrasOffset(shape.key_size);
  std::memcpy(n->base() + extras, from.base() + extras, Node::StripesOffset(shape) - extras);
  for (std::size_t i = 0; i + 1 < stripes; ++i) {
    n->stripe(i) = L1Value(n->value.get(), [keep = n->value](const std::string*) noexcept {});
  }
  return n;
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
  // this record came last (0: none yet); kStriped is set once striping is
  // decided (the copy may still be pending, see Shard::NoteReader), also for
  // an entry that has no value to stripe (negative, tombstone), and cleared
  // again if the copy could not be made. An overwrite (whose new node has
  // no stripes) resets the whole byte.
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

  // A table for at most `max_nodes` nodes at once (its shard's max_entries
  // + 1: an insertion may precede its eviction), whose arrays never grow
  // beyond what that takes.
  explicit PolicyTable(std::size_t max_nodes = ~std::size_t{0})
      : max_records_(max_nodes <= ~std::size_t{0} - kLists ? max_nodes + kLists : ~std::size_t{0}) {
    Reset();
  }
  PolicyTable(const PolicyTable&) = delete;
  PolicyTable& operator=(const PolicyTable&) = delete;

  // Makes sure the next Attach needs no allocation. May throw
  // std::bad_alloc, and then leaves the table as it was (both arrays grow
  // their capacity first; the appends that follow cannot reallocate); Attach
  // does not throw.
  void Reserve() {
    if (free_ != 0) return;
    if (records_.size() == records_.capacity() || nodes_.size() == nodes_.capacity()) {
      // Doubling, but not past the bound; doubling again past it (only if
      // the shard ever held more nodes than it said).
      const std::size_t size = records_.size();
      const std::size_t want = size < max_records_ ? std::min(2 * size, max_records_) : 2 * size;
      records_.reserve(want);
      nodes_.reserve(want);
    }
    records_.emplace_back();
    nodes_.push_back(nullptr);
    free_ = static_cast<std::uint32_t>(records_.size() - 1);
    records_[free_].next = 0;
  }
  // Gives `n`, whose key hashes to `hash`, a free record (REQUIRES:
  // Reserve() since the last Attach).
  void Attach(Node* n, std::uint64_t hash) {
    const std::uint32_t i = free_;
    free_ = records_[i].next;
    records_[i] = PolicyRecord{};
    records_[i].sketch_key = SketchKeyOf(hash);
    nodes_[i] = n;
    n->set_policy_index(i);
  }
  // Hands record `i`, with its place in its list, to `n` (replacing its
  // node with a copy or a newer version: same key).
  void Rebind(std::uint32_t i, Node* n) {
    TIERCACHE_DCHECK(i >= kLists && nodes_[i] != nullptr);
    nodes_[i] = n;
    n->set_policy_index(i);
  }
  // Frees `n`'s record. REQUIRES: `n` is in no list.
  void Detach(Node* n) {
    const std::uint32_t i = n->policy_index();
    nodes_[i] = nullptr;
    records_[i].next = free_;
    free_ = i;
    n->set_policy_index(0);
  }
  // Exchanges the contents of two tables (every node's record moves with
  // it); does not allocate. The lists' sizes (NodeList) are the caller's.
  void Swap(PolicyTable& other) noexcept {
    records_.swap(other.records_);
    nodes_.swap(other.nodes_);
    std::swap(free_, other.free_);
    std::swap(max_records_, other.max_records_);
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
  PolicyRecord& of(const Node* n) { return records_[n->policy_index()]; }
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
  std::size_t max_records_;   // the heads and at most max_nodes records
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

  void push_front(Node* n) { push_front(n->policy_index()); }
  void remove(Node* n) { remove(n->policy_index()); }
  void move_to_front(Node* n) { move_to_front(n->policy_index()); }
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
