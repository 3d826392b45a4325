// Node and NodeList: the intrusive building blocks of an L1 shard.
//
// A Node is one entry; it sits in one hash chain (NodeTable) and in one
// policy list (NodeList), so a hit touches no allocation. Not thread-safe:
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

// The key bytes follow the Node in the same allocation (see NewNode), so a
// lookup reads one allocation, not a node plus a separately allocated key.
// Fields a lookup reads come first.
struct Node : ListLinks {
  Node* chain = nullptr;  // next node in the same hash bucket
  std::uint64_t hash = 0;
  std::uint32_t key_size = 0;
  L1EntryKind kind = L1EntryKind::kValue;
  Segment segment = Segment::kLru;
  Clock::TimePoint expiry{};
  Clock::TimePoint dead_at{};  // dropped from here on (expiry + retention)
  L1Value value;
  std::uint64_t version = 0;
  Clock::Duration load_duration{};
  std::size_t charge = 0;

  std::string_view key() const {
    return {reinterpret_cast<const char*>(this) + sizeof(Node), key_size};
  }
  L1Entry ToEntry() const { return L1Entry{kind, value, version, expiry, load_duration}; }
};

struct NodeDeleter {
  void operator()(Node* n) const noexcept {
    n->~Node();
    ::operator delete(n);
  }
};
using NodePtr = std::unique_ptr<Node, NodeDeleter>;

// A default-initialised Node followed by a copy of `key`.
inline NodePtr NewNode(std::string_view key) {
  void* memory = ::operator new(sizeof(Node) + key.size());
  Node* n = new (memory) Node();
  n->key_size = static_cast<std::uint32_t>(key.size());
  if (!key.empty()) std::memcpy(static_cast<char*>(memory) + sizeof(Node), key.data(), key.size());
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
